//! The agent's persistent queue: processed requests wait here, on disk, until they are
//! delivered downstream. A push returns once its item is durable (group-committed through the
//! WAL), so whatever the agent acknowledged survives a downstream outage and a `kill -9`.
//!
//! On disk, in `dir`:
//! - `NNNNNNNNNNNNNNNNNNNN.wal`: WAL segments (this crate's format), one record per item, its payload
//!   `[version u8 = 1][pushed at, unix ms, u64 LE][item]`. An item's id is its record's
//!   position (segment, byte offset): stable across restarts.
//! - `NNNNNNNNNNNNNNNNNNNN.acks`: that segment's ack log, one WAL-framed record per acked item
//!   (`[offset u64 LE][pushed at u64 LE]`), written with `write(2)` and never fsynced: an ack
//!   lost to a power cut only means a duplicate delivery.
//! - `LOCK`: `flock`ed while the queue is open.
//!
//! A segment is deleted (segment file first, then its ack log) once it is sealed and every item
//! in it is acked. Opening scans every segment: items not acked are queued again in order,
//! corrupt records are skipped and counted, and segments with nothing left are deleted.
//!
//! Memory: payloads held by the queue (ready to hand out, or given back with [`Queue::nack`])
//! stay under `memory_bytes` (one item is always allowed). A push goes straight to the ready
//! list when the reader has caught up and there is room; otherwise a reader thread reads items
//! back from disk, in order, as room frees up. Besides payloads the queue keeps a few words per
//! segment, per item in flight, and per item acked before the last restart (until its segment
//! is read).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Position, SegmentReader, Wal, WriterThread};
use bytes::Bytes;
use tokio::sync::{Notify, watch};

const ITEM_VERSION: u8 = 1;
/// Version byte and push time in front of every item.
const ITEM_HEADER: usize = 9;

#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub dir: PathBuf,
    /// Cap on the queue's segment files; a push beyond it is refused with [`QueueError::Full`].
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub durability: crate::Durability,
    /// Cap on payload bytes kept in memory for fast dispatch; the rest is read back from disk.
    pub memory_bytes: usize,
    /// Seal the segments (the items) under this master key; `None`: plaintext. Ack logs hold
    /// only offsets and times and stay plaintext.
    pub seal: Option<Arc<spoor_seal::MasterKey>>,
}

/// Where an item's record is: stable across restarts, ordered like the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId {
    pub segment: u64,
    pub offset: u64,
}

impl From<Position> for ItemId {
    fn from(p: Position) -> ItemId {
        ItemId { segment: p.segment, offset: p.offset }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub id: ItemId,
    pub payload: Bytes,
    pub pushed_at_unix_ms: u64,
    /// 0 the first time; more if it was handed out before (nacked: one more than then; found
    /// again after a restart: 1, as it may have been in flight at the crash).
    pub attempts_hint: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// Items not acked yet: queued and in flight.
    pub items: u64,
    /// Their payload bytes.
    pub bytes: u64,
    pub in_flight: u64,
    /// Age of the oldest item not acked, from its push time (0 when empty).
    pub oldest_age_seconds: f64,
    pub pushed_total: u64,
    pub acked_total: u64,
    /// Corrupt records skipped (at open, or found while reading back).
    pub corrupt_total: u64,
    /// Pushes refused with [`QueueError::Full`].
    pub full_total: u64,
    /// Payload bytes held in memory (ready or nacked).
    pub memory_bytes: u64,
    /// Bytes of the segment files, counted against `max_bytes`.
    pub disk_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("persistent queue is full ({max_bytes} bytes on disk); retry later")]
    Full { max_bytes: u64 },
    #[error("persistent queue I/O error: {0}")]
    Io(String),
    #[error("persistent queue is closed")]
    Closed,
}

impl From<crate::Error> for QueueError {
    fn from(e: crate::Error) -> QueueError {
        match e {
            crate::Error::Closed => QueueError::Closed,
            e => QueueError::Io(e.to_string()),
        }
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> QueueError {
    move |e| QueueError::Io(format!("cannot {what} {}: {e}", path.display()))
}

/// Handle to the queue; clones share it.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    max_bytes: u64,
    threads: Mutex<Option<(WriterThread, JoinHandle<()>)>>,
    lock_file: Mutex<Option<File>>,
}

/// What the WAL writer thread (through its hook) and the reader thread share with the handles.
struct Shared {
    state: Mutex<State>,
    /// Wakes the reader thread: room in memory, new records, close.
    reader_wake: Condvar,
    /// Wakes waiting pops.
    items_ready: Notify,
    memory_cap: usize,
    seal: Option<Arc<spoor_seal::MasterKey>>,
}

struct State {
    dir: PathBuf,
    wal: Option<Wal>,
    closed: bool,
    segments: BTreeMap<u64, Segment>,
    /// Segments below this number get no more records (the WAL has moved past them).
    sealed_below: u64,
    /// The next record not yet in `ready` nor handed out.
    cursor: Position,
    /// The reader thread is reading at `cursor` (so the hook must not move it).
    reading: bool,
    reader_waiting: bool,
    /// Size of the record the reader found no room for.
    reader_wants: usize,
    ready: VecDeque<Item>,
    /// Given back; handed out again first, in queue order.
    nacked: BTreeMap<ItemId, Item>,
    in_flight: HashMap<ItemId, InFlight>,
    /// Payload bytes in `ready` and `nacked`.
    memory: usize,
    /// On-disk bytes of pushes being written.
    reserved: u64,
    disk: u64,
    items: u64,
    bytes: u64,
    pushed_total: u64,
    acked_total: u64,
    corrupt_total: u64,
    full_total: u64,
    rotating: bool,
}

#[derive(Default)]
struct Segment {
    /// Valid records in it.
    records: u64,
    /// Records never to be handed out again: acked, or skipped as malformed.
    done: u64,
    /// Records the reader has gone past (handed out, or skipped).
    seen: u64,
    /// End of the last valid record: the reader stops there.
    end: u64,
    file_bytes: u64,
    /// Found at open (rather than written by this process).
    recovered: bool,
    /// Recovered segments: offsets done before the restart, for the reader to skip.
    skip: HashSet<u64>,
    acks: Option<File>,
    finished: bool,
}

struct InFlight {
    len: u64,
    pushed_at: u64,
    attempts: u32,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn encode_item(pushed_at: u64, item: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(ITEM_HEADER + item.len());
    record.push(ITEM_VERSION);
    record.extend_from_slice(&pushed_at.to_le_bytes());
    record.extend_from_slice(item);
    record
}

/// The push time of a well-formed item record.
fn decode_item(record: &[u8]) -> Option<u64> {
    match record {
        [ITEM_VERSION, t @ ..] if t.len() >= 8 => Some(u64::from_le_bytes(t[..8].try_into().unwrap())),
        _ => None,
    }
}

fn acks_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.acks"))
}

fn encode_ack(offset: u64, pushed_at: u64) -> Vec<u8> {
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(&offset.to_le_bytes());
    payload[8..].copy_from_slice(&pushed_at.to_le_bytes());
    let mut buf = Vec::with_capacity(32);
    crate::encode_record(&payload, &mut buf);
    buf
}

/// The acks of one segment: offset → push time of the acked item (both must match, so an ack
/// log can never apply to another incarnation of its segment number).
fn read_acks(dir: &Path, segment: u64) -> Result<HashMap<u64, u64>, QueueError> {
    let path = acks_path(dir, segment);
    let mut out = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let mut reader = SegmentReader::open(&path)?;
    while let Some((_, p)) = reader.next_record(u64::MAX)? {
        if p.len() == 16 {
            out.insert(u64::from_le_bytes(p[..8].try_into().unwrap()), u64::from_le_bytes(p[8..].try_into().unwrap()));
        }
    }
    Ok(out)
}

/// Deletes a segment and its ack log, segment first: a crash in between leaves an ack log
/// without a segment, which [`Queue::open`] removes before the number can be used again (the
/// other order would leave a segment whose acked items come back).
fn delete_segment_files(dir: &Path, segment: u64) -> Result<(), QueueError> {
    for path in [crate::segment_path(dir, segment), acks_path(dir, segment)] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("delete", &path)(e)),
            _ => {}
        }
    }
    Ok(())
}

impl State {
    fn sealed(&self, segment: u64) -> bool {
        segment < self.sealed_below || self.segments.range(segment + 1..).next().is_some()
    }

    fn room_for(&self, len: usize, cap: usize) -> bool {
        self.memory == 0 || self.memory + len <= cap
    }

    /// Moves the cursor past segments read to their end that will not grow.
    fn normalize(&mut self) {
        loop {
            let seg = self.cursor.segment;
            if let Some(g) = self.segments.get(&seg) {
                if self.cursor.offset < g.end || !self.sealed(seg) {
                    return;
                }
                if !g.finished {
                    self.finish(seg);
                }
            }
            match self.segments.range(seg + 1..).next() {
                Some((&next, _)) => self.cursor = Position { segment: next, offset: 0 },
                None => return,
            }
        }
    }

    /// The reader went past the end of a sealed segment.
    fn finish(&mut self, seg: u64) {
        let Some(g) = self.segments.get_mut(&seg) else { return };
        g.finished = true;
        if g.seen < g.records {
            // Records damaged since they were written: they could not be handed out.
            let lost = g.records - g.seen;
            g.records = g.seen;
            self.items = self.items.saturating_sub(lost);
        }
        self.maybe_delete(seg);
    }

    fn maybe_delete(&mut self, seg: u64) {
        match self.segments.get(&seg) {
            Some(g) if g.done >= g.records && self.sealed(seg) => {}
            _ => return,
        }
        let g = self.segments.remove(&seg).expect("checked above");
        self.disk = self.disk.saturating_sub(g.file_bytes);
        drop(g.acks);
        if let Err(e) = delete_segment_files(&self.dir, seg) {
            tracing::warn!(error = %e, segment = seg, "cannot reclaim a fully acked queue segment");
        }
    }

    fn maybe_delete_all(&mut self) {
        let keys: Vec<u64> = self.segments.keys().copied().collect();
        for k in keys {
            self.maybe_delete(k);
        }
    }

    /// Takes what the reader thread read at `at`; true when an item became ready.
    fn take_read(&mut self, at: Position, read: Read, cap: usize) -> bool {
        let Some(recovered) = self.segments.get(&at.segment).map(|g| g.recovered) else { return false };
        if self.cursor != at {
            return false; // cannot happen while `reading` holds the cursor
        }
        if !recovered {
            // Damage found at open was counted then.
            self.corrupt_total += read.corrupt + u64::from(read.trailing);
        }
        let Some((offset, record)) = read.record else {
            self.cursor.offset = self.segments.get(&at.segment).map_or(at.offset, |g| g.end);
            return false;
        };
        let pushed_at = decode_item(&record);
        let len = record.len().saturating_sub(ITEM_HEADER);
        let g = self.segments.get_mut(&at.segment).expect("checked above");
        if recovered && g.skip.remove(&offset) {
            g.seen += 1;
            self.cursor.offset = read.next;
            return false;
        }
        let Some(pushed_at) = pushed_at else {
            g.seen += 1;
            g.done += 1;
            self.corrupt_total += 1;
            self.items = self.items.saturating_sub(1);
            self.cursor.offset = read.next;
            return false;
        };
        if !self.room_for(len, cap) {
            // Read again once pops make room; past any damage already counted.
            self.cursor.offset = offset;
            self.reader_wants = len;
            return false;
        }
        if let Some(g) = self.segments.get_mut(&at.segment) {
            g.seen += 1;
        }
        self.reader_wants = 0;
        self.cursor.offset = read.next;
        self.memory += len;
        self.ready.push_back(Item {
            id: ItemId { segment: at.segment, offset },
            payload: Bytes::from(record).slice(ITEM_HEADER..),
            pushed_at_unix_ms: pushed_at,
            attempts_hint: u32::from(recovered),
        });
        true
    }

    fn take(&mut self) -> Option<Item> {
        let item = match self.nacked.pop_first() {
            Some((_, item)) => item,
            None => self.ready.pop_front()?,
        };
        self.memory -= item.payload.len();
        let flight = InFlight {
            len: item.payload.len() as u64,
            pushed_at: item.pushed_at_unix_ms,
            attempts: item.attempts_hint,
        };
        self.in_flight.insert(item.id, flight);
        Some(item)
    }

    /// The active segment holds records, all acked: rotating would let it go.
    fn active_reclaimable(&self) -> Option<u64> {
        let (&seg, g) = self.segments.last_key_value()?;
        (!self.sealed(seg) && g.records > 0 && g.done >= g.records).then_some(seg)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs on the WAL writer thread for every item once durable, in log order.
    fn on_durable(&self, pos: Position, record: Vec<u8>) {
        let framed = crate::stored_len(record.len(), self.seal.is_some());
        let pushed_at = decode_item(&record).unwrap_or(0);
        let header = record.len().min(ITEM_HEADER);
        let len = record.len() - header;
        let mut st = self.lock();
        st.reserved = st.reserved.saturating_sub(framed);
        st.disk += framed;
        st.items += 1;
        st.bytes += len as u64;
        st.pushed_total += 1;
        let new_segment = !st.segments.contains_key(&pos.segment);
        let g = st.segments.entry(pos.segment).or_default();
        g.records += 1;
        g.end = pos.offset + framed;
        g.file_bytes = g.end;
        if new_segment {
            // The segments before it are sealed now; those all acked can go.
            st.maybe_delete_all();
        }
        st.normalize();
        if !st.reading && st.cursor == pos && st.room_for(len, self.memory_cap) {
            if let Some(g) = st.segments.get_mut(&pos.segment) {
                g.seen += 1;
            }
            st.cursor.offset = pos.offset + framed;
            st.memory += len;
            st.ready.push_back(Item {
                id: pos.into(),
                payload: Bytes::from(record).slice(header..),
                pushed_at_unix_ms: pushed_at,
                attempts_hint: 0,
            });
            drop(st);
            self.items_ready.notify_one();
        } else if st.reader_waiting {
            drop(st);
            self.reader_wake.notify_one();
        }
    }

    /// Stops handing out and pushing; lets the WAL writer exit.
    fn shut(&self) {
        let wal = {
            let mut st = self.lock();
            st.closed = true;
            st.wal.take()
        };
        drop(wal);
        self.reader_wake.notify_all();
        self.items_ready.notify_waiters();
    }
}

/// What the reader thread read at the cursor.
struct Read {
    record: Option<(u64, Vec<u8>)>,
    /// Where the next record is looked for.
    next: u64,
    corrupt: u64,
    trailing: bool,
}

fn read_at(
    reader: &mut Option<(u64, SegmentReader)>,
    dir: &Path,
    seal: &Option<Arc<spoor_seal::MasterKey>>,
    at: Position,
    limit: u64,
) -> Result<Read, crate::Error> {
    let r = match reader {
        Some((seg, r)) if *seg == at.segment => r,
        _ => {
            let path = crate::segment_path(dir, at.segment);
            &mut reader.insert((at.segment, SegmentReader::open_sealed(&path, seal.clone())?)).1
        }
    };
    if r.position() != at.offset {
        r.seek(at.offset);
    }
    let (corrupt, trailing) = (r.corrupt_records, r.trailing_bytes);
    let record = r.next_record(limit)?.map(|(offset, payload)| (offset, payload.to_vec()));
    Ok(Read { record, next: r.position(), corrupt: r.corrupt_records - corrupt, trailing: r.trailing_bytes > trailing })
}

/// Reads items back from disk into the ready list while there is room.
fn reader_thread(shared: Arc<Shared>) {
    let mut reader = None;
    let mut st = shared.lock();
    let dir = st.dir.clone();
    loop {
        if st.closed {
            return;
        }
        st.normalize();
        let at = st.cursor;
        let limit = st.segments.get(&at.segment).map(|g| g.end).filter(|&end| at.offset < end);
        let Some(limit) = limit.filter(|_| st.room_for(st.reader_wants, shared.memory_cap)) else {
            st.reader_waiting = true;
            st = shared.reader_wake.wait(st).unwrap_or_else(|e| e.into_inner());
            st.reader_waiting = false;
            continue;
        };
        st.reading = true;
        drop(st);
        let read = read_at(&mut reader, &dir, &shared.seal, at, limit);
        st = shared.lock();
        st.reading = false;
        match read {
            Ok(read) => {
                if st.take_read(at, read, shared.memory_cap) {
                    shared.items_ready.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, segment = at.segment, "cannot read queued items back; retrying");
                reader = None;
                st = shared.reader_wake.wait_timeout(st, Duration::from_secs(1)).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }
}

/// One queue per directory: a second process would interleave segments.
fn lock_dir(dir: &Path) -> Result<File, QueueError> {
    let path = dir.join("LOCK");
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err("open", &path))?;
    // SAFETY: flock on a valid, owned file descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(QueueError::Io(format!("queue directory {} is in use by another process", dir.display())));
    }
    Ok(file)
}

/// What opening found in the segments.
#[derive(Default)]
struct Recovered {
    segments: BTreeMap<u64, Segment>,
    items: u64,
    bytes: u64,
    corrupt: u64,
    disk: u64,
}

fn recover(dir: &Path, seal: &Option<Arc<spoor_seal::MasterKey>>) -> Result<Recovered, QueueError> {
    let listed = crate::list_segments(dir)?;
    // Ack logs whose segment is gone (a crash while deleting): remove them before the WAL can
    // reuse their numbers.
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".acks")).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if !listed.iter().any(|(s, _)| *s == n) {
            fs::remove_file(entry.path()).map_err(io_err("delete", &entry.path()))?;
        }
    }
    let mut out = Recovered::default();
    let last = listed.last().map(|(n, _)| *n);
    for (n, path) in listed {
        let acks = read_acks(dir, n)?;
        let mut g = Segment { recovered: true, ..Segment::default() };
        g.file_bytes = fs::metadata(&path).map_err(io_err("read", &path))?.len();
        let mut reader = SegmentReader::open_sealed(&path, seal.clone())?;
        let (mut items, mut bytes, mut malformed) = (0, 0, 0);
        while let Some((offset, record)) = reader.next_record(u64::MAX)? {
            g.records += 1;
            g.end = offset + crate::stored_len(record.len(), seal.is_some());
            match decode_item(record) {
                Some(t) if acks.get(&offset) != Some(&t) => {
                    items += 1;
                    bytes += (record.len() - ITEM_HEADER) as u64;
                }
                found => {
                    malformed += u64::from(found.is_none());
                    g.skip.insert(offset);
                    g.done += 1;
                }
            }
        }
        let mut corrupt = reader.corrupt_records + malformed;
        if reader.trailing_bytes > 0 {
            if Some(n) == last {
                // The segment being written at the crash: a torn write no push was answered
                // for. Cut it off, so that it is not taken for damage once newer segments exist.
                tracing::info!(segment = n, bytes = reader.trailing_bytes, "queue: cutting off a torn tail");
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err("open", &path))?;
                f.set_len(g.end).and_then(|()| f.sync_all()).map_err(io_err("truncate", &path))?;
                g.file_bytes = g.end;
            } else {
                corrupt += 1;
            }
        }
        if corrupt > 0 {
            tracing::warn!(segment = n, records = corrupt, "queue: skipped corrupt records");
        }
        out.corrupt += corrupt;
        if items == 0 {
            delete_segment_files(dir, n)?;
            continue;
        }
        out.items += items;
        out.bytes += bytes;
        out.disk += g.file_bytes;
        out.segments.insert(n, g);
    }
    Ok(out)
}

impl Queue {
    /// Opens or recovers: every item that was not acked before a crash (including ones in
    /// flight) is queued again, in order. Corrupted records are skipped, counted and their
    /// space reclaimed. Reads every segment, so on a large queue this takes a while: call it
    /// from a blocking context.
    pub fn open(cfg: QueueConfig) -> Result<Queue, QueueError> {
        fs::create_dir_all(&cfg.dir).map_err(io_err("create", &cfg.dir))?;
        let lock_file = lock_dir(&cfg.dir)?;
        let found = recover(&cfg.dir, &cfg.seal)?;
        if found.items > 0 {
            tracing::info!(items = found.items, bytes = found.bytes, "queue: recovered items not yet delivered");
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                dir: cfg.dir.clone(),
                wal: None,
                closed: false,
                segments: found.segments,
                sealed_below: 0,
                cursor: Position { segment: 0, offset: 0 },
                reading: false,
                reader_waiting: false,
                reader_wants: 0,
                ready: VecDeque::new(),
                nacked: BTreeMap::new(),
                in_flight: HashMap::new(),
                memory: 0,
                reserved: 0,
                disk: found.disk,
                items: found.items,
                bytes: found.bytes,
                pushed_total: 0,
                acked_total: 0,
                corrupt_total: found.corrupt,
                full_total: 0,
                rotating: false,
            }),
            reader_wake: Condvar::new(),
            items_ready: Notify::new(),
            memory_cap: cfg.memory_bytes,
            seal: cfg.seal.clone(),
        });
        let hook_shared = shared.clone();
        let wal_cfg = crate::Config {
            dir: cfg.dir.clone(),
            segment_bytes: cfg.segment_bytes,
            durability: cfg.durability,
            seal: cfg.seal.clone(),
        };
        let (wal, writer) =
            Wal::open_with_hook(wal_cfg, Box::new(move |pos, record| hook_shared.on_durable(pos, record)))?;
        {
            let mut st = shared.lock();
            st.sealed_below = wal.active_segment();
            st.cursor = Position { segment: st.segments.keys().next().copied().unwrap_or(st.sealed_below), offset: 0 };
            st.wal = Some(wal);
        }
        let reader_shared = shared.clone();
        let reader = match std::thread::Builder::new()
            .name("spoor-queue-read".into())
            .spawn(move || reader_thread(reader_shared))
        {
            Ok(reader) => reader,
            Err(e) => {
                shared.shut(); // the hook holds `shared`, which holds the WAL: break the cycle
                return Err(QueueError::Io(format!("cannot start the queue reader thread: {e}")));
            }
        };
        Ok(Queue {
            inner: Arc::new(Inner {
                shared,
                max_bytes: cfg.max_bytes,
                threads: Mutex::new(Some((writer, reader))),
                lock_file: Mutex::new(Some(lock_file)),
            }),
        })
    }

    /// Durable when it returns Ok (group-committed with concurrent pushes). Full (`max_bytes`
    /// reached) → [`QueueError::Full`] at once; I/O error → [`QueueError::Io`].
    pub async fn push(&self, item: Vec<u8>) -> Result<(), QueueError> {
        let shared = &self.inner.shared;
        let framed = crate::stored_len(ITEM_HEADER + item.len(), shared.seal.is_some());
        let mut rotated = false;
        let wal = loop {
            // The guard must not live across an await: decide in a block.
            let rotate = {
                let mut st = shared.lock();
                if st.closed {
                    return Err(QueueError::Closed);
                }
                if st.disk + st.reserved + framed <= self.inner.max_bytes {
                    st.reserved += framed;
                    break st.wal.clone().ok_or(QueueError::Closed)?;
                }
                // The open segment may hold nothing but acked items: rotating lets it go.
                match (rotated || st.rotating, st.active_reclaimable(), st.wal.clone()) {
                    (false, Some(seg), Some(wal)) => {
                        st.rotating = true;
                        (seg, wal)
                    }
                    _ => {
                        st.full_total += 1;
                        return Err(QueueError::Full { max_bytes: self.inner.max_bytes });
                    }
                }
            };
            let (seg, wal) = rotate;
            let next = wal.rotate().await;
            let mut st = shared.lock();
            st.rotating = false;
            match next {
                Ok(next) => {
                    st.sealed_below = st.sealed_below.max(next);
                    st.maybe_delete(seg);
                    st.normalize();
                }
                Err(e) => tracing::warn!(error = %e, "queue: cannot rotate the WAL to reclaim space"),
            }
            rotated = true;
        };
        match wal.append_at(encode_item(now_ms(), &item)).await {
            Ok(_) => Ok(()), // the hook has queued it
            Err(e) => {
                let mut st = shared.lock();
                st.reserved = st.reserved.saturating_sub(framed);
                Err(e.into())
            }
        }
    }

    /// Next item in FIFO order, waiting until one is available or `stop` flips to true (→
    /// None; also when the queue is closed). Each item is handed out once.
    pub async fn pop(&self, stop: &mut watch::Receiver<bool>) -> Option<Item> {
        let shared = &self.inner.shared;
        loop {
            if *stop.borrow_and_update() {
                return None;
            }
            let notified = shared.items_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = shared.lock();
                if st.closed {
                    return None;
                }
                if let Some(item) = st.take() {
                    let more = !st.ready.is_empty() || !st.nacked.is_empty();
                    let wake_reader = st.reader_waiting;
                    drop(st);
                    if more {
                        shared.items_ready.notify_one();
                    }
                    if wake_reader {
                        shared.reader_wake.notify_one();
                    }
                    return Some(item);
                }
            }
            tokio::select! {
                () = &mut notified => {}
                changed = stop.changed() => if changed.is_err() {
                    return None; // nobody can flip it any more: treat as stopping
                },
            }
        }
    }

    /// Done with an item (delivered, or failed permanently): never handed out again, even
    /// after a restart (its ack is written to the OS before this returns; only a power cut
    /// can lose it), and its space is reclaimed once its segment is all acked.
    pub fn ack(&self, id: ItemId) {
        let mut guard = self.inner.shared.lock();
        let st = &mut *guard;
        let Some(flight) = st.in_flight.remove(&id) else { return };
        st.items = st.items.saturating_sub(1);
        st.bytes = st.bytes.saturating_sub(flight.len);
        st.acked_total += 1;
        let sealed = st.sealed(id.segment);
        let Some(g) = st.segments.get_mut(&id.segment) else { return };
        g.done += 1;
        if sealed && g.done >= g.records {
            st.maybe_delete(id.segment); // no need to log an ack for a segment about to go
            return;
        }
        let path = acks_path(&st.dir, id.segment);
        let file = match &mut g.acks {
            Some(f) => f,
            None => match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => g.acks.insert(f),
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "queue: cannot log an ack; the item may be delivered again after a restart");
                    return;
                }
            },
        };
        if let Err(e) = file.write_all(&encode_ack(id.offset, flight.pushed_at)) {
            tracing::warn!(error = %e, path = %path.display(), "queue: cannot log an ack; the item may be delivered again after a restart");
        }
    }

    /// Gives an item back (e.g. shutdown while in flight): it is handed out again first.
    pub fn nack(&self, item: Item) {
        let mut st = self.inner.shared.lock();
        let Some(flight) = st.in_flight.remove(&item.id) else { return };
        st.memory += item.payload.len();
        st.nacked.insert(item.id, Item { attempts_hint: flight.attempts.saturating_add(1), ..item });
        drop(st);
        self.inner.shared.items_ready.notify_one();
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.inner.shared.lock();
        let oldest = (st.in_flight.values().map(|f| f.pushed_at))
            .chain(st.nacked.values().map(|i| i.pushed_at_unix_ms))
            .chain(st.ready.front().map(|i| i.pushed_at_unix_ms))
            .min();
        QueueStats {
            items: st.items,
            bytes: st.bytes,
            in_flight: st.in_flight.len() as u64,
            oldest_age_seconds: oldest.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0),
            pushed_total: st.pushed_total,
            acked_total: st.acked_total,
            corrupt_total: st.corrupt_total,
            full_total: st.full_total,
            memory_bytes: st.memory as u64,
            disk_bytes: st.disk,
        }
    }

    /// Syncs and stops the writer (for clean shutdown): pushes fail with
    /// [`QueueError::Closed`] and pops return None from now on; items not acked are found
    /// again by the next [`Queue::open`]. Blocks until the writer thread has synced (at most
    /// a few seconds).
    pub fn close(&self) {
        self.inner.shared.shut();
        {
            let mut st = self.inner.shared.lock();
            for g in st.segments.values_mut() {
                if let Some(f) = g.acks.take() {
                    let _ = f.sync_data();
                }
            }
        }
        let threads = self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((writer, reader)) = threads {
            let _ = reader.join();
            // A push still holding the WAL (its task not polled again) would keep the writer
            // alive: wait a bounded time rather than hang the shutdown.
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let _ = std::thread::Builder::new().name("spoor-queue-close".into()).spawn(move || {
                writer.join();
                let _ = done_tx.send(());
            });
            if done_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                tracing::warn!("queue: the WAL writer did not stop within 10 s");
            }
        }
        self.inner.lock_file.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shut();
    }
}

#[cfg(test)]
mod tests;
