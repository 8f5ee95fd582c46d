//! Files sealed in fixed-size frames, so that a byte range maps to the few frames that cover
//! it: a Parquet reader asking for a footer or a page decrypts those frames, never the file.
//!
//! ```text
//! [header (crate::header)][frame 0][frame 1]…[frame n-1]
//! frame i = AES-256-GCM(data key, nonce = 0⁴ ‖ i as u64 BE, aad = i as u64 BE ‖ last?) of
//!           FRAME plaintext bytes (the last frame: 1..=FRAME, or 0 for an empty file), then its tag
//! ```
//!
//! Every file has its own random data key, so the frame index is a unique nonce. The index in
//! the nonce and AAD stops frames from being swapped or moved; the "last" flag stops a file from
//! being cut at a frame boundary unnoticed. The plaintext length follows from the file length,
//! so a sealed object needs no side table.

use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, Nonce};

use crate::error::{Error, Kind, Result, io};
use crate::header::{FRAME_SHIFT, HEADER_LEN, Header, Layout};
use crate::key::{DataKey, MasterKey, TAG_LEN};

/// Plaintext bytes per frame (64 KiB).
pub const FRAME: u64 = 1 << FRAME_SHIFT;
const SEALED_FRAME: u64 = FRAME + TAG_LEN as u64;

/// Sealed size of `plain` bytes.
pub fn sealed_len(plain: u64) -> u64 {
    HEADER_LEN as u64 + plain + TAG_LEN as u64 * frames(plain)
}

fn frames(plain: u64) -> u64 {
    plain.div_ceil(FRAME).max(1)
}

/// Plaintext size of a sealed file of `sealed` bytes, or why no sealed file has that size.
pub fn plain_len(sealed: u64) -> Option<u64> {
    let body = sealed.checked_sub(HEADER_LEN as u64)?;
    let n = body.div_ceil(SEALED_FRAME).max(1);
    let last = body.checked_sub((n - 1) * SEALED_FRAME)?.checked_sub(TAG_LEN as u64)?;
    if last == 0 && n > 1 {
        return None;
    }
    Some(body - TAG_LEN as u64 * n)
}

fn nonce(i: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&i.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(i: u64, last: bool) -> [u8; 9] {
    let mut a = [0u8; 9];
    a[..8].copy_from_slice(&i.to_be_bytes());
    a[8] = u8::from(last);
    a
}

/// Seals a whole object at once (small files: metadata, filters).
pub fn seal(master: &MasterKey, plain: &[u8]) -> Vec<u8> {
    let mut w = FrameWriter::new(master, Vec::with_capacity(sealed_len(plain.len() as u64) as usize))
        .expect("writing to a Vec cannot fail");
    w.write_all(plain).expect("writing to a Vec cannot fail");
    w.finish().expect("writing to a Vec cannot fail")
}

/// A sealed file's data key and sizes: maps plaintext ranges to frames and opens them.
pub struct Frames {
    key: DataKey,
    plain_len: u64,
    frames: u64,
}

impl Frames {
    /// From a file's header and total (sealed) length.
    pub fn open(header_bytes: &[u8], sealed: u64, master: &MasterKey, what: &Path) -> Result<Frames> {
        let header = Header::parse(header_bytes, what)?;
        if header.layout() != Layout::Frames {
            return Err(Error::new(Kind::Corrupt, format!("{} is not a framed file", what.display())));
        }
        let plain_len = plain_len(sealed).ok_or_else(|| {
            Error::new(
                Kind::Corrupt,
                format!("{}: {sealed} bytes is no sealed file's length (cut short?)", what.display()),
            )
        })?;
        Ok(Frames { key: header.open(master, what)?, plain_len, frames: frames(plain_len) })
    }

    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// The sealed bytes that hold plaintext `range` (clamped to the file): whole frames.
    pub fn sealed_range(&self, range: &Range<u64>) -> Range<u64> {
        let (first, end) = self.frame_span(range);
        let start = HEADER_LEN as u64 + first * SEALED_FRAME;
        let stop = if end >= self.frames { sealed_len(self.plain_len) } else { HEADER_LEN as u64 + end * SEALED_FRAME };
        start..stop
    }

    /// Frames `[first, end)` covering `range`.
    fn frame_span(&self, range: &Range<u64>) -> (u64, u64) {
        let start = range.start.min(self.plain_len);
        let end = range.end.clamp(start, self.plain_len);
        let first = (start / FRAME).min(self.frames - 1);
        let last = if end > start { (end - 1) / FRAME } else { first };
        (first, last + 1)
    }

    /// Plaintext `range` from `sealed`, the bytes of [`Frames::sealed_range`] for it. A frame
    /// that fails its tag is an error: wrong bytes are never returned.
    pub fn open_range(&self, range: &Range<u64>, sealed: &[u8], what: &Path) -> Result<Vec<u8>> {
        let (first, end) = self.frame_span(range);
        let mut plain = Vec::with_capacity(((end - first) * FRAME) as usize);
        let mut at = 0usize;
        for i in first..end {
            let last = i + 1 == self.frames;
            let len = if last { (self.plain_len - i * FRAME) as usize + TAG_LEN } else { SEALED_FRAME as usize };
            let chunk =
                sealed.get(at..at + len).ok_or_else(|| Error::corrupt(format!("{}: frame {i}", what.display())))?;
            at += len;
            let mut buf = chunk.to_vec();
            let opened = self
                .key
                .0
                .open_in_place(nonce(i), Aad::from(aad(i, last)), &mut buf)
                .map_err(|_| Error::corrupt(format!("{}: frame {i}", what.display())))?;
            plain.extend_from_slice(opened);
        }
        let base = first * FRAME;
        let start = (range.start.min(self.plain_len) - base) as usize;
        let stop = (range.end.clamp(range.start.min(self.plain_len), self.plain_len) - base) as usize;
        plain.truncate(stop);
        plain.drain(..start);
        Ok(plain)
    }
}

/// Seals what is written to it, a frame at a time; [`FrameWriter::finish`] seals the last frame.
pub struct FrameWriter<W: Write> {
    out: W,
    key: DataKey,
    buf: Vec<u8>,
    index: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(master: &MasterKey, mut out: W) -> std::io::Result<FrameWriter<W>> {
        let (header, key) = Header::new(master, Layout::Frames);
        out.write_all(&header.encode())?;
        Ok(FrameWriter { out, key, buf: Vec::with_capacity(SEALED_FRAME as usize), index: 0 })
    }

    fn seal_frame(&mut self, len: usize, last: bool) -> std::io::Result<()> {
        let tag = self
            .key
            .0
            .seal_in_place_separate_tag(nonce(self.index), Aad::from(aad(self.index, last)), &mut self.buf[..len])
            .map_err(|_| std::io::Error::other("sealing a frame failed"))?;
        self.out.write_all(&self.buf[..len])?;
        self.out.write_all(tag.as_ref())?;
        self.buf.drain(..len);
        self.index += 1;
        Ok(())
    }

    /// Seals the last frame, flushes, and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        let len = self.buf.len();
        self.seal_frame(len, true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl FrameWriter<Vec<u8>> {
    /// Takes what has been sealed so far (streaming uploads send it as a part).
    pub fn take_sealed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        // A full frame is sealed only once a byte follows it: until then it may be the last.
        while self.buf.len() as u64 > FRAME {
            self.seal_frame(FRAME as usize, false)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A sealed local file read by plaintext range.
pub struct SealedFile {
    file: std::fs::File,
    frames: Frames,
    path: PathBuf,
}

impl SealedFile {
    pub fn open(file: std::fs::File, path: &Path, master: &MasterKey) -> Result<SealedFile> {
        let len = file.metadata().map_err(io(path))?.len();
        let mut header = vec![0u8; HEADER_LEN.min(len as usize)];
        file.read_exact_at(&mut header, 0).map_err(io(path))?;
        let frames = Frames::open(&header, len, master, path)?;
        Ok(SealedFile { file, frames, path: path.to_owned() })
    }

    pub fn len(&self) -> u64 {
        self.frames.plain_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn read_range(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let sealed = self.frames.sealed_range(&range);
        let mut buf = vec![0u8; (sealed.end - sealed.start) as usize];
        self.file.read_exact_at(&mut buf, sealed.start).map_err(io(&self.path))?;
        self.frames.open_range(&range, &buf, &self.path)
    }
}

#[cfg(test)]
mod tests;
