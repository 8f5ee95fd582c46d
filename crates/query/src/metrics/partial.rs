//! Per-step partial aggregates: what one batch (a row group of a block, or the live traces)
//! contributes to one leaf of a metrics query, how partials merge (counts and sums add, minima
//! and maxima combine, log2 histograms add, the same exemplar wins whatever the order), and
//! the merged whole as series.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use spoor_block::columns as col;
use spoor_traceql::ast::{Attribute, Scope};

use spoor_block::rollup::RollupRow;
use spoor_traceql::ast::{Kind, Status};

use super::compile::{Compare, Func, Leaf, RollupLabel};
use super::grid::{Grid, SECOND};
use super::series::{Exemplar, Label, Series};
use crate::error::{Error, Result};
use crate::eval::{Ctx, Field, IdCol, Val, list_keys};

/// Most distinct `by()` groups a query aggregates (Tempo's `max_response_series`); spans of
/// further groups are left out and the answer is marked partial, so memory stays bounded
/// whatever the grouping (`by(span:id)`).
pub const MAX_SERIES: usize = 1000;

/// What one batch, block or the head contributed; partials of the same leaf merge.
#[derive(Default)]
pub(super) struct Partial {
    series: HashMap<Vec<Label>, Acc>,
    /// Some group did not fit under [`MAX_SERIES`].
    pub(super) truncated: bool,
    /// `compare()`: per (selected, attribute label key).
    compare: HashMap<(bool, String), CompareCounts<Label>>,
}

impl Partial {
    /// What one batch of whole candidate traces contributes to `leaf`.
    pub(super) fn of(leaf: &Leaf, grid: &Grid, batch: &RecordBatch) -> Result<Partial> {
        if let Some(compare) = &leaf.compare {
            return Partial::of_compare(leaf, compare, grid, batch);
        }
        leaf.plan.matched(batch, |rows, values| {
            let mut out = Partial::default();
            if rows.is_empty() {
                return Ok(out);
            }
            let ctx = Ctx::new(batch, None);
            let starts = starts(&ctx)?;
            let ids = if leaf.exemplars > 0 {
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
            let mut key: Vec<LabelRef> = Vec::with_capacity(leaf.by.len());
            for &row in rows {
                let row = row as usize;
                let Some(bucket) = grid.bucket(starts[row]) else { continue };
                key.clear();
                key.extend(leaf.by.iter().map(|(_, v)| LabelRef::of(&values[*v][row])));
                let i = match index.get(key.as_slice()) {
                    Some(&i) => i,
                    None if accs.len() >= MAX_SERIES => {
                        out.truncated = true;
                        continue;
                    }
                    None => {
                        accs.push((key.clone(), Acc::new(&leaf.func, grid.len())));
                        index.insert(key.clone(), accs.len() - 1);
                        accs.len() - 1
                    }
                };
                let number = leaf.arg.map(|a| Number::of(&values[a][row]));
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

    /// What rollup rows contribute to `leaf`: each row's spans at once, in the step bucket its
    /// minute ends in (exact when the step is a multiple of a minute: a row's spans all
    /// started in that minute).
    pub(super) fn of_rollups(leaf: &Leaf, labels: &[RollupLabel], grid: &Grid, rows: &[RollupRow]) -> Partial {
        let mut out = Partial::default();
        for r in rows {
            let Some(bucket) = grid.bucket(r.minute) else { continue };
            let key: Vec<Label> = labels
                .iter()
                .map(|l| match l {
                    RollupLabel::Service => Label::str(r.service.as_deref().unwrap_or("nil")),
                    RollupLabel::Name => Label::str(&r.name),
                    RollupLabel::Status => Label::str(Status::from_otlp(i32::from(r.status)).as_str()),
                    RollupLabel::Kind => Label::str(Kind::from_otlp(i32::from(r.kind)).as_str()),
                })
                .collect();
            if !out.series.contains_key(&key) && out.series.len() >= MAX_SERIES {
                out.truncated = true;
                continue;
            }
            let acc = out.series.entry(key).or_insert_with(|| Acc::new(&leaf.func, grid.len()));
            let len = acc.len;
            match &mut acc.cells {
                Cells::Count(c) => c[bucket] += r.spans,
                // `duration`'s buckets, as `Bucket::duration` computes them from each span.
                Cells::Log2(h) => {
                    for &(exp, n) in &r.log2 {
                        h.entry(Bucket { duration: true, exp }).or_insert_with(|| vec![0; len])[bucket] += n;
                    }
                }
                // `rollup_answer` lets no other function through.
                _ => {}
            }
        }
        out
    }

    fn of_compare(leaf: &Leaf, compare: &Compare, grid: &Grid, batch: &RecordBatch) -> Result<Partial> {
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
                list_keys(list, column)?.iter().for_each(|k| add(scope, k));
            }
        }
        leaf.plan.matched(batch, |rows, values| {
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
                    let c = counts.entry((group, label)).or_insert_with(|| CompareCounts::new(grid.len()));
                    c.total[bucket] += 1;
                    c.values.entry(value).or_insert_with(|| vec![0; grid.len()])[bucket] += 1;
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

    /// The merged aggregate of `leaf` as series, before its second stage.
    pub(super) fn series(self, leaf: &Leaf, grid: &Grid) -> Vec<Series> {
        let mut out = Vec::new();
        for (key, acc) in self.series {
            let labels: Vec<(String, Label)> = if leaf.by.is_empty() {
                vec![("__name__".to_owned(), Label::str(leaf.name))]
            } else {
                leaf.by.iter().map(|(k, _)| k.clone()).zip(key).collect()
            };
            let exemplars = |only: Option<Bucket>| pick_exemplars(&acc.exemplars, leaf.exemplars, only);
            match (&leaf.func, acc.cells) {
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
                        let values = (0..grid.len())
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
        out
    }

    /// The merged counts of `compare()` as series: per attribute and group (selection or
    /// baseline), its `top` most frequent values (and an error series if it had more), and the
    /// total.
    pub(super) fn compare_series(self, top: usize) -> Vec<Series> {
        let mut out = Vec::new();
        let zeros = |v: &[u64]| v.iter().map(|&n| n as f64).collect::<Vec<f64>>();
        for ((selected, key), counts) in self.compare {
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

    pub(super) fn merge(&mut self, other: Partial) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
