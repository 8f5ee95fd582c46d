//! TraceQL metrics (`{ } | rate() by (resource.service.name)`): time series over a range of
//! steps, from the live traces and the blocks of a tenant (tempo-compat §1.8, §2.11).
//!
//! Every span that survives a metrics query's spanset pipeline is counted once, by its start
//! time, into the right-closed step bucket `(t - step, t]` stamped `t`. The head and each
//! block (each row group, even) are scanned independently into a [`Partial`] aggregate, and
//! partials merge: counts and sums add, minima and maxima combine, log2 histograms add. Only
//! the merged whole is turned into series, then second-stage operations (topk, bottomk,
//! filters) and arithmetic between queries run on the series.
//!
//! Decisions on Tempo's quirks (see docs/traceql.md): missing and non-numeric values are
//! ignored by every `*_over_time` function, so a bucket with a value keeps it (Q8, fixed);
//! every duration-typed value is in seconds, not only `duration` (Q9, fixed).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use spoor_block::columns as col;
use spoor_store::blocks::Blocks;
use spoor_store::head::Head;
use spoor_traceql::ast::{
    Attribute, BinOp, CmpOp, Intrinsic, MetricsExpr, MetricsFn, MetricsQuery, Pipeline, Query, Root, Scope,
    SecondStage, SpansetQuery, Stage, Static,
};

use crate::eval::{Ctx, Field, IdCol, Val};
use crate::search::{Scan, SearchMetrics};
use crate::{Error, Plan, Result};

/// Most exemplars a query may ask for, per series (Tempo's `max_exemplars` default).
pub const MAX_EXEMPLARS: usize = 100;
/// Most distinct `by()` groups a query aggregates (Tempo's `max_response_series`); spans of
/// further groups are left out and the answer is marked partial, so memory stays bounded
/// whatever the grouping (`by(span:id)`).
pub const MAX_SERIES: usize = 1000;
/// Most intervals a range query may have; a smaller step is refused.
pub const MAX_INTERVALS: u64 = 10_000;
/// `compare()`'s default number of values per attribute.
const COMPARE_TOP: usize = 10;

const SECOND: u64 = 1_000_000_000;

/// Tempo's `DefaultQueryRangeStep` for [start, end] (unix ns): about 240 points, in multiples
/// of 50ms below a minute of range, else the largest of 1h, 5m, 1m, 15s, 5s, 1s that fits.
pub fn default_step(start: u64, end: u64) -> u64 {
    const FIFTY_MS: u64 = 50_000_000;
    let range = end.saturating_sub(start);
    let target = range / 240;
    if range < 60 * SECOND {
        return (target / FIFTY_MS * FIFTY_MS).max(FIFTY_MS);
    }
    [3600, 300, 60, 15, 5].into_iter().map(|s| s * SECOND).find(|&s| target >= s).unwrap_or(SECOND)
}

/// The smallest step [start, end] allows: at most [`MAX_INTERVALS`] intervals.
pub fn min_step(start: u64, end: u64) -> u64 {
    end.saturating_sub(start).div_ceil(MAX_INTERVALS).max(1)
}

/// The sample times of a query and the bucket each span start falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    /// The first sample's time; samples follow every `step`.
    first: u64,
    step: u64,
    len: usize,
    /// Spans starting in [from, to] count.
    from: u64,
    to: u64,
    instant: bool,
}

impl Grid {
    /// A range query: `start` rounded down to a multiple of `step`, `end` rounded up, and
    /// samples at both and every step between. The first sample's bucket, `(first - step,
    /// first]`, is the step Tempo prepends before the start.
    pub fn range(start: u64, end: u64, step: u64) -> Result<Grid> {
        if step == 0 {
            return Err(Error::Invalid("step must be positive".into()));
        }
        if end < start {
            return Err(Error::Invalid("end must be greater than start".into()));
        }
        let first = start - start % step;
        let last = end
            .div_ceil(step)
            .checked_mul(step)
            .ok_or_else(|| Error::Invalid("end is too far in the future".into()))?;
        let intervals = (last - first) / step;
        // The caller refuses more than MAX_INTERVALS; the two extra are rounding and the
        // prepended step. This only keeps a careless caller from allocating without bound.
        if intervals > MAX_INTERVALS + 2 {
            return Err(Error::Invalid(format!("{intervals} intervals are more than {MAX_INTERVALS}")));
        }
        let from = if first >= step { first - step + 1 } else { 0 };
        Ok(Grid { first, step, len: intervals as usize + 1, from, to: last, instant: false })
    }

    /// An instant query: one bucket, [start, end], stamped `end`.
    pub fn instant(start: u64, end: u64) -> Result<Grid> {
        if end <= start {
            return Err(Error::Invalid("end must be greater than start".into()));
        }
        Ok(Grid { first: end, step: end - start, len: 1, from: start, to: end, instant: true })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// The sample times (unix ns), one per bucket.
    pub fn timestamps(&self) -> Vec<u64> {
        (0..self.len as u64).map(|k| self.first + k * self.step).collect()
    }

    /// The span starts that count, inclusive.
    pub fn span_range(&self) -> (u64, u64) {
        (self.from, self.to)
    }

    /// The bucket of a span starting at `t`.
    pub fn bucket(&self, t: u64) -> Option<usize> {
        if t < self.from || t > self.to {
            return None;
        }
        if self.instant || t <= self.first {
            return Some(0);
        }
        Some((t - self.first).div_ceil(self.step) as usize)
    }

    fn step_seconds(&self) -> f64 {
        self.step as f64 / SECOND as f64
    }
}

/// A label value; typed, so int 200 and string "200" are different series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Str(String),
    Int(i64),
    Float(FloatLabel),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
}

/// A float that can be a map key: ordered and compared by `total_cmp`.
#[derive(Clone, Copy, Debug)]
pub struct FloatLabel(pub f64);

impl PartialEq for FloatLabel {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for FloatLabel {}
impl Hash for FloatLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}
impl PartialOrd for FloatLabel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for FloatLabel {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Label {
    fn str(s: &str) -> Label {
        Label::Str(s.to_owned())
    }
    fn float(f: f64) -> Label {
        Label::Float(FloatLabel(f))
    }
}

/// One series of the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, Label)>,
    /// One per grid timestamp; NaN where there is no sample.
    pub values: Vec<f64>,
    /// Earliest first.
    pub exemplars: Vec<Exemplar>,
}

/// A span behind a sample, for linking a graph to traces.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub start_unix_nano: u64,
    /// The span's value (seconds for durations); NaN for `rate` and `count_over_time`.
    pub value: f64,
}

pub struct MetricsRequest {
    /// A checked query whose root is a metrics query.
    pub query: Query,
    pub grid: Grid,
    /// Exemplars asked for by the request (`exemplars=N`); the query's `with(exemplars=...)`
    /// hint overrides it. Capped at [`MAX_EXEMPLARS`].
    pub exemplars: usize,
}

#[derive(Debug, Default)]
pub struct MetricsResult {
    /// Sorted by labels; series without samples left out.
    pub series: Vec<Series>,
    /// Groups past [`MAX_SERIES`] were left out.
    pub truncated: bool,
    pub metrics: SearchMetrics,
}

/// Evaluates a metrics query over the head and the blocks of `tenants`.
pub async fn query_range(
    head: &Head,
    blocks: &Blocks,
    tenants: &[String],
    req: &MetricsRequest,
) -> Result<MetricsResult> {
    let compiled = Compiled::new(&req.query, req.exemplars)?;
    let grid = req.grid;
    let mut metrics = SearchMetrics::default();
    let mut partials = Vec::new();
    for leaf in &compiled.leaves {
        let mut partial = Partial::default();
        let scan = Scan { plan: leaf.plan.clone(), range: grid.span_range(), all_columns: leaf.compare.is_some() };
        let each: Arc<dyn Fn(RecordBatch) -> Result<Partial> + Send + Sync> = {
            let leaf = leaf.clone();
            Arc::new(move |batch| leaf.partial(&grid, &batch))
        };
        for tenant in tenants {
            let (found, m) = crate::search::scan(head, blocks, tenant, &scan, each.clone()).await?;
            found.into_iter().for_each(|p| partial.merge(p));
            add_metrics(&mut metrics, &m);
        }
        partials.push(partial);
    }
    let truncated = partials.iter().any(|p| p.truncated);
    Ok(MetricsResult { series: compiled.finish(partials, &grid)?, truncated, metrics })
}

/// The same over in-memory batches, each aggregated on its own and merged as blocks are.
pub fn evaluate_batches(query: &Query, grid: &Grid, exemplars: usize, batches: &[RecordBatch]) -> Result<Vec<Series>> {
    let compiled = Compiled::new(query, exemplars)?;
    let mut partials = Vec::new();
    for leaf in &compiled.leaves {
        let mut partial = Partial::default();
        for batch in batches {
            partial.merge(leaf.partial(grid, batch)?);
        }
        partials.push(partial);
    }
    compiled.finish(partials, grid)
}

fn add_metrics(into: &mut SearchMetrics, m: &SearchMetrics) {
    into.inspected_traces += m.inspected_traces;
    into.inspected_spans += m.inspected_spans;
    into.inspected_bytes += m.inspected_bytes;
    into.total_blocks += m.total_blocks;
    into.completed_blocks += m.completed_blocks;
    into.total_block_bytes += m.total_block_bytes;
}

/// A metrics query ready to run: one [`Leaf`] per `pipeline | fn` and how their series combine.
struct Compiled {
    root: Node,
    leaves: Vec<Arc<Leaf>>,
}

enum Node {
    Leaf(usize),
    /// A number in arithmetic, and how it prints in a series name.
    Scalar(f64, String),
    Binary(BinOp, Box<Node>, Box<Node>),
}

impl Compiled {
    fn new(query: &Query, requested: usize) -> Result<Compiled> {
        let Root::Metrics(expr) = &query.root else { return Err(Error::Invalid("not a metrics query".into())) };
        let exemplars = match query.hints.iter().find(|h| h.name == "exemplars").map(|h| &h.value) {
            Some(Static::Bool(false)) => 0,
            Some(Static::Bool(true)) if requested == 0 => MAX_EXEMPLARS,
            Some(Static::Int(n)) => usize::try_from(*n).unwrap_or(0),
            _ => requested,
        }
        .min(MAX_EXEMPLARS);
        let mut leaves = Vec::new();
        let root = Compiled::node(expr, query, exemplars, &mut leaves)?;
        Ok(Compiled { root, leaves })
    }

    fn node(expr: &MetricsExpr, query: &Query, exemplars: usize, leaves: &mut Vec<Arc<Leaf>>) -> Result<Node> {
        Ok(match expr {
            MetricsExpr::Query(q) => {
                leaves.push(Arc::new(Leaf::new(q, query, exemplars)?));
                Node::Leaf(leaves.len() - 1)
            }
            MetricsExpr::Scalar { value: Static::Int(i), .. } => Node::Scalar(*i as f64, i.to_string()),
            MetricsExpr::Scalar { value: Static::Float(f), .. } => Node::Scalar(*f, f.to_string()),
            MetricsExpr::Scalar { .. } => return Err(Error::Invalid("metrics arithmetic takes numbers only".into())),
            MetricsExpr::Binary { op, lhs, rhs, .. } => {
                if !matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div) {
                    return Err(Error::Invalid(format!("'{}' cannot combine metrics queries", op.as_str())));
                }
                let lhs = Compiled::node(lhs, query, exemplars, leaves)?;
                let rhs = Compiled::node(rhs, query, exemplars, leaves)?;
                Node::Binary(*op, Box::new(lhs), Box::new(rhs))
            }
        })
    }

    fn finish(&self, partials: Vec<Partial>, grid: &Grid) -> Result<Vec<Series>> {
        let mut partials: Vec<Option<Partial>> = partials.into_iter().map(Some).collect();
        let mut series = match self.operand(&self.root, &mut partials, grid)? {
            Operand::Series(s) => s,
            Operand::Scalar(..) => return Err(Error::Invalid("a metrics query needs a metrics function".into())),
        };
        series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(series)
    }

    fn operand(&self, node: &Node, partials: &mut [Option<Partial>], grid: &Grid) -> Result<Operand> {
        Ok(match node {
            Node::Leaf(i) => {
                let partial = partials.get_mut(*i).and_then(Option::take).unwrap_or_default();
                Operand::Series(self.leaves[*i].series(partial, grid)?)
            }
            Node::Scalar(v, text) => Operand::Scalar(*v, text.clone()),
            Node::Binary(op, lhs, rhs) => {
                let lhs = self.operand(lhs, partials, grid)?;
                let rhs = self.operand(rhs, partials, grid)?;
                arithmetic(*op, lhs, rhs)
            }
        })
    }
}

/// The function of one metrics query.
#[derive(Clone, Debug)]
enum Func {
    Rate,
    Count,
    Min,
    Max,
    Sum,
    Avg,
    Quantile(Vec<f64>),
    Histogram,
    Compare,
}

/// One `pipeline | fn(...) by(...) {second stage}`.
#[derive(Clone)]
struct Leaf {
    plan: Arc<Plan>,
    func: Func,
    /// `__name__` of an unlabelled series.
    name: &'static str,
    /// Index of the function argument's value in the plan's values.
    arg: Option<usize>,
    /// Label key and value index of each `by()` attribute.
    by: Vec<(String, usize)>,
    second: Vec<SecondStage>,
    exemplars: usize,
    compare: Option<Compare>,
}

/// What `compare()` needs besides the population's plan.
#[derive(Clone)]
struct Compare {
    /// The spans of the selection (those of the population it matches).
    selection: Arc<Plan>,
    top: usize,
    /// Only spans starting in (start, end] are selected.
    window: Option<(u64, u64)>,
    /// Intrinsics compared, as label key and value index (attributes are found per batch).
    intrinsics: Vec<(String, usize)>,
}

/// Intrinsics `compare()` looks at besides span and resource attributes; durations, times,
/// IDs and nested-set numbers are unique per span, and status messages free text: they say
/// nothing about a group.
const COMPARED_INTRINSICS: [Intrinsic; 5] =
    [Intrinsic::Name, Intrinsic::Status, Intrinsic::Kind, Intrinsic::TraceRootName, Intrinsic::TraceRootService];

impl Leaf {
    fn new(q: &MetricsQuery, query: &Query, exemplars: usize) -> Result<Leaf> {
        let (func, name, arg) = match &q.func {
            MetricsFn::Rate => (Func::Rate, "rate", None),
            MetricsFn::CountOverTime => (Func::Count, "count_over_time", None),
            MetricsFn::MinOverTime(a) => (Func::Min, "min_over_time", Some(a)),
            MetricsFn::MaxOverTime(a) => (Func::Max, "max_over_time", Some(a)),
            MetricsFn::SumOverTime(a) => (Func::Sum, "sum_over_time", Some(a)),
            MetricsFn::AvgOverTime(a) => (Func::Avg, "avg_over_time", Some(a)),
            MetricsFn::QuantileOverTime(a, qs) => (Func::Quantile(qs.clone()), "quantile_over_time", Some(a)),
            MetricsFn::HistogramOverTime(a) => (Func::Histogram, "histogram_over_time", Some(a)),
            MetricsFn::Compare { .. } => (Func::Compare, "compare", None),
        };
        let mut extra: Vec<Attribute> = arg.into_iter().cloned().collect();
        extra.extend(q.by.iter().cloned());
        if matches!(func, Func::Compare) {
            extra.extend(COMPARED_INTRINSICS.iter().map(|i| Attribute::Intrinsic(*i)));
        }
        let (plan, values) = Plan::for_metrics(&q.spans, &query.hints, &extra)?;
        let (arg, rest) = if arg.is_some() { (values.first().copied(), &values[1..]) } else { (None, &values[..]) };
        let by: Vec<(String, usize)> = q.by.iter().map(|a| a.to_string()).zip(rest.iter().copied()).collect();
        let compare = match &q.func {
            MetricsFn::Compare { filter, top, start, end } => {
                let stages = vec![Stage::Spanset(filter.clone())];
                let selection = Plan::new(&Query {
                    root: Root::Spans(SpansetQuery::Pipeline(Pipeline { stages })),
                    hints: vec![],
                })?;
                let top = match top {
                    None => COMPARE_TOP,
                    Some(n) => usize::try_from(*n)
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| Error::Invalid("compare() limit must be greater than 0".into()))?,
                };
                let window = match (start, end) {
                    (Some(s), Some(e)) if *s >= 0 && *e >= 0 => Some((*s as u64, *e as u64)),
                    (None, None) => None,
                    _ => return Err(Error::Invalid("compare() start and end must be unix nanoseconds".into())),
                };
                let intrinsics = COMPARED_INTRINSICS.iter().map(|i| i.as_str().to_owned()).zip(rest.iter().copied());
                Some(Compare { selection: Arc::new(selection), top, window, intrinsics: intrinsics.collect() })
            }
            _ => None,
        };
        // compare() reports no exemplars: its series are frequencies of attribute values.
        let exemplars = if compare.is_some() { 0 } else { exemplars };
        Ok(Leaf { plan: Arc::new(plan), func, name, arg, by, second: q.second.clone(), exemplars, compare })
    }

    /// Aggregates one batch of whole candidate traces.
    fn partial(&self, grid: &Grid, batch: &RecordBatch) -> Result<Partial> {
        if let Some(compare) = &self.compare {
            return self.compare_partial(compare, grid, batch);
        }
        self.plan.matched(batch, |rows, values| {
            let mut out = Partial::default();
            if rows.is_empty() {
                return Ok(out);
            }
            let ctx = Ctx::new(batch, None);
            let starts = starts(&ctx)?;
            let ids = if self.exemplars > 0 {
                Some((
                    IdCol::of(col::TRACE_ID, ctx.column(col::TRACE_ID)?)?,
                    IdCol::of(col::SPAN_ID, ctx.column(col::SPAN_ID)?)?,
                ))
            } else {
                None
            };
            // Series of this batch by borrowed label values: owned labels once per series.
            let mut index: HashMap<Vec<LabelRef>, usize> = HashMap::new();
            let mut accs: Vec<(Vec<LabelRef>, Acc)> = Vec::new();
            let mut key: Vec<LabelRef> = Vec::with_capacity(self.by.len());
            for &row in rows {
                let row = row as usize;
                let Some(bucket) = grid.bucket(starts[row]) else { continue };
                key.clear();
                key.extend(self.by.iter().map(|(_, v)| LabelRef::of(&values[*v][row])));
                let i = match index.get(key.as_slice()) {
                    Some(&i) => i,
                    None if accs.len() >= MAX_SERIES => {
                        out.truncated = true;
                        continue;
                    }
                    None => {
                        accs.push((key.clone(), Acc::new(&self.func, grid.len)));
                        index.insert(key.clone(), accs.len() - 1);
                        accs.len() - 1
                    }
                };
                let number = self.arg.map(|a| Number::of(&values[a][row]));
                let acc = &mut accs[i].1;
                acc.add(bucket, number);
                if let Some((traces, spans)) = &ids {
                    let value = match number {
                        None => Some(f64::NAN),
                        Some(n) => n.map(|n| n.value),
                    };
                    // A span without a value is no example of one.
                    if let Some(value) = value {
                        let trace = traces.get(row).unwrap_or_default();
                        let span = spans.get(row).unwrap_or_default();
                        acc.exemplar(bucket, trace, span, starts[row], value, number.flatten().map(|n| n.bucket));
                    }
                }
            }
            out.series = accs.into_iter().map(|(k, acc)| (k.iter().map(LabelRef::owned).collect(), acc)).collect();
            Ok(out)
        })
    }

    fn compare_partial(&self, compare: &Compare, grid: &Grid, batch: &RecordBatch) -> Result<Partial> {
        let selected = compare.selection.matched(batch, |rows, _| Ok(rows.to_vec()))?;
        // Span and resource attributes, found in this batch's columns and attribute lists.
        let schema = batch.schema();
        let mut fields: Vec<(String, Field)> = Vec::new();
        let mut add = |scope: Scope, key: &str| {
            let label = Attribute::Attr { scope, name: key.to_owned() }.to_string();
            if !fields.iter().any(|(l, _)| *l == label) {
                fields.push((label, Field::Attr { scope, key: key.to_owned() }));
            }
        };
        for f in schema.fields() {
            let name = f.name().as_str();
            if name == col::SERVICE_NAME {
                add(Scope::Resource, "service.name");
            } else if let Some(key) = name.strip_prefix("span.") {
                add(Scope::Span, key);
            } else if let Some(key) = name.strip_prefix("resource.") {
                add(Scope::Resource, key);
            }
        }
        for (list, scope) in [(col::ATTRS, Scope::Span), (col::RESOURCE_ATTRS, Scope::Resource)] {
            if let Some(column) = batch.column_by_name(list) {
                crate::eval::list_keys(list, column)?.iter().for_each(|k| add(scope, k));
            }
        }
        self.plan.matched(batch, |rows, values| {
            let mut out = Partial::default();
            if rows.is_empty() {
                return Ok(out);
            }
            let ctx = Ctx::new(batch, None);
            let starts = starts(&ctx)?;
            let n = ctx.rows;
            let mut columns: Vec<(&str, Vec<Val>)> = Vec::new();
            for (label, field) in &fields {
                columns.push((label, ctx.source(field)?.values(n)));
            }
            for (label, v) in &compare.intrinsics {
                columns.push((label, values[*v].clone()));
            }
            let mut counts: HashMap<(bool, &str), CompareCounts<LabelRef>> = HashMap::new();
            for &row in rows {
                let r = row as usize;
                let Some(bucket) = grid.bucket(starts[r]) else { continue };
                let in_window = compare.window.is_none_or(|(s, e)| s < starts[r] && starts[r] <= e);
                let group = in_window && selected.binary_search(&row).is_ok();
                for (label, vals) in &columns {
                    let value = LabelRef::of(&vals[r]);
                    if matches!(value, LabelRef::Nil) {
                        continue;
                    }
                    let c = counts.entry((group, label)).or_insert_with(|| CompareCounts::new(grid.len));
                    c.total[bucket] += 1;
                    c.values.entry(value).or_insert_with(|| vec![0; grid.len])[bucket] += 1;
                }
            }
            out.compare = counts
                .into_iter()
                .map(|((group, label), c)| {
                    let values = c.values.into_iter().map(|(k, v)| (k.owned(), v)).collect();
                    ((group, label.to_owned()), CompareCounts { values, total: c.total })
                })
                .collect();
            Ok(out)
        })
    }

    /// The merged aggregate as series, after the second stage.
    fn series(&self, partial: Partial, grid: &Grid) -> Result<Vec<Series>> {
        if self.compare.is_some() {
            return Ok(self.compare_series(partial));
        }
        let mut out = Vec::new();
        for (key, acc) in partial.series {
            let labels: Vec<(String, Label)> = if self.by.is_empty() {
                vec![("__name__".to_owned(), Label::str(self.name))]
            } else {
                self.by.iter().map(|(k, _)| k.clone()).zip(key).collect()
            };
            let exemplars = |only: Option<Bucket>| pick_exemplars(&acc.exemplars, self.exemplars, only);
            match (&self.func, acc.cells) {
                (Func::Rate, Cells::Count(c)) => {
                    let step = grid.step_seconds();
                    out.push(Series {
                        labels,
                        values: c.iter().map(|&n| n as f64 / step).collect(),
                        exemplars: exemplars(None),
                    });
                }
                (_, Cells::Count(c)) => out.push(Series {
                    labels,
                    values: c.iter().map(|&n| n as f64).collect(),
                    exemplars: exemplars(None),
                }),
                (Func::Avg, Cells::Sum { sum, n }) => {
                    let values = sum.iter().zip(&n).map(|(s, &n)| if n == 0 { f64::NAN } else { s / n as f64 });
                    out.push(Series { labels, values: values.collect(), exemplars: exemplars(None) });
                }
                (_, Cells::Sum { sum, n }) => {
                    let values = sum.iter().zip(&n).map(|(&s, &n)| if n == 0 { f64::NAN } else { s });
                    out.push(Series { labels, values: values.collect(), exemplars: exemplars(None) });
                }
                (_, Cells::Min(values) | Cells::Max(values)) => {
                    out.push(Series { labels, values, exemplars: exemplars(None) })
                }
                (Func::Quantile(qs), Cells::Log2(hist)) => {
                    let mut buckets: Vec<(f64, &Vec<u64>)> = hist.iter().map(|(b, c)| (b.bound(), c)).collect();
                    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                    for &q in qs {
                        let values = (0..grid.len)
                            .map(|i| {
                                let counts: Vec<(f64, u64)> = buckets.iter().map(|(b, c)| (*b, c[i])).collect();
                                log2_quantile(q, &counts)
                            })
                            .collect();
                        let mut labels = labels.clone();
                        labels.push(("p".to_owned(), Label::float(q)));
                        out.push(Series { labels, values, exemplars: exemplars(None) });
                    }
                }
                (_, Cells::Log2(hist)) => {
                    for (bucket, counts) in hist {
                        let mut labels = labels.clone();
                        labels.push(("__bucket".to_owned(), Label::float(bucket.bound())));
                        let values = counts.iter().map(|&n| n as f64).collect();
                        out.push(Series { labels, values, exemplars: exemplars(Some(bucket)) });
                    }
                }
            }
        }
        second_stage(out, &self.second)
    }

    fn compare_series(&self, partial: Partial) -> Vec<Series> {
        let top = self.compare.as_ref().map_or(COMPARE_TOP, |c| c.top);
        let mut out = Vec::new();
        let zeros = |v: &[u64]| v.iter().map(|&n| n as f64).collect::<Vec<f64>>();
        for ((selected, key), counts) in partial.compare {
            let group = if selected { "selection" } else { "baseline" };
            let meta = |t: &str| ("__meta_type".to_owned(), Label::str(t));
            let mut ranked: Vec<(Label, Vec<u64>)> = counts.values.into_iter().collect();
            ranked.sort_by(|a, b| {
                let total = |v: &[u64]| v.iter().sum::<u64>();
                total(&b.1).cmp(&total(&a.1)).then_with(|| a.0.cmp(&b.0))
            });
            if ranked.len() > top {
                let labels = vec![
                    meta(group),
                    ("__meta_error".to_owned(), Label::str("__too_many_values__")),
                    (key.clone(), Label::str("nil")),
                ];
                out.push(Series { labels, values: vec![0.0; counts.total.len()], exemplars: Vec::new() });
                ranked.truncate(top);
            }
            for (value, c) in ranked {
                out.push(Series {
                    labels: vec![meta(group), (key.clone(), value)],
                    values: zeros(&c),
                    exemplars: vec![],
                });
            }
            let labels = vec![meta(&format!("{group}_total")), (key.clone(), Label::str("nil"))];
            out.push(Series { labels, values: zeros(&counts.total), exemplars: Vec::new() });
        }
        out
    }
}

fn starts<'c>(ctx: &Ctx<'c>) -> Result<&'c [u64]> {
    let c = ctx.column(col::START)?;
    c.as_primitive_opt::<UInt64Type>()
        .map(|a| &a.values()[..])
        .ok_or_else(|| Error::Corrupt(format!("column {} is {}, expected UInt64", col::START, c.data_type())))
}

/// A label value borrowed from a batch while it is aggregated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum LabelRef<'v> {
    Nil,
    Str(&'v str),
    Int(i64),
    Float(u64),
    Bool(bool),
    Duration(i64),
    Id(&'v [u8]),
}

impl<'v> LabelRef<'v> {
    fn of(v: &Val<'v>) -> LabelRef<'v> {
        match v {
            // Arrays are no label value TraceQL can group by.
            Val::Nil | Val::Arr(_) => LabelRef::Nil,
            Val::Bool(b) => LabelRef::Bool(*b),
            Val::Int(i) => LabelRef::Int(*i),
            Val::Float(f) => LabelRef::Float(f.to_bits()),
            Val::Str(s) => LabelRef::Str(s),
            Val::Duration(d) => LabelRef::Duration(*d),
            Val::Status(s) => LabelRef::Str(s.as_str()),
            Val::Kind(k) => LabelRef::Str(k.as_str()),
            Val::Id(b) => LabelRef::Id(b),
        }
    }

    /// A missing value is the string "nil", as in Tempo.
    fn owned(&self) -> Label {
        match self {
            LabelRef::Nil => Label::str("nil"),
            LabelRef::Str(s) => Label::str(s),
            LabelRef::Int(i) => Label::Int(*i),
            LabelRef::Float(bits) => Label::float(f64::from_bits(*bits)),
            LabelRef::Bool(b) => Label::Bool(*b),
            LabelRef::Duration(d) => Label::Duration(*d),
            LabelRef::Id(b) => Label::Str(spoor_model::ids::hex(b)),
        }
    }
}

/// A power-of-two bucket: values in (2^(exp-1), 2^exp]; durations bucketed in ns. Values
/// of zero or less share one bucket (`exp` = `i32::MIN`), reported with bound 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Bucket {
    duration: bool,
    exp: i32,
}

impl Bucket {
    fn plain(x: f64) -> Bucket {
        let exp = if x > 0.0 { x.log2().ceil() as i32 } else { i32::MIN };
        Bucket { duration: false, exp }
    }

    fn duration(ns: i64) -> Bucket {
        // Exact for integers: the bit length of ns - 1 is ceil(log2(ns)).
        let exp = if ns > 0 { (u64::BITS - (ns as u64 - 1).leading_zeros()) as i32 } else { i32::MIN };
        Bucket { duration: true, exp }
    }

    /// The upper bound, in seconds for durations.
    fn bound(&self) -> f64 {
        if self.exp == i32::MIN {
            return 0.0;
        }
        let bound = 2f64.powi(self.exp);
        if self.duration { bound / SECOND as f64 } else { bound }
    }
}

/// A span's numeric value: in seconds for durations (Q9 fixed: every duration, not only
/// `duration`), and its log2 bucket.
#[derive(Clone, Copy, Debug)]
struct Number {
    value: f64,
    bucket: Bucket,
}

impl Number {
    /// Ints, floats and durations count; anything else (and NaN) is no value.
    fn of(v: &Val) -> Option<Number> {
        match *v {
            Val::Int(i) => Some(Number { value: i as f64, bucket: Bucket::plain(i as f64) }),
            Val::Float(f) if !f.is_nan() => Some(Number { value: f, bucket: Bucket::plain(f) }),
            Val::Duration(ns) => Some(Number { value: ns as f64 / SECOND as f64, bucket: Bucket::duration(ns) }),
            _ => None,
        }
    }
}

/// Tempo's log2 quantile over `(upper bound, count)` buckets sorted by bound: find the bucket
/// holding the `ceil(q * total)`-th value; its bound if the count ends exactly there, else an
/// exponential interpolation between the previous bound (half this one for the first bucket)
/// and this one, by the fraction of the bucket's values needed. No values: 0.
fn log2_quantile(q: f64, buckets: &[(f64, u64)]) -> f64 {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 || q.is_nan() {
        return 0.0;
    }
    let want = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &(bound, count)) in buckets.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if seen + count == want {
            return bound;
        }
        if seen + count > want {
            if bound <= 0.0 {
                return 0.0;
            }
            let fraction = (want - seen) as f64 / count as f64;
            let hi = bound.log2();
            let lo = match buckets[..i].iter().rev().find(|b| b.1 > 0) {
                Some(&(prev, _)) if prev > 0.0 => prev.log2(),
                _ => hi - 1.0,
            };
            return 2f64.powf(lo + (hi - lo) * fraction);
        }
        seen += count;
    }
    buckets.last().map_or(0.0, |b| b.0)
}

/// What one batch, block or the head contributed; partials of the same leaf merge.
#[derive(Default)]
pub(crate) struct Partial {
    series: HashMap<Vec<Label>, Acc>,
    /// Some group did not fit under [`MAX_SERIES`].
    truncated: bool,
    /// `compare()`: per (selected, attribute label key).
    compare: HashMap<(bool, String), CompareCounts<Label>>,
}

impl Partial {
    fn merge(&mut self, other: Partial) {
        self.truncated |= other.truncated;
        for (key, acc) in other.series {
            let full = self.series.len() >= MAX_SERIES;
            match self.series.get_mut(&key) {
                Some(mine) => mine.merge(acc),
                None if full => self.truncated = true,
                None => {
                    self.series.insert(key, acc);
                }
            }
        }
        for (key, counts) in other.compare {
            match self.compare.get_mut(&key) {
                Some(mine) => mine.merge(counts),
                None => {
                    self.compare.insert(key, counts);
                }
            }
        }
    }
}

/// Per value of one attribute, spans per bucket; and spans with any value per bucket.
struct CompareCounts<K> {
    values: HashMap<K, Vec<u64>>,
    total: Vec<u64>,
}

impl<K: Hash + Eq> CompareCounts<K> {
    fn new(len: usize) -> Self {
        CompareCounts { values: HashMap::new(), total: vec![0; len] }
    }

    fn merge(&mut self, other: CompareCounts<K>) {
        add_counts(&mut self.total, &other.total);
        for (k, v) in other.values {
            match self.values.get_mut(&k) {
                Some(mine) => add_counts(mine, &v),
                None => {
                    self.values.insert(k, v);
                }
            }
        }
    }
}

fn add_counts(into: &mut [u64], other: &[u64]) {
    into.iter_mut().zip(other).for_each(|(a, b)| *a += b);
}

/// One series' aggregate per bucket, and a candidate exemplar per bucket.
struct Acc {
    cells: Cells,
    /// Step buckets.
    len: usize,
    exemplars: BTreeMap<usize, Candidate>,
}

enum Cells {
    /// rate, count_over_time.
    Count(Vec<u64>),
    /// sum_over_time, avg_over_time: the sum of the values and how many there were.
    Sum {
        sum: Vec<f64>,
        n: Vec<u64>,
    },
    /// min_over_time, max_over_time (NaN: none yet).
    Min(Vec<f64>),
    Max(Vec<f64>),
    /// quantile_over_time, histogram_over_time: per log2 bucket, values per step bucket.
    Log2(BTreeMap<Bucket, Vec<u64>>),
}

/// An exemplar candidate: the span with the smallest (trace ID, span ID) of a bucket, so
/// the choice does not depend on the order partials merge in.
#[derive(Clone)]
struct Candidate {
    exemplar: Exemplar,
    bucket: Option<Bucket>,
}

impl Acc {
    fn new(func: &Func, len: usize) -> Acc {
        let cells = match func {
            Func::Rate | Func::Count | Func::Compare => Cells::Count(vec![0; len]),
            Func::Sum | Func::Avg => Cells::Sum { sum: vec![0.0; len], n: vec![0; len] },
            Func::Min => Cells::Min(vec![f64::NAN; len]),
            Func::Max => Cells::Max(vec![f64::NAN; len]),
            Func::Quantile(_) | Func::Histogram => Cells::Log2(BTreeMap::new()),
        };
        Acc { cells, len, exemplars: BTreeMap::new() }
    }

    /// One span in `bucket`; `number` is `None` for functions without an argument, `Some(None)`
    /// for a span without a usable value (ignored: Q8 fixed).
    fn add(&mut self, bucket: usize, number: Option<Option<Number>>) {
        let len = self.len;
        match (&mut self.cells, number) {
            (Cells::Count(c), _) => c[bucket] += 1,
            (_, None | Some(None)) => {}
            (Cells::Sum { sum, n }, Some(Some(v))) => {
                sum[bucket] += v.value;
                n[bucket] += 1;
            }
            // f64::min and max take the number when one side is NaN.
            (Cells::Min(e), Some(Some(v))) => e[bucket] = e[bucket].min(v.value),
            (Cells::Max(e), Some(Some(v))) => e[bucket] = e[bucket].max(v.value),
            (Cells::Log2(h), Some(Some(v))) => h.entry(v.bucket).or_insert_with(|| vec![0; len])[bucket] += 1,
        }
    }

    fn exemplar(&mut self, bucket: usize, trace: &[u8], span: &[u8], start: u64, value: f64, b: Option<Bucket>) {
        let better = match self.exemplars.get(&bucket) {
            None => true,
            Some(c) => (trace, span) < (&c.exemplar.trace_id[..], &c.exemplar.span_id[..]),
        };
        if better {
            let exemplar = Exemplar { trace_id: trace.to_vec(), span_id: span.to_vec(), start_unix_nano: start, value };
            self.exemplars.insert(bucket, Candidate { exemplar, bucket: b });
        }
    }

    fn merge(&mut self, other: Acc) {
        match (&mut self.cells, other.cells) {
            (Cells::Count(a), Cells::Count(b)) => add_counts(a, &b),
            (Cells::Sum { sum, n }, Cells::Sum { sum: s2, n: n2 }) => {
                sum.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
                add_counts(n, &n2);
            }
            (Cells::Log2(a), Cells::Log2(b)) => {
                for (bucket, counts) in b {
                    match a.get_mut(&bucket) {
                        Some(mine) => add_counts(mine, &counts),
                        None => {
                            a.insert(bucket, counts);
                        }
                    }
                }
            }
            (Cells::Min(a), Cells::Min(b)) => a.iter_mut().zip(&b).for_each(|(a, b)| *a = a.min(*b)),
            (Cells::Max(a), Cells::Max(b)) => a.iter_mut().zip(&b).for_each(|(a, b)| *a = a.max(*b)),
            // Partials of one leaf always have the same function.
            _ => {}
        }
        for (bucket, c) in other.exemplars {
            let e = &c.exemplar;
            self.exemplar(bucket, &e.trace_id, &e.span_id, e.start_unix_nano, e.value, c.bucket);
        }
    }
}

/// Up to `n` exemplars spread evenly over the buckets that have one (of histogram bucket
/// `only`, if given), earliest first.
fn pick_exemplars(candidates: &BTreeMap<usize, Candidate>, n: usize, only: Option<Bucket>) -> Vec<Exemplar> {
    let all: Vec<&Candidate> = candidates.values().filter(|c| only.is_none() || c.bucket == only).collect();
    let picked: Vec<&Candidate> = if all.len() <= n { all } else { (0..n).map(|i| all[i * all.len() / n]).collect() };
    let mut out: Vec<Exemplar> = picked.into_iter().map(|c| c.exemplar.clone()).collect();
    out.sort_by_key(|e| e.start_unix_nano);
    out
}

/// topk, bottomk and filters, left to right; a series left without samples goes.
fn second_stage(mut series: Vec<Series>, stages: &[SecondStage]) -> Result<Vec<Series>> {
    for stage in stages {
        match stage {
            SecondStage::TopK(n) | SecondStage::BottomK(n) => {
                let top = matches!(stage, SecondStage::TopK(_));
                let n = usize::try_from(*n).unwrap_or(0);
                let len = series.first().map_or(0, |s| s.values.len());
                for t in 0..len {
                    let mut ranked: Vec<(usize, f64)> =
                        series.iter().enumerate().map(|(i, s)| (i, s.values[t])).filter(|(_, v)| !v.is_nan()).collect();
                    // Ties go to the series that sorts first by labels.
                    ranked.sort_by(|a, b| {
                        let by_value = if top { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) };
                        by_value.then_with(|| series[a.0].labels.cmp(&series[b.0].labels))
                    });
                    for &(i, _) in ranked.iter().skip(n) {
                        series[i].values[t] = f64::NAN;
                    }
                }
            }
            SecondStage::Filter(op, value) => {
                let x = match *value {
                    Static::Int(i) => i as f64,
                    Static::Float(f) => f,
                    // Durations are compared in seconds, the unit of every duration value.
                    Static::Duration(ns) => ns as f64 / SECOND as f64,
                    _ => return Err(Error::Invalid("a metrics filter compares with a number or a duration".into())),
                };
                for s in &mut series {
                    for v in &mut s.values {
                        if !v.is_nan() && !compare(*op, *v, x) {
                            *v = f64::NAN;
                        }
                    }
                }
            }
        }
        series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
    }
    Ok(series)
}

fn compare(op: CmpOp, a: f64, b: f64) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// One side of metrics arithmetic.
enum Operand {
    Series(Vec<Series>),
    Scalar(f64, String),
}

/// Whether a series has no labels but its name: it is broadcast against labelled series.
fn unlabelled(s: &Series) -> bool {
    s.labels.iter().all(|(k, _)| k == "__name__")
}

fn name_of(s: &Series) -> String {
    match s.labels.iter().find(|(k, _)| k == "__name__") {
        Some((_, Label::Str(n))) => n.clone(),
        _ => String::new(),
    }
}

fn without_name(s: &Series) -> Vec<&(String, Label)> {
    let mut labels: Vec<&(String, Label)> = s.labels.iter().filter(|(k, _)| k != "__name__").collect();
    labels.sort();
    labels
}

/// `lhs op rhs`, bucket by bucket: series with the same labels pair up; a side that is one
/// unlabelled series (or a number) applies to every series of the other. Missing buckets and
/// division by zero give NaN, which is no sample.
fn arithmetic(op: BinOp, lhs: Operand, rhs: Operand) -> Operand {
    let apply = |a: f64, b: f64| match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        _ if b == 0.0 => f64::NAN,
        _ => a / b,
    };
    let pointwise = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(&x, &y)| apply(x, y)).collect::<Vec<f64>>();
    let combined = |labels: Vec<(String, Label)>, values: Vec<f64>, l: &Series, r: &Series| {
        let exemplars = l.exemplars.iter().chain(&r.exemplars).cloned().collect();
        Series { labels, values, exemplars }
    };
    let renamed = |s: &Series, name: String| {
        if unlabelled(s) { vec![("__name__".to_owned(), Label::Str(name))] } else { s.labels.clone() }
    };
    let symbol = op.as_str();
    match (lhs, rhs) {
        (Operand::Scalar(a, at), Operand::Scalar(b, bt)) => {
            Operand::Scalar(apply(a, b), format!("({at} {symbol} {bt})"))
        }
        (Operand::Series(l), Operand::Scalar(b, bt)) => Operand::Series(
            l.iter()
                .map(|s| Series {
                    labels: renamed(s, format!("({} {symbol} {bt})", name_of(s))),
                    values: s.values.iter().map(|&a| apply(a, b)).collect(),
                    exemplars: s.exemplars.clone(),
                })
                .collect(),
        ),
        (Operand::Scalar(a, at), Operand::Series(r)) => Operand::Series(
            r.iter()
                .map(|s| Series {
                    labels: renamed(s, format!("({at} {symbol} {})", name_of(s))),
                    values: s.values.iter().map(|&b| apply(a, b)).collect(),
                    exemplars: s.exemplars.clone(),
                })
                .collect(),
        ),
        (Operand::Series(l), Operand::Series(r)) => {
            let single = |side: &[Series]| side.len() == 1 && unlabelled(&side[0]);
            let out = if single(&l) && single(&r) {
                let name = format!("({} {symbol} {})", name_of(&l[0]), name_of(&r[0]));
                let labels = vec![("__name__".to_owned(), Label::Str(name))];
                vec![combined(labels, pointwise(&l[0].values, &r[0].values), &l[0], &r[0])]
            } else if single(&r) {
                l.iter().map(|s| combined(s.labels.clone(), pointwise(&s.values, &r[0].values), s, &r[0])).collect()
            } else if single(&l) {
                r.iter().map(|s| combined(s.labels.clone(), pointwise(&l[0].values, &s.values), &l[0], s)).collect()
            } else {
                l.iter()
                    .filter_map(|a| {
                        let key = without_name(a);
                        let b = r.iter().find(|b| without_name(b) == key)?;
                        Some(combined(a.labels.clone(), pointwise(&a.values, &b.values), a, b))
                    })
                    .collect()
            };
            Operand::Series(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = SECOND;

    #[test]
    fn groups_past_the_series_limit_are_left_out_and_flagged() {
        let one = |i: usize| {
            let mut p = Partial::default();
            p.series.insert(vec![Label::Int(i as i64)], Acc::new(&Func::Count, 1));
            p
        };
        let mut all = Partial::default();
        for i in 0..MAX_SERIES {
            all.merge(one(i));
        }
        assert!(!all.truncated);
        all.merge(one(0));
        assert!(!all.truncated, "a known group still merges");
        all.merge(one(MAX_SERIES));
        assert_eq!((all.series.len(), all.truncated), (MAX_SERIES, true));
        let mut fresh = Partial::default();
        fresh.merge(all);
        assert!(fresh.truncated, "the flag survives merging");
    }

    #[test]
    fn default_steps_follow_tempo() {
        assert_eq!(default_step(0, 3600 * S), 15 * S); // 1h / 240 = 15s
        assert_eq!(default_step(0, 24 * 3600 * S), 300 * S); // 6m fits 5m
        assert_eq!(default_step(0, 240 * 3600 * S), 3600 * S);
        assert_eq!(default_step(0, 2 * 60 * S), S); // 0.5s rounds down to the 1s minimum
        assert_eq!(default_step(0, 30 * S), 100_000_000); // 125ms → 100ms
        assert_eq!(default_step(0, S), 50_000_000); // at least 50ms
        assert_eq!(min_step(0, 10_000 * S), S);
        assert_eq!(min_step(0, 10_001 * S), S + 100_000); // rounded up
    }

    #[test]
    fn range_grid_aligns_and_prepends_a_step() {
        let g = Grid::range(12 * S + 300, 20 * S + 1, 5 * S).unwrap();
        // start 12.0000003s → 10s; end 20.000000001s → 25s.
        assert_eq!(g.timestamps(), vec![10 * S, 15 * S, 20 * S, 25 * S]);
        assert_eq!(g.span_range(), (5 * S + 1, 25 * S));
        // Right-closed: (5s, 10s] is the first bucket, 10s itself included, 5s not.
        assert_eq!(g.bucket(5 * S), None);
        assert_eq!(g.bucket(5 * S + 1), Some(0));
        assert_eq!(g.bucket(10 * S), Some(0));
        assert_eq!(g.bucket(10 * S + 1), Some(1));
        assert_eq!(g.bucket(25 * S), Some(3));
        assert_eq!(g.bucket(25 * S + 1), None);
        // Aligned bounds stay.
        let g = Grid::range(10 * S, 20 * S, 5 * S).unwrap();
        assert_eq!(g.timestamps(), vec![10 * S, 15 * S, 20 * S]);
        // A range starting at 0 has no earlier step to prepend.
        let g = Grid::range(0, 2, 1).unwrap();
        assert_eq!((g.bucket(0), g.bucket(1), g.len()), (Some(0), Some(1), 3));
        assert!(Grid::range(0, 10, 0).is_err());
        assert!(Grid::range(0, 1_000_000 * S, S).is_err());
    }

    #[test]
    fn instant_grid_is_one_closed_bucket() {
        let g = Grid::instant(10 * S, 20 * S).unwrap();
        assert_eq!(g.timestamps(), vec![20 * S]);
        assert_eq!((g.bucket(10 * S), g.bucket(20 * S), g.bucket(20 * S + 1)), (Some(0), Some(0), None));
        assert_eq!(g.step_seconds(), 10.0);
        assert!(Grid::instant(5, 5).is_err());
    }

    #[test]
    fn log2_buckets_and_quantiles() {
        assert_eq!(Bucket::duration(500_000_000).bound(), 0.536870912);
        assert_eq!(Bucket::duration(1).bound(), 1e-9);
        assert_eq!(Bucket::duration(4).exp, 2);
        assert_eq!(Bucket::duration(5).exp, 3);
        assert_eq!(Bucket::plain(8.0).bound(), 8.0);
        assert_eq!(Bucket::plain(0.3).bound(), 0.5);
        assert_eq!(Bucket::plain(-3.0).bound(), 0.0);
        let one = [(0.536870912, 1)];
        assert_eq!(log2_quantile(0.5, &one), 0.536870912);
        assert_eq!(log2_quantile(0.99, &one), 0.536870912);
        assert_eq!(log2_quantile(0.5, &[]), 0.0);
        // Two in (2, 4], two in (4, 8]: the median ends exactly at 4; p75 needs one of the two
        // in the upper bucket, halfway between 2^2 and 2^3 exponentially.
        let four = [(4.0, 2), (8.0, 2)];
        assert_eq!(log2_quantile(0.5, &four), 4.0);
        assert!((log2_quantile(0.75, &four) - 2f64.powf(2.5)).abs() < 1e-12);
        // The first bucket interpolates from half its bound.
        assert!((log2_quantile(0.25, &[(8.0, 2)]) - 2f64.powf(2.5)).abs() < 1e-12);
        assert_eq!(log2_quantile(1.0, &four), 8.0);
    }

    fn acc_of(func: &Func, entries: &[(usize, Option<f64>)]) -> Acc {
        let mut acc = Acc::new(func, 3);
        for &(bucket, v) in entries {
            let number = Number::of(&v.map_or(Val::Nil, Val::Float));
            let arg = if matches!(func, Func::Count) { None } else { Some(number) };
            acc.add(bucket, arg);
        }
        acc
    }

    #[test]
    fn partials_merge() {
        let mut a = acc_of(&Func::Sum, &[(0, Some(1.0)), (1, None)]);
        a.merge(acc_of(&Func::Sum, &[(0, Some(2.0)), (2, Some(4.0))]));
        let Cells::Sum { sum, n } = &a.cells else { panic!() };
        assert_eq!((sum.clone(), n.clone()), (vec![3.0, 0.0, 4.0], vec![2, 0, 1]));

        let mut c = acc_of(&Func::Count, &[(0, None), (0, None)]);
        c.merge(acc_of(&Func::Count, &[(0, None), (2, None)]));
        let Cells::Count(counts) = &c.cells else { panic!() };
        assert_eq!(counts, &vec![3, 0, 1]);

        let mut h = acc_of(&Func::Histogram, &[(0, Some(3.0)), (1, Some(100.0))]);
        h.merge(acc_of(&Func::Histogram, &[(0, Some(4.0)), (0, Some(5.0))]));
        let Cells::Log2(hist) = &h.cells else { panic!() };
        let got: Vec<(f64, Vec<u64>)> = hist.iter().map(|(b, c)| (b.bound(), c.clone())).collect();
        assert_eq!(got, vec![(4.0, vec![2, 0, 0]), (8.0, vec![1, 0, 0]), (128.0, vec![0, 1, 0])]);
    }

    #[test]
    fn extremes_merge() {
        let mut min = acc_of(&Func::Min, &[(0, Some(5.0)), (0, Some(3.0)), (1, Some(1.0))]);
        min.merge(acc_of(&Func::Min, &[(0, Some(2.0)), (2, Some(7.0)), (1, None)]));
        let Cells::Min(v) = &min.cells else { panic!() };
        assert_eq!(v, &vec![2.0, 1.0, 7.0]);
        let mut max = acc_of(&Func::Max, &[(0, Some(5.0)), (1, None)]);
        max.merge(acc_of(&Func::Max, &[(0, Some(2.0))]));
        let Cells::Max(v) = &max.cells else { panic!() };
        assert_eq!(v[0], 5.0);
        assert!(v[1].is_nan() && v[2].is_nan());
    }
}
