//! Records sealed one at a time (the WAL and the agent's queue): a record can be read back
//! alone, at any boundary, without the ones before it.
//!
//! `sealed = [random nonce: 12][ciphertext][tag: 16]`, under the segment's data key. Random
//! nonces, because a segment's records are written by an appender that may be cut short and
//! resumed in a new segment; 2^32 records per key keep the collision odds negligible, and a
//! segment holds far fewer.

use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};

use std::path::Path;

use crate::error::{Error, Kind, Result};
use crate::header::{HEADER_LEN, Header, MAGIC, is_sealed};
use crate::key::{DataKey, MasterKey, TAG_LEN, random};

/// Bytes sealing adds to a record.
pub const RECORD_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Appends `plain`, sealed, to `out`.
pub fn seal_record(key: &DataKey, plain: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + NONCE_LEN, 0);
    random(&mut out[start..]);
    let nonce = Nonce::try_assume_unique_for_key(&out[start..start + NONCE_LEN]).expect("nonce length");
    out.extend_from_slice(plain);
    let tag = key
        .0
        .seal_in_place_separate_tag(nonce, Aad::empty(), &mut out[start + NONCE_LEN..])
        .expect("sealing a record cannot fail below 64 GiB");
    out.extend_from_slice(tag.as_ref());
}

/// The plaintext of a sealed record; an error if any byte of it changed.
pub fn open_record(key: &DataKey, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < RECORD_OVERHEAD {
        return Err(Error::corrupt("sealed record shorter than its nonce and tag"));
    }
    let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).expect("nonce length");
    let mut buf = sealed[NONCE_LEN..].to_vec();
    let len = key.0.open_in_place(nonce, Aad::empty(), &mut buf).map_err(|_| Error::corrupt("sealed record"))?.len();
    buf.truncate(len);
    Ok(buf)
}

/// Where a log's records start, and its data key, from its first bytes (`head`: the whole file
/// or at least its first [`HEADER_LEN`] bytes), for the logs written as sealed records (WAL and
/// queue segments, the DORA store). A sealed log without a key, or a plain one under a key, is
/// an error naming `path`. A header cut short while the log was being created (nothing in it was
/// ever stored) answers `(head.len(), None)` under a key: no records, and no data key.
pub fn log_start(head: &[u8], path: &Path, master: Option<&MasterKey>) -> Result<(usize, Option<DataKey>)> {
    if head.is_empty() {
        return Ok((0, None));
    }
    let sealed = is_sealed(head);
    let torn_header = head.len() < HEADER_LEN && MAGIC.starts_with(&head[..head.len().min(4)]);
    match master {
        None if sealed => Err(Error::new(
            Kind::NotSealed,
            format!("{} is encrypted, and no encryption key is configured", path.display()),
        )),
        None => Ok((0, None)),
        Some(_) if torn_header => Ok((head.len(), None)),
        Some(_) if !sealed => Err(Error::new(
            Kind::NotSealed,
            format!("{} is not encrypted, yet an encryption key is configured", path.display()),
        )),
        Some(master) => Ok((HEADER_LEN, Some(Header::parse(head, path)?.open(master, path)?))),
    }
}
