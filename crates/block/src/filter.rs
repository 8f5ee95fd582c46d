//! `filter.bin`: a binary fuse filter over the block's trace IDs (≈9 bits per trace, false
//! positives ≈0.4%), behind a small versioned header so the format can change, and since
//! version 2 the block's value index (`index.rs`).
//!
//! Layout (little endian): `"SPFL"`, version u8 (1 or 2), kind u8 (0 = empty, 1 = BinaryFuse8),
//! then for kind 1: seed u64, segment_length u32, segment_length_mask u32,
//! segment_count_length u32, fingerprint count u32, fingerprints. Version 2 appends u8 (0: no
//! value index, 1: one follows) and the value index. Version 1 files (no index) stay readable.

use spoor_model::TraceId;
use xorf::{BinaryFuse8, Filter};

use crate::codec::{Reader, mix, read_fuse, write_fuse};
use crate::error::{Error, Result};
use crate::index::ValueIndex;

const MAGIC: &[u8; 4] = b"SPFL";
const VERSION: u8 = 2;
const KIND_EMPTY: u8 = 0;
const KIND_FUSE8: u8 = 1;

/// The filter key of a trace ID. Fixed forever for version 1: both halves are mixed so IDs with
/// structure (timestamps in front, zero halves) still spread.
fn key(id: &TraceId) -> u64 {
    let hi = u64::from_le_bytes(id.0[..8].try_into().expect("16 bytes"));
    let lo = u64::from_le_bytes(id.0[8..].try_into().expect("16 bytes"));
    mix(mix(hi) ^ lo)
}

/// `filter.bin` for these trace IDs, with the encoded value index when there is one.
pub fn build(ids: &[TraceId], index: Option<&[u8]>) -> Result<Vec<u8>> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    if ids.is_empty() {
        out.push(KIND_EMPTY);
    } else {
        let mut keys: Vec<u64> = ids.iter().map(key).collect();
        keys.sort_unstable();
        keys.dedup();
        let filter = BinaryFuse8::try_from(&keys).map_err(|e| Error::Filter(e.to_string()))?;
        out.push(KIND_FUSE8);
        write_fuse(&mut out, &filter);
    }
    match index {
        Some(index) => {
            out.push(1);
            out.extend_from_slice(index);
        }
        None => out.push(0),
    }
    Ok(out)
}

/// A parsed `filter.bin`: the trace-ID filter and, from version 2, the value index.
pub struct BlockFilter {
    pub traces: TraceFilter,
    pub index: Option<ValueIndex>,
}

pub enum TraceFilter {
    Empty,
    Fuse8(BinaryFuse8),
}

impl BlockFilter {
    pub fn parse(bytes: &[u8]) -> Result<BlockFilter> {
        let mut r = Reader::new(bytes);
        if r.take(4)? != MAGIC {
            return Err(Error::Filter("bad magic".into()));
        }
        let version = r.u8()?;
        if version != 1 && version != VERSION {
            return Err(Error::Filter(format!("unsupported version {version}")));
        }
        let traces = match r.u8()? {
            KIND_EMPTY => TraceFilter::Empty,
            KIND_FUSE8 => TraceFilter::Fuse8(read_fuse(&mut r)?),
            kind => return Err(Error::Filter(format!("unknown kind {kind}"))),
        };
        let index = match version {
            1 => None,
            _ => match r.u8()? {
                0 => None,
                // A damaged index only costs speed (nothing is skipped without it), while a
                // refused filter.bin would hide the whole block: it is dropped, not an error.
                1 => ValueIndex::parse(&mut r).ok(),
                kind => return Err(Error::Filter(format!("unknown index kind {kind}"))),
            },
        };
        Ok(BlockFilter { traces, index })
    }
}

impl TraceFilter {
    pub fn may_contain(&self, id: &TraceId) -> bool {
        match self {
            TraceFilter::Empty => false,
            TraceFilter::Fuse8(f) => f.contains(&key(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let ids: Vec<TraceId> = (0..1000u32)
            .map(|i| TraceId([(i % 251) as u8, (i / 251) as u8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
            .collect();
        let bytes = build(&ids, None).unwrap();
        let filter = BlockFilter::parse(&bytes).unwrap();
        assert!(ids.iter().all(|id| filter.traces.may_contain(id)));
        assert!(filter.index.is_none());
        let empty = BlockFilter::parse(&build(&[], None).unwrap()).unwrap();
        assert!(!empty.traces.may_contain(&ids[0]));
        // Every strict prefix is refused, never misread.
        for len in 0..bytes.len() {
            assert!(BlockFilter::parse(&bytes[..len]).is_err(), "prefix of {len}");
        }
        // A descriptor pointing past the fingerprints is refused.
        let mut bad = bytes.clone();
        bad[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(BlockFilter::parse(&bad).is_err());
    }

    #[test]
    fn version_1_files_stay_readable() {
        let ids: Vec<TraceId> = (0..100u8).map(|i| TraceId([i; 16])).collect();
        // A version 1 file is a version 2 file without the index byte.
        let mut v1 = build(&ids, None).unwrap();
        v1[4] = 1;
        v1.pop();
        let filter = BlockFilter::parse(&v1).unwrap();
        assert!(ids.iter().all(|id| filter.traces.may_contain(id)));
        assert!(filter.index.is_none());
    }

    #[test]
    fn a_damaged_value_index_is_dropped_not_fatal() {
        let ids = [TraceId([1; 16])];
        let bytes = build(&ids, Some(&[9, 9, 9])).unwrap();
        let filter = BlockFilter::parse(&bytes).unwrap();
        assert!(filter.traces.may_contain(&ids[0]) && filter.index.is_none());
    }
}
