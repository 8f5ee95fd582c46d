//! A search over one tenant's head and blocks.
//!
//! Newest first, deterministically: the head, then blocks by descending end time, `PARALLEL`
//! at a time; hits are ranked by (start descending, trace ID), and the search stops once it
//! holds `limit` traces that start after the end of every block not yet searched, since none
//! of those could rank higher. The same data always gives the same answer (Tempo returns the
//! "first N found").
//!
//! Each block is read in two phases per row group (row groups never split a trace): the
//! columns of the plan's prefilter decide which rows can take part in a match; only row groups
//! with such rows read `trace_id`, and only the traces holding those rows are read in full and
//! evaluated. A query that prunes nothing (`{ }`) reads whole row groups.

use std::collections::HashMap;
use std::ops::AddAssign;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, FixedSizeBinaryArray, RecordBatch, UInt32Array};
use parquet::arrow::arrow_reader::RowSelection;
use parquet::file::statistics::Statistics;
use spoor_block::BlockReader;
use spoor_block::schema as col;
use spoor_model::TraceId;
use spoor_store::blocks::Blocks;
use spoor_store::head::Head;

use crate::error::{Error, Result};
use crate::hit::{SpansetHit, TraceHit};
use crate::plan::Plan;

/// Blocks searched at once: one per core of the machines this is sized for; more would only
/// queue behind the CPU.
const PARALLEL: usize = 2;

#[derive(Clone)]
pub struct SearchRequest {
    pub plan: Arc<Plan>,
    pub limit: usize,
    /// Spans per spanset.
    pub spss: usize,
    /// Only traces overlapping [start, end] (unix ns, inclusive).
    pub range: Option<(u64, u64)>,
    /// Trace duration bounds in ns (Tempo's legacy `minDuration` / `maxDuration`).
    pub min_duration: Option<u64>,
    pub max_duration: Option<u64>,
}

/// What Tempo reports as search `metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchMetrics {
    /// Traces evaluated (candidates that passed the prefilter).
    pub inspected_traces: u64,
    pub inspected_spans: u64,
    pub inspected_bytes: u64,
    /// Blocks overlapping the range, and how many of them were searched before the limit.
    pub total_blocks: u32,
    pub completed_blocks: u32,
    pub total_block_bytes: u64,
    /// Blocks of the sampled retention tier overlapping the range: traces there were kept by
    /// sampling rules, so a search reaching them may miss traces that were dropped.
    pub sampled_blocks: u32,
}

/// What two searches (or two parts of one) read together.
impl AddAssign<&SearchMetrics> for SearchMetrics {
    fn add_assign(&mut self, other: &SearchMetrics) {
        self.inspected_traces += other.inspected_traces;
        self.inspected_spans += other.inspected_spans;
        self.inspected_bytes += other.inspected_bytes;
        self.total_blocks += other.total_blocks;
        self.completed_blocks += other.completed_blocks;
        self.total_block_bytes += other.total_block_bytes;
        self.sampled_blocks += other.sampled_blocks;
    }
}

impl AddAssign for SearchMetrics {
    fn add_assign(&mut self, other: SearchMetrics) {
        *self += &other;
    }
}

#[derive(Debug, Default)]
pub struct SearchResult {
    /// Newest first (start descending, then trace ID).
    pub traces: Vec<TraceHit>,
    pub metrics: SearchMetrics,
    /// Sources that did not answer (a querier's ingesters): the result may lack their traces.
    pub missing: Vec<String>,
}

pub async fn search(head: &Head, blocks: &Blocks, tenant: &str, req: &SearchRequest) -> Result<SearchResult> {
    search_progressively(head, blocks, tenant, req, None).await
}

/// [`search`], handing `progress` the answer so far after the live traces and after each wave
/// of blocks (streaming clients show results while the older blocks are still read). Without
/// it no intermediate answer is built.
pub async fn search_progressively(
    head: &Head,
    blocks: &Blocks,
    tenant: &str,
    req: &SearchRequest,
    progress: Option<&mut (dyn FnMut(SearchResult) + Send)>,
) -> Result<SearchResult> {
    search_with_remote(head, Vec::new(), blocks, tenant, req, progress).await
}

/// Live traces of this tenant in other processes (the scale-out's ingesters), by trace ID
/// with their fragments.
pub type RemoteLive = Vec<(TraceId, Vec<bytes::Bytes>)>;

/// [`search_progressively`] with `remote` (live traces fetched from ingesters) searched as if
/// they were in this process's head.
pub async fn search_with_remote(
    head: &Head,
    remote: RemoteLive,
    blocks: &Blocks,
    tenant: &str,
    req: &SearchRequest,
    mut progress: Option<&mut (dyn FnMut(SearchResult) + Send)>,
) -> Result<SearchResult> {
    let mut ranked = Ranked::new(req);
    let mut metrics = SearchMetrics::default();

    let mut traces = head.snapshot(tenant);
    if !remote.is_empty() {
        traces.extend(remote);
        traces.sort_unstable_by_key(|(id, _)| *id);
        // Two ingesters never hold one trace, but this process and one may (a flush racing).
        traces.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1.append(&mut later.1);
            }
            same
        });
    }
    if !traces.is_empty() {
        let plan = req.plan.clone();
        let spss = req.spss;
        let (hits, inspected_traces, inspected_spans) = blocking(move || {
            let batch = spoor_block::encode_batch(traces.iter().map(|(id, f)| (*id, &f[..])))?;
            evaluate_in_memory(&plan, &batch, spss)
        })
        .await?;
        metrics.inspected_traces += inspected_traces;
        metrics.inspected_spans += inspected_spans;
        ranked.add(hits);
        if let Some(progress) = progress.as_deref_mut() {
            progress(SearchResult { traces: ranked.snapshot(), metrics: metrics.clone(), ..Default::default() });
        }
    }

    let mut readers: Vec<BlockReader> = blocks
        .visible(tenant)
        .into_iter()
        .filter(|b| {
            let m = b.meta();
            req.range.is_none_or(|(start, end)| m.start_unix_nano <= end && m.end_unix_nano >= start)
        })
        .collect();
    readers.sort_by(|a, b| {
        let (a, b) = (a.meta(), b.meta());
        b.end_unix_nano.cmp(&a.end_unix_nano).then_with(|| b.block_id.cmp(&a.block_id))
    });
    metrics.total_blocks = readers.len() as u32;
    metrics.total_block_bytes = readers.iter().map(|b| b.meta().data_bytes).sum();
    metrics.sampled_blocks = readers.iter().filter(|b| !b.meta().tier.is_full()).count() as u32;

    for chunk in readers.chunks(PARALLEL) {
        // Blocks are in descending end order: the first of this wave ends latest.
        if ranked.complete_before(chunk[0].meta().end_unix_nano) {
            break;
        }
        let jobs = chunk.iter().cloned().map(|reader| {
            let req = req.clone();
            tokio::spawn(async move { search_block(&reader, &req).await })
        });
        for (job, reader) in futures_util::future::join_all(jobs).await.into_iter().zip(chunk) {
            let found = match job.map_err(|e| Error::Internal(format!("search task failed: {e}")))? {
                Ok(found) => found,
                // Compacted away (or expired) under the read: its spans are in a block this
                // search did not list, as a trace lookup would find; not an error.
                Err(_) if block_gone(blocks, reader).await => continue,
                Err(e) => return Err(e),
            };
            metrics += &found.metrics;
            metrics.completed_blocks += 1;
            ranked.add(found.hits);
        }
        if let Some(progress) = progress.as_deref_mut() {
            progress(SearchResult { traces: ranked.snapshot(), metrics: metrics.clone(), ..Default::default() });
        }
    }
    Ok(SearchResult { traces: ranked.finish(), metrics, ..Default::default() })
}

/// Runs CPU-bound work off the async workers, which also serve ingest.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("search task failed: {e}")))?
}

/// Whether a block's meta is gone from the store (its files are deleted meta first).
async fn block_gone(blocks: &Blocks, reader: &BlockReader) -> bool {
    use object_store::ObjectStoreExt;
    let m = reader.meta();
    let meta = spoor_store::blocks::block_dir(&m.tenant, &m.block_id).join(spoor_block::META_FILE);
    matches!(blocks.store.head(&meta).await, Err(object_store::Error::NotFound { .. }))
}

/// Prefilter, then evaluate only the traces holding a candidate row. Returns the hits, the
/// traces evaluated and the rows looked at.
pub fn evaluate_in_memory(plan: &Plan, batch: &RecordBatch, spss: usize) -> Result<(Vec<TraceHit>, u64, u64)> {
    let (candidates, traces, rows) = candidates_in_memory(plan, batch)?;
    let hits = match candidates {
        Some(c) => plan.evaluate(&c, spss)?,
        None => Vec::new(),
    };
    Ok((hits, traces, rows))
}

/// The live traces of `tenant` in this head that match `req` (its newest `limit`), whole: what
/// an ingester hands a querier, which searches them together with the blocks.
pub async fn live_matches(head: &Head, tenant: &str, req: &SearchRequest) -> Result<RemoteLive> {
    let traces = head.snapshot(tenant);
    if traces.is_empty() {
        return Ok(Vec::new());
    }
    let (plan, spss, limit) = (req.plan.clone(), req.spss, req.limit);
    blocking(move || {
        let batch = spoor_block::encode_batch(traces.iter().map(|(id, f)| (*id, &f[..])))?;
        let (mut hits, _, _) = evaluate_in_memory(&plan, &batch, spss)?;
        hits.sort_by_key(|h| std::cmp::Reverse(h.start_unix_nano));
        let keep: std::collections::HashSet<TraceId> = hits.iter().take(limit).map(|h| h.trace_id).collect();
        Ok(traces.into_iter().filter(|(id, _)| keep.contains(id)).collect())
    })
    .await
}

/// The rows of `batch` in traces holding a prefilter candidate (`None`: no such trace), the
/// number of those traces and the rows looked at.
fn candidates_in_memory(plan: &Plan, batch: &RecordBatch) -> Result<(Option<RecordBatch>, u64, u64)> {
    let rows = batch.num_rows() as u64;
    if rows == 0 {
        return Ok((None, 0, 0));
    }
    let ids = trace_ids(batch)?;
    let ranges = match plan.prefilter_columns(batch.schema().as_ref()) {
        Some(_) => candidate_traces(ids, &plan.prefilter(batch)?),
        None => trace_ranges(ids),
    };
    let traces = ranges.len() as u64;
    if ranges.is_empty() {
        return Ok((None, 0, rows));
    }
    let candidates = if ranges.len() == 1 && ranges[0] == (0..batch.num_rows()) {
        batch.clone()
    } else {
        let indices: UInt32Array = ranges.iter().flat_map(|r| r.start as u32..r.end as u32).collect();
        arrow_select::take::take_record_batch(batch, &indices)?
    };
    Ok((Some(candidates), traces, rows))
}

struct BlockHits {
    hits: Vec<TraceHit>,
    /// What was read (the caller counts the block as completed).
    metrics: SearchMetrics,
}

async fn search_block(reader: &BlockReader, req: &SearchRequest) -> Result<BlockHits> {
    let fetched_before = reader.bytes_fetched();
    let scan = BlockScan::open(reader, req.plan.clone(), false).await?;
    let mut out = BlockHits { hits: Vec::new(), metrics: SearchMetrics::default() };
    for rg in scan.row_groups(req.range, false) {
        let rows = scan.rows(rg);
        out.metrics.inspected_spans += rows as u64;
        let Some(mask) = scan.prefilter(rg).await? else { continue };
        // Candidate traces newest first (rows of a trace are in start order, so its first row
        // starts it), evaluated a chunk at a time until `limit` of them match: every later
        // candidate ranks below those, here and in the merged answer.
        let keys = reader.read_row_group(rg, &[col::TRACE_ID.to_owned(), col::START.to_owned()], None).await?;
        let ids = trace_ids(&keys)?;
        let starts = keys
            .column_by_name(col::START)
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::UInt64Array>())
            .ok_or_else(|| Error::Corrupt("start_unix_nano column missing or of the wrong type".into()))?;
        let mut candidates = match &mask {
            Some(mask) => candidate_traces(ids, mask),
            None => trace_ranges(ids),
        };
        candidates.sort_by(|a, b| {
            starts.value(b.start).cmp(&starts.value(a.start)).then_with(|| ids.value(a.start).cmp(ids.value(b.start)))
        });
        let mut kept = 0;
        let mut chunk = req.limit.clamp(16, 4096);
        let mut rest = &candidates[..];
        while !rest.is_empty() && kept < req.limit {
            let (now, later) = rest.split_at(chunk.min(rest.len()));
            rest = later;
            chunk *= 2;
            let batch = scan.read(rg, now.to_vec()).await?;
            let plan = req.plan.clone();
            let spss = req.spss;
            let hits = blocking(move || plan.evaluate(&batch, spss)).await?;
            out.metrics.inspected_traces += now.len() as u64;
            kept += hits.iter().filter(|h| Ranked::keeps_for(req, h)).count();
            out.hits.extend(hits);
        }
    }
    out.metrics.inspected_bytes = reader.bytes_fetched().saturating_sub(fetched_before);
    Ok(out)
}

/// A scan of every trace that may match a plan, for evaluations that need all of them
/// (metrics) rather than the newest few (search).
#[derive(Clone)]
pub(crate) struct Scan {
    pub(crate) plan: Arc<Plan>,
    /// Only spans that start in [start, end] (unix ns) count: row groups, blocks and live
    /// traces without such spans are skipped.
    pub(crate) range: (u64, u64),
    /// Read every column, not just the plan's (`compare()` looks at every attribute).
    pub(crate) all_columns: bool,
    /// Leave out sampled-tier blocks (metrics: their spans are counted from rollups).
    pub(crate) full_tier_only: bool,
}

/// Calls `each` (off the async workers) on every batch of candidate traces of one tenant: the
/// live ones, then every block overlapping the range, `PARALLEL` at a time. Returns the
/// results in no particular order, with what was read.
pub(crate) async fn scan<T: Send + 'static>(
    head: &Head,
    blocks: &Blocks,
    tenant: &str,
    scan: &Scan,
    each: Arc<dyn Fn(RecordBatch) -> Result<T> + Send + Sync>,
) -> Result<(Vec<T>, SearchMetrics)> {
    let mut out = Vec::new();
    let mut metrics = SearchMetrics::default();
    let (start, end) = scan.range;

    let traces = head.snapshot(tenant);
    if !traces.is_empty() {
        let plan = scan.plan.clone();
        let f = each.clone();
        let (found, inspected_traces, inspected_spans) = blocking(move || {
            let batch = spoor_block::encode_batch(traces.iter().map(|(id, f)| (*id, &f[..])))?;
            match candidates_in_memory(&plan, &batch)? {
                (Some(c), traces, rows) => Ok((Some(f(c)?), traces, rows)),
                (None, traces, rows) => Ok((None, traces, rows)),
            }
        })
        .await?;
        metrics.inspected_traces += inspected_traces;
        metrics.inspected_spans += inspected_spans;
        out.extend(found);
    }

    let readers: Vec<BlockReader> = blocks
        .visible(tenant)
        .into_iter()
        .filter(|b| {
            // A block holds whole traces: a span starting in range lies in a trace overlapping it.
            let m = b.meta();
            m.start_unix_nano <= end && m.end_unix_nano >= start && (m.tier.is_full() || !scan.full_tier_only)
        })
        .collect();
    metrics.total_blocks = readers.len() as u32;
    metrics.total_block_bytes = readers.iter().map(|b| b.meta().data_bytes).sum();
    for chunk in readers.chunks(PARALLEL) {
        let jobs = chunk.iter().cloned().map(|reader| {
            let (scan, each) = (scan.clone(), each.clone());
            tokio::spawn(async move { scan_block(&reader, &scan, each).await })
        });
        for job in futures_util::future::join_all(jobs).await {
            let (found, m) = job.map_err(|e| Error::Internal(format!("scan task failed: {e}")))??;
            out.extend(found);
            metrics += &m;
            metrics.completed_blocks += 1;
        }
    }
    Ok((out, metrics))
}

async fn scan_block<T: Send + 'static>(
    reader: &BlockReader,
    scan: &Scan,
    each: Arc<dyn Fn(RecordBatch) -> Result<T> + Send + Sync>,
) -> Result<(Vec<T>, SearchMetrics)> {
    let fetched_before = reader.bytes_fetched();
    let block = BlockScan::open(reader, scan.plan.clone(), scan.all_columns).await?;
    let mut out = Vec::new();
    let mut metrics = SearchMetrics::default();
    for rg in block.row_groups(Some(scan.range), true) {
        metrics.inspected_spans += block.rows(rg) as u64;
        let Some(mask) = block.prefilter(rg).await? else { continue };
        let keys = reader.read_row_group(rg, &[col::TRACE_ID.to_owned()], None).await?;
        let ids = trace_ids(&keys)?;
        let candidates = match &mask {
            Some(mask) => candidate_traces(ids, mask),
            None => trace_ranges(ids),
        };
        metrics.inspected_traces += candidates.len() as u64;
        let batch = block.read(rg, candidates).await?;
        let f = each.clone();
        out.push(blocking(move || f(batch)).await?);
    }
    metrics.inspected_bytes = reader.bytes_fetched().saturating_sub(fetched_before);
    Ok((out, metrics))
}

/// One block opened for a plan: which columns to read, which attribute lists to skip, and the
/// two phases (prefilter, then candidate traces) per row group.
struct BlockScan<'r> {
    reader: &'r BlockReader,
    footer: Arc<parquet::file::metadata::ParquetMetaData>,
    plan: Arc<Plan>,
    lists: Skipped,
    columns: Vec<String>,
    prefilter: Option<Vec<String>>,
    start_col: Option<usize>,
}

impl<'r> BlockScan<'r> {
    async fn open(reader: &'r BlockReader, plan: Arc<Plan>, all_columns: bool) -> Result<BlockScan<'r>> {
        let footer = reader.footer().await?;
        let full = reader.schema().await?;
        let lists = if all_columns { Skipped { lists: Vec::new() } } else { Skipped::new(reader.meta(), &full, &plan) };
        let schema = lists.view(&full);
        let columns =
            if all_columns { full.fields().iter().map(|f| f.name().clone()).collect() } else { plan.columns(&schema) };
        let prefilter = plan.prefilter_columns(&schema);
        let start_col = full.fields().iter().position(|f| f.name() == col::START);
        Ok(BlockScan { reader, footer, plan, lists, columns, prefilter, start_col })
    }

    fn rows(&self, rg: usize) -> usize {
        self.footer.row_group(rg).num_rows().max(0) as usize
    }

    /// The row groups that may hold spans of `range`, by their span start statistics: those
    /// whose spans all start after it, and with `by_span_start` also those whose spans all start
    /// before it (row groups never split a trace, so no other row group needs them).
    fn row_groups(&self, range: Option<(u64, u64)>, by_span_start: bool) -> Vec<usize> {
        (0..self.footer.num_row_groups())
            .filter(|&rg| {
                let (Some((start, end)), Some(i)) = (range, self.start_col) else { return true };
                let Some(Statistics::Int64(s)) = self.footer.row_group(rg).column(i).statistics() else { return true };
                let after = s.min_opt().is_some_and(|&min| min as u64 > end);
                let before = by_span_start && s.max_opt().is_some_and(|&max| (max as u64) < start);
                !after && !before
            })
            .collect()
    }

    /// Phase one: which rows of row group `rg` may take part in a match. `None`: none can;
    /// `Some(None)`: the plan prunes nothing, every row may.
    async fn prefilter(&self, rg: usize) -> Result<Option<Option<BooleanArray>>> {
        let Some(pcols) = &self.prefilter else { return Ok(Some(None)) };
        // The value index rules the row group out without reading it (a value no span has).
        if let Some(group) = self.reader.row_group_index(rg)
            && !self.plan.may_match(group, &self.reader.meta().keys)
        {
            return Ok(None);
        }
        let rows = self.rows(rg);
        let batch = if pcols.is_empty() {
            // Every column the prefilter reads is absent from this block: it is decided by
            // the key catalog alone (usually: nothing can match).
            RecordBatch::try_new_with_options(
                Arc::new(arrow_schema::Schema::empty()),
                Vec::new(),
                &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
            )?
        } else {
            self.reader.read_row_group(rg, pcols, None).await?
        };
        let batch = self.lists.complete(batch)?;
        let plan = self.plan.clone();
        let mask = blocking(move || plan.prefilter(&batch)).await?;
        Ok((mask.true_count() > 0).then_some(Some(mask)))
    }

    /// Phase two: the rows of the given traces (any order), with the scan's columns.
    async fn read(&self, rg: usize, mut ranges: Vec<std::ops::Range<usize>>) -> Result<RecordBatch> {
        ranges.sort_by_key(|r| r.start);
        let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), self.rows(rg));
        self.lists.complete(self.reader.read_row_group(rg, &self.columns, Some(selection)).await?)
    }
}

/// Attribute lists of a block that cannot hold any key the plan reads, by the block's key
/// catalog (`meta.keys`). They are not read; batches get them back as empty lists, so the
/// evaluator sees the block's full layout. A dedicated key whose values all went to its
/// column, or a key the block never saw, then costs nothing to look for.
struct Skipped {
    lists: Vec<arrow_schema::FieldRef>,
}

impl Skipped {
    fn new(meta: &spoor_block::BlockMeta, schema: &arrow_schema::Schema, plan: &Plan) -> Skipped {
        use spoor_traceql::ast::{Intrinsic, Scope};
        let (attrs, intrinsics) = plan.referenced();
        let keys = &meta.keys;
        // Whether a list may hold one of the keys the plan reads in `scope` (unscoped reads all).
        let may_hold = |scope: Scope, known: Option<&Vec<String>>| -> bool {
            let Some(known) = known else { return true };
            attrs.iter().any(|(s, k)| (*s == scope || *s == Scope::Unscoped) && known.binary_search(k).is_ok())
        };
        // The per-scope lists are complete unless the catalog overflowed.
        let complete = !keys.truncated;
        let mut skip = Vec::new();
        if !may_hold(Scope::Span, keys.generic_span.as_ref()) {
            skip.push(col::ATTRS);
        }
        if !may_hold(Scope::Resource, keys.generic_resource.as_ref()) {
            skip.push(col::RESOURCE_ATTRS);
        }
        if !may_hold(Scope::Instrumentation, complete.then_some(&keys.instrumentation)) {
            skip.push(col::SCOPE_ATTRS);
        }
        let uses = |list: &[Intrinsic]| intrinsics.iter().any(|i| list.contains(i));
        if !uses(&[Intrinsic::EventName, Intrinsic::EventTimeSinceStart])
            && !may_hold(Scope::Event, complete.then_some(&keys.event))
        {
            skip.push(col::EVENTS);
        }
        if !uses(&[Intrinsic::LinkTraceId, Intrinsic::LinkSpanId])
            && !may_hold(Scope::Link, complete.then_some(&keys.link))
        {
            skip.push(col::LINKS);
        }
        let lists = schema.fields().iter().filter(|f| skip.contains(&f.name().as_str())).cloned().collect();
        Skipped { lists }
    }

    /// The schema without the skipped lists: what the plan chooses its columns from.
    fn view(&self, schema: &arrow_schema::Schema) -> arrow_schema::Schema {
        let fields: Vec<_> = schema.fields().iter().filter(|f| !self.lists.contains(f)).cloned().collect();
        arrow_schema::Schema::new(fields)
    }

    /// `batch` plus every skipped list, empty on every row.
    fn complete(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.lists.is_empty() {
            return Ok(batch);
        }
        let rows = batch.num_rows();
        let mut fields: Vec<arrow_schema::FieldRef> = batch.schema().fields().iter().cloned().collect();
        let mut columns = batch.columns().to_vec();
        for field in &self.lists {
            let arrow_schema::DataType::List(item) = field.data_type() else { continue };
            let empty = arrow_array::ListArray::try_new(
                item.clone(),
                arrow_buffer::OffsetBuffer::new_zeroed(rows),
                arrow_array::new_empty_array(item.data_type()),
                None,
            )?;
            fields.push(field.clone());
            columns.push(Arc::new(empty));
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::new(arrow_schema::Schema::new(fields)),
            columns,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

fn trace_ids(batch: &RecordBatch) -> Result<&FixedSizeBinaryArray> {
    batch
        .column_by_name(col::TRACE_ID)
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .ok_or_else(|| Error::Corrupt("trace_id column missing or of the wrong type".into()))
}

/// Row ranges of consecutive equal trace IDs.
fn trace_ranges(ids: &FixedSizeBinaryArray) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for row in 1..=ids.len() {
        if row == ids.len() || ids.value(row) != ids.value(start) {
            out.push(start..row);
            start = row;
        }
    }
    out
}

/// Row ranges of the traces holding at least one row of `mask`.
fn candidate_traces(ids: &FixedSizeBinaryArray, mask: &BooleanArray) -> Vec<std::ops::Range<usize>> {
    trace_ranges(ids).into_iter().filter(|r| r.clone().any(|row| mask.is_valid(row) && mask.value(row))).collect()
}

/// The best `limit` hits so far, merged per trace.
struct Ranked<'a> {
    req: &'a SearchRequest,
    by_id: HashMap<TraceId, TraceHit>,
}

impl<'a> Ranked<'a> {
    fn new(req: &'a SearchRequest) -> Self {
        Ranked { req, by_id: HashMap::new() }
    }

    fn add(&mut self, hits: Vec<TraceHit>) {
        for hit in hits {
            match self.by_id.get_mut(&hit.trace_id) {
                Some(existing) => merge(existing, hit, self.req.spss),
                None => {
                    self.by_id.insert(hit.trace_id, hit);
                }
            }
        }
    }

    fn keeps(&self, hit: &TraceHit) -> bool {
        Ranked::keeps_for(self.req, hit)
    }

    fn keeps_for(req: &SearchRequest, hit: &TraceHit) -> bool {
        let duration = hit.end_unix_nano.saturating_sub(hit.start_unix_nano);
        req.range.is_none_or(|(start, end)| hit.start_unix_nano <= end && hit.end_unix_nano >= start)
            && req.min_duration.is_none_or(|min| duration >= min)
            && req.max_duration.is_none_or(|max| duration <= max)
    }

    /// Whether `limit` kept hits all start after `end`.
    fn complete_before(&self, end: u64) -> bool {
        let mut starts: Vec<u64> = self.by_id.values().filter(|h| self.keeps(h)).map(|h| h.start_unix_nano).collect();
        if starts.len() < self.req.limit {
            return false;
        }
        starts.sort_unstable_by(|a, b| b.cmp(a));
        starts[self.req.limit - 1] > end
    }

    fn finish(self) -> Vec<TraceHit> {
        let req = self.req;
        Ranked::newest(req, self.by_id.into_values().filter(|h| Ranked::keeps_for(req, h)).collect())
    }

    /// The answer so far, leaving the ranking to go on.
    fn snapshot(&self) -> Vec<TraceHit> {
        let req = self.req;
        Ranked::newest(req, self.by_id.values().filter(|h| Ranked::keeps_for(req, h)).cloned().collect())
    }

    fn newest(req: &SearchRequest, mut hits: Vec<TraceHit>) -> Vec<TraceHit> {
        hits.sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then_with(|| a.trace_id.cmp(&b.trace_id)));
        hits.truncate(req.limit);
        hits
    }
}

/// One trace found in several places (head and a block, or two blocks): earliest start, latest
/// end, roots and per-service counts from whichever part has them, spansets with the same
/// attributes unioned.
fn merge(into: &mut TraceHit, other: TraceHit, spss: usize) {
    into.start_unix_nano = into.start_unix_nano.min(other.start_unix_nano);
    into.end_unix_nano = into.end_unix_nano.max(other.end_unix_nano);
    if into.root_name.is_none() {
        into.root_name = other.root_name;
        into.root_service = other.root_service;
    }
    for (service, (spans, errors)) in other.service_stats {
        let e = into.service_stats.entry(service).or_default();
        e.0 = e.0.max(spans);
        e.1 = e.1.max(errors);
    }
    for set in other.spansets {
        match into.spansets.iter_mut().find(|s| s.attributes == set.attributes) {
            Some(existing) => union_spans(existing, set, spss),
            None => into.spansets.push(set),
        }
    }
}

fn union_spans(into: &mut SpansetHit, other: SpansetHit, spss: usize) {
    let before = into.spans.len();
    for span in other.spans {
        if !into.spans.iter().any(|s| s.span_id == span.span_id) {
            into.spans.push(span);
        }
    }
    let added = (into.spans.len() - before) as u32;
    into.matched = into.matched.max(other.matched).max(into.matched + added);
    into.spans.sort_by(|a, b| a.start_unix_nano.cmp(&b.start_unix_nano).then_with(|| a.span_id.cmp(&b.span_id)));
    into.spans.truncate(spss);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(rows: &[u8]) -> FixedSizeBinaryArray {
        if rows.is_empty() {
            return FixedSizeBinaryArray::new_null(16, 0);
        }
        FixedSizeBinaryArray::try_from_iter(rows.iter().map(|&b| [b; 16])).unwrap()
    }

    #[test]
    fn trace_ranges_split_on_id_changes() {
        assert_eq!(trace_ranges(&ids(&[1, 1, 2, 3, 3, 3])), vec![0..2, 2..3, 3..6]);
        assert_eq!(trace_ranges(&ids(&[])), Vec::<std::ops::Range<usize>>::new());
    }

    #[test]
    fn candidates_are_whole_traces_with_a_matching_row() {
        let mask = BooleanArray::from(vec![false, false, false, false, true, false]);
        assert_eq!(candidate_traces(&ids(&[1, 1, 2, 3, 3, 3]), &mask), vec![3..6]);
    }

    #[test]
    fn search_metrics_add_up_field_by_field() {
        let m = |n: u64| SearchMetrics {
            inspected_traces: n,
            inspected_spans: 2 * n,
            inspected_bytes: 3 * n,
            total_blocks: 4 * n as u32,
            completed_blocks: 5 * n as u32,
            total_block_bytes: 6 * n,
            sampled_blocks: 7 * n as u32,
        };
        let mut sum = m(1);
        sum += &m(10);
        assert_eq!(sum, m(11));
        sum += m(100);
        assert_eq!(sum, m(111));
    }

    #[test]
    fn merged_spansets_keep_every_span_once() {
        let span =
            |id: u8, start| crate::hit::SpanHit { span_id: vec![id], start_unix_nano: start, ..Default::default() };
        let mut a = SpansetHit { spans: vec![span(1, 10), span(2, 20)], matched: 2, attributes: vec![] };
        let b = SpansetHit { spans: vec![span(2, 20), span(3, 5)], matched: 2, attributes: vec![] };
        union_spans(&mut a, b, 2);
        assert_eq!(a.matched, 3);
        assert_eq!(a.spans.iter().map(|s| s.span_id[0]).collect::<Vec<_>>(), vec![3, 1]);
    }
}
