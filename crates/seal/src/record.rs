//! Records sealed one at a time (the WAL and the agent's queue): a record can be read back
//! alone, at any boundary, without the ones before it.
//!
//! `sealed = [random nonce: 12][ciphertext][tag: 16]`, under the segment's data key. Random
//! nonces, because a segment's records are written by an appender that may be cut short and
//! resumed in a new segment; 2^32 records per key keep the collision odds negligible, and a
//! segment holds far fewer.

use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};

use crate::error::{Error, Result};
use crate::key::{DataKey, TAG_LEN, random};

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
