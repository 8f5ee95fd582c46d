//! The header at the start of every sealed file: what it holds, and its data key wrapped by a
//! master key, in one of two slots.
//!
//! ```text
//! [magic "SPSE"][version u8 = 1][layout u8][frame shift u8][0 u8]   8 bytes, bound into each slot
//! slot 0, slot 1: [master key id: 8][nonce: 12][data key: 32][tag: 16]   68 bytes each; all zero = empty
//! ```
//!
//! Two slots are what makes rotation crash-safe without rewriting data: the new master key's
//! wrap goes into the slot the old one does not use, and the old slot is cleared only once
//! every file has both (see `rotate`). A torn write of one slot fails its tag and leaves the
//! other intact.

use std::path::Path;

use crate::error::{Error, Kind, Result};
use crate::key::{DataKey, KEY_ID_LEN, KEY_LEN, MasterKey, WRAPPED_LEN, hex, random};

pub const MAGIC: [u8; 4] = *b"SPSE";
/// log2 of the plaintext bytes per frame (64 KiB), recorded in (and checked against) every header.
pub(crate) const FRAME_SHIFT: u8 = 16;
const VERSION: u8 = 1;
const PREFIX_LEN: usize = 8;
pub(crate) const SLOT_LEN: usize = KEY_ID_LEN + WRAPPED_LEN;
/// Bytes of the header in front of a sealed file's content.
pub const HEADER_LEN: usize = PREFIX_LEN + 2 * SLOT_LEN;

/// How the content after the header is sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Fixed-size frames (blocks, files read by range): see [`crate::frame`].
    Frames,
    /// Length-prefixed records, each sealed on its own (the WAL): see [`crate::record`].
    Records,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    prefix: [u8; PREFIX_LEN],
    pub(crate) slots: [[u8; SLOT_LEN]; 2],
}

/// True when `bytes` (a file's first bytes) start like a sealed file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

impl Header {
    /// A header for a new file: a fresh random data key, wrapped by `master` in slot 0.
    pub fn new(master: &MasterKey, layout: Layout) -> (Header, DataKey) {
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[..4].copy_from_slice(&MAGIC);
        prefix[4] = VERSION;
        prefix[5] = match layout {
            Layout::Frames => 1,
            Layout::Records => 2,
        };
        prefix[6] = FRAME_SHIFT;
        let mut data_key = [0u8; KEY_LEN];
        random(&mut data_key);
        let mut header = Header { prefix, slots: [[0; SLOT_LEN]; 2] };
        header.slots[0] = header.slot_for(master, &data_key);
        (header, DataKey::new(&data_key))
    }

    /// Reads a header; `what` (usually the file's path) names the file in errors.
    pub fn parse(bytes: &[u8], what: &Path) -> Result<Header> {
        if !is_sealed(bytes) {
            return Err(Error::new(Kind::NotSealed, format!("{} is not encrypted", what.display())));
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::new(Kind::Corrupt, format!("{}: encryption header cut short", what.display())));
        }
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&bytes[..PREFIX_LEN]);
        if prefix[4] != VERSION || !matches!(prefix[5], 1 | 2) || prefix[6] != FRAME_SHIFT {
            return Err(Error::new(
                Kind::Corrupt,
                format!("{}: unknown encryption header (version {}, layout {})", what.display(), prefix[4], prefix[5]),
            ));
        }
        let mut slots = [[0u8; SLOT_LEN]; 2];
        slots[0].copy_from_slice(&bytes[PREFIX_LEN..PREFIX_LEN + SLOT_LEN]);
        slots[1].copy_from_slice(&bytes[PREFIX_LEN + SLOT_LEN..HEADER_LEN]);
        Ok(Header { prefix, slots })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..PREFIX_LEN].copy_from_slice(&self.prefix);
        out[PREFIX_LEN..PREFIX_LEN + SLOT_LEN].copy_from_slice(&self.slots[0]);
        out[PREFIX_LEN + SLOT_LEN..].copy_from_slice(&self.slots[1]);
        out
    }

    pub fn layout(&self) -> Layout {
        if self.prefix[5] == 1 { Layout::Frames } else { Layout::Records }
    }

    /// The data key, from the first slot `master` opens. A wrong key is an error that names the
    /// file, the key file and the fingerprints of the keys that would open it.
    pub fn open(&self, master: &MasterKey, what: &Path) -> Result<DataKey> {
        self.data_key(master).map(|k| DataKey::new(&k)).ok_or_else(|| {
            let ids: Vec<String> =
                self.slots.iter().filter(|s| s.iter().any(|b| *b != 0)).map(|s| hex(&s[..KEY_ID_LEN])).collect();
            Error::new(
                Kind::WrongKey,
                format!(
                    "{} was encrypted with another key (key id {}) than the one in {} (key id {})",
                    what.display(),
                    if ids.is_empty() { "none".to_owned() } else { ids.join(" or ") },
                    master.file().display(),
                    master.id_hex()
                ),
            )
        })
    }

    pub(crate) fn data_key(&self, master: &MasterKey) -> Option<[u8; KEY_LEN]> {
        self.slots.iter().find_map(|s| self.open_slot(s, master))
    }

    /// The index of a slot `master` opens.
    pub(crate) fn slot_of(&self, master: &MasterKey) -> Option<usize> {
        (0..2).find(|&i| self.open_slot(&self.slots[i], master).is_some())
    }

    fn open_slot(&self, slot: &[u8; SLOT_LEN], master: &MasterKey) -> Option<[u8; KEY_LEN]> {
        if slot[..KEY_ID_LEN] != master.id() {
            return None;
        }
        let wrapped: &[u8; WRAPPED_LEN] = slot[KEY_ID_LEN..].try_into().ok()?;
        master.unwrap(wrapped, &self.aad(master))
    }

    pub(crate) fn slot_for(&self, master: &MasterKey, data_key: &[u8; KEY_LEN]) -> [u8; SLOT_LEN] {
        let mut slot = [0u8; SLOT_LEN];
        slot[..KEY_ID_LEN].copy_from_slice(&master.id());
        slot[KEY_ID_LEN..].copy_from_slice(&master.wrap(data_key, &self.aad(master)));
        slot
    }

    /// Binds a wrap to the header's layout and to the key id beside it.
    fn aad(&self, master: &MasterKey) -> [u8; PREFIX_LEN + KEY_ID_LEN] {
        let mut aad = [0u8; PREFIX_LEN + KEY_ID_LEN];
        aad[..PREFIX_LEN].copy_from_slice(&self.prefix);
        aad[PREFIX_LEN..].copy_from_slice(&master.id());
        aad
    }

    /// Byte offset of slot `i` in the file.
    pub(crate) fn slot_offset(i: usize) -> u64 {
        (PREFIX_LEN + i * SLOT_LEN) as u64
    }
}
