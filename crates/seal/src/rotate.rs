//! Key rotation on sealed files, in place: only the header's key slots change, never the data.
//!
//! Two passes over every file make it crash-safe:
//! 1. [`add_key`]: the data key wrapped by the new master key goes into the slot the old key
//!    does not use, then `fsync`. The old slot is untouched, so the file opens with either key.
//! 2. Once *every* file has passed step 1, [`drop_other_keys`] clears the other slot, then `fsync`.
//!    The new slot is untouched, so the file keeps opening with the new key.
//!
//! A crash during pass 1 leaves every file readable with the old key (some also with the new);
//! a crash during pass 2, every file readable with the new key. Both passes are idempotent:
//! running the rotation again finishes it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Kind, Result, io};
use crate::header::{HEADER_LEN, Header, SLOT_LEN};
use crate::key::MasterKey;

fn read_header(path: &Path, write: bool) -> Result<(std::fs::File, Header)> {
    let file = OpenOptions::new().read(true).write(write).open(path).map_err(io(path))?;
    let mut buf = [0u8; HEADER_LEN];
    let len = file.metadata().map_err(io(path))?.len();
    let n = (len as usize).min(HEADER_LEN);
    file.read_exact_at(&mut buf[..n], 0).map_err(io(path))?;
    Ok((file, Header::parse(&buf[..n], path)?))
}

fn write_slot(file: &std::fs::File, path: &Path, i: usize, slot: &[u8; SLOT_LEN]) -> Result<()> {
    file.write_all_at(slot, Header::slot_offset(i)).map_err(io(path))?;
    file.sync_data().map_err(io(path))
}

/// Pass 1 for one file: makes it open with `new` too. Returns false when it already did.
pub fn add_key(path: &Path, old: &MasterKey, new: &MasterKey) -> Result<bool> {
    let (file, header) = read_header(path, true)?;
    if header.slot_of(new).is_some() {
        return Ok(false);
    }
    let Some(i) = header.slot_of(old) else {
        return Err(Error::new(
            Kind::WrongKey,
            format!("{} opens with neither {} nor {}", path.display(), old.file().display(), new.file().display()),
        ));
    };
    let data_key = header.data_key(old).expect("slot_of found it");
    write_slot(&file, path, 1 - i, &header.slot_for(new, &data_key))?;
    Ok(true)
}

/// Pass 2 for one file: clears every slot but `keep`'s. Returns false when there was none.
pub fn drop_other_keys(path: &Path, keep: &MasterKey) -> Result<bool> {
    let (file, header) = read_header(path, true)?;
    let Some(i) = header.slot_of(keep) else {
        return Err(Error::new(
            Kind::WrongKey,
            format!("{} does not open with {}", path.display(), keep.file().display()),
        ));
    };
    let other = &header.slots[1 - i];
    if other.iter().all(|b| *b == 0) {
        return Ok(false);
    }
    write_slot(&file, path, 1 - i, &[0u8; SLOT_LEN])?;
    Ok(true)
}

/// Checks that `path` opens with `key` (reads the header only).
pub fn check(path: &Path, key: &MasterKey) -> Result<()> {
    let (_, header) = read_header(path, false)?;
    header.open(key, path).map(|_| ())
}
