//! Little-endian encoding shared by `filter.bin`'s parts (the trace-ID filter and the value
//! index): a bounds-checked reader, binary fuse filters, and the 64-bit mixer their keys use.

use xorf::BinaryFuse8;

use crate::error::{Error, Result};

/// SplitMix64's finalizer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A binary fuse filter's descriptor and fingerprints (shared with the value index).
pub(crate) fn write_fuse(out: &mut Vec<u8>, filter: &BinaryFuse8) {
    let d = &filter.descriptor;
    out.extend_from_slice(&d.seed.to_le_bytes());
    out.extend_from_slice(&d.segment_length.to_le_bytes());
    out.extend_from_slice(&d.segment_length_mask.to_le_bytes());
    out.extend_from_slice(&d.segment_count_length.to_le_bytes());
    out.extend_from_slice(&(filter.fingerprints.len() as u32).to_le_bytes());
    out.extend_from_slice(&filter.fingerprints);
}

pub(crate) fn read_fuse(r: &mut Reader<'_>) -> Result<BinaryFuse8> {
    let seed = r.u64()?;
    let segment_length = r.u32()?;
    let segment_length_mask = r.u32()?;
    let segment_count_length = r.u32()?;
    let len = r.u32()? as usize;
    let fingerprints = r.take(len)?;
    // Lookups index fingerprints at up to segment_count_length + 2 segments: check that here,
    // so a corrupt file is an error rather than a panic later.
    let (sl, scl) = (segment_length as u64, segment_count_length as u64);
    if !segment_length.is_power_of_two()
        || segment_length_mask != segment_length - 1
        || scl % sl != 0
        || scl + 2 * sl > len as u64
    {
        return Err(Error::Filter("inconsistent descriptor".into()));
    }
    let descriptor = xorf::Descriptor { seed, segment_length, segment_length_mask, segment_count_length };
    Ok(BinaryFuse8 { descriptor, fingerprints: fingerprints.into() })
}

/// Little-endian reads from a byte slice that refuse to run past its end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let (head, tail) = self.bytes.split_at_checked(n).ok_or_else(|| Error::Filter("truncated".into()))?;
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}
