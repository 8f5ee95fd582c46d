//! Encryption at rest as a process sees it: the `storage.encryption` key, the marker that says
//! a directory is encrypted (and with which key), and `spoor keys rotate`.
//!
//! The sealing itself is `spoor_seal`; the WAL, the agent's queue and the local block store
//! apply it. This module decides, before anything is read or written, whether the key fits the
//! data: a directory holds a sealed marker file, `ENCRYPTION`, from its first encrypted start.
//! A wrong key, a missing key for an encrypted directory, or a key for a directory that
//! already holds plaintext data stops the start with a message naming the files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spoor_seal::{Kind, MasterKey, rotate};

use crate::error::StartupError;

/// The marker's name, in the data dir (and in the agent's queue dir).
pub const MARKER: &str = "ENCRYPTION";
const MARKER_TEXT: &[u8] = b"spoor: this directory is encrypted at rest\n";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// A 256-bit master key, as 64 hex digits or base64. Empty: no encryption at rest.
    pub key_file: PathBuf,
}

impl EncryptionConfig {
    /// The master key, if encryption is on; a bad key file stops the start.
    pub fn load(&self) -> Result<Option<Arc<MasterKey>>, StartupError> {
        if self.key_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let key = MasterKey::load(&self.key_file).map_err(|e| StartupError::new(format!("storage.encryption: {e}")))?;
        Ok(Some(Arc::new(key)))
    }
}

/// Checks `key` against the directory `dir` (the marker's home) whose data lives in `data`
/// (`dir` itself and, e.g., a block directory elsewhere); writes the marker on the first
/// encrypted start of an empty directory.
pub fn check_dir(dir: &Path, data: &[PathBuf], key: Option<&MasterKey>) -> Result<(), StartupError> {
    let marker = dir.join(MARKER);
    match (marker.exists(), key) {
        (true, Some(key)) => rotate::check(&marker, key).map_err(|e| {
            let why = if e.kind == Kind::WrongKey { "wrong encryption key" } else { "cannot check the encryption key" };
            StartupError::new(format!("{why} for {}: {e}", dir.display()))
        }),
        (true, None) => Err(StartupError::new(format!(
            "{} is encrypted at rest ({} exists), but storage.encryption.key_file is not set",
            dir.display(),
            marker.display()
        ))),
        (false, Some(key)) => {
            if let Some(file) = data.iter().find_map(|d| first_data_file(d)) {
                return Err(StartupError::new(format!(
                    "storage.encryption.key_file {} is set, but {} holds data written without encryption ({}); \
                     encryption at rest starts with an empty data dir",
                    key.file().display(),
                    dir.display(),
                    file.display()
                )));
            }
            write_marker(&marker, key)
                .map_err(|e| StartupError::new(format!("cannot write {}: {e}", marker.display())).with_source(e))
        }
        (false, None) => {
            // Sealed files without a marker (it was deleted): refuse rather than read ciphertext.
            // Only the logs are looked at, so a plaintext start costs a directory listing.
            match data.iter().find_map(|d| first_sealed_file(d).or_else(|| first_sealed_file(&d.join("wal")))) {
                Some(file) => Err(StartupError::new(format!(
                    "{} is encrypted at rest, but storage.encryption.key_file is not set",
                    file.display()
                ))),
                None => Ok(()),
            }
        }
    }
}

fn write_marker(marker: &Path, key: &MasterKey) -> std::io::Result<()> {
    let tmp = marker.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&spoor_seal::frame::seal(key, MARKER_TEXT))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, marker)?;
    if let Some(dir) = marker.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Files that are not data: locks, the marker, ack logs (offsets only), temp files.
fn is_bookkeeping(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "LOCK" || name == MARKER || name.ends_with(".acks") || name.ends_with(".tmp")
}

/// Every regular file under `dir` (recursively), temp directories aside.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() && entry.file_name() != "tmp" => files(&path, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

fn first_data_file(dir: &Path) -> Option<PathBuf> {
    let mut all = Vec::new();
    files(dir, &mut all);
    all.into_iter().find(|p| !is_bookkeeping(p) && std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
}

fn is_sealed_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && spoor_seal::is_sealed(&magic)
}

/// A sealed file directly in `dir`.
fn first_sealed_file(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "wal") && is_sealed_file(p))
}

/// What a rotation did.
#[derive(Debug, Default)]
pub struct Rotated {
    /// Sealed files found.
    pub files: usize,
    /// Files that got the new key in pass 1 (the rest had it from an interrupted run).
    pub rewrapped: usize,
}

/// Re-wraps the data key of every sealed file under `dirs` from `old` to `new`, without
/// rewriting data. Crash-safe by order (see `spoor_seal::rotate`): pass 1 adds the new key
/// to every file, each directory's marker last; pass 2 removes the old key, markers first.
/// So a marker that opens with the new key means every file does, and a start checks the
/// marker: after a kill, the process starts with whichever key its marker takes, and running
/// the rotation again finishes it.
pub fn rotate_dirs(dirs: &[PathBuf], old: &MasterKey, new: &MasterKey) -> Result<Rotated, StartupError> {
    if old.id() == new.id() {
        return Err(StartupError::new("the old and the new key are the same key"));
    }
    let mut sealed = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            return Err(StartupError::new(format!("{} is not a directory", dir.display())));
        }
        let mut all = Vec::new();
        files(dir, &mut all);
        all.sort();
        all.dedup();
        sealed.extend(all.into_iter().filter(|p| is_sealed_file(p)));
    }
    if !sealed.iter().any(|p| p.file_name().is_some_and(|n| n == MARKER)) {
        return Err(StartupError::new(format!(
            "no encrypted data dir under {} (no {MARKER} file)",
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    let is_marker = |p: &PathBuf| p.file_name().is_some_and(|n| n == MARKER);
    // Pass 1: markers last.
    sealed.sort_by_key(is_marker);
    let mut report = Rotated { files: sealed.len(), rewrapped: 0 };
    let fail = |p: &Path, e: spoor_seal::Error| StartupError::new(format!("rotating {}: {e}", p.display()));
    for (i, path) in sealed.iter().enumerate() {
        if rotate::add_key(path, old, new).map_err(|e| fail(path, e))? {
            report.rewrapped += 1;
        }
        spoor_store::fail::point(&format!("rotate.pass1.{i}"));
    }
    // Pass 2: markers first.
    sealed.sort_by_key(|p| !is_marker(p));
    for (i, path) in sealed.iter().enumerate() {
        rotate::drop_other_keys(path, new).map_err(|e| fail(path, e))?;
        spoor_store::fail::point(&format!("rotate.pass2.{i}"));
    }
    Ok(report)
}
