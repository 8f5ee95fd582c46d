//! The write-ahead log: the durability contract of Spoor.
//!
//! A record is `[magic u32][len u32][crc32c u32][payload]`, little-endian, where the CRC
//! covers the length field and the payload, so a flipped bit in either is caught. Records go to
//! numbered segment files (`00000000000000000001.wal`, …). One writer thread owns the open
//! segment: it drains every record queued while the previous fsync ran, writes them with one
//! `write`, and syncs once for all of them (group commit). Appenders wait for that sync.
//!
//! After a failed write or sync, the segment is cut back to its last synced length and never
//! written again; the next batch opens a fresh segment. So a failure is reported to exactly
//! the appenders whose data was affected, nothing half-written stays behind, and appends
//! resume on their own once the disk accepts writes again.
//!
//! Each append reports the segment its record went to. Once everything in the segments below
//! some number is durable elsewhere (in blocks), [`Wal::release_before`] deletes them.
//!
//! With a master key ([`Config::seal`]), a segment starts with an encryption header (its own
//! random data key, wrapped: `spoor_seal::Header`) and every payload is sealed on its own
//! (`spoor_seal::seal_record`) inside the same framing, so torn tails, corrupt records and
//! resuming at a record boundary work exactly as without; a record that passes its CRC but not
//! its authentication tag counts as corrupt. Without a key nothing changes, byte for byte.
//!
//! Other users of the same log format (the agent's persistent queue) need more: the exact
//! [`Position`] of each record ([`Wal::append_at`]), a callback that sees each record in log
//! order once it is durable ([`Wal::open_with_hook`]), and a reader that resumes at any record
//! boundary of one segment ([`SegmentReader`]).

pub mod queue;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use spoor_seal::{DataKey, Header, Layout, MasterKey};
use tokio::sync::{mpsc, oneshot};

const MAGIC: u32 = 0x5350_574C; // "SPWL"
const HEADER: usize = 12;
/// A record larger than this is refused at append and treated as corruption at replay.
pub const MAX_RECORD: usize = 256 << 20;
/// The largest length field a valid record has: a payload of [`MAX_RECORD`] bytes, sealed.
const MAX_STORED: usize = MAX_RECORD + spoor_seal::RECORD_OVERHEAD;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("WAL I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("WAL record of {0} bytes is over the {MAX_RECORD} byte limit")]
    TooLarge(usize),
    #[error("WAL is closed")]
    Closed,
    /// A wrong or missing key, or a sealed header that does not open (names the file).
    #[error("{0}")]
    Seal(#[from] spoor_seal::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync (fdatasync) before acknowledging: nothing acknowledged is lost on power loss.
    Fsync,
    /// Leave flushing to the OS: survives a process crash, not a power loss.
    Os,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub durability: Durability,
    /// Seal every segment under this master key; `None` writes plaintext.
    pub seal: Option<Arc<MasterKey>>,
}

/// Upper bounds (seconds) of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Counters the WAL keeps; the server renders them on `/metrics`.
#[derive(Default, Debug)]
pub struct Stats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub write_errors: AtomicU64,
    pub segments: AtomicU64,
    /// Cumulative counts per bucket of [`FSYNC_BUCKETS`], then the +Inf bucket.
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    pub fsync_nanos_sum: AtomicU64,
}

impl Stats {
    fn observe_fsync(&self, secs: f64) {
        let i = FSYNC_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(FSYNC_BUCKETS.len());
        self.fsync_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos_sum.fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
    }
}

/// Where a record landed: its segment and the byte offset of its header in the segment file.
/// Ordered like the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Bytes a record of `payload_len` bytes takes in a segment, header included.
pub fn framed_len(payload_len: usize) -> u64 {
    (HEADER + payload_len) as u64
}

/// Like [`framed_len`], for a log that is sealed (`sealed`) or not.
pub fn stored_len(payload_len: usize, sealed: bool) -> u64 {
    framed_len(payload_len + if sealed { spoor_seal::RECORD_OVERHEAD } else { 0 })
}

/// Called by the writer thread for each record once it is durable, in log order, before the
/// appender is answered; gets the payload back. It runs on the writer thread between group
/// commits, so it must be quick and must never wait for an append.
pub type OnDurable = Box<dyn FnMut(Position, Vec<u8>) + Send>;

enum Msg {
    Append {
        payload: Vec<u8>,
        done: oneshot::Sender<Result<Position, Error>>,
    },
    /// Start a new segment (if the open one holds anything) so the old one can be released.
    Rotate(oneshot::Sender<Result<u64, Error>>),
}

/// Handle for appending; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
    dir: PathBuf,
    /// Number of the segment being written; records appended from now on go there or later.
    active: Arc<AtomicU64>,
}

/// Joins the writer thread; dropping every [`Wal`] handle lets it finish.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits until every queued record is written and synced and the writer has exited.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Wal {
    /// Opens the WAL for appending in a new segment numbered after every existing one.
    /// Replay (see [`replay`]) must run first.
    pub fn open(config: Config) -> Result<(Wal, WriterThread), Error> {
        Self::open_inner(config, None)
    }

    /// Like [`Wal::open`], with `on_durable` called for every record once it is durable.
    pub fn open_with_hook(config: Config, on_durable: OnDurable) -> Result<(Wal, WriterThread), Error> {
        Self::open_inner(config, Some(on_durable))
    }

    fn open_inner(config: Config, on_durable: Option<OnDurable>) -> Result<(Wal, WriterThread), Error> {
        fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        let next = list_segments(&config.dir)?.last().map_or(1, |(n, _)| n + 1);
        let stats = Arc::new(Stats::default());
        let dir = config.dir.clone();
        let active = Arc::new(AtomicU64::new(next));
        let mut writer = Writer {
            config,
            next,
            file: None,
            stats: stats.clone(),
            buf: Vec::new(),
            active: active.clone(),
            on_durable,
        };
        writer.rotate()?;
        let (tx, rx) = mpsc::channel(4096);
        let handle = std::thread::Builder::new()
            .name("spoor-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Io { path: PathBuf::from("<thread>"), source: e })?;
        Ok((Wal { tx, stats, dir, active }, WriterThread(handle)))
    }

    /// Appends one record and returns, once it is durable (per the configured durability), the
    /// number of the segment that holds it.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, Error> {
        self.append_at(payload).await.map(|p| p.segment)
    }

    /// Like [`Wal::append`], returning the record's exact position.
    pub async fn append_at(&self, payload: Vec<u8>) -> Result<Position, Error> {
        if payload.len() > MAX_RECORD {
            return Err(Error::TooLarge(payload.len()));
        }
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Append { payload, done }).await.map_err(|_| Error::Closed)?;
        wait.await.map_err(|_| Error::Closed)?
    }

    /// The segment being written: a record appended from now on lands in it or a later one.
    pub fn active_segment(&self) -> u64 {
        self.active.load(Ordering::SeqCst)
    }

    /// Closes the open segment (when it holds records) and opens the next; returns the new
    /// active segment number. Lets an idle server release everything it has flushed.
    pub async fn rotate(&self) -> Result<u64, Error> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Rotate(done)).await.map_err(|_| Error::Closed)?;
        wait.await.map_err(|_| Error::Closed)?
    }

    /// Deletes every segment numbered below `segment` (never the active one). Returns how many
    /// were deleted.
    pub fn release_before(&self, segment: u64) -> Result<usize, Error> {
        let limit = segment.min(self.active_segment());
        let mut released = 0;
        for (n, path) in list_segments(&self.dir)? {
            if n >= limit {
                break;
            }
            fs::remove_file(&path).map_err(io(&path))?;
            released += 1;
        }
        if released > 0 {
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        }
        Ok(released)
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

struct Segment {
    file: File,
    path: PathBuf,
    len: u64,
    /// Where records begin: after the encryption header, if any.
    start: u64,
    key: Option<DataKey>,
}

struct Writer {
    config: Config,
    next: u64,
    file: Option<Segment>,
    stats: Arc<Stats>,
    buf: Vec<u8>,
    active: Arc<AtomicU64>,
    on_durable: Option<OnDurable>,
}

struct Append {
    payload: Vec<u8>,
    done: oneshot::Sender<Result<Position, Error>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch = Vec::new();
        let mut pending = None;
        loop {
            let first = match pending.take() {
                Some(m) => m,
                None => match rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                },
            };
            match first {
                Msg::Rotate(done) => {
                    let holds_records = self.file.as_ref().is_some_and(|s| s.len > s.start);
                    let result = if holds_records || self.file.is_none() { self.rotate() } else { Ok(()) };
                    let _ = done.send(result.map(|()| self.next - 1));
                    continue;
                }
                Msg::Append { payload, done } => batch.push(Append { payload, done }),
            }
            let mut bytes = batch[0].payload.len();
            while bytes < (8 << 20) {
                match rx.try_recv() {
                    Ok(Msg::Append { payload, done }) => {
                        bytes += payload.len();
                        batch.push(Append { payload, done });
                    }
                    Ok(rotate) => {
                        pending = Some(rotate);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut result = self.write_batch(&batch);
            let segment = self.next - 1;
            for a in batch.drain(..) {
                let _ = a.done.send(match &mut result {
                    Ok(offset) => {
                        let pos = Position { segment, offset: *offset };
                        *offset += stored_len(a.payload.len(), self.config.seal.is_some());
                        if let Some(hook) = &mut self.on_durable {
                            hook(pos, a.payload);
                        }
                        Ok(pos)
                    }
                    Err(e) => {
                        Err(Error::Io { path: self.config.dir.clone(), source: std::io::Error::other(e.to_string()) })
                    }
                });
            }
        }
        if let Some(seg) = &self.file {
            let _ = seg.file.sync_all();
        }
    }

    /// Writes and syncs one batch; returns the offset of its first record.
    fn write_batch(&mut self, batch: &[Append]) -> Result<u64, Error> {
        let sealed = self.config.seal.is_some();
        let size: u64 = batch.iter().map(|a| stored_len(a.payload.len(), sealed)).sum();
        let needs_new = match &self.file {
            None => true,
            Some(seg) => seg.len > seg.start && seg.len + size > self.config.segment_bytes,
        };
        if needs_new {
            self.rotate()?;
        }
        let seg = self.file.as_mut().expect("rotate opened a segment");
        self.buf.clear();
        match &seg.key {
            None => batch.iter().for_each(|a| encode_record(&a.payload, &mut self.buf)),
            Some(key) => {
                let mut sealed = Vec::new();
                for a in batch {
                    sealed.clear();
                    spoor_seal::seal_record(key, &a.payload, &mut sealed);
                    encode_record(&sealed, &mut self.buf);
                }
            }
        }
        let first = seg.len;
        let result = (|| {
            seg.file.write_all(&self.buf)?;
            if self.config.durability == Durability::Fsync {
                let start = Instant::now();
                seg.file.sync_data()?;
                self.stats.observe_fsync(start.elapsed().as_secs_f64());
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
        })();
        match result {
            Ok(()) => {
                seg.len += self.buf.len() as u64;
                self.stats.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.stats.bytes.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
                Ok(first)
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                // Cut the segment back to what was synced and abandon it: after a failed
                // fsync the page cache can no longer be trusted to match the disk.
                let _ = seg.file.set_len(seg.len);
                let _ = seg.file.sync_all();
                let path = seg.path.clone();
                if seg.len == seg.start {
                    // Nothing in it: don't leave an empty file per failed attempt while the disk is full.
                    let _ = fs::remove_file(&path);
                }
                self.file = None;
                Err(Error::Io { path, source: e })
            }
        }
    }

    fn rotate(&mut self) -> Result<(), Error> {
        if let Some(old) = self.file.take() {
            old.file.sync_all().map_err(io(&old.path))?;
        }
        let path = self.config.dir.join(segment_name(self.next));
        let mut file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io(&path))?;
        let (start, key) = match &self.config.seal {
            None => (0, None),
            Some(master) => {
                let (header, key) = Header::new(master, Layout::Records);
                if let Err(e) = file.write_all(&header.encode()).and_then(|()| file.sync_data()) {
                    let _ = fs::remove_file(&path);
                    return Err(io(&path)(e));
                }
                (spoor_seal::HEADER_LEN as u64, Some(key))
            }
        };
        // Make the new file's directory entry durable before any record in it is acknowledged.
        File::open(&self.config.dir).and_then(|d| d.sync_all()).map_err(io(&self.config.dir))?;
        self.active.store(self.next, Ordering::SeqCst);
        self.next += 1;
        self.stats.segments.fetch_add(1, Ordering::Relaxed);
        self.file = Some(Segment { file, path, len: start, start, key });
        Ok(())
    }
}

fn segment_name(n: u64) -> String {
    format!("{n:020}.wal")
}

/// The file of segment `n` in `dir`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(segment_name(n))
}

/// Appends one framed record to `buf`.
pub fn encode_record(payload: &[u8], buf: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else { continue };
        if let Ok(n) = stem.parse::<u64>() {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What a replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub segments: u64,
    pub records: u64,
    pub bytes: u64,
    /// Records whose checksum or framing was wrong in the middle of a segment; skipped.
    pub corrupt_records: u64,
    /// Bytes of incomplete records cut off the end of segments (torn writes).
    pub truncated_bytes: u64,
}

/// Reads every record of every segment, oldest first, and hands each payload to `apply` with
/// its segment number. A torn tail is truncated; a corrupt record in the middle is skipped and
/// counted.
pub fn replay(dir: &Path, apply: impl FnMut(u64, &[u8])) -> Result<ReplayStats, Error> {
    replay_sealed(dir, None, apply)
}

/// [`replay`] of a log sealed under `seal` (`None`: plaintext). A segment sealed under another
/// key, a sealed segment without a key, or a plaintext one with a key, is an error naming it.
pub fn replay_sealed(
    dir: &Path,
    seal: Option<&MasterKey>,
    mut apply: impl FnMut(u64, &[u8]),
) -> Result<ReplayStats, Error> {
    let mut stats = ReplayStats::default();
    for (segment, path) in list_segments(dir)? {
        let mut apply = |payload: &[u8]| apply(segment, payload);
        let mut data = Vec::new();
        File::open(&path).and_then(|mut f| f.read_to_end(&mut data)).map_err(io(&path))?;
        stats.segments += 1;
        let (start, key) = spoor_seal::log_start(&data, &path, seal)?;
        let valid_end = scan(&data, start, key.as_ref(), &mut stats, &mut apply);
        if valid_end < data.len() {
            stats.truncated_bytes += (data.len() - valid_end) as u64;
            let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
            f.set_len(valid_end as u64).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
        }
    }
    Ok(stats)
}

/// A complete, checksum-valid record at `pos`: its payload range.
fn record_at(data: &[u8], pos: usize) -> Option<(usize, usize)> {
    let header = data.get(pos..pos + HEADER)?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    if word(0) != MAGIC {
        return None;
    }
    let len = word(4) as usize;
    if len > MAX_STORED {
        return None;
    }
    let payload = data.get(pos + HEADER..pos + HEADER + len)?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[4..8]), payload);
    (crc == word(8)).then_some((pos + HEADER, pos + HEADER + len))
}

/// Applies the valid records of one segment from `start`; returns where the valid data ends.
fn scan(
    data: &[u8],
    start: usize,
    key: Option<&DataKey>,
    stats: &mut ReplayStats,
    apply: &mut impl FnMut(&[u8]),
) -> usize {
    let mut pos = start;
    let mut valid_end = start;
    while pos < data.len() {
        if let Some((start, end)) = record_at(data, pos) {
            match key {
                None => apply(&data[start..end]),
                Some(key) => match spoor_seal::open_record(key, &data[start..end]) {
                    Ok(plain) => apply(&plain),
                    // Its CRC holds but its tag does not: altered on purpose. Skip it like any
                    // corrupt record; never apply bytes that fail authentication.
                    Err(_) => {
                        stats.corrupt_records += 1;
                        pos = end;
                        valid_end = end;
                        continue;
                    }
                },
            }
            stats.records += 1;
            stats.bytes += (end - start) as u64;
            pos = end;
            valid_end = end;
            continue;
        }
        // Damage at `pos`. If a valid record follows, this was a corrupt record in the middle:
        // skip to it. If none does, it is a torn tail.
        let magic = MAGIC.to_le_bytes();
        let next = (pos + 1..data.len().saturating_sub(HEADER - 1))
            .find(|&p| data[p..p + 4] == magic && record_at(data, p).is_some());
        match next {
            Some(p) => {
                stats.corrupt_records += 1;
                pos = p;
            }
            None => break,
        }
    }
    valid_end
}

/// Bytes read from a segment at a time by [`SegmentReader`].
const READ_CHUNK: usize = 256 << 10;

/// Reads the records of one segment in log order from any record boundary, a chunk at a time
/// (the agent's queue reads back items that did not fit in memory, possibly from the segment
/// still being written). Damage is handled like [`replay`] does, without changing the file: a
/// corrupt record followed by a valid one is skipped and counted; damage with no valid record
/// after it, up to the limit, ends the segment and is counted as trailing bytes.
pub struct SegmentReader {
    file: File,
    path: PathBuf,
    pos: u64,
    /// Bytes of the file from `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    /// Corrupt records skipped so far.
    pub corrupt_records: u64,
    /// Damaged bytes at the end of the segment (or before the limit) with no valid record after them.
    pub trailing_bytes: u64,
    /// The master key of a sealed segment; its data key once the header has been read.
    seal: Option<Arc<MasterKey>>,
    key: Option<DataKey>,
    /// Where records start (after the header of a sealed segment).
    start: u64,
    /// The last record opened (sealed segments).
    plain: Vec<u8>,
}

impl SegmentReader {
    /// A reader of a plaintext segment.
    pub fn open(path: &Path) -> Result<SegmentReader, Error> {
        Self::open_sealed(path, None)
    }

    /// A reader of a segment sealed under `seal` (`None`: plaintext).
    pub fn open_sealed(path: &Path, seal: Option<Arc<MasterKey>>) -> Result<SegmentReader, Error> {
        let file = File::open(path).map_err(io(path))?;
        let start = if seal.is_some() { spoor_seal::HEADER_LEN as u64 } else { 0 };
        let mut reader = SegmentReader {
            file,
            path: path.to_owned(),
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
            corrupt_records: 0,
            trailing_bytes: 0,
            seal,
            key: None,
            start,
            plain: Vec::new(),
        };
        if reader.seal.is_none() {
            // A sealed segment read as plaintext: refuse rather than hand out ciphertext.
            let n = reader.fill(0, 4, u64::MAX)?;
            spoor_seal::log_start(&reader.buf[..n], path, None)?;
        } else {
            reader.load_key()?;
        }
        Ok(reader)
    }

    /// Reads the data key of a sealed segment once its header is on disk (a reader may open
    /// the segment being created); true when records can be read.
    fn load_key(&mut self) -> Result<bool, Error> {
        let Some(master) = self.seal.clone() else { return Ok(true) };
        if self.key.is_some() {
            return Ok(true);
        }
        let n = self.fill(0, spoor_seal::HEADER_LEN, u64::MAX)?;
        let head = &self.buf[..n];
        if n < spoor_seal::HEADER_LEN && spoor_seal::header::MAGIC.starts_with(&head[..n.min(4)]) {
            return Ok(false);
        }
        let (_, key) = spoor_seal::log_start(head, &self.path, Some(&master))?;
        self.key = key;
        Ok(true)
    }

    /// Where the next record is looked for: the end of the last one returned or skipped.
    pub fn position(&self) -> u64 {
        self.pos.max(self.start)
    }

    /// Continues at `offset`, which must be a record boundary (an earlier [`Position`] or
    /// [`SegmentReader::position`]).
    pub fn seek(&mut self, offset: u64) {
        self.pos = offset;
    }

    /// The next valid record at or after the position that ends at or before `limit` (a file
    /// offset; `u64::MAX` for the whole file), as its offset and payload; `None` at the end.
    pub fn next_record(&mut self, limit: u64) -> Result<Option<(u64, &[u8])>, Error> {
        if !self.load_key()? {
            return Ok(None); // a sealed segment whose header is not written yet: nothing in it
        }
        loop {
            let pos = self.pos.max(self.start);
            if let Some(len) = self.valid_at(pos, limit)? {
                self.pos = pos + framed_len(len);
                let start = (pos - self.buf_start) as usize + HEADER;
                let Some(key) = &self.key else {
                    return Ok(Some((pos, &self.buf[start..start + len])));
                };
                match spoor_seal::open_record(key, &self.buf[start..start + len]) {
                    Ok(plain) => {
                        self.plain = plain;
                        return Ok(Some((pos, &self.plain)));
                    }
                    Err(_) => {
                        self.corrupt_records += 1;
                        continue;
                    }
                }
            }
            if self.fill(pos, 1, limit)? == 0 {
                return Ok(None); // a clean end: more may be appended later
            }
            match self.resync(pos + 1, limit)? {
                Some(next) => {
                    self.corrupt_records += 1;
                    self.pos = next;
                }
                None => {
                    let end = self.file.metadata().map_err(io(&self.path))?.len().min(limit).max(pos);
                    self.trailing_bytes += end - pos;
                    self.pos = end;
                    return Ok(None);
                }
            }
        }
    }

    /// Makes the buffer hold the file from `start` on, at least `want` bytes where the file and
    /// `limit` allow; returns how many bytes from `start` it holds (below `limit`).
    fn fill(&mut self, start: u64, want: usize, limit: u64) -> Result<usize, Error> {
        if start >= limit {
            return Ok(0);
        }
        let want_end = start.saturating_add(want as u64).min(limit);
        let buf_end = self.buf_start + self.buf.len() as u64;
        if start >= self.buf_start && want_end <= buf_end {
            return Ok((buf_end.min(limit) - start) as usize);
        }
        let len = (want.max(READ_CHUNK) as u64).min(limit - start) as usize;
        if self.buf.capacity() > 4 * READ_CHUNK && len <= READ_CHUNK {
            self.buf = Vec::new(); // don't keep a huge record's buffer around
        }
        self.buf.clear();
        self.buf.resize(len, 0);
        self.buf_start = start;
        let mut got = 0;
        while got < len {
            match self.file.read_at(&mut self.buf[got..], start + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    return Err(io(&self.path)(e));
                }
            }
        }
        self.buf.truncate(got);
        Ok(got)
    }

    /// The payload length of the complete, checksum-valid record at `pos`, if there is one.
    fn valid_at(&mut self, pos: u64, limit: u64) -> Result<Option<usize>, Error> {
        if self.fill(pos, HEADER, limit)? < HEADER {
            return Ok(None);
        }
        let i = (pos - self.buf_start) as usize;
        let word = |buf: &[u8], at: usize| u32::from_le_bytes(buf[i + at..i + at + 4].try_into().unwrap());
        let len = word(&self.buf, 4) as usize;
        if word(&self.buf, 0) != MAGIC || len > MAX_STORED || self.fill(pos, HEADER + len, limit)? < HEADER + len {
            return Ok(None);
        }
        let i = (pos - self.buf_start) as usize;
        let (header, payload) = self.buf[i..i + HEADER + len].split_at(HEADER);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[4..8]), payload);
        Ok((crc.to_le_bytes() == header[8..12]).then_some(len))
    }

    /// The first valid record at or after `from`, if any before `limit`.
    fn resync(&mut self, mut from: u64, limit: u64) -> Result<Option<u64>, Error> {
        let magic = MAGIC.to_le_bytes();
        loop {
            let n = self.fill(from, HEADER, limit)?;
            if n < HEADER {
                return Ok(None);
            }
            let i = (from - self.buf_start) as usize;
            match self.buf[i..i + n].windows(4).position(|w| w == magic) {
                Some(k) => {
                    let candidate = from + k as u64;
                    if self.valid_at(candidate, limit)?.is_some() {
                        return Ok(Some(candidate));
                    }
                    from = candidate + 1;
                }
                None => from += (n - 3) as u64,
            }
        }
    }
}

#[cfg(test)]
mod tests;
