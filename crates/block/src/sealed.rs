//! A sealed local block file (`spoor_seal` frames) as Parquet's `ChunkReader`: compaction
//! reads its downloaded inputs through this when encryption at rest is on, so no plaintext
//! copy of a block ever lands on disk.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};
use spoor_seal::{FRAME, SealedFile};

/// Plaintext kept per sequential reader: 16 frames (1 MiB).
const READ_AHEAD: u64 = 16 * FRAME;

#[derive(Clone)]
pub struct SealedChunks(pub Arc<SealedFile>);

impl Length for SealedChunks {
    fn len(&self) -> u64 {
        self.0.len()
    }
}

fn external(e: spoor_seal::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl ChunkReader for SealedChunks {
    type T = SealedRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<SealedRead> {
        Ok(SealedRead { file: self.0.clone(), pos: start, buf: Vec::new(), buf_start: 0 })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let end = start.checked_add(length as u64).filter(|e| *e <= self.0.len());
        let end = end.ok_or_else(|| ParquetError::EOF(format!("{length} bytes at {start} past the end")))?;
        Ok(Bytes::from(self.0.read_range(start..end).map_err(external)?))
    }
}

/// Reads on from a position, a frame-aligned megabyte at a time (small reads do not each open
/// a frame).
pub struct SealedRead {
    file: Arc<SealedFile>,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl Read for SealedRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let len = self.file.len();
        if self.pos >= len || out.is_empty() {
            return Ok(0);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos >= buf_end {
            let start = self.pos - self.pos % FRAME;
            let end = (start + READ_AHEAD).min(len);
            self.buf = self.file.read_range(start..end).map_err(std::io::Error::other)?;
            self.buf_start = start;
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}
