//! Evaluation over whole traces: the batch's rows grouped into traces, values computed per
//! trace (parent IDs, child counts, root, extent), spanset operators over the nested-set
//! numbers, pipeline stages, and the hits a search returns.
//!
//! A spanset is a sorted list of row indices of one trace. Field expressions were evaluated
//! for every row beforehand (`eval.rs`), so everything here is set arithmetic on small lists.
//!
//! What runs here is a [`Program`], the trace-level half of a plan; `plan.rs` compiles it and
//! calls in, so this module knows nothing of plans.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, UInt64Type};
use arrow_array::{BinaryArray, Int64Array, RecordBatch, StringArray};
use spoor_block::columns as col;
use spoor_model::TraceId;
use spoor_traceql::ast::{AggFunc, BinOp, Intrinsic, SpansetOp, Static};

use crate::error::{Error, Result};
use crate::eval::{Ctx, Derived, Expr, Field, IdCol, Num, Op, Source, StrCol, Tri, Val, arith, cmp_scalar, fold};
use crate::hit::{SpanHit, SpansetHit, TraceHit, Value};

/// What a plan evaluates over whole traces: the spanset program, the per-row filters and
/// values its stages index, the attributes results report, and the per-trace values it reads.
#[derive(Clone, Debug)]
pub(crate) struct Program {
    pub(crate) node: Node,
    /// The condition of every `{ ... }`, evaluated for every row of a batch up front.
    pub(crate) filters: Vec<Expr>,
    /// `by()` keys and aggregate arguments, evaluated for every row up front.
    pub(crate) values: Vec<Expr>,
    pub(crate) reported: Vec<Reported>,
    /// The per-trace intrinsics the program reads (computed once per batch).
    pub(crate) needs: Vec<Intrinsic>,
}

/// A compiled search: pipelines, possibly combined by spanset operators.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Pipeline(Vec<Stage>),
    /// `(P1) && (P2)`: each side's spansets flattened into one, then combined as spansets.
    Op(SpansetOp, Box<Node>, Box<Node>),
}

#[derive(Clone, Debug)]
pub(crate) enum Stage {
    Set(SetExpr),
    /// `aggregate OP scalar`: keeps a spanset whole when true, attaching the aggregates.
    Scalar {
        op: Op,
        negated: bool,
        lhs: Scalar,
        rhs: Scalar,
    },
    /// `by(expr)`: `value` indexes the program's per-row values.
    By {
        value: usize,
        key: String,
    },
    Coalesce,
}

/// A spanset expression; `Filter` indexes the program's per-span filters.
#[derive(Clone, Debug)]
pub(crate) enum SetExpr {
    Filter(usize),
    Op(SpansetOp, Box<SetExpr>, Box<SetExpr>),
}

#[derive(Clone, Debug)]
pub(crate) enum Scalar {
    /// `value` indexes the program's per-row values (`None` for `count()`); `key` is how the
    /// aggregate prints (`avg(duration)`), the spanset attribute it becomes.
    Agg {
        func: AggFunc,
        value: Option<usize>,
        key: String,
    },
    Const(Static),
    Arith(BinOp, Box<Scalar>, Box<Scalar>),
}

/// An attribute reported on every returned span that has it.
#[derive(Clone, Debug)]
pub(crate) struct Reported {
    pub(crate) key: String,
    pub(crate) field: Field,
    /// Referenced by `= nil`: reported as the string "nil" when missing, as Tempo does.
    pub(crate) nil: bool,
}

/// The columns every evaluation reads.
struct Base<'c> {
    trace_id: IdCol<'c>,
    span_id: IdCol<'c>,
    left: &'c [i32],
    right: &'c [i32],
    parent: &'c [i32],
    start: &'c [u64],
    duration: &'c [u64],
    name: StrCol<'c>,
    status: Num<'c>,
    service: StrCol<'c>,
}

impl<'c> Base<'c> {
    fn of(ctx: &Ctx<'c>) -> Result<Base<'c>> {
        let int32 = |name: &str| -> Result<&'c [i32]> {
            let c = ctx.column(name)?;
            c.as_primitive_opt::<Int32Type>()
                .map(|a| &a.values()[..])
                .ok_or_else(|| Error::Corrupt(format!("column {name} is {}, expected Int32", c.data_type())))
        };
        let uint64 = |name: &str| -> Result<&'c [u64]> {
            let c = ctx.column(name)?;
            c.as_primitive_opt::<UInt64Type>()
                .map(|a| &a.values()[..])
                .ok_or_else(|| Error::Corrupt(format!("column {name} is {}, expected UInt64", c.data_type())))
        };
        Ok(Base {
            trace_id: IdCol::of(col::TRACE_ID, ctx.column(col::TRACE_ID)?)?,
            span_id: IdCol::of(col::SPAN_ID, ctx.column(col::SPAN_ID)?)?,
            left: int32(col::NESTED_LEFT)?,
            right: int32(col::NESTED_RIGHT)?,
            parent: int32(col::NESTED_PARENT)?,
            start: uint64(col::START)?,
            duration: uint64(col::DURATION)?,
            name: StrCol::of(col::NAME, ctx.column(col::NAME)?)?,
            status: Num::of(col::STATUS_CODE, ctx.column(col::STATUS_CODE)?)?,
            service: StrCol::of(col::SERVICE_NAME, ctx.column(col::SERVICE_NAME)?)?,
        })
    }

    fn end(&self, row: usize) -> u64 {
        // The block stores end - start wrapping, so this recovers the span's end exactly.
        self.start[row].wrapping_add(self.duration[row])
    }

    /// The first root (no parent) of a trace, in start order.
    fn root(&self, trace: &Range<usize>) -> Option<usize> {
        trace.clone().find(|&r| self.parent[r] == 0)
    }
}

/// Consecutive rows with the same trace ID.
fn traces(ids: &IdCol, rows: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let same = |a: usize, b: usize| match ids {
        // Block trace IDs: compare 16 bytes as one number, not through memcmp.
        IdCol::Fixed(a16) if a16.value_length() == 16 => {
            let id = |r: usize| u128::from_ne_bytes(a16.value(r).try_into().expect("16-byte values"));
            id(a) == id(b)
        }
        _ => ids.get(a) == ids.get(b),
    };
    for row in 1..=rows {
        if row == rows || !same(row, start) {
            out.push(start..row);
            start = row;
        }
    }
    out
}

/// The per-trace values the program's fields read.
fn derive<'c>(needs: &[Intrinsic], base: &Base<'c>, ctx: &Ctx<'c>, traces: &[Range<usize>]) -> Result<Derived> {
    let rows = ctx.rows;
    let mut d = Derived::default();
    if needs.contains(&Intrinsic::ParentId) {
        // Only orphans (and cycle entries) store their parent ID; others name the parent by
        // its nested-set number.
        let stored = IdCol::of(col::PARENT_SPAN_ID, ctx.column(col::PARENT_SPAN_ID)?)?;
        let mut ids: Vec<Option<&[u8]>> = vec![None; rows];
        let mut by_left = HashMap::new();
        for t in traces {
            by_left.clear();
            by_left.extend(t.clone().map(|r| (base.left[r], r)));
            for r in t.clone() {
                ids[r] = match base.parent[r] {
                    p if p > 0 => by_left.get(&p).and_then(|&pr| base.span_id.get(pr)),
                    0 => None,
                    _ => stored.get(r),
                };
            }
        }
        d.parent_id = Some(BinaryArray::from(ids));
    }
    if needs.contains(&Intrinsic::ChildCount) {
        let mut counts = vec![0i64; rows];
        let mut children = HashMap::new();
        for t in traces {
            children.clear();
            for r in t.clone().filter(|&r| base.parent[r] > 0) {
                *children.entry(base.parent[r]).or_insert(0i64) += 1;
            }
            for r in t.clone() {
                counts[r] = children.get(&base.left[r]).copied().unwrap_or(0);
            }
        }
        d.child_count = Some(Int64Array::from(counts));
    }
    if needs.contains(&Intrinsic::TraceDuration) {
        let mut durations = vec![0i64; rows];
        for t in traces {
            let start = t.clone().map(|r| base.start[r]).min().unwrap_or(0);
            let end = t.clone().map(|r| base.end(r)).max().unwrap_or(0);
            durations[t.clone()].fill(end.wrapping_sub(start) as i64);
        }
        d.trace_duration = Some(Int64Array::from(durations));
    }
    let per_trace = |f: &dyn Fn(Option<usize>) -> Option<&'c str>| {
        let mut out: Vec<Option<&str>> = vec![None; rows];
        for t in traces {
            out[t.clone()].fill(f(base.root(t)));
        }
        StringArray::from(out)
    };
    // Without a root span, the root name and service are "", as in Tempo.
    if needs.contains(&Intrinsic::TraceRootName) {
        d.root_name = Some(per_trace(&|root| root.map_or(Some(""), |r| base.name.get(r))));
    }
    if needs.contains(&Intrinsic::TraceRootService) {
        d.root_service = Some(per_trace(&|root| root.map_or(Some(""), |r| base.service.get(r))));
    }
    Ok(d)
}

/// Evaluates the program over whole traces: see `Plan::evaluate`.
pub(crate) fn evaluate(program: &Program, batch: &RecordBatch, spss: usize) -> Result<Vec<TraceHit>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    with_eval(program, batch, |eval, traces, ctx| {
        let reported = program.reported.iter().map(|r| ctx.source(&r.field)).collect::<Result<Vec<_>>>()?;
        let mut hits = Vec::new();
        for t in traces {
            let all: Vec<u32> = (t.start as u32..t.end as u32).collect();
            let sets = eval.node(&program.node, &all);
            if !sets.is_empty() {
                hits.push(eval.hit(t, sets, &program.reported, &reported, spss));
            }
        }
        Ok(hits)
    })
}

/// The rows of every span in a result: see `Plan::matched`.
pub(crate) fn matched<R>(
    program: &Program,
    batch: &RecordBatch,
    f: impl for<'c> FnOnce(&[u32], &[Vec<Val<'c>>]) -> Result<R>,
) -> Result<R> {
    if batch.num_rows() == 0 {
        return f(&[], &vec![Vec::new(); program.values.len()]);
    }
    with_eval(program, batch, |eval, traces, _| {
        let mut rows = Vec::new();
        for t in traces {
            let all: Vec<u32> = (t.start as u32..t.end as u32).collect();
            let sets = eval.node(&program.node, &all);
            // A span in several spansets (after `by()`) is still one span.
            rows.extend(sets.iter().fold(Vec::new(), |acc, s| union(&acc, &s.rows)));
        }
        f(&rows, &eval.values)
    })
}

/// Groups a non-empty batch into traces, computes the per-trace values, the filters and the
/// values of every row, and hands them to `f`.
fn with_eval<R>(
    program: &Program,
    batch: &RecordBatch,
    f: impl for<'c> FnOnce(&Eval<'c>, &[Range<usize>], &Ctx<'c>) -> Result<R>,
) -> Result<R> {
    let plain = Ctx::new(batch, None);
    let base = Base::of(&plain)?;
    let traces = traces(&base.trace_id, plain.rows);
    let derived = derive(&program.needs, &base, &plain, &traces)?;
    let ctx = Ctx::new(batch, Some(&derived));
    let filters = program
        .filters
        .iter()
        .map(|e| Ok(e.tri(&ctx)?.into_iter().map(|t| t == Tri::T).collect()))
        .collect::<Result<Vec<Vec<bool>>>>()?;
    let values = program.values.iter().map(|e| e.vals(&ctx)).collect::<Result<Vec<_>>>()?;
    let eval = Eval { filters, values, base: &base };
    f(&eval, &traces, &ctx)
}

/// A spanset while the pipeline runs: rows of one trace, ascending, and its attributes.
struct Set {
    rows: Vec<u32>,
    attrs: Vec<(String, Value)>,
}

#[derive(Clone, Copy)]
enum Relation {
    Child,
    Parent,
    Descendant,
    Ancestor,
    Sibling,
}

impl Relation {
    fn mirror(self) -> Relation {
        match self {
            Relation::Child => Relation::Parent,
            Relation::Parent => Relation::Child,
            Relation::Descendant => Relation::Ancestor,
            Relation::Ancestor => Relation::Descendant,
            Relation::Sibling => Relation::Sibling,
        }
    }
}

/// How a structural operator is built: (relation, negated, union).
fn structural(op: SpansetOp) -> Option<(Relation, bool, bool)> {
    use Relation::*;
    use SpansetOp as S;
    Some(match op {
        S::And | S::Or => return None,
        S::Child => (Child, false, false),
        S::Parent => (Parent, false, false),
        S::Descendant => (Descendant, false, false),
        S::Ancestor => (Ancestor, false, false),
        S::Sibling => (Sibling, false, false),
        S::NotChild => (Child, true, false),
        S::NotParent => (Parent, true, false),
        S::NotDescendant => (Descendant, true, false),
        S::NotAncestor => (Ancestor, true, false),
        S::NotSibling => (Sibling, true, false),
        S::UnionChild => (Child, false, true),
        S::UnionParent => (Parent, false, true),
        S::UnionDescendant => (Descendant, false, true),
        S::UnionAncestor => (Ancestor, false, true),
        S::UnionSibling => (Sibling, false, true),
    })
}

struct Eval<'c> {
    /// Per filter, whether each row passes.
    filters: Vec<Vec<bool>>,
    /// Per `by()` key or aggregate argument, each row's value.
    values: Vec<Vec<Val<'c>>>,
    base: &'c Base<'c>,
}

impl<'c> Eval<'c> {
    fn node(&self, node: &'c Node, all: &[u32]) -> Vec<Set> {
        match node {
            Node::Pipeline(stages) => {
                let mut sets = vec![Set { rows: all.to_vec(), attrs: Vec::new() }];
                for stage in stages {
                    if sets.is_empty() {
                        break;
                    }
                    sets = self.stage(stage, sets);
                }
                sets
            }
            Node::Op(op, lhs, rhs) => {
                let flatten = |sets: Vec<Set>| sets.into_iter().fold(Vec::new(), |acc, s| union(&acc, &s.rows));
                let rows = self.combine(*op, &flatten(self.node(lhs, all)), &flatten(self.node(rhs, all)));
                if rows.is_empty() { Vec::new() } else { vec![Set { rows, attrs: Vec::new() }] }
            }
        }
    }

    fn stage(&self, stage: &'c Stage, sets: Vec<Set>) -> Vec<Set> {
        match stage {
            Stage::Set(e) => sets
                .into_iter()
                .filter_map(|s| {
                    let rows = self.set(e, &s.rows);
                    (!rows.is_empty()).then_some(Set { rows, attrs: s.attrs })
                })
                .collect(),
            Stage::Scalar { op, negated, lhs, rhs } => sets
                .into_iter()
                .filter_map(|mut s| {
                    let mut found = Vec::new();
                    let (l, r) = (self.scalar(lhs, &s.rows, &mut found), self.scalar(rhs, &s.rows, &mut found));
                    if l.is_nil() || r.is_nil() || fold(*negated, Tri::N, cmp_scalar(*op, &l, &r)) != Tri::T {
                        return None;
                    }
                    for (key, value) in found {
                        set_attr(&mut s.attrs, key, value);
                    }
                    Some(s)
                })
                .collect(),
            Stage::By { value, key } => {
                let values = &self.values[*value];
                let mut out = Vec::new();
                for s in sets {
                    let mut groups: Vec<(&Val, Vec<u32>)> = Vec::new();
                    let mut index = HashMap::new();
                    for &row in &s.rows {
                        let v = &values[row as usize];
                        let i = *index.entry(GroupKey::of(v)).or_insert_with(|| {
                            groups.push((v, Vec::new()));
                            groups.len() - 1
                        });
                        groups[i].1.push(row);
                    }
                    for (v, rows) in groups {
                        let mut attrs = s.attrs.clone();
                        set_attr(&mut attrs, key.clone(), to_value(v));
                        out.push(Set { rows, attrs });
                    }
                }
                out
            }
            Stage::Coalesce => {
                let rows = sets.iter().fold(Vec::new(), |acc, s| union(&acc, &s.rows));
                vec![Set { rows, attrs: Vec::new() }]
            }
        }
    }

    fn set(&self, e: &SetExpr, input: &[u32]) -> Vec<u32> {
        match e {
            SetExpr::Filter(id) => input.iter().copied().filter(|&r| self.filters[*id][r as usize]).collect(),
            SetExpr::Op(op, lhs, rhs) => self.combine(*op, &self.set(lhs, input), &self.set(rhs, input)),
        }
    }

    fn combine(&self, op: SpansetOp, a: &[u32], b: &[u32]) -> Vec<u32> {
        match structural(op) {
            None if op == SpansetOp::And && (a.is_empty() || b.is_empty()) => Vec::new(),
            None => union(a, b),
            Some((rel, false, false)) => self.related(rel, a, b),
            Some((rel, true, _)) => difference(b, &self.related(rel, a, b)),
            Some((rel, false, true)) => union(&self.related(rel, a, b), &self.related(rel.mirror(), b, a)),
        }
    }

    /// The spans of `b` that stand in `rel` to some span of `a` (`a > b`: b's parent is in a).
    /// Nested-set numbers: `left < l && r < right` is "inside"; `parent` is the parent's
    /// `left`, 0 for roots and -1 for orphans, so roots and orphans have no parent and no
    /// siblings, yet their subtrees relate as usual.
    fn related(&self, rel: Relation, a: &[u32], b: &[u32]) -> Vec<u32> {
        if a.is_empty() {
            return Vec::new();
        }
        let (left, right, parent) = (self.base.left, self.base.right, self.base.parent);
        let l = |i: u32| left[i as usize];
        let r = |i: u32| right[i as usize];
        let p = |i: u32| parent[i as usize];
        let keep = |f: &dyn Fn(u32) -> bool| b.iter().copied().filter(|&j| f(j)).collect();
        match rel {
            Relation::Child => {
                let lefts = sorted(a.iter().map(|&i| l(i)));
                keep(&|j| p(j) > 0 && lefts.binary_search(&p(j)).is_ok())
            }
            Relation::Parent => {
                let parents = sorted(a.iter().map(|&i| p(i)).filter(|&x| x > 0));
                keep(&|j| parents.binary_search(&l(j)).is_ok())
            }
            Relation::Descendant => {
                // Some a with a.left < b.left and b.right < a.right: among the a's that start
                // before b, the one that ends last.
                let spans = sorted(a.iter().map(|&i| (l(i), r(i))));
                let max_right: Vec<i32> = spans
                    .iter()
                    .scan(i32::MIN, |m, s| {
                        *m = (*m).max(s.1);
                        Some(*m)
                    })
                    .collect();
                keep(&|j| {
                    let k = spans.partition_point(|s| s.0 < l(j));
                    k > 0 && max_right[k - 1] > r(j)
                })
            }
            Relation::Ancestor => {
                // Some a with b.left < a.left and a.right < b.right: among the a's that start
                // after b, the one that ends first.
                let spans = sorted(a.iter().map(|&i| (l(i), r(i))));
                let mut min_right = vec![i32::MAX; spans.len() + 1];
                for k in (0..spans.len()).rev() {
                    min_right[k] = min_right[k + 1].min(spans[k].1);
                }
                keep(&|j| {
                    let k = spans.partition_point(|s| s.0 <= l(j));
                    min_right[k] < r(j)
                })
            }
            Relation::Sibling => {
                let parents = sorted(a.iter().map(|&i| p(i)).filter(|&x| x > 0));
                keep(&|j| {
                    let pj = p(j);
                    let same = parents.partition_point(|&x| x <= pj) - parents.partition_point(|&x| x < pj);
                    // A span is not its own sibling.
                    pj > 0 && same > usize::from(a.binary_search(&j).is_ok())
                })
            }
        }
    }

    fn scalar(&self, s: &'c Scalar, rows: &[u32], found: &mut Vec<(String, Value)>) -> Val<'c> {
        match s {
            Scalar::Const(v) => Val::of(v),
            Scalar::Arith(op, lhs, rhs) => arith(*op, &self.scalar(lhs, rows, found), &self.scalar(rhs, rows, found)),
            Scalar::Agg { func, value, key } => {
                let v = match value {
                    None => Val::Int(rows.len() as i64),
                    Some(id) => aggregate(*func, rows.iter().map(|&r| &self.values[*id][r as usize])),
                };
                if !v.is_nil() {
                    found.push((key.clone(), to_value(&v)));
                }
                v
            }
        }
    }

    fn hit(
        &self,
        t: &Range<usize>,
        sets: Vec<Set>,
        reported: &[Reported],
        sources: &[Source],
        spss: usize,
    ) -> TraceHit {
        let b = self.base;
        let root = b.root(t);
        // Per service of this trace (a handful): counted by reference, owned once at the end.
        let mut services: Vec<(&str, (u32, u32))> = Vec::new();
        for r in t.clone() {
            if let Some(service) = b.service.get(r) {
                let i = services.iter().position(|(s, _)| *s == service).unwrap_or_else(|| {
                    services.push((service, (0, 0)));
                    services.len() - 1
                });
                let counts = &mut services[i].1;
                counts.0 += 1;
                // OTLP status code 2 is an error.
                counts.1 += u32::from(b.status.get(r) == Some(2));
            }
        }
        let service_stats: BTreeMap<String, (u32, u32)> =
            services.into_iter().map(|(s, c)| (s.to_owned(), c)).collect();
        let spansets = sets
            .into_iter()
            .map(|s| {
                let mut rows = s.rows;
                // Rows are in start order already; span IDs only break ties.
                rows.sort_by(|&x, &y| {
                    let (x, y) = (x as usize, y as usize);
                    b.start[x].cmp(&b.start[y]).then_with(|| b.span_id.get(x).cmp(&b.span_id.get(y)))
                });
                let matched = rows.len() as u32;
                rows.truncate(spss);
                let spans = rows.iter().map(|&r| self.span(r as usize, reported, sources)).collect();
                SpansetHit { spans, matched, attributes: s.attrs }
            })
            .collect();
        TraceHit {
            trace_id: b
                .trace_id
                .get(t.start)
                .and_then(|id| <[u8; 16]>::try_from(id).ok())
                .map(TraceId)
                .unwrap_or_default(),
            root_service: root.and_then(|r| b.service.get(r)).map(str::to_owned),
            root_name: root.and_then(|r| b.name.get(r)).map(str::to_owned),
            start_unix_nano: t.clone().map(|r| b.start[r]).min().unwrap_or(0),
            end_unix_nano: t.clone().map(|r| b.end(r)).max().unwrap_or(0),
            service_stats,
            spansets,
        }
    }

    fn span(&self, row: usize, reported: &[Reported], sources: &[Source]) -> SpanHit {
        let b = self.base;
        let mut attributes: Vec<(String, Value)> = Vec::new();
        for (rep, source) in reported.iter().zip(sources) {
            let v = source.value(row);
            if !v.is_nil() && !attributes.iter().any(|(k, _)| *k == rep.key) {
                attributes.push((rep.key.clone(), to_value(&v)));
            }
        }
        for rep in reported.iter().filter(|r| r.nil) {
            if !attributes.iter().any(|(k, _)| *k == rep.key) {
                attributes.push((rep.key.clone(), Value::Str("nil".into())));
            }
        }
        SpanHit {
            span_id: b.span_id.get(row).unwrap_or_default().to_vec(),
            name: b.name.get(row).unwrap_or_default().to_owned(),
            start_unix_nano: b.start[row],
            duration_nano: b.duration[row],
            attributes,
        }
    }
}

fn set_attr(attrs: &mut Vec<(String, Value)>, key: String, value: Value) {
    match attrs.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => attrs.push((key, value)),
    }
}

fn sorted<T: Ord>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_unstable();
    v
}

/// Union of two ascending row lists.
fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Rows of `a` not in `b` (both ascending, `b` a subset of `a`).
fn difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().copied().filter(|x| b.binary_search(x).is_err()).collect()
}

/// avg/min/max/sum over the numeric values of a spanset; nil (and non-numbers) skipped, nil
/// if there are none. min/max/sum keep the type (sum of mixed numbers is a float); avg is a
/// float, or a duration for durations.
fn aggregate<'a, 'v>(func: AggFunc, values: impl Iterator<Item = &'v Val<'a>>) -> Val<'a>
where
    'a: 'v,
{
    let numbers: Vec<&Val<'a>> = values.filter(|v| v.number().is_some()).collect();
    let Some(first) = numbers.first() else { return Val::Nil };
    let all = |f: fn(&Val) -> bool| numbers.iter().all(|v| f(v));
    let float_sum = || numbers.iter().filter_map(|v| v.number()).sum::<f64>();
    let exact_sum = || numbers.iter().map(|v| i128::from(int_of(v))).sum::<i128>();
    match func {
        AggFunc::Count => Val::Int(numbers.len() as i64),
        AggFunc::Min | AggFunc::Max => {
            let better = |x: f64, y: f64| if func == AggFunc::Min { x < y } else { x > y };
            let mut best = *first;
            for v in &numbers[1..] {
                if better(v.number().unwrap_or(f64::NAN), best.number().unwrap_or(f64::NAN)) {
                    best = v;
                }
            }
            best.clone()
        }
        AggFunc::Sum if all(|v| matches!(v, Val::Int(_))) => Val::Int(exact_sum() as i64),
        AggFunc::Sum if all(|v| matches!(v, Val::Duration(_))) => Val::Duration(exact_sum() as i64),
        AggFunc::Sum => Val::Float(float_sum()),
        AggFunc::Avg if all(|v| matches!(v, Val::Duration(_))) => {
            Val::Duration((exact_sum() / numbers.len() as i128) as i64)
        }
        AggFunc::Avg => Val::Float(float_sum() / numbers.len() as f64),
    }
}

fn int_of(v: &Val) -> i64 {
    match *v {
        Val::Int(i) | Val::Duration(i) => i,
        _ => 0,
    }
}

/// A `by()` group: values that are equal as TraceQL values of the same type.
#[derive(PartialEq, Eq, Hash)]
enum GroupKey<'v> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(&'v str),
    Duration(i64),
    Status(spoor_traceql::ast::Status),
    Kind(spoor_traceql::ast::Kind),
    Id(&'v [u8]),
    Arr(&'v [u8]),
}

impl<'v> GroupKey<'v> {
    fn of(v: &'v Val<'_>) -> GroupKey<'v> {
        match v {
            Val::Nil => GroupKey::Nil,
            Val::Bool(b) => GroupKey::Bool(*b),
            Val::Int(i) => GroupKey::Int(*i),
            Val::Float(f) => GroupKey::Float(f.to_bits()),
            Val::Str(s) => GroupKey::Str(s),
            Val::Duration(d) => GroupKey::Duration(*d),
            Val::Status(s) => GroupKey::Status(*s),
            Val::Kind(k) => GroupKey::Kind(*k),
            Val::Id(b) => GroupKey::Id(b),
            Val::Arr(a) => GroupKey::Arr(&a.raw),
        }
    }
}

pub(crate) fn to_value(v: &Val) -> Value {
    match v {
        Val::Nil => Value::Nil,
        Val::Bool(b) => Value::Bool(*b),
        Val::Int(i) => Value::Int(*i),
        Val::Float(f) => Value::Float(*f),
        Val::Str(s) => Value::Str((*s).to_owned()),
        Val::Duration(d) => Value::Duration(*d),
        Val::Status(s) => Value::Status(*s),
        Val::Kind(k) => Value::Kind(*k),
        Val::Id(b) => Value::Str(spoor_model::ids::hex(b)),
        Val::Arr(a) => Value::Any(a.raw.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sets() {
        assert_eq!(union(&[1, 3, 5], &[2, 3, 6]), [1, 2, 3, 5, 6]);
        assert_eq!(union(&[], &[4]), [4]);
        assert_eq!(difference(&[1, 2, 3, 4], &[2, 4]), [1, 3]);
    }

    #[test]
    fn aggregates_keep_types() {
        let agg = |func, values: &[Val]| format!("{:?}", aggregate(func, values.iter()));
        let ints = [Val::Int(3), Val::Nil, Val::Int(1), Val::Str("x")];
        assert_eq!(agg(AggFunc::Sum, &ints), "Int(4)");
        assert_eq!(agg(AggFunc::Avg, &ints), "Float(2.0)");
        assert_eq!(agg(AggFunc::Min, &ints), "Int(1)");
        assert_eq!(agg(AggFunc::Max, &[Val::Int(1), Val::Float(1.5)]), "Float(1.5)");
        assert_eq!(agg(AggFunc::Sum, &[Val::Int(1), Val::Float(0.5)]), "Float(1.5)");
        let durations = [Val::Duration(1), Val::Duration(2)];
        assert_eq!(agg(AggFunc::Avg, &durations), "Duration(1)");
        assert_eq!(agg(AggFunc::Sum, &durations), "Duration(3)");
        assert_eq!(agg(AggFunc::Avg, &[Val::Nil, Val::Bool(true)]), "Nil");
        assert_eq!(agg(AggFunc::Sum, &[Val::Int(i64::MAX), Val::Int(1)]), format!("Int({})", i64::MIN));
    }
}
