//! Blocks in the object store: writing one from flushed live traces, the blocklist every
//! process keeps by polling, and reading traces across blocks.
//!
//! Layout: `<tenant>/<block-id>/{data.parquet, filter.bin, meta.json}`. `meta.json` is written
//! last and deleted first, so a block without it does not exist for any reader. A block whose
//! ID is listed in another visible block's `replaces` (the compactor's output) is hidden.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use spoor_block::{BlockMeta, BlockReader, BlockWriter, DATA_FILE, FILTER_FILE, META_FILE, WriteOptions};
use spoor_model::TraceId;
use spoor_seal::{FrameWriter, MasterKey, SealedFile};

use crate::error::{Error, Result, io};
use crate::fail;
use crate::head::Frozen;

/// Files up to this size are uploaded in one request; larger ones in 16 MiB parts.
const SINGLE_PUT_BYTES: u64 = 64 << 20;
const PART_BYTES: usize = 16 << 20;

pub fn block_dir(tenant: &str, block_id: &str) -> Path {
    Path::from(tenant).join(block_id)
}

/// One tenant's blocks: block id -> (reader, when it was added: a value of `Blocks::added`).
type TenantBlocks = BTreeMap<String, (BlockReader, u64)>;

/// One tenant's rollups: rollup id -> (meta, when it was added: a value of `Blocks::added`).
pub(crate) type TenantRollups = BTreeMap<String, (spoor_block::rollup::RollupMeta, u64)>;

/// What the blocklist holds for one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub blocks: usize,
    pub bytes: u64,
    pub spans: u64,
}

/// The blocks of every tenant, as last seen in the backend (plus what this process wrote since).
pub struct Blocks {
    pub store: Arc<dyn ObjectStore>,
    tmp_dir: PathBuf,
    options: WriteOptions,
    list: RwLock<HashMap<String, TenantBlocks>>,
    /// Rollups per tenant: id -> (meta, when it was added: a value of `added`).
    pub(crate) rollups: RwLock<HashMap<String, TenantRollups>>,
    added: AtomicU64,
    /// Budget for the footers and page indexes readers keep between lookups.
    cache_bytes: usize,
    /// CPU time of the threads that built blocks, in nanoseconds: [flush, compaction].
    build_cpu_ns: Arc<[AtomicU64; 2]>,
    /// Seals the temp files blocks are built in and downloaded to (encryption at rest).
    seal: Option<Arc<MasterKey>>,
}

impl Blocks {
    pub fn new(store: Arc<dyn ObjectStore>, tmp_dir: PathBuf, options: WriteOptions, cache_bytes: usize) -> Blocks {
        Blocks {
            store,
            tmp_dir,
            options,
            list: RwLock::new(HashMap::new()),
            rollups: RwLock::new(HashMap::new()),
            added: AtomicU64::new(0),
            cache_bytes,
            build_cpu_ns: Arc::default(),
            seal: None,
        }
    }

    /// Seals every temp file under `seal`, so no block is ever on local disk in plaintext
    /// (the store itself is sealed by the backend: `crate::sealed`).
    pub fn with_seal(mut self, seal: Option<Arc<MasterKey>>) -> Blocks {
        self.seal = seal;
        self
    }

    /// A new value for "when was this added" stamps (blocks and rollups).
    pub(crate) fn next_added(&self) -> u64 {
        self.added.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn seal(&self) -> Option<&Arc<MasterKey>> {
        self.seal.as_ref()
    }

    /// CPU seconds spent building blocks, (flushing, compacting): with the bytes each wrote,
    /// what one more rewrite of a span costs.
    pub fn build_cpu_seconds(&self) -> (f64, f64) {
        let [flush, compact] = &*self.build_cpu_ns;
        (flush.load(Ordering::Relaxed) as f64 / 1e9, compact.load(Ordering::Relaxed) as f64 / 1e9)
    }

    pub(crate) fn build_cpu_ns(&self) -> Arc<[AtomicU64; 2]> {
        self.build_cpu_ns.clone()
    }

    /// Keeps cached footers within budget, least recently used out first. Called after lookups;
    /// walks every listed block, which costs microseconds next to a lookup.
    fn trim_cache(&self) {
        let mut cached: Vec<(u64, usize, BlockReader)> = Vec::new();
        for blocks in self.list.read().unwrap().values() {
            for (b, _) in blocks.values() {
                let bytes = b.cached_bytes();
                if bytes > 0 {
                    cached.push((b.last_used(), bytes, b.clone()));
                }
            }
        }
        let mut total: usize = cached.iter().map(|c| c.1).sum();
        if total <= self.cache_bytes {
            return;
        }
        cached.sort_by_key(|c| c.0);
        for (_, bytes, b) in cached {
            if total <= self.cache_bytes {
                break;
            }
            b.evict();
            total -= bytes;
        }
    }

    /// Memory held by cached footers and page indexes, all blocks.
    pub fn cached_bytes(&self) -> usize {
        self.list.read().unwrap().values().flat_map(|b| b.values()).map(|(r, _)| r.cached_bytes()).sum()
    }

    pub fn tmp_dir(&self) -> &std::path::Path {
        &self.tmp_dir
    }

    pub fn write_options(&self) -> &WriteOptions {
        &self.options
    }

    /// Blocks a query should read: every listed block not replaced by another listed block.
    pub fn visible(&self, tenant: &str) -> Vec<BlockReader> {
        let list = self.list.read().unwrap();
        let Some(blocks) = list.get(tenant) else { return Vec::new() };
        let replaced: HashSet<&str> =
            blocks.values().flat_map(|(b, _)| b.meta().replaces.iter().map(String::as_str)).collect();
        blocks.values().map(|(b, _)| b).filter(|b| !replaced.contains(b.meta().block_id.as_str())).cloned().collect()
    }

    /// Per tenant and log partition, the last log offset some visible block holds (the
    /// scale-out's ingesters skip those records when they read the log again).
    pub fn log_marks(&self) -> HashMap<String, BTreeMap<u32, i64>> {
        let mut out: HashMap<String, BTreeMap<u32, i64>> = HashMap::new();
        for tenant in self.tenants() {
            for b in self.visible(&tenant) {
                for (p, (_, last)) in &b.meta().log {
                    let mark = out.entry(tenant.clone()).or_default().entry(*p).or_insert(*last);
                    *mark = (*mark).max(*last);
                }
            }
        }
        out
    }

    /// Every listed block, replaced ones included (for cleanup).
    pub fn all(&self, tenant: &str) -> Vec<BlockReader> {
        self.list.read().unwrap().get(tenant).map(|b| b.values().map(|(r, _)| r.clone()).collect()).unwrap_or_default()
    }

    pub fn tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = self.list.read().unwrap().keys().cloned().collect();
        t.sort();
        t
    }

    /// Like [`Blocks::stats`], per retention tier.
    pub fn tier_stats(&self) -> Vec<(String, spoor_block::Tier, BlockStats)> {
        let mut out = Vec::new();
        for t in self.tenants() {
            let mut by_tier: BTreeMap<spoor_block::Tier, BlockStats> = BTreeMap::new();
            for b in self.visible(&t) {
                let s = by_tier.entry(b.meta().tier).or_default();
                s.blocks += 1;
                s.bytes += b.meta().data_bytes + b.meta().filter_bytes;
                s.spans += b.meta().spans;
            }
            out.extend(by_tier.into_iter().map(|(tier, s)| (t.clone(), tier, s)));
        }
        out
    }

    pub fn stats(&self) -> Vec<(String, BlockStats)> {
        self.tenants()
            .into_iter()
            .map(|t| {
                let blocks = self.visible(&t);
                let stats = BlockStats {
                    blocks: blocks.len(),
                    bytes: blocks.iter().map(|b| b.meta().data_bytes + b.meta().filter_bytes).sum(),
                    spans: blocks.iter().map(|b| b.meta().spans).sum(),
                };
                (t, stats)
            })
            .collect()
    }

    pub(crate) fn add(&self, reader: BlockReader) {
        let m = reader.meta();
        let (tenant, id) = (m.tenant.clone(), m.block_id.clone());
        let when = self.added.fetch_add(1, Ordering::SeqCst) + 1;
        self.list.write().unwrap().entry(tenant).or_default().insert(id, (reader, when));
    }

    pub(crate) fn forget(&self, tenant: &str, block_id: &str) {
        if let Some(b) = self.list.write().unwrap().get_mut(tenant) {
            b.remove(block_id);
        }
    }

    /// Spans of a trace from every visible block that may hold it, as fragments. With a
    /// `range` (unix nanos, inclusive), blocks whose spans all fall outside it are skipped.
    pub async fn find_trace(&self, tenant: &str, id: &TraceId, range: Option<(u64, u64)>) -> Result<Vec<Bytes>> {
        // A block deleted under the read (compacted away) had its spans copied to a block that
        // was listed before the deletion: looking again, in the new list, finds them there.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (found, vanished) = self.find_trace_once(tenant, id, range).await?;
            if !vanished || attempts == 3 {
                return Ok(found);
            }
        }
    }

    /// One lookup over the blocks listed now; true when one of them was deleted meanwhile.
    async fn find_trace_once(
        &self,
        tenant: &str,
        id: &TraceId,
        range: Option<(u64, u64)>,
    ) -> Result<(Vec<Bytes>, bool)> {
        let overlaps = |m: &BlockMeta| range.is_none_or(|(s, e)| m.start_unix_nano <= e && m.end_unix_nano >= s);
        let candidates: Vec<BlockReader> =
            self.visible(tenant).into_iter().filter(|b| overlaps(b.meta()) && b.may_contain(id)).collect();
        let found = futures_util::future::try_join_all(candidates.iter().map(|b| async move {
            match b.find_trace(id).await {
                Ok(f) => Ok(Some(f)),
                // Deleted since it was listed (compacted away, expired): its spans are elsewhere
                // or gone on purpose. Anything else is an error worth reporting.
                Err(e) => match self.store.head(&block_dir(tenant, &b.meta().block_id).join(META_FILE)).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    _ => Err(e),
                },
            }
        }))
        .await?;
        if !candidates.is_empty() {
            self.trim_cache();
        }
        let vanished = found.iter().any(Option::is_none);
        Ok((found.into_iter().flatten().flatten().collect(), vanished))
    }

    /// Re-reads the blocklist from the backend: new metas are opened, vanished ones dropped.
    /// Returns the number of blocks listed.
    pub async fn poll(&self) -> Result<usize> {
        // Blocks this process adds while the listing runs are not in it, and must stay.
        let before = self.added.load(Ordering::SeqCst);
        let (listed, rollups) = self.list_metas().await?;
        self.refresh_rollups(before, rollups).await;
        let known: HashMap<String, HashSet<String>> =
            self.list.read().unwrap().iter().map(|(t, b)| (t.clone(), b.keys().cloned().collect())).collect();
        let total = listed.values().map(HashSet::len).sum();
        let new: Vec<(String, String)> = listed
            .iter()
            .flat_map(|(t, ids)| ids.iter().map(move |id| (t.clone(), id.clone())))
            .filter(|(t, id)| !known.get(t).is_some_and(|k| k.contains(id)))
            .collect();
        // Each new block costs two small reads (meta, filter): overlap them.
        let mut opened = futures_util::stream::iter(new)
            .map(|(tenant, id)| async move {
                let result = self.open_block(&tenant, &id).await;
                (tenant, id, result)
            })
            .buffer_unordered(16);
        while let Some((tenant, id, result)) = opened.next().await {
            match result {
                Ok(Some(reader)) => self.add(reader),
                Ok(None) => {} // deleted between list and read
                Err(e) => tracing::warn!(tenant, block = id, error = %e, "cannot open block; will retry"),
            }
        }
        let mut list = self.list.write().unwrap();
        for (tenant, blocks) in list.iter_mut() {
            let present = listed.get(tenant);
            blocks.retain(|id, (_, when)| *when > before || present.is_some_and(|p| p.contains(id)));
        }
        list.retain(|_, b| !b.is_empty());
        Ok(total)
    }

    /// Every block with a meta, per tenant; and every rollup with a meta, per tenant.
    async fn list_metas(&self) -> Result<(HashMap<String, HashSet<String>>, HashMap<String, HashSet<String>>)> {
        let mut out: HashMap<String, HashSet<String>> = HashMap::new();
        let mut rollups: HashMap<String, HashSet<String>> = HashMap::new();
        let mut objects = self.store.list(None);
        while let Some(o) = objects.try_next().await? {
            let parts: Vec<_> = o.location.parts().collect();
            if let [tenant, block, file] = parts.as_slice()
                && file.as_ref() == META_FILE
            {
                out.entry(tenant.as_ref().to_owned()).or_default().insert(block.as_ref().to_owned());
            } else if let [tenant, dir, id, file] = parts.as_slice()
                && dir.as_ref() == spoor_block::rollup::ROLLUP_DIR
                && file.as_ref() == META_FILE
            {
                rollups.entry(tenant.as_ref().to_owned()).or_default().insert(id.as_ref().to_owned());
            }
        }
        Ok((out, rollups))
    }

    async fn open_block(&self, tenant: &str, id: &str) -> Result<Option<BlockReader>> {
        let dir = block_dir(tenant, id);
        let path = dir.clone().join(META_FILE);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta: BlockMeta =
            serde_json::from_slice(&bytes).map_err(|source| Error::BadMeta { path: path.to_string(), source })?;
        Ok(Some(BlockReader::open(self.store.clone(), dir, meta).await?))
    }

    /// Writes flushed live traces as one block and publishes it. The caller releases the
    /// frozen traces (and their WAL segments) only after this returns Ok.
    pub async fn flush(&self, frozen: Arc<Frozen>) -> Result<BlockMeta> {
        // A cut of log records is named by them: redone after a crash, it replaces itself.
        let id = match frozen.log.is_empty() {
            true => spoor_block::new_block_id(),
            false => spoor_block::log_block_id(&frozen.tenant, &frozen.log),
        };
        let file = self.tmp_dir.join(format!("{id}.parquet"));
        let (tenant, options, path) = (frozen.tenant.clone(), self.options.clone(), file.clone());
        let seal = self.seal.clone();
        let built = in_thread(Priority::Drain, self.build_cpu_ns(), move || -> Result<spoor_block::Finished> {
            let (out, sealed) = TmpFile::create(&path, seal.as_deref())?;
            let mut w = BlockWriter::new(out, &tenant, &id, &options)?;
            for trace_id in frozen.sorted_ids() {
                w.push_trace(trace_id, frozen.fragments(&trace_id))?;
            }
            let mut built = w.finish()?;
            sealed.finish(&path)?;
            built.meta.log = frozen.log.clone();
            Ok(built)
        })
        .await;
        let result = match built {
            Ok(built) => self.publish(built, &file, "flush").await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&file).await;
        result
    }

    /// Uploads data and filter, then the meta that makes the block exist, then lists it.
    pub(crate) async fn publish(
        &self,
        built: spoor_block::Finished,
        data: &std::path::Path,
        stage: &str,
    ) -> Result<BlockMeta> {
        let meta = built.meta;
        let dir = block_dir(&meta.tenant, &meta.block_id);
        match &self.seal {
            None => upload_file(self.store.as_ref(), &dir.clone().join(DATA_FILE), data).await?,
            Some(key) => upload_sealed_file(self.store.as_ref(), &dir.clone().join(DATA_FILE), data, key).await?,
        }
        self.store.put(&dir.clone().join(FILTER_FILE), PutPayload::from(built.filter)).await?;
        fail::point(&format!("{stage}.before_meta"));
        let json = serde_json::to_vec_pretty(&meta).expect("meta serializes");
        self.store.put(&dir.clone().join(META_FILE), PutPayload::from(json)).await?;
        // A compactor elsewhere may have taken the files for a crash's leftovers if this upload
        // outlived `orphan_grace`: never report a block durable whose data is gone.
        if let Err(e) = self.store.head(&dir.clone().join(DATA_FILE)).await {
            let _ = self.store.delete(&dir.clone().join(META_FILE)).await;
            return Err(e.into());
        }
        fail::point(&format!("{stage}.after_meta"));
        let reader = BlockReader::open(self.store.clone(), dir, meta.clone()).await?;
        self.add(reader);
        Ok(meta)
    }

    /// Deletes a block: meta first, so it is gone for readers before its data is.
    pub async fn delete(&self, tenant: &str, block_id: &str) -> Result<()> {
        let dir = block_dir(tenant, block_id);
        self.forget(tenant, block_id);
        for file in [META_FILE, FILTER_FILE, DATA_FILE] {
            match self.store.delete(&dir.clone().join(file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Copies a block's data file to a local temp file (bounded memory: streamed), sealed when
    /// encryption is on.
    pub(crate) async fn download(&self, meta: &BlockMeta) -> Result<Downloaded> {
        let path = self.tmp_dir.join(format!("in-{}.parquet", meta.block_id));
        let Some(key) = &self.seal else { return self.download_plain(meta, path).await.map(Downloaded::Plain) };
        let source = block_dir(&meta.tenant, &meta.block_id).join(DATA_FILE);
        let size = self.store.head(&source).await?.size;
        let (key, p) = (key.clone(), path.clone());
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut w = Some(FrameWriter::new(&key, BufWriter::with_capacity(1 << 20, file)).map_err(io(&path))?);
        let mut at = 0;
        while at < size {
            let end = (at + PART_BYTES as u64).min(size);
            let chunk = self.store.get_range(&source, at..end).await?;
            let mut writer = w.take().expect("put back after every chunk");
            let p = p.clone();
            writer = tokio::task::spawn_blocking(move || writer.write_all(&chunk).map(|()| writer).map_err(io(&p)))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
            w = Some(writer);
            at = end;
        }
        let writer = w.take().expect("put back after every chunk");
        writer.finish().and_then(|b| b.into_inner().map_err(|e| e.into_error())).map_err(io(&path))?;
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        let _ = std::fs::remove_file(&path);
        Ok(Downloaded::Sealed(SealedFile::open(file, &path, &key).map_err(|e| Error::Task(e.to_string()))?))
    }

    async fn download_plain(&self, meta: &BlockMeta, path: PathBuf) -> Result<std::fs::File> {
        use tokio::io::AsyncWriteExt;
        let mut out = tokio::fs::File::create(&path).await.map_err(io(&path))?;
        let mut stream = self.store.get(&block_dir(&meta.tenant, &meta.block_id).join(DATA_FILE)).await?.into_stream();
        while let Some(chunk) = stream.try_next().await? {
            out.write_all(&chunk).await.map_err(io(&path))?;
        }
        out.flush().await.map_err(io(&path))?;
        drop(out);
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        // The open handle keeps the data readable; nothing is left behind on a crash but this.
        let _ = std::fs::remove_file(&path);
        Ok(file)
    }
}

/// A downloaded block file, as compaction reads it.
pub(crate) enum Downloaded {
    Plain(std::fs::File),
    Sealed(SealedFile),
}

impl Downloaded {
    pub(crate) fn traces(self) -> Result<spoor_block::TraceIter> {
        Ok(match self {
            Downloaded::Plain(f) => spoor_block::TraceIter::open(f)?,
            Downloaded::Sealed(f) => spoor_block::TraceIter::open_sealed(f)?,
        })
    }
}

/// The temp file a block is built in: plaintext, or sealed a frame at a time. Parquet's writer
/// owns (and drops) what it writes to, so a sealed one writes through a shared handle that is
/// finished (the last frame sealed) afterwards.
pub(crate) enum TmpFile {
    Plain,
    Sealed(Arc<Mutex<Option<FrameWriter<BufWriter<std::fs::File>>>>>),
}

struct SharedWriter(Arc<Mutex<Option<FrameWriter<BufWriter<std::fs::File>>>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("sealed temp file already finished")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl TmpFile {
    pub(crate) fn create(path: &std::path::Path, seal: Option<&MasterKey>) -> Result<(Box<dyn Write + Send>, TmpFile)> {
        let out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io(path))?);
        Ok(match seal {
            None => (Box::new(out), TmpFile::Plain),
            Some(key) => {
                let shared = Arc::new(Mutex::new(Some(FrameWriter::new(key, out).map_err(io(path))?)));
                (Box::new(SharedWriter(shared.clone())), TmpFile::Sealed(shared))
            }
        })
    }

    /// Seals the last frame and flushes; call once the block writer has finished.
    pub(crate) fn finish(self, path: &std::path::Path) -> Result<()> {
        if let TmpFile::Sealed(shared) = self {
            let writer = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(w) = writer {
                w.finish().and_then(|b| b.into_inner().map_err(|e| e.into_error())).map_err(io(path))?;
            }
        }
        Ok(())
    }
}

/// Uploads a sealed temp file: opened a part at a time, sealed again by the store.
async fn upload_sealed_file(store: &dyn ObjectStore, to: &Path, from: &std::path::Path, key: &MasterKey) -> Result<()> {
    let file = std::fs::File::open(from).map_err(io(from))?;
    let sealed = Arc::new(SealedFile::open(file, from, key).map_err(|e| Error::Task(e.to_string()))?);
    let len = sealed.len();
    let read = |range: std::ops::Range<u64>| {
        let sealed = sealed.clone();
        async move {
            tokio::task::spawn_blocking(move || sealed.read_range(range))
                .await
                .map_err(|e| Error::Task(e.to_string()))?
                .map_err(|e| Error::Task(e.to_string()))
        }
    };
    if len <= SINGLE_PUT_BYTES {
        store.put(to, PutPayload::from(read(0..len).await?)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(to).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut at = 0;
    while at < len {
        let end = (at + PART_BYTES as u64).min(len);
        let chunk = read(at..end).await?;
        w.wait_for_capacity(2).await?;
        w.write(&chunk);
        at = end;
    }
    w.finish().await?;
    Ok(())
}

/// How a block-building thread is scheduled.
#[derive(Clone, Copy)]
pub(crate) enum Priority {
    /// Flushes: the drain of the ingest path. Under saturation the pacer admits what flushes
    /// drain, so starving them would only turn into refusals.
    Drain,
    /// Compaction: optional work, at nice 10, so the kernel favours the threads that
    /// acknowledge requests and drain the head.
    Background,
}

/// Runs CPU-heavy block building on its own thread, off the async workers.
pub(crate) async fn in_thread<T: Send + 'static>(
    priority: Priority,
    cpu_ns: Arc<[AtomicU64; 2]>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("spoor-blocks".into())
        .spawn(move || {
            if let Priority::Background = priority {
                // SAFETY: setpriority on the calling thread (tid 0 = self on Linux); failure is harmless.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            }
            let result = f();
            cpu_ns[priority as usize].fetch_add(thread_cpu_ns(), Ordering::Relaxed);
            let _ = tx.send(result);
        })
        .map_err(|e| Error::Task(e.to_string()))?;
    rx.await.map_err(|_| Error::Task("block building thread panicked".into()))?
}

/// CPU time of the calling thread so far.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

async fn upload_file(store: &dyn ObjectStore, to: &Path, from: &std::path::Path) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let len = tokio::fs::metadata(from).await.map_err(io(from))?.len();
    if len <= SINGLE_PUT_BYTES {
        let data = tokio::fs::read(from).await.map_err(io(from))?;
        store.put(to, PutPayload::from(data)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(to).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut f = tokio::fs::File::open(from).await.map_err(io(from))?;
    let mut buf = vec![0u8; PART_BYTES];
    loop {
        let n = f.read(&mut buf).await.map_err(io(from))?;
        if n == 0 {
            break;
        }
        w.wait_for_capacity(2).await?;
        w.write(&buf[..n]);
    }
    w.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn block_building_threads_count_their_cpu_by_stage() {
        let cpu: Arc<[AtomicU64; 2]> = Arc::default();
        // Spins until the kernel's per-thread accounting (a clock independent of the one
        // in_thread reads) shows 30 ms of CPU: on a busy machine a wall-clock spin gets less.
        let spun = in_thread(Priority::Background, cpu.clone(), || {
            let used = || {
                // SAFETY: getrusage writes one rusage, which `u` is.
                let mut u: libc::rusage = unsafe { std::mem::zeroed() };
                unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
                (u.ru_utime.tv_sec + u.ru_stime.tv_sec) as u64 * 1_000_000
                    + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) as u64
            };
            let mut x = 0u64;
            while used() < 30_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            Ok(x)
        })
        .await;
        assert!(spun.is_ok());
        assert_eq!(cpu[Priority::Drain as usize].load(Ordering::Relaxed), 0);
        let ns = cpu[Priority::Background as usize].load(Ordering::Relaxed);
        assert!(ns >= 25_000_000, "a 30 ms spin counted {ns} ns");
    }
}
