//! Reading blocks: point lookups by trace ID from an object store (`BlockReader`) and full
//! scans of a local file in trace order (`TraceIter`, for the compactor). Both turn span rows
//! back into `ResourceSpans`, one per (resource, scope) of the trace: encoded for a lookup,
//! decoded for a scan (the compactor writes them again without an encode and decode between).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray, StructArray, UInt32Array, UInt64Array,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ColumnChunkMask, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use prost::Message;
use spoor_model::TraceId;
use spoor_model::otlp::{
    AnyValue, Event, InstrumentationScope, KeyValue, Link, Resource, ResourceSpans, ScopeSpans, Span, Status, any_value,
};

use crate::error::{Error, Result};
use crate::filter::{BlockFilter, TraceFilter};
use crate::index::{GroupIndex, ValueIndex};
use crate::meta::{BlockMeta, ColumnSize, DATA_FILE, DedicatedColumn, FILTER_FILE, FORMAT, column_sizes};
use crate::schema::{self, AttrKind, AttrScope, Dedicated};

/// Point lookups in one block of an object store. Cheap to clone.
#[derive(Clone)]
pub struct BlockReader {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    data: Path,
    meta: BlockMeta,
    filter: TraceFilter,
    /// Per row group keys and values (blocks written before `filter.bin` version 2 have none).
    index: Option<ValueIndex>,
    /// Footer and page index, loaded on the first lookup; dropped by [`BlockReader::evict`].
    footer: std::sync::Mutex<Option<Arc<Footer>>>,
    /// When the last lookup that read data ran (a tick of [`TICKS`]), for LRU eviction.
    last_used: AtomicU64,
    /// Bytes of `data.parquet` fetched so far (Tempo reports these as inspected bytes).
    fetched: Arc<AtomicU64>,
}

struct Footer {
    metadata: ArrowReaderMetadata,
    layout: Arc<Layout>,
}

/// A process-wide clock for [`BlockReader::last_used`].
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Footer prefetch: one request usually covers the footer of a block.
const FOOTER_HINT: usize = 64 << 10;

impl BlockReader {
    /// Opens the block in `dir` (`<tenant>/<block-id>`): fetches and parses `filter.bin`.
    pub async fn open(store: Arc<dyn ObjectStore>, dir: Path, meta: BlockMeta) -> Result<BlockReader> {
        if meta.format != FORMAT {
            return Err(Error::Format(format!("meta.json says format {:?}", meta.format)));
        }
        let filter = store.get(&dir.clone().join(FILTER_FILE)).await?.bytes().await?;
        let BlockFilter { traces: filter, index } = BlockFilter::parse(&filter)?;
        // An index that does not describe this block's row groups is of no use.
        let index = index.filter(|i| i.len() == meta.row_groups as usize);
        let data = dir.join(DATA_FILE);
        let footer = std::sync::Mutex::new(None);
        let fetched = Arc::new(AtomicU64::new(0));
        let last_used = AtomicU64::new(0);
        Ok(BlockReader { inner: Arc::new(Inner { store, data, meta, filter, index, footer, last_used, fetched }) })
    }

    /// What row group `row_group` holds per attribute key (`None`: the block has no index, as
    /// blocks written before it; read the row group).
    pub fn row_group_index(&self, row_group: usize) -> Option<&GroupIndex> {
        self.inner.index.as_ref()?.group(row_group)
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.inner.meta
    }

    /// Memory held by the cached footer and page index (0 when not loaded).
    pub fn cached_bytes(&self) -> usize {
        self.inner.footer.lock().unwrap().as_ref().map_or(0, |f| f.metadata.metadata().memory_size())
    }

    /// Recency of the last lookup that read data: larger is more recent (0: never).
    pub fn last_used(&self) -> u64 {
        self.inner.last_used.load(Ordering::Relaxed)
    }

    /// Drops the cached footer and page index; the next lookup loads them again.
    pub fn evict(&self) {
        self.inner.footer.lock().unwrap().take();
    }

    /// False means the trace is certainly not in the block; true means it probably is.
    pub fn may_contain(&self, id: &TraceId) -> bool {
        self.inner.filter.may_contain(id)
    }

    /// The trace's spans as encoded `ResourceSpans`, one per (resource, scope); empty if the
    /// block does not hold it. Prunes with the filter, then row-group statistics on trace_id,
    /// then its page index, so only the pages that can hold the trace are fetched and decoded.
    pub async fn find_trace(&self, id: &TraceId) -> Result<Vec<Bytes>> {
        if !self.may_contain(id) {
            return Ok(Vec::new());
        }
        AssertUnwindSafe(self.read_trace(id)).catch_unwind().await.unwrap_or_else(|panic| Err(panicked(panic)))
    }

    async fn read_trace(&self, id: &TraceId) -> Result<Vec<Bytes>> {
        self.inner.last_used.store(TICKS.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        let footer = self.cached_footer().await?;
        let metadata = footer.metadata.metadata();
        let mut row_groups = Vec::new();
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut offset = 0;
        for (i, rg) in metadata.row_groups().iter().enumerate() {
            let rows = rg.num_rows().max(0) as usize;
            let stats = rg.columns().first().and_then(|c| c.statistics());
            let (min, max) = (stats.and_then(|s| s.min_bytes_opt()), stats.and_then(|s| s.max_bytes_opt()));
            if matches!((min, max), (Some(min), Some(max)) if id.0[..] < *min || id.0[..] > *max) {
                continue;
            }
            let pages = candidate_pages(metadata, i, rows, id);
            if pages.is_empty() {
                continue;
            }
            row_groups.push(i);
            ranges.extend(pages.into_iter().map(|r| r.start + offset..r.end + offset));
            offset += rows;
        }
        if row_groups.is_empty() {
            return Ok(Vec::new());
        }
        let reader = self.store_reader();
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer.metadata.clone())
            .with_row_groups(row_groups)
            .with_row_selection(RowSelection::from_consecutive_ranges(ranges.into_iter(), offset))
            .with_batch_size(8192);
        let mut stream = builder.build()?;
        let mut rows = Vec::new();
        while let Some(batch) = stream.try_next().await? {
            let cols = Columns::new(&batch, &footer.layout)?;
            let (start, end) = cols.trace_rows(id);
            for row in start..end {
                rows.push(cols.span(row)?);
            }
        }
        fragments(rows)
    }

    /// The footer (row-group statistics, schema), loaded and cached as for lookups.
    pub async fn footer(&self) -> Result<Arc<ParquetMetaData>> {
        Ok(self.cached_footer().await?.metadata.metadata().clone())
    }

    /// The block's Arrow schema (the dedicated columns vary per block).
    pub async fn schema(&self) -> Result<arrow_schema::SchemaRef> {
        Ok(self.cached_footer().await?.metadata.schema().clone())
    }

    /// Reads `columns` (top-level names) of one row group, only the rows of `selection` when
    /// given, as one batch. Top-level string columns come back as `Dictionary(Int32, Utf8)`:
    /// they are dictionary-encoded on disk, so filters compare each distinct value once.
    pub async fn read_row_group(
        &self,
        row_group: usize,
        columns: &[String],
        selection: Option<RowSelection>,
    ) -> Result<RecordBatch> {
        let read = async {
            self.inner.last_used.store(TICKS.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
            let footer = self.cached_footer().await?;
            let metadata = footer.metadata.metadata();
            let rows = metadata
                .row_groups()
                .get(row_group)
                .ok_or_else(|| corrupt("row group out of range"))?
                .num_rows()
                .max(0) as usize;
            let schema = footer.metadata.schema();
            let hinted = dictionary_strings(schema);
            let options = ArrowReaderOptions::new().with_schema(hinted.clone());
            let arrow_meta = ArrowReaderMetadata::try_new(metadata.clone(), options)?;
            let indices: Vec<usize> =
                columns.iter().filter_map(|c| schema.fields().iter().position(|f| f.name() == c)).collect();
            let mask = parquet::arrow::ProjectionMask::roots(metadata.file_metadata().schema_descr(), indices);
            let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(self.store_reader(), arrow_meta)
                .with_row_groups(vec![row_group])
                .with_projection(mask)
                .with_batch_size(rows.max(1));
            if let Some(selection) = selection {
                builder = builder.with_row_selection(selection);
            }
            let stream = builder.build()?;
            let out_schema = stream.schema().clone();
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            Ok(arrow_select::concat::concat_batches(&out_schema, &batches)?)
        };
        AssertUnwindSafe(read).catch_unwind().await.unwrap_or_else(|panic| Err(panicked(panic)))
    }

    async fn cached_footer(&self) -> Result<Arc<Footer>> {
        let cached = self.inner.footer.lock().unwrap().clone();
        match cached {
            Some(f) => Ok(f),
            None => {
                // Two readers racing here both load it; the second store wins. Harmless.
                let f = Arc::new(self.load_footer().await?);
                *self.inner.footer.lock().unwrap() = Some(f.clone());
                Ok(f)
            }
        }
    }

    /// Bytes of `data.parquet` this reader (and its clones) fetched so far, footer included.
    pub fn bytes_fetched(&self) -> u64 {
        self.inner.fetched.load(Ordering::Relaxed)
    }

    fn store_reader(&self) -> StoreReader {
        let meta = &self.inner.meta;
        StoreReader {
            store: self.inner.store.clone(),
            path: self.inner.data.clone(),
            size: (meta.data_bytes > 0).then_some(meta.data_bytes),
            fetched: self.inner.fetched.clone(),
        }
    }

    async fn load_footer(&self) -> Result<Footer> {
        let mut reader = self.store_reader();
        let metadata = reader.load_metadata().await?;
        check_page_locations(&metadata)?;
        let options = ArrowReaderOptions::new();
        let layout = Arc::new(Layout::new(&metadata)?);
        let metadata = ArrowReaderMetadata::try_new(metadata, options)?;
        layout.check(metadata.schema())?;
        Ok(Footer { metadata, layout })
    }
}

/// The schema with every top-level Utf8 column as `Dictionary(Int32, Utf8)`.
fn dictionary_strings(schema: &arrow_schema::SchemaRef) -> arrow_schema::SchemaRef {
    use arrow_schema::{DataType, Field};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(arrow_schema::Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The Parquet reader trusts some of what it reads and panics on a few kinds of damage (a page
/// header without its body, for one). Blocks are input, and a server must not fall over on a
/// damaged file, so reads run under `catch_unwind` and such a panic becomes an error.
fn panicked(panic: Box<dyn std::any::Any + Send>) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    Error::Corrupt(format!("the parquet reader failed: {message}"))
}

/// The offset index steers which bytes are read and how many rows each page has; the Parquet
/// reader trusts it, so a damaged one is refused here instead of panicking there.
fn check_page_locations(metadata: &ParquetMetaData) -> Result<()> {
    for (i, rg) in metadata.row_groups().iter().enumerate() {
        let index = metadata.page_index_for_row_group(i);
        let rows = rg.num_rows();
        for c in 0..rg.num_columns() {
            let Some(pages) = index.page_locations(c) else { continue };
            let mut previous: Option<i64> = None;
            for page in pages {
                let ok = match previous {
                    None => page.first_row_index == 0,
                    Some(p) => page.first_row_index > p,
                } && page.first_row_index < rows.max(1)
                    && page.offset >= 0
                    && page.compressed_page_size > 0;
                if !ok {
                    return Err(Error::Corrupt(format!("offset index of row group {i}, column {c}")));
                }
                previous = Some(page.first_row_index);
            }
        }
    }
    Ok(())
}

/// Row ranges (within row group `rg`) of the pages whose trace_id range covers `id`; the
/// whole row group when it has no page index.
fn candidate_pages(metadata: &ParquetMetaData, rg: usize, rows: usize, id: &TraceId) -> Vec<Range<usize>> {
    let index = metadata.page_index_for_row_group(rg);
    let (Some(ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(column)), Some(pages)) =
        (index.column_index(0), index.page_locations(0))
    else {
        return std::iter::once(0..rows).collect();
    };
    let mut out: Vec<Range<usize>> = Vec::new();
    for (p, page) in pages.iter().enumerate() {
        let start = (page.first_row_index.max(0) as usize).min(rows);
        let end = pages.get(p + 1).map_or(rows, |next| (next.first_row_index.max(0) as usize).min(rows));
        let (min, max) = (column.min_value(p), column.max_value(p));
        if matches!((min, max), (Some(min), Some(max)) if id.0[..] < *min || id.0[..] > *max) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ if start < end => out.push(start..end),
            _ => {}
        }
    }
    out
}

/// `AsyncFileReader` over an object store path.
struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: Option<u64>,
    fetched: Arc<AtomicU64>,
}

impl StoreReader {
    async fn load_metadata(&mut self) -> Result<Arc<ParquetMetaData>> {
        let size = match self.size {
            Some(size) => size,
            None => self.store.head(&self.path).await?.size,
        };
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            // Only trace_id's column index is used; every column's offset index is.
            .with_column_index_mask(ColumnChunkMask::columns([0]))
            .with_prefetch_hint(Some(FOOTER_HINT))
            .load_and_finish(&mut *self, size)
            .await?;
        Ok(Arc::new(metadata))
    }
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.fetched.fetch_add(range.end.saturating_sub(range.start), Ordering::Relaxed);
        async move { Ok(self.store.get_range(&self.path, range).await?) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let bytes: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        self.fetched.fetch_add(bytes, Ordering::Relaxed);
        async move { Ok(self.store.get_ranges(&self.path, &ranges).await?) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            self.load_metadata().await.map_err(|e| match e {
                Error::Parquet(e) => e,
                e => parquet::errors::ParquetError::External(Box::new(e)),
            })
        }
        .boxed()
    }
}

/// Every trace of a local block file in trace-ID order, decoding a batch of rows at a time:
/// memory holds one batch and the trace that runs past its end.
pub struct TraceIter {
    batches: ParquetRecordBatchReader,
    layout: Arc<Layout>,
    columns: Vec<ColumnSize>,
    /// Traces completed by the last batch.
    ready: VecDeque<(TraceId, Vec<ResourceSpans>)>,
    /// The trace at the end of the last batch; it may continue in the next one.
    current: Option<(TraceId, Vec<RowSpan>)>,
    failed: bool,
}

const SCAN_BATCH_ROWS: usize = 4096;

impl TraceIter {
    pub fn open(file: std::fs::File) -> Result<TraceIter> {
        std::panic::catch_unwind(AssertUnwindSafe(|| Self::open_file(file)))
            .unwrap_or_else(|panic| Err(panicked(panic)))
    }

    /// Like [`TraceIter::open`], for a block file sealed at rest.
    pub fn open_sealed(file: spoor_seal::SealedFile) -> Result<TraceIter> {
        let chunks = crate::sealed::SealedChunks(Arc::new(file));
        std::panic::catch_unwind(AssertUnwindSafe(|| Self::open_file(chunks)))
            .unwrap_or_else(|panic| Err(panicked(panic)))
    }

    fn open_file<R: parquet::file::reader::ChunkReader + 'static>(file: R) -> Result<TraceIter> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let layout = Arc::new(Layout::new(builder.metadata())?);
        layout.check(builder.schema())?;
        let columns = column_sizes(builder.metadata());
        let batches = builder.with_batch_size(SCAN_BATCH_ROWS).build()?;
        Ok(TraceIter { batches, layout, columns, ready: VecDeque::new(), current: None, failed: false })
    }

    /// Per top-level column sizes of the file, as `meta.columns` reports them.
    pub fn meta_columns(&self) -> &[ColumnSize] {
        &self.columns
    }

    /// The file's dedicated columns, as `meta.dedicated_columns` reports them.
    pub fn dedicated_columns(&self) -> Vec<DedicatedColumn> {
        self.layout.dedicated.iter().map(Dedicated::to_meta).collect()
    }

    fn next_trace(&mut self) -> Result<Option<(TraceId, Vec<ResourceSpans>)>> {
        loop {
            if let Some(trace) = self.ready.pop_front() {
                return Ok(Some(trace));
            }
            let Some(batch) = self.batches.next().transpose()? else {
                return match self.current.take() {
                    Some((id, rows)) => Ok(Some((id, groups(rows)?))),
                    None => Ok(None),
                };
            };
            let cols = Columns::new(&batch, &self.layout)?;
            let mut row = 0;
            while row < batch.num_rows() {
                let id = cols.trace_id(row);
                let end = cols.run_end(row);
                if let Some((previous, _)) = &self.current
                    && *previous != id
                {
                    let (done, rows) = self.current.take().expect("checked above");
                    self.ready.push_back((done, groups(rows)?));
                }
                let rows = &mut self.current.get_or_insert_with(|| (id, Vec::new())).1;
                for r in row..end {
                    rows.push(cols.span(r)?);
                }
                row = end;
            }
        }
    }
}

impl Iterator for TraceIter {
    type Item = Result<(TraceId, Vec<ResourceSpans>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = std::panic::catch_unwind(AssertUnwindSafe(|| self.next_trace()))
            .unwrap_or_else(|panic| Err(panicked(panic)))
            .transpose();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

/// What a data file says about itself: its format and dedicated columns.
struct Layout {
    dedicated: Vec<Dedicated>,
}

impl Layout {
    fn new(metadata: &ParquetMetaData) -> Result<Layout> {
        let kv = metadata.file_metadata().key_value_metadata();
        let get = |key: &str| kv.and_then(|kv| kv.iter().find(|e| e.key == key)).and_then(|e| e.value.as_deref());
        match get(schema::KV_FORMAT) {
            Some(FORMAT) => {}
            other => return Err(Error::Format(format!("data file says format {other:?}"))),
        }
        let dedicated: Vec<DedicatedColumn> = serde_json::from_str(get(schema::KV_DEDICATED).unwrap_or("[]"))
            .map_err(|e| Error::Format(format!("dedicated columns: {e}")))?;
        let dedicated = dedicated.iter().map(Dedicated::from_meta).collect::<Result<_>>()?;
        Ok(Layout { dedicated })
    }

    /// The file's Arrow schema must be the one this version writes for its dedicated columns:
    /// every downcast below relies on it.
    fn check(&self, schema: &arrow_schema::SchemaRef) -> Result<()> {
        let expected = schema::block_schema(&self.dedicated);
        if expected.fields() != schema.fields() {
            return Err(Error::Format("data file schema differs from the spoor-1 schema".into()));
        }
        Ok(())
    }
}

/// One span row decoded, with what is needed to rebuild its parent ID and its group.
struct RowSpan {
    span: Span,
    left: i32,
    parent: i32,
    explicit_parent: bool,
    resource: Resource,
    resource_schema_url: String,
    scope: InstrumentationScope,
    scope_schema_url: String,
}

/// Restores parent IDs from nested-set numbers and groups spans by (resource, scope) in order
/// of first appearance; spans keep row order (start time).
fn groups(mut rows: Vec<RowSpan>) -> Result<Vec<ResourceSpans>> {
    let by_left: HashMap<i32, usize> = rows.iter().enumerate().map(|(i, r)| (r.left, i)).collect();
    for i in 0..rows.len() {
        if rows[i].explicit_parent || rows[i].parent <= 0 {
            continue;
        }
        let p = *by_left
            .get(&rows[i].parent)
            .ok_or_else(|| Error::Corrupt(format!("nested_parent {} is no span of the trace", rows[i].parent)))?;
        rows[i].span.parent_span_id = rows[p].span.span_id.clone();
    }
    // A trace has few (resource, scope) pairs: comparing with each group costs less than
    // encoding every row's resource for a map key. Past a few dozen groups, the map.
    const SCAN_GROUPS: usize = 32;
    let mut groups: Vec<ResourceSpans> = Vec::new();
    let mut index = HashMap::<(Vec<u8>, String, Vec<u8>, String), usize>::new();
    for r in rows {
        let resource = (r.resource != Resource::default()).then_some(r.resource);
        let scope = (r.scope != InstrumentationScope::default()).then_some(r.scope);
        let same = |g: &ResourceSpans| {
            g.resource == resource
                && g.schema_url == r.resource_schema_url
                && g.scope_spans[0].scope == scope
                && g.scope_spans[0].schema_url == r.scope_schema_url
        };
        let found = if groups.len() < SCAN_GROUPS {
            groups.iter().position(same)
        } else {
            if index.is_empty() {
                index.extend(groups.iter().enumerate().map(|(i, g)| (group_key(g), i)));
            }
            let key = (
                resource.as_ref().map(Message::encode_to_vec).unwrap_or_default(),
                r.resource_schema_url.clone(),
                scope.as_ref().map(Message::encode_to_vec).unwrap_or_default(),
                r.scope_schema_url.clone(),
            );
            let found = index.get(&key).copied();
            if found.is_none() {
                index.insert(key, groups.len());
            }
            found
        };
        let g = found.unwrap_or_else(|| {
            groups.push(ResourceSpans {
                resource,
                scope_spans: vec![ScopeSpans { scope, spans: Vec::new(), schema_url: r.scope_schema_url }],
                schema_url: r.resource_schema_url,
            });
            groups.len() - 1
        });
        groups[g].scope_spans[0].spans.push(r.span);
    }
    Ok(groups)
}

fn group_key(g: &ResourceSpans) -> (Vec<u8>, String, Vec<u8>, String) {
    let ss = &g.scope_spans[0];
    (
        g.resource.as_ref().map(Message::encode_to_vec).unwrap_or_default(),
        g.schema_url.clone(),
        ss.scope.as_ref().map(Message::encode_to_vec).unwrap_or_default(),
        ss.schema_url.clone(),
    )
}

/// [`groups`], encoded: what trace lookups return.
fn fragments(rows: Vec<RowSpan>) -> Result<Vec<Bytes>> {
    Ok(groups(rows)?.into_iter().map(|g| Bytes::from(g.encode_to_vec())).collect())
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("column {what} has an unexpected type"))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>> {
    batch.column_by_name(name).ok_or_else(|| Error::Corrupt(format!("column {name} is missing")))
}

fn downcast<'a, T: 'static>(array: &'a dyn Array, what: &str) -> Result<&'a T> {
    array.as_any().downcast_ref::<T>().ok_or_else(|| corrupt(what))
}

/// Typed views of one batch's columns.
struct Columns<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a BinaryArray,
    parent_span_id: &'a BinaryArray,
    nested_left: &'a Int32Array,
    nested_parent: &'a Int32Array,
    start: &'a UInt64Array,
    duration: &'a UInt64Array,
    name: &'a StringArray,
    kind: &'a Int32Array,
    trace_state: &'a StringArray,
    flags: &'a UInt32Array,
    status_code: &'a Int32Array,
    status_message: &'a StringArray,
    dropped_attributes: &'a UInt32Array,
    dropped_events: &'a UInt32Array,
    dropped_links: &'a UInt32Array,
    span_dedicated: Vec<(&'a Dedicated, &'a dyn Array)>,
    attrs: Attrs<'a>,
    events: Events<'a>,
    links: Links<'a>,
    resource_dedicated: Vec<(&'a Dedicated, &'a dyn Array)>,
    resource_attrs: Attrs<'a>,
    resource_dropped: &'a UInt32Array,
    resource_schema_url: &'a StringArray,
    scope_name: &'a StringArray,
    scope_version: &'a StringArray,
    scope_attrs: Attrs<'a>,
    scope_dropped: &'a UInt32Array,
    scope_schema_url: &'a StringArray,
}

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch, layout: &'a Layout) -> Result<Columns<'a>> {
        let prim = |name: &str| column(batch, name).map(|c| c.as_ref());
        let dedicated = |scope: AttrScope| -> Result<Vec<(&'a Dedicated, &'a dyn Array)>> {
            layout
                .dedicated
                .iter()
                .filter(|d| d.scope == scope)
                .map(|d| Ok((d, column(batch, &d.column)?.as_ref())))
                .collect()
        };
        Ok(Columns {
            trace_id: downcast(prim(schema::TRACE_ID)?, schema::TRACE_ID)?,
            span_id: downcast(prim(schema::SPAN_ID)?, schema::SPAN_ID)?,
            parent_span_id: downcast(prim(schema::PARENT_SPAN_ID)?, schema::PARENT_SPAN_ID)?,
            nested_left: downcast(prim(schema::NESTED_LEFT)?, schema::NESTED_LEFT)?,
            nested_parent: downcast(prim(schema::NESTED_PARENT)?, schema::NESTED_PARENT)?,
            start: downcast(prim(schema::START)?, schema::START)?,
            duration: downcast(prim(schema::DURATION)?, schema::DURATION)?,
            name: downcast(prim(schema::NAME)?, schema::NAME)?,
            kind: downcast(prim(schema::KIND)?, schema::KIND)?,
            trace_state: downcast(prim(schema::TRACE_STATE)?, schema::TRACE_STATE)?,
            flags: downcast(prim(schema::FLAGS)?, schema::FLAGS)?,
            status_code: downcast(prim(schema::STATUS_CODE)?, schema::STATUS_CODE)?,
            status_message: downcast(prim(schema::STATUS_MESSAGE)?, schema::STATUS_MESSAGE)?,
            dropped_attributes: downcast(prim(schema::DROPPED_ATTRIBUTES)?, schema::DROPPED_ATTRIBUTES)?,
            dropped_events: downcast(prim(schema::DROPPED_EVENTS)?, schema::DROPPED_EVENTS)?,
            dropped_links: downcast(prim(schema::DROPPED_LINKS)?, schema::DROPPED_LINKS)?,
            span_dedicated: dedicated(AttrScope::Span)?,
            attrs: Attrs::new(prim(schema::ATTRS)?, schema::ATTRS)?,
            events: Events::new(prim(schema::EVENTS)?)?,
            links: Links::new(prim(schema::LINKS)?)?,
            resource_dedicated: dedicated(AttrScope::Resource)?,
            resource_attrs: Attrs::new(prim(schema::RESOURCE_ATTRS)?, schema::RESOURCE_ATTRS)?,
            resource_dropped: downcast(prim(schema::RESOURCE_DROPPED)?, schema::RESOURCE_DROPPED)?,
            resource_schema_url: downcast(prim(schema::RESOURCE_SCHEMA_URL)?, schema::RESOURCE_SCHEMA_URL)?,
            scope_name: downcast(prim(schema::SCOPE_NAME)?, schema::SCOPE_NAME)?,
            scope_version: downcast(prim(schema::SCOPE_VERSION)?, schema::SCOPE_VERSION)?,
            scope_attrs: Attrs::new(prim(schema::SCOPE_ATTRS)?, schema::SCOPE_ATTRS)?,
            scope_dropped: downcast(prim(schema::SCOPE_DROPPED)?, schema::SCOPE_DROPPED)?,
            scope_schema_url: downcast(prim(schema::SCOPE_SCHEMA_URL)?, schema::SCOPE_SCHEMA_URL)?,
        })
    }

    fn trace_id(&self, row: usize) -> TraceId {
        TraceId(self.trace_id.value(row).try_into().expect("FixedSizeBinary(16)"))
    }

    /// The end of the run of rows with the same trace ID as `row`.
    fn run_end(&self, row: usize) -> usize {
        let id = self.trace_id.value(row);
        (row + 1..self.trace_id.len()).find(|&r| self.trace_id.value(r) != id).unwrap_or(self.trace_id.len())
    }

    /// Rows of `id` in this batch; rows are sorted by trace ID.
    fn trace_rows(&self, id: &TraceId) -> (usize, usize) {
        let n = self.trace_id.len();
        let first = partition_point(n, |r| self.trace_id.value(r) < &id.0[..]);
        let end = partition_point(n, |r| self.trace_id.value(r) <= &id.0[..]);
        (first, end.max(first))
    }

    fn span(&self, row: usize) -> Result<RowSpan> {
        let start = self.start.value(row);
        let mut attributes = Vec::new();
        dedicated_attrs(&self.span_dedicated, row, &mut attributes);
        self.attrs.read(row, &mut attributes)?;
        let status = (self.status_code.value(row) != 0 || !self.status_message.value(row).is_empty())
            .then(|| Status { code: self.status_code.value(row), message: self.status_message.value(row).into() });
        let explicit_parent = self.parent_span_id.is_valid(row);
        let span = Span {
            trace_id: self.trace_id.value(row).to_vec(),
            span_id: self.span_id.value(row).to_vec(),
            trace_state: self.trace_state.value(row).into(),
            parent_span_id: if explicit_parent { self.parent_span_id.value(row).to_vec() } else { Vec::new() },
            flags: self.flags.value(row),
            name: self.name.value(row).into(),
            kind: self.kind.value(row),
            start_time_unix_nano: start,
            end_time_unix_nano: start.wrapping_add(self.duration.value(row)),
            attributes,
            dropped_attributes_count: self.dropped_attributes.value(row),
            events: self.events.read(row, start)?,
            dropped_events_count: self.dropped_events.value(row),
            links: self.links.read(row)?,
            dropped_links_count: self.dropped_links.value(row),
            status,
        };
        let mut resource_attrs = Vec::new();
        dedicated_attrs(&self.resource_dedicated, row, &mut resource_attrs);
        self.resource_attrs.read(row, &mut resource_attrs)?;
        let mut scope_attrs = Vec::new();
        self.scope_attrs.read(row, &mut scope_attrs)?;
        Ok(RowSpan {
            span,
            left: self.nested_left.value(row),
            parent: self.nested_parent.value(row),
            explicit_parent,
            resource: Resource {
                attributes: resource_attrs,
                dropped_attributes_count: self.resource_dropped.value(row),
            },
            resource_schema_url: self.resource_schema_url.value(row).into(),
            scope: InstrumentationScope {
                name: self.scope_name.value(row).into(),
                version: self.scope_version.value(row).into(),
                attributes: scope_attrs,
                dropped_attributes_count: self.scope_dropped.value(row),
            },
            scope_schema_url: self.scope_schema_url.value(row).into(),
        })
    }
}

fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
}

/// Dedicated attributes come first, in column order; OTLP attributes are a map, so the order
/// relative to the generic ones is not kept.
fn dedicated_attrs(columns: &[(&Dedicated, &dyn Array)], row: usize, out: &mut Vec<KeyValue>) {
    for (d, array) in columns {
        if array.is_null(row) {
            continue;
        }
        match d.kind {
            AttrKind::String => {
                if let Some(a) = array.as_string_opt::<i32>() {
                    out.push(kv(&d.key, any_value::Value::StringValue(a.value(row).into())));
                }
            }
            AttrKind::Int => {
                if let Some(a) = array.as_primitive_opt::<Int64Type>() {
                    out.push(kv(&d.key, any_value::Value::IntValue(a.value(row))));
                }
            }
        }
    }
}

/// A `List<attribute>` column.
struct Attrs<'a> {
    list: &'a ListArray,
    key: &'a StringArray,
    str: &'a StringArray,
    int: &'a Int64Array,
    double: &'a Float64Array,
    bool: &'a BooleanArray,
    bytes: &'a BinaryArray,
    any: &'a BinaryArray,
}

fn struct_values<'a>(list: &'a ListArray, what: &str) -> Result<&'a StructArray> {
    list.values().as_struct_opt().ok_or_else(|| corrupt(what))
}

fn field<'a, T: 'static>(s: &'a StructArray, name: &str, what: &str) -> Result<&'a T> {
    let c = s.column_by_name(name).ok_or_else(|| Error::Corrupt(format!("{what}.{name} is missing")))?;
    downcast(c.as_ref(), what)
}

impl<'a> Attrs<'a> {
    fn new(array: &'a dyn Array, what: &str) -> Result<Attrs<'a>> {
        let list: &ListArray = downcast(array, what)?;
        let s = struct_values(list, what)?;
        Ok(Attrs {
            list,
            key: field(s, schema::KEY, what)?,
            str: field(s, schema::STR, what)?,
            int: field(s, schema::INT, what)?,
            double: field(s, schema::DOUBLE, what)?,
            bool: field(s, schema::BOOL, what)?,
            bytes: field(s, schema::BYTES, what)?,
            any: field(s, schema::ANY, what)?,
        })
    }

    fn read(&self, row: usize, out: &mut Vec<KeyValue>) -> Result<()> {
        let offsets = self.list.value_offsets();
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            let scalar = |v| Some(AnyValue { value: Some(v) });
            let value = if self.str.is_valid(i) {
                scalar(any_value::Value::StringValue(self.str.value(i).into()))
            } else if self.int.is_valid(i) {
                scalar(any_value::Value::IntValue(self.int.value(i)))
            } else if self.double.is_valid(i) {
                scalar(any_value::Value::DoubleValue(self.double.value(i)))
            } else if self.bool.is_valid(i) {
                scalar(any_value::Value::BoolValue(self.bool.value(i)))
            } else if self.bytes.is_valid(i) {
                scalar(any_value::Value::BytesValue(self.bytes.value(i).to_vec()))
            } else if self.any.is_valid(i) {
                // Zero bytes decode to the empty AnyValue, which is kept as such.
                Some(
                    AnyValue::decode(self.any.value(i))
                        .map_err(|e| Error::Corrupt(format!("attribute {:?}: {e}", self.key.value(i))))?,
                )
            } else {
                None
            };
            out.push(KeyValue { key: self.key.value(i).into(), value });
        }
        Ok(())
    }
}

struct Events<'a> {
    list: &'a ListArray,
    time: &'a Int64Array,
    name: &'a StringArray,
    attrs: Attrs<'a>,
    dropped: &'a UInt32Array,
}

impl<'a> Events<'a> {
    fn new(array: &'a dyn Array) -> Result<Events<'a>> {
        let what = schema::EVENTS;
        let list: &ListArray = downcast(array, what)?;
        let s = struct_values(list, what)?;
        let attrs = s.column_by_name(schema::ATTRS).ok_or_else(|| corrupt(what))?;
        Ok(Events {
            list,
            time: field(s, schema::TIME_SINCE_START, what)?,
            name: field(s, schema::NAME, what)?,
            attrs: Attrs::new(attrs.as_ref(), what)?,
            dropped: field(s, schema::DROPPED_ATTRIBUTES, what)?,
        })
    }

    fn read(&self, row: usize, span_start: u64) -> Result<Vec<Event>> {
        let offsets = self.list.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .map(|i| {
                let mut attributes = Vec::new();
                self.attrs.read(i, &mut attributes)?;
                Ok(Event {
                    time_unix_nano: span_start.wrapping_add(self.time.value(i) as u64),
                    name: self.name.value(i).into(),
                    attributes,
                    dropped_attributes_count: self.dropped.value(i),
                })
            })
            .collect()
    }
}

struct Links<'a> {
    list: &'a ListArray,
    trace_id: &'a BinaryArray,
    span_id: &'a BinaryArray,
    trace_state: &'a StringArray,
    flags: &'a UInt32Array,
    attrs: Attrs<'a>,
    dropped: &'a UInt32Array,
}

impl<'a> Links<'a> {
    fn new(array: &'a dyn Array) -> Result<Links<'a>> {
        let what = schema::LINKS;
        let list: &ListArray = downcast(array, what)?;
        let s = struct_values(list, what)?;
        let attrs = s.column_by_name(schema::ATTRS).ok_or_else(|| corrupt(what))?;
        Ok(Links {
            list,
            trace_id: field(s, schema::TRACE_ID, what)?,
            span_id: field(s, schema::SPAN_ID, what)?,
            trace_state: field(s, schema::TRACE_STATE, what)?,
            flags: field(s, schema::FLAGS, what)?,
            attrs: Attrs::new(attrs.as_ref(), what)?,
            dropped: field(s, schema::DROPPED_ATTRIBUTES, what)?,
        })
    }

    fn read(&self, row: usize) -> Result<Vec<Link>> {
        let offsets = self.list.value_offsets();
        (offsets[row] as usize..offsets[row + 1] as usize)
            .map(|i| {
                let mut attributes = Vec::new();
                self.attrs.read(i, &mut attributes)?;
                Ok(Link {
                    trace_id: self.trace_id.value(i).to_vec(),
                    span_id: self.span_id.value(i).to_vec(),
                    trace_state: self.trace_state.value(i).into(),
                    attributes,
                    dropped_attributes_count: self.dropped.value(i),
                    flags: self.flags.value(i),
                })
            })
            .collect()
    }
}
