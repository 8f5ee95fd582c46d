//! A compiled query: the syntax tree turned into per-span expressions (`eval.rs`) and a
//! spanset program over traces (`spanset.rs`), plus what the scanner needs to read little:
//! the columns, and a per-span prefilter that prunes traces before whole traces are read.

use arrow_array::{BooleanArray, RecordBatch};
use arrow_buffer::BooleanBuffer;
use arrow_schema::Schema;
use spoor_block::columns as col;
use spoor_traceql::ast::{
    Attribute, BinOp, FieldExpr, Hint, Intrinsic, MetricsExpr, Pipeline, Query, Root, ScalarExpr, Scope, SpansetExpr,
    SpansetOp, SpansetQuery, Stage as AstStage, Static, UnaryOp,
};

use crate::error::{Error, Result};
use crate::eval::{Ctx, Expr, Field, Matcher, Op, Tri, Val};
use crate::hit::TraceHit;
use crate::spanset::{self, Node, Program, Reported, Scalar, SetExpr, Stage};

/// Columns every evaluation reads, for trace grouping, structure and results.
const BASE_COLUMNS: [&str; 11] = [
    col::TRACE_ID,
    col::SPAN_ID,
    col::PARENT_SPAN_ID,
    col::NESTED_LEFT,
    col::NESTED_RIGHT,
    col::NESTED_PARENT,
    col::START,
    col::DURATION,
    col::NAME,
    col::STATUS_CODE,
    col::SERVICE_NAME,
];

/// Intrinsics results carry elsewhere (span name, duration, ID; the trace's ID, root and
/// extent), so spans do not repeat them as attributes (as Tempo).
const NOT_REPORTED: [Intrinsic; 7] = [
    Intrinsic::Name,
    Intrinsic::Duration,
    Intrinsic::SpanId,
    Intrinsic::TraceId,
    Intrinsic::TraceDuration,
    Intrinsic::TraceRootName,
    Intrinsic::TraceRootService,
];

/// A checked query compiled for evaluation. Immutable; one plan serves any number of batches,
/// from any thread.
#[derive(Clone, Debug)]
pub struct Plan {
    /// What runs over whole traces.
    program: Program,
    prefilter: Option<Expr>,
    hints: Vec<Hint>,
}

impl Plan {
    /// Compile a checked query (regexes compiled once, constants resolved). A metrics query
    /// compiles its spanset part (the first one, for arithmetic between metrics queries).
    pub fn new(query: &Query) -> Result<Plan> {
        let spans = match &query.root {
            Root::Spans(q) => q,
            Root::Metrics(m) => {
                first_spanset(m).ok_or_else(|| Error::Invalid("a metrics query without a spanset query".into()))?
            }
        };
        Ok(Plan::compile(spans, &query.hints, &[])?.0)
    }

    /// The spanset part of one metrics query, plus a per-span value for each of `extra` (the
    /// metrics function's argument, the `by()` keys). Returns the plan and the index of each
    /// extra value in [`Plan::matched`]'s values. Extras are read, never reported.
    pub(crate) fn for_metrics(spans: &SpansetQuery, hints: &[Hint], extra: &[Attribute]) -> Result<(Plan, Vec<usize>)> {
        Plan::compile(spans, hints, extra)
    }

    /// Every span in a result of the plan (the union of each trace's spansets), as ascending
    /// rows of `batch`, handed to `f` with the plan's per-row values.
    pub(crate) fn matched<R>(
        &self,
        batch: &RecordBatch,
        f: impl for<'c> FnOnce(&[u32], &[Vec<Val<'c>>]) -> Result<R>,
    ) -> Result<R> {
        spanset::matched(&self.program, batch, f)
    }

    fn compile(spans: &SpansetQuery, hints: &[Hint], extra: &[Attribute]) -> Result<(Plan, Vec<usize>)> {
        let mut c = Compiler::default();
        let node = c.query(spans)?;
        let mut reported: Vec<Reported> = Vec::new();
        for attr in &c.referenced {
            let field = field(attr)?;
            let key = match attr {
                Attribute::Intrinsic(i) if NOT_REPORTED.contains(i) => continue,
                Attribute::Intrinsic(i) => i.as_str().to_owned(),
                Attribute::Attr { name, .. } => name.clone(),
            };
            if !reported.iter().any(|r| r.field == field) {
                let nil = c.nil_refs.contains(&field);
                reported.push(Reported { key, field, nil });
            }
        }
        let extra = extra
            .iter()
            .map(|attr| c.value(&FieldExpr::Attr { attr: attr.clone(), span: Default::default() }))
            .collect::<Result<Vec<usize>>>()?;
        let program = Program { node, filters: c.filters, values: c.values, reported, needs: Vec::new() };
        let mut plan = Plan { program, prefilter: None, hints: hints.to_vec() };
        let mut needs = Vec::new();
        for f in plan.fields() {
            if let Field::Intrinsic(i) = f
                && f.trace_level()
                && !needs.contains(i)
            {
                needs.push(*i);
            }
        }
        plan.program.needs = needs;
        plan.prefilter = plan.necessary_node(&plan.program.node).best();
        Ok((plan, extra))
    }

    /// Top-level block columns full evaluation reads, given the batch schema's columns (which
    /// dedicated `span.<key>` / `resource.<key>` columns exist varies per block). Always
    /// includes the base columns results need (trace_id, span_id, parent_span_id, nested_*,
    /// start, duration, name, status_code, service_name). In schema order.
    pub fn columns(&self, available: &Schema) -> Vec<String> {
        let names = column_names(available);
        let mut out: Vec<String> = BASE_COLUMNS.iter().filter(|c| names.contains(c)).map(|c| (*c).to_owned()).collect();
        self.fields().into_iter().for_each(|f| f.columns(&names, &mut out));
        in_schema_order(out, &names)
    }

    /// The columns of [`Plan::prefilter`]: a per-span condition a trace needs on at least one
    /// span to match at all; `None` when nothing can be pruned (`{ }`, `count() > 2`, a
    /// condition only on trace-level intrinsics...).
    pub fn prefilter_columns(&self, available: &Schema) -> Option<Vec<String>> {
        let names = column_names(available);
        let mut fields = Vec::new();
        self.prefilter.as_ref()?.fields(&mut fields);
        let mut out = Vec::new();
        fields.into_iter().for_each(|f| f.columns(&names, &mut out));
        Some(in_schema_order(out, &names))
    }

    /// Which rows satisfy the prefilter (all of them without one). The batch may hold only
    /// [`Plan::prefilter_columns`]; dedicated columns are found by name.
    pub fn prefilter(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let rows = batch.num_rows();
        let Some(e) = &self.prefilter else { return Ok(BooleanArray::new(BooleanBuffer::new_set(rows), None)) };
        let tri = e.tri(&Ctx::new(batch, None))?;
        Ok(BooleanArray::new(BooleanBuffer::collect_bool(rows, |i| tri[i] == Tri::T), None))
    }

    /// Evaluates over whole traces (rows grouped by trace_id, start order inside a trace).
    /// `spss` caps spans per spanset. Hits come in batch order.
    pub fn evaluate(&self, batch: &RecordBatch, spss: usize) -> Result<Vec<TraceHit>> {
        spanset::evaluate(&self.program, batch, spss)
    }

    /// The attributes the plan reads, as (scope, key), and the intrinsics: a scanner can skip
    /// an attribute list that a block's key catalog says holds none of these keys.
    pub fn referenced(&self) -> (Vec<(Scope, String)>, Vec<Intrinsic>) {
        let mut attrs: Vec<(Scope, String)> = Vec::new();
        let mut intrinsics: Vec<Intrinsic> = Vec::new();
        for f in self.fields() {
            match f {
                Field::Attr { scope, key } if !attrs.iter().any(|(s, k)| s == scope && k == key) => {
                    attrs.push((*scope, key.clone()))
                }
                Field::Intrinsic(i) if !intrinsics.contains(i) => intrinsics.push(*i),
                _ => {}
            }
        }
        (attrs, intrinsics)
    }

    /// The query's `with(...)` hints, as written (unknown ones included).
    pub fn hints(&self) -> &[Hint] {
        &self.hints
    }

    /// The value of hint `name`, if given.
    pub fn hint(&self, name: &str) -> Option<&Static> {
        self.hints.iter().find(|h| h.name == name).map(|h| &h.value)
    }

    /// False when no row of a row group can satisfy the prefilter, by the block's value index
    /// for that row group (`keys`: the block's key catalog): the row group need not be read.
    pub fn may_match(&self, group: &spoor_block::GroupIndex, keys: &spoor_block::AttributeKeys) -> bool {
        self.prefilter.as_ref().is_none_or(|e| e.may_hold(group, keys))
    }

    /// Whether the prefilter can prune anything.
    pub fn has_prefilter(&self) -> bool {
        self.prefilter.is_some()
    }

    fn fields(&self) -> Vec<&Field> {
        let mut out = Vec::new();
        let p = &self.program;
        p.filters.iter().chain(&p.values).for_each(|e| e.fields(&mut out));
        out.extend(p.reported.iter().map(|r| &r.field));
        out
    }

    fn necessary_node(&self, node: &Node) -> Necessary {
        match node {
            Node::Pipeline(stages) => {
                let mut n = Necessary::default();
                // Later filter stages only narrow spansets: their conditions hold for every
                // returned span too.
                for stage in stages {
                    if let Stage::Set(e) = stage {
                        let s = self.necessary_set(e);
                        n = Necessary { all: and(n.all, s.all), some: n.some.or(s.some) };
                    }
                }
                n
            }
            Node::Op(op, lhs, rhs) => combine(*op, self.necessary_node(lhs), self.necessary_node(rhs)),
        }
    }

    fn necessary_set(&self, e: &SetExpr) -> Necessary {
        match e {
            SetExpr::Filter(id) => Necessary { all: relax(&self.program.filters[*id]), some: None },
            SetExpr::Op(op, lhs, rhs) => combine(*op, self.necessary_set(lhs), self.necessary_set(rhs)),
        }
    }
}

fn column_names(schema: &Schema) -> Vec<&str> {
    schema.fields().iter().map(|f| f.name().as_str()).collect()
}

fn in_schema_order(mut columns: Vec<String>, names: &[&str]) -> Vec<String> {
    columns.sort_by_key(|c| names.iter().position(|n| n == c));
    columns
}

/// What the prefilter may assume about a trace that matches: `all`, a condition every span
/// of the result satisfies; `some`, one that some span of the trace satisfies. Either holds
/// for some span of a matching trace, since results are never empty.
#[derive(Default)]
struct Necessary {
    all: Option<Expr>,
    some: Option<Expr>,
}

impl Necessary {
    fn best(&self) -> Option<Expr> {
        self.some.clone().or_else(|| self.all.clone())
    }
}

fn combine(op: SpansetOp, l: Necessary, r: Necessary) -> Necessary {
    use SpansetOp::*;
    let all_either = || or(l.all.clone(), r.all.clone());
    match op {
        // Both sides are non-empty: either side's condition holds for some span.
        And => Necessary { all: all_either(), some: l.best().or_else(|| r.best()) },
        Or => Necessary { all: all_either(), some: or(l.best(), r.best()) },
        // Right-hand spans with a left-hand partner: both sides are non-empty.
        Child | Parent | Descendant | Ancestor | Sibling => {
            Necessary { all: r.all.clone(), some: r.best().or_else(|| l.best()) }
        }
        // Right-hand spans without a partner: the left side may well be empty.
        NotChild | NotParent | NotDescendant | NotAncestor | NotSibling => {
            Necessary { all: r.all.clone(), some: r.best() }
        }
        UnionChild | UnionParent | UnionDescendant | UnionAncestor | UnionSibling => {
            Necessary { all: all_either(), some: r.best().or_else(|| l.best()) }
        }
    }
}

fn and(a: Option<Expr>, b: Option<Expr>) -> Option<Expr> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Expr::And(Box::new(a), Box::new(b))),
        (a, b) => a.or(b),
    }
}

fn or(a: Option<Expr>, b: Option<Expr>) -> Option<Expr> {
    Some(Expr::Or(Box::new(a?), Box::new(b?)))
}

/// A condition on single rows implied by `e` (true wherever `e` is): `e` itself, minus the
/// parts that need whole traces. `None` if nothing remains, or nothing worth evaluating.
fn relax(e: &Expr) -> Option<Expr> {
    let mut fields = Vec::new();
    e.fields(&mut fields);
    if fields.iter().all(|f| !f.trace_level()) {
        return match e {
            Expr::Const(Static::Bool(true)) => None,
            e => Some(e.clone()),
        };
    }
    match e {
        Expr::And(a, b) => and(relax(a), relax(b)),
        Expr::Or(a, b) => or(relax(a), relax(b)),
        _ => None,
    }
}

/// The spanset part of a metrics query (of the first one, in arithmetic between them).
fn first_spanset(m: &MetricsExpr) -> Option<&SpansetQuery> {
    match m {
        MetricsExpr::Query(q) => Some(&q.spans),
        MetricsExpr::Binary { lhs, rhs, .. } => first_spanset(lhs).or_else(|| first_spanset(rhs)),
        MetricsExpr::Scalar { .. } => None,
        MetricsExpr::Staged { expr, .. } => first_spanset(expr),
    }
}

fn field(attr: &Attribute) -> Result<Field> {
    match attr {
        Attribute::Intrinsic(Intrinsic::Parent) | Attribute::Attr { scope: spoor_traceql::ast::Scope::Parent, .. } => {
            Err(Error::Invalid("parent not yet supported".into()))
        }
        Attribute::Intrinsic(i) => Ok(Field::Intrinsic(*i)),
        Attribute::Attr { scope, name } => Ok(Field::Attr { scope: *scope, key: name.clone() }),
    }
}

#[derive(Default)]
struct Compiler {
    filters: Vec<Expr>,
    values: Vec<Expr>,
    /// Every attribute the query names, in order: what results report.
    referenced: Vec<Attribute>,
    /// Fields compared with `= nil`.
    nil_refs: Vec<Field>,
}

impl Compiler {
    fn query(&mut self, q: &SpansetQuery) -> Result<Node> {
        Ok(match q {
            SpansetQuery::Pipeline(p) => self.pipeline(p)?,
            SpansetQuery::Op { op, lhs, rhs, .. } => {
                Node::Op(*op, Box::new(self.query(lhs)?), Box::new(self.query(rhs)?))
            }
        })
    }

    fn pipeline(&mut self, p: &Pipeline) -> Result<Node> {
        let mut stages = Vec::new();
        for stage in &p.stages {
            match stage {
                AstStage::Spanset(e) => stages.push(Stage::Set(self.set(e)?)),
                AstStage::ScalarFilter { op, lhs, rhs, .. } => {
                    let (op, negated) = Op::split(BinOp::from(*op)).expect("comparison operators split");
                    stages.push(Stage::Scalar { op, negated, lhs: self.scalar(lhs)?, rhs: self.scalar(rhs)? });
                }
                AstStage::By { expr, .. } => {
                    let value = self.value(expr)?;
                    stages.push(Stage::By { value, key: format!("by({expr})") });
                }
                AstStage::Coalesce { .. } => stages.push(Stage::Coalesce),
                // Selected attributes are reported on every span; nothing to evaluate.
                AstStage::Select { attrs, .. } => {
                    for a in attrs {
                        field(a)?;
                        self.referenced.push(a.clone());
                    }
                }
            }
        }
        Ok(Node::Pipeline(stages))
    }

    fn set(&mut self, e: &SpansetExpr) -> Result<SetExpr> {
        Ok(match e {
            SpansetExpr::Filter { expr, .. } => {
                let compiled = self.expr(expr)?;
                self.filters.push(compiled);
                SetExpr::Filter(self.filters.len() - 1)
            }
            SpansetExpr::Op { op, lhs, rhs, .. } => {
                SetExpr::Op(*op, Box::new(self.set(lhs)?), Box::new(self.set(rhs)?))
            }
        })
    }

    fn value(&mut self, e: &FieldExpr) -> Result<usize> {
        let compiled = self.expr(e)?;
        self.values.push(compiled);
        Ok(self.values.len() - 1)
    }

    fn scalar(&mut self, e: &ScalarExpr) -> Result<Scalar> {
        Ok(match e {
            ScalarExpr::Aggregate { func, arg, .. } => {
                let key = format!("{}({})", func.as_str(), arg.as_ref().map(|a| a.to_string()).unwrap_or_default());
                let value = arg.as_ref().map(|a| self.value(a)).transpose()?;
                Scalar::Agg { func: *func, value, key }
            }
            ScalarExpr::Static { value, .. } => Scalar::Const(value.clone()),
            ScalarExpr::Binary { op, lhs, rhs, .. } if op.is_arithmetic() => {
                Scalar::Arith(*op, Box::new(self.scalar(lhs)?), Box::new(self.scalar(rhs)?))
            }
            ScalarExpr::Binary { op, .. } => {
                return Err(Error::Invalid(format!("{} is not an arithmetic operator", op.as_str())));
            }
        })
    }

    fn field(&mut self, attr: &Attribute) -> Result<Field> {
        let f = field(attr)?;
        self.referenced.push(attr.clone());
        Ok(f)
    }

    fn expr(&mut self, e: &FieldExpr) -> Result<Expr> {
        Ok(match e {
            FieldExpr::Static { value, .. } => Expr::Const(value.clone()),
            FieldExpr::Attr { attr, .. } => Expr::Field(self.field(attr)?),
            FieldExpr::Unary { op: UnaryOp::Not, expr, .. } => Expr::Not(Box::new(self.expr(expr)?)),
            FieldExpr::Unary { op: UnaryOp::Neg, expr, .. } => Expr::Neg(Box::new(self.expr(expr)?)),
            FieldExpr::Binary { op: BinOp::And, lhs, rhs, .. } => {
                Expr::And(Box::new(self.expr(lhs)?), Box::new(self.expr(rhs)?))
            }
            FieldExpr::Binary { op: BinOp::Or, lhs, rhs, .. } => {
                Expr::Or(Box::new(self.expr(lhs)?), Box::new(self.expr(rhs)?))
            }
            FieldExpr::Binary { op, lhs, rhs, .. } if op.is_arithmetic() => {
                Expr::Arith { op: *op, lhs: Box::new(self.expr(lhs)?), rhs: Box::new(self.expr(rhs)?) }
            }
            FieldExpr::Binary { op, lhs, rhs, .. } => self.comparison(*op, lhs, rhs)?,
        })
    }

    fn comparison(&mut self, op: BinOp, lhs: &FieldExpr, rhs: &FieldExpr) -> Result<Expr> {
        let (op, negated) =
            Op::split(op).ok_or_else(|| Error::Invalid(format!("unexpected operator {}", op.as_str())))?;
        let is_static = |e: &FieldExpr| matches!(e, FieldExpr::Static { .. });
        // A literal on the left: `3 < .a` is `.a > 3`.
        let (op, lhs, rhs) = if is_static(lhs) && !is_static(rhs) {
            if op == Op::Regex {
                return Err(Error::Invalid("the pattern of =~ and !~ must be on the right".into()));
            }
            (op.mirror(), rhs, lhs)
        } else {
            (op, lhs, rhs)
        };
        Ok(match (lhs, rhs) {
            (_, FieldExpr::Static { value: Static::Nil, .. }) if op != Op::Eq => {
                // `x < nil`: neither it nor its negation holds.
                Expr::Const(Static::Nil)
            }
            (FieldExpr::Attr { attr, .. }, FieldExpr::Static { value: Static::Nil, .. }) => {
                let field = self.field(attr)?;
                if !negated {
                    self.nil_refs.push(field.clone());
                }
                Expr::IsNil { field, nil: !negated }
            }
            (lhs, FieldExpr::Static { value: Static::Nil, .. }) => {
                Expr::ValueIsNil { expr: Box::new(self.expr(lhs)?), nil: !negated }
            }
            (FieldExpr::Attr { attr, .. }, FieldExpr::Static { value, .. }) => {
                Expr::Match { field: self.field(attr)?, m: Matcher::new(op, negated, value.clone())? }
            }
            (lhs, FieldExpr::Static { value, .. }) => {
                Expr::MatchValue { expr: Box::new(self.expr(lhs)?), m: Matcher::new(op, negated, value.clone())? }
            }
            _ if op == Op::Regex => {
                return Err(Error::Invalid("the right-hand side of =~ and !~ must be a string".into()));
            }
            (lhs, rhs) => Expr::Compare { op, negated, lhs: Box::new(self.expr(lhs)?), rhs: Box::new(self.expr(rhs)?) },
        })
    }
}
