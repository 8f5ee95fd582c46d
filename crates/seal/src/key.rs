//! Keys: the master key an operator keeps in a file, and the random data key of each sealed
//! file, which only ever reaches the disk wrapped (AES-256-GCM) by a master key.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine;

use crate::error::{Error, Kind, Result};

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// Bytes of a key's fingerprint stored next to each wrapped data key.
pub const KEY_ID_LEN: usize = 8;

/// A 256-bit master key and the file it came from (named in every error about it).
pub struct MasterKey {
    key: LessSafeKey,
    id: [u8; KEY_ID_LEN],
    file: PathBuf,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key; its fingerprint identifies it well enough.
        write!(f, "MasterKey({}, {})", self.file.display(), self.id_hex())
    }
}

impl MasterKey {
    /// Reads a key file: 32 bytes as 64 hex digits or as base64, surrounding whitespace ignored.
    pub fn load(file: &Path) -> Result<MasterKey> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::new(Kind::KeyFile, format!("cannot read the encryption key file {}: {e}", file.display()))
        })?;
        let bytes = parse_key(text.trim())
            .map_err(|why| Error::new(Kind::KeyFile, format!("encryption key file {}: {why}", file.display())))?;
        Ok(MasterKey::from_bytes(&bytes, file))
    }

    pub fn from_bytes(bytes: &[u8; KEY_LEN], file: &Path) -> MasterKey {
        let mut input = b"spoor master key id v1".to_vec();
        input.extend_from_slice(bytes);
        let d = digest::digest(&digest::SHA256, &input);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&d.as_ref()[..KEY_ID_LEN]);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"));
        MasterKey { key, id, file: file.to_owned() }
    }

    /// A fingerprint (not the key): lets a sealed file say which key wrapped it.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Wraps a data key: `nonce ‖ sealed key ‖ tag`, bound to `aad`.
    pub(crate) fn wrap(&self, data_key: &[u8; KEY_LEN], aad: &[u8]) -> [u8; WRAPPED_LEN] {
        let mut out = [0u8; WRAPPED_LEN];
        random(&mut out[..NONCE_LEN]);
        let nonce = Nonce::try_assume_unique_for_key(&out[..NONCE_LEN]).expect("nonce length");
        out[NONCE_LEN..NONCE_LEN + KEY_LEN].copy_from_slice(data_key);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut out[NONCE_LEN..NONCE_LEN + KEY_LEN])
            .expect("sealing 32 bytes cannot fail");
        out[NONCE_LEN + KEY_LEN..].copy_from_slice(tag.as_ref());
        out
    }

    /// The data key inside `wrapped`, if this key wrapped it (the tag checks key and bytes).
    pub(crate) fn unwrap(&self, wrapped: &[u8; WRAPPED_LEN], aad: &[u8]) -> Option<[u8; KEY_LEN]> {
        let nonce = Nonce::try_assume_unique_for_key(&wrapped[..NONCE_LEN]).ok()?;
        let mut buf = wrapped[NONCE_LEN..].to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
        plain.try_into().ok()
    }
}

/// Length of a wrapped data key: nonce, key, tag.
pub const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

fn parse_key(text: &str) -> std::result::Result<[u8; KEY_LEN], String> {
    if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut out = [0u8; KEY_LEN];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            out[i] = u8::from_str_radix(s, 16).map_err(|e| e.to_string())?;
        }
        return Ok(out);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .map_err(|_| {
            format!("expected a 256-bit key as 64 hex digits or base64, found {} characters of neither", text.len())
        })?;
    decoded
        .try_into()
        .map_err(|d: Vec<u8>| format!("expected a 256-bit key (32 bytes), the base64 holds {} bytes", d.len()))
}

pub(crate) fn random(out: &mut [u8]) {
    // The system RNG failing is not something a server can work around.
    aws_lc_rs::rand::fill(out).expect("the system random number generator failed");
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A data key ready for sealing and opening.
pub struct DataKey(pub(crate) LessSafeKey);

impl DataKey {
    pub(crate) fn new(bytes: &[u8; KEY_LEN]) -> DataKey {
        DataKey(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_take_hex_or_base64_and_nothing_else() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let a = parse_key(hex_key).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(a);
        assert_eq!(parse_key(&b64).unwrap(), a);
        assert!(parse_key("not a key!").unwrap_err().contains("64 hex digits or base64"));
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(parse_key(&short).unwrap_err().contains("holds 16 bytes"));
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_master_key_and_aad() {
        let k1 = MasterKey::from_bytes(&[1; 32], Path::new("k1"));
        let k2 = MasterKey::from_bytes(&[2; 32], Path::new("k2"));
        assert_ne!(k1.id(), k2.id());
        let w = k1.wrap(&[9; 32], b"aad");
        assert_eq!(k1.unwrap(&w, b"aad"), Some([9; 32]));
        assert_eq!(k2.unwrap(&w, b"aad"), None);
        assert_eq!(k1.unwrap(&w, b"other"), None);
    }
}
