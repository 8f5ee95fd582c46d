//! Turning a TraceQL metrics query into what runs: a [`Leaf`] per `pipeline | fn(...)`, each
//! with the plan of its spanset part and the per-span values its function and `by()` read, and
//! the tree of arithmetic that combines the leaves' series.

use std::sync::Arc;

use spoor_traceql::ast::{
    Attribute, BinOp, FieldExpr, Intrinsic, MetricsExpr, MetricsFn, MetricsQuery, Pipeline, Query, Root, Scope,
    SecondStage, SpansetExpr, SpansetQuery, Stage, Static,
};

use crate::error::{Error, Result};
use crate::plan::Plan;

/// Most exemplars a query may ask for, per series (Tempo's `max_exemplars` default).
pub const MAX_EXEMPLARS: usize = 100;

/// `compare()`'s default number of values per attribute.
const COMPARE_TOP: usize = 10;

/// A metrics query ready to run: one [`Leaf`] per `pipeline | fn` and how their series combine.
pub(super) struct Compiled {
    pub(super) root: Node,
    pub(super) leaves: Vec<Arc<Leaf>>,
}

pub(super) enum Node {
    Leaf(usize),
    /// A number in arithmetic, and how it prints in a series name.
    Scalar(f64, String),
    Binary(BinOp, Box<Node>, Box<Node>),
    /// Second stages on the series of arithmetic.
    Staged(Box<Node>, Vec<SecondStage>),
}

impl Compiled {
    pub(super) fn new(query: &Query, requested: usize) -> Result<Compiled> {
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
            MetricsExpr::Staged { expr, second, .. } => {
                Node::Staged(Box::new(Compiled::node(expr, query, exemplars, leaves)?), second.clone())
            }
        })
    }
}

/// The function of one metrics query.
#[derive(Clone, Debug)]
pub(super) enum Func {
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
pub(super) struct Leaf {
    pub(super) plan: Arc<Plan>,
    pub(super) func: Func,
    /// `__name__` of an unlabelled series.
    pub(super) name: &'static str,
    /// Index of the function argument's value in the plan's values.
    pub(super) arg: Option<usize>,
    /// Label key and value index of each `by()` attribute.
    pub(super) by: Vec<(String, usize)>,
    pub(super) second: Vec<SecondStage>,
    pub(super) exemplars: usize,
    pub(super) compare: Option<Compare>,
    /// How rollups answer this leaf (the label of each `by()` attribute), or why they cannot.
    pub(super) rollup: std::result::Result<Vec<RollupLabel>, String>,
}

/// A `by()` attribute a rollup row has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum RollupLabel {
    Service,
    Name,
    Status,
    Kind,
}

/// Rollups count spans and their durations' log2 buckets per (minute, service, name, kind,
/// status): they answer `rate`, `count_over_time`, and `quantile_over_time` and
/// `histogram_over_time` of `duration`, of every span, by those attributes only.
fn rollup_answer(q: &MetricsQuery) -> std::result::Result<Vec<RollupLabel>, String> {
    let duration = |a: &Attribute| matches!(a, Attribute::Intrinsic(Intrinsic::Duration));
    let answered = match &q.func {
        MetricsFn::Rate | MetricsFn::CountOverTime => true,
        MetricsFn::QuantileOverTime(a, _) | MetricsFn::HistogramOverTime(a) => duration(a),
        _ => false,
    };
    if !answered {
        return Err("rollups answer rate(), count_over_time(), and quantile_over_time() and \
                    histogram_over_time() of duration only"
            .into());
    }
    let all = match &q.spans {
        SpansetQuery::Pipeline(Pipeline { stages }) => matches!(
            stages.as_slice(),
            [Stage::Spanset(SpansetExpr::Filter { expr: FieldExpr::Static { value: Static::Bool(true), .. }, .. })]
        ),
        _ => false,
    };
    if !all {
        return Err("rollups keep no attributes to filter on: only `{ }` (every span) can be counted".into());
    }
    q.by.iter()
        .map(|a| match a {
            Attribute::Attr { scope: Scope::Resource, name } if name == "service.name" => Ok(RollupLabel::Service),
            Attribute::Intrinsic(Intrinsic::Name) => Ok(RollupLabel::Name),
            Attribute::Intrinsic(Intrinsic::Status) => Ok(RollupLabel::Status),
            Attribute::Intrinsic(Intrinsic::Kind) => Ok(RollupLabel::Kind),
            other => Err(format!("rollups group by resource.service.name, name, status and kind only, not by {other}")),
        })
        .collect()
}

/// What `compare()` needs besides the population's plan.
#[derive(Clone)]
pub(super) struct Compare {
    /// The spans of the selection (those of the population it matches).
    pub(super) selection: Arc<Plan>,
    pub(super) top: usize,
    /// Only spans starting in (start, end] are selected.
    pub(super) window: Option<(u64, u64)>,
    /// Intrinsics compared, as label key and value index (attributes are found per batch).
    pub(super) intrinsics: Vec<(String, usize)>,
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
        let rollup = rollup_answer(q);
        Ok(Leaf { plan: Arc::new(plan), func, name, arg, by, second: q.second.clone(), exemplars, compare, rollup })
    }
}
