//! `filter.bin`: a binary fuse filter over the block's trace IDs (≈9 bits per trace, false
//! positives ≈0.4%), behind a small versioned header so the format can change.
//!
//! Layout (little endian): `"SPFL"`, version u8 (1), kind u8 (0 = empty, 1 = BinaryFuse8),
//! then for kind 1: seed u64, segment_length u32, segment_length_mask u32,
//! segment_count_length u32, fingerprint count u32, fingerprints.

use spoor_model::TraceId;
use xorf::{BinaryFuse8, Filter};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"SPFL";
const VERSION: u8 = 1;
const KIND_EMPTY: u8 = 0;
const KIND_FUSE8: u8 = 1;

/// The filter key of a trace ID. Fixed forever for version 1: both halves are mixed so IDs with
/// structure (timestamps in front, zero halves) still spread.
fn key(id: &TraceId) -> u64 {
    let hi = u64::from_le_bytes(id.0[..8].try_into().expect("16 bytes"));
    let lo = u64::from_le_bytes(id.0[8..].try_into().expect("16 bytes"));
    mix(mix(hi) ^ lo)
}

/// SplitMix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn build(ids: &[TraceId]) -> Result<Vec<u8>> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    if ids.is_empty() {
        out.push(KIND_EMPTY);
        return Ok(out);
    }
    let mut keys: Vec<u64> = ids.iter().map(key).collect();
    keys.sort_unstable();
    keys.dedup();
    let filter = BinaryFuse8::try_from(&keys).map_err(|e| Error::Filter(e.to_string()))?;
    out.push(KIND_FUSE8);
    let d = &filter.descriptor;
    out.extend_from_slice(&d.seed.to_le_bytes());
    out.extend_from_slice(&d.segment_length.to_le_bytes());
    out.extend_from_slice(&d.segment_length_mask.to_le_bytes());
    out.extend_from_slice(&d.segment_count_length.to_le_bytes());
    out.extend_from_slice(&(filter.fingerprints.len() as u32).to_le_bytes());
    out.extend_from_slice(&filter.fingerprints);
    Ok(out)
}

/// A parsed `filter.bin`.
pub enum TraceFilter {
    Empty,
    Fuse8(BinaryFuse8),
}

impl TraceFilter {
    pub fn parse(bytes: &[u8]) -> Result<TraceFilter> {
        let bad = |why: &str| Error::Filter(why.to_owned());
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8]> {
            let (head, tail) = r.split_at_checked(n).ok_or_else(|| bad("truncated"))?;
            r = tail;
            Ok(head)
        };
        if take(4)? != MAGIC {
            return Err(bad("bad magic"));
        }
        let version = take(1)?[0];
        if version != VERSION {
            return Err(Error::Filter(format!("unsupported version {version}")));
        }
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
        match take(1)?[0] {
            KIND_EMPTY => Ok(TraceFilter::Empty),
            KIND_FUSE8 => {
                let seed = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
                let segment_length = u32_at(take(4)?);
                let segment_length_mask = u32_at(take(4)?);
                let segment_count_length = u32_at(take(4)?);
                let len = u32_at(take(4)?) as usize;
                let fingerprints = take(len)?;
                // Lookups index fingerprints at up to segment_count_length + 2 segments: check
                // that here, so a corrupt file is an error rather than a panic later.
                let (sl, scl) = (segment_length as u64, segment_count_length as u64);
                if !segment_length.is_power_of_two()
                    || segment_length_mask != segment_length - 1
                    || scl % sl != 0
                    || scl + 2 * sl > len as u64
                {
                    return Err(bad("inconsistent descriptor"));
                }
                let descriptor = xorf::Descriptor { seed, segment_length, segment_length_mask, segment_count_length };
                Ok(TraceFilter::Fuse8(BinaryFuse8 { descriptor, fingerprints: fingerprints.into() }))
            }
            kind => Err(Error::Filter(format!("unknown kind {kind}"))),
        }
    }

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
        let bytes = build(&ids).unwrap();
        let filter = TraceFilter::parse(&bytes).unwrap();
        assert!(ids.iter().all(|id| filter.may_contain(id)));
        let empty = TraceFilter::parse(&build(&[]).unwrap()).unwrap();
        assert!(!empty.may_contain(&ids[0]));
        // Every strict prefix is refused, never misread.
        for len in 0..bytes.len() {
            assert!(TraceFilter::parse(&bytes[..len]).is_err(), "prefix of {len}");
        }
        // A descriptor pointing past the fingerprints is refused.
        let mut bad = bytes.clone();
        bad[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(TraceFilter::parse(&bad).is_err());
    }
}
