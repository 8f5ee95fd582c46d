//! Per-span evaluation of field expressions (what `{ ... }`, `by()` and aggregate arguments
//! hold) over the Arrow columns of the block layout, a column at a time.
//!
//! Truth is three-valued (Kleene): a missing attribute is `nil`, `nil` propagates through
//! comparisons, arithmetic and `!`, and a filter keeps a span only where its condition is
//! [`Tri::T`]. A comparison of an attribute with a literal ([`Expr::Match`]) never builds
//! values: it is one loop over the column (once per value for dictionary columns) writing a
//! [`Tri`] per row. Everything else materialises a [`Val`] per row, borrowing strings from the
//! batch.
//!
//! An attribute of a span may hold several values: the dedicated column's plus every entry of
//! the generic list with that key (a repeated key, or a second value of another type), and an
//! array holds several too. A comparison is true when any value satisfies it; `!=` and `!~`
//! when none equals (matches). Where a single value is needed (arithmetic, `by()`, results),
//! the first string wins, else the first int, float, bool, array: that choice does not depend
//! on which key a block dedicated, since a dedicated column holds the first value of its type.

use std::cmp::Ordering;
use std::ops::Range;
use std::rc::Rc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, StructArray, UInt64Array,
};
use arrow_schema::DataType;
use prost::Message;
use regex::Regex;
use spoor_block::columns as col;
use spoor_model::ids::hex;
use spoor_model::otlp::{AnyValue, any_value};
use spoor_traceql::ast::{BinOp, Intrinsic, Kind, Scope, Static, Status};

use crate::{Error, Result};

/// Kleene truth value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tri {
    F,
    T,
    /// Unknown: some operand was nil (or not a boolean where one was needed).
    N,
}

impl Tri {
    pub(crate) fn from_bool(b: bool) -> Tri {
        if b { Tri::T } else { Tri::F }
    }

    fn not(self) -> Tri {
        match self {
            Tri::F => Tri::T,
            Tri::T => Tri::F,
            Tri::N => Tri::N,
        }
    }

    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::F, _) | (_, Tri::F) => Tri::F,
            (Tri::T, Tri::T) => Tri::T,
            _ => Tri::N,
        }
    }

    fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::T, _) | (_, Tri::T) => Tri::T,
            (Tri::F, Tri::F) => Tri::F,
            _ => Tri::N,
        }
    }
}

/// What an attribute reference or intrinsic reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Field {
    Attr { scope: Scope, key: String },
    Intrinsic(Intrinsic),
}

impl Field {
    /// Computed from a whole trace (parent, children, root, extent): not available to the
    /// prefilter, which sees rows without their traces.
    pub(crate) fn trace_level(&self) -> bool {
        use Intrinsic::*;
        matches!(self, Field::Intrinsic(ParentId | ChildCount | TraceDuration | TraceRootName | TraceRootService))
    }

    /// Top-level block columns this field reads, given the names of the batch's columns.
    pub(crate) fn columns(&self, available: &[&str], out: &mut Vec<String>) {
        let mut add = |name: &str| {
            if available.contains(&name) && !out.iter().any(|c| c == name) {
                out.push(name.to_owned());
            }
        };
        match self {
            Field::Attr { scope, key } => {
                let (span, resource) = (format!("span.{key}"), dedicated_resource_column(key));
                let scopes: &[Scope] = match scope {
                    Scope::Unscoped => {
                        &[Scope::Span, Scope::Resource, Scope::Event, Scope::Link, Scope::Instrumentation]
                    }
                    other => std::slice::from_ref(other),
                };
                for scope in scopes {
                    match scope {
                        Scope::Span => [span.as_str(), col::ATTRS].iter().for_each(|c| add(c)),
                        Scope::Resource => [resource.as_str(), col::RESOURCE_ATTRS].iter().for_each(|c| add(c)),
                        Scope::Event => add(col::EVENTS),
                        Scope::Link => add(col::LINKS),
                        Scope::Instrumentation => add(col::SCOPE_ATTRS),
                        Scope::Unscoped | Scope::Parent => {}
                    }
                }
            }
            Field::Intrinsic(i) => {
                use Intrinsic::*;
                let names: &[&str] = match i {
                    Duration => &[col::DURATION],
                    Name => &[col::NAME],
                    Status => &[col::STATUS_CODE],
                    StatusMessage => &[col::STATUS_MESSAGE],
                    Kind => &[col::KIND],
                    SpanId => &[col::SPAN_ID],
                    ParentId => &[col::SPAN_ID, col::PARENT_SPAN_ID, col::NESTED_LEFT, col::NESTED_PARENT],
                    ChildCount => &[col::NESTED_LEFT, col::NESTED_PARENT],
                    TraceId => &[col::TRACE_ID],
                    TraceDuration => &[col::START, col::DURATION],
                    TraceRootName => &[col::NAME, col::NESTED_PARENT],
                    TraceRootService => &[col::SERVICE_NAME, col::NESTED_PARENT],
                    EventName | EventTimeSinceStart => &[col::EVENTS],
                    LinkTraceId | LinkSpanId => &[col::LINKS],
                    InstrumentationName => &[col::SCOPE_NAME],
                    InstrumentationVersion => &[col::SCOPE_VERSION],
                    NestedSetLeft => &[col::NESTED_LEFT],
                    NestedSetRight => &[col::NESTED_RIGHT],
                    NestedSetParent => &[col::NESTED_PARENT],
                    Parent => &[],
                };
                names.iter().for_each(|c| add(c));
            }
        }
    }
}

/// The resource `service.name` always has its own column, named differently.
fn dedicated_resource_column(key: &str) -> String {
    if key == "service.name" { col::SERVICE_NAME.to_owned() } else { format!("resource.{key}") }
}

/// A value of one span. Strings and IDs borrow from the batch (or the plan, for literals).
#[derive(Clone, Debug)]
pub(crate) enum Val<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// Nanoseconds.
    Duration(i64),
    Status(Status),
    Kind(Kind),
    /// Span, trace or link IDs: compared as bytes, shown as hex.
    Id(&'a [u8]),
    Arr(Rc<ArrayVal>),
}

impl Val<'_> {
    pub(crate) fn of(v: &Static) -> Val<'_> {
        match v {
            Static::Nil => Val::Nil,
            Static::Bool(b) => Val::Bool(*b),
            Static::Int(i) => Val::Int(*i),
            Static::Float(f) => Val::Float(*f),
            Static::Str(s) => Val::Str(s),
            Static::Duration(d) => Val::Duration(*d),
            Static::Status(s) => Val::Status(*s),
            Static::Kind(k) => Val::Kind(*k),
        }
    }

    pub(crate) fn is_nil(&self) -> bool {
        matches!(self, Val::Nil)
    }

    pub(crate) fn number(&self) -> Option<f64> {
        match *self {
            Val::Int(i) | Val::Duration(i) => Some(i as f64),
            Val::Float(f) => Some(f),
            _ => None,
        }
    }

    fn truth(&self) -> Tri {
        match self {
            Val::Bool(b) => Tri::from_bool(*b),
            _ => Tri::N,
        }
    }

    /// Order among several values of one attribute: the first of the best rank is its value.
    fn rank(&self) -> u8 {
        match self {
            Val::Str(_) => 0,
            Val::Int(_) => 1,
            Val::Float(_) => 2,
            Val::Bool(_) => 3,
            _ => 4,
        }
    }
}

/// A homogeneous array of scalars, decoded from an attribute's protobuf `AnyValue`.
#[derive(Debug)]
pub(crate) struct ArrayVal {
    /// The encoded `AnyValue`, as results report it.
    pub(crate) raw: Vec<u8>,
    elems: Elems,
}

#[derive(Debug)]
enum Elems {
    Str(Vec<String>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
}

impl ArrayVal {
    /// `None` for anything TraceQL cannot query: undecodable bytes, key-value lists, bytes,
    /// empty or mixed arrays.
    fn decode(raw: &[u8]) -> Option<ArrayVal> {
        use any_value::Value as V;
        let Some(V::ArrayValue(array)) = AnyValue::decode(raw).ok()?.value else { return None };
        let values = array.values;
        let elems = match values.first()?.value.as_ref()? {
            V::StringValue(_) => Elems::Str(
                values
                    .into_iter()
                    .map(|v| if let Some(V::StringValue(s)) = v.value { Some(s) } else { None })
                    .collect::<Option<_>>()?,
            ),
            V::IntValue(_) => Elems::Int(
                values
                    .into_iter()
                    .map(|v| if let Some(V::IntValue(i)) = v.value { Some(i) } else { None })
                    .collect::<Option<_>>()?,
            ),
            V::DoubleValue(_) => Elems::Float(
                values
                    .into_iter()
                    .map(|v| if let Some(V::DoubleValue(f)) = v.value { Some(f) } else { None })
                    .collect::<Option<_>>()?,
            ),
            V::BoolValue(_) => Elems::Bool(
                values
                    .into_iter()
                    .map(|v| if let Some(V::BoolValue(b)) = v.value { Some(b) } else { None })
                    .collect::<Option<_>>()?,
            ),
            _ => return None,
        };
        Some(ArrayVal { raw: raw.to_vec(), elems })
    }

    fn len(&self) -> usize {
        match &self.elems {
            Elems::Str(v) => v.len(),
            Elems::Int(v) => v.len(),
            Elems::Float(v) => v.len(),
            Elems::Bool(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> Val<'_> {
        match &self.elems {
            Elems::Str(v) => Val::Str(&v[i]),
            Elems::Int(v) => Val::Int(v[i]),
            Elems::Float(v) => Val::Float(v[i]),
            Elems::Bool(v) => Val::Bool(v[i]),
        }
    }

    /// Folds a per-element comparison into `state` (see [`fold`]).
    fn fold(&self, negated: bool, mut state: Tri, mut cmp: impl FnMut(&Val) -> Option<bool>) -> Tri {
        for i in 0..self.len() {
            state = fold(negated, state, cmp(&self.get(i)));
        }
        state
    }
}

/// A comparison without its negation: `!=` is not-`=`, `!~` is not-`=~`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Regex,
}

impl Op {
    /// (operator, negated) of a comparison operator; `None` for other operators.
    pub(crate) fn split(op: BinOp) -> Option<(Op, bool)> {
        Some(match op {
            BinOp::Eq => (Op::Eq, false),
            BinOp::Ne => (Op::Eq, true),
            BinOp::Lt => (Op::Lt, false),
            BinOp::Le => (Op::Le, false),
            BinOp::Gt => (Op::Gt, false),
            BinOp::Ge => (Op::Ge, false),
            BinOp::Regex => (Op::Regex, false),
            BinOp::NotRegex => (Op::Regex, true),
            _ => return None,
        })
    }

    /// The operator with its operands swapped (`3 < x` is `x > 3`).
    pub(crate) fn mirror(self) -> Op {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            other => other,
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord == Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Regex => false,
        }
    }

    fn floats(self, a: f64, b: f64) -> bool {
        // partial_cmp is None for NaN: every comparison with NaN is false.
        a.partial_cmp(&b).is_some_and(|ord| self.holds(ord))
    }
}

/// Folds one value's comparison result into a per-span state that starts at `N` (no value).
/// `r` is the result of the positive operator, `None` when the types do not compare (false
/// either way). Positive operators: true if any value satisfies. Negated ones: true if every
/// value is comparable and none equals (matches).
pub(crate) fn fold(negated: bool, state: Tri, r: Option<bool>) -> Tri {
    if negated {
        match r {
            Some(false) if state != Tri::F => Tri::T,
            _ => Tri::F,
        }
    } else {
        match r {
            Some(true) => Tri::T,
            _ if state == Tri::T => Tri::T,
            _ => Tri::F,
        }
    }
}

/// Compares two scalars with a positive operator; `None` when their types do not compare.
/// Numbers compare by value across int, float and duration; strings bytewise; IDs as bytes
/// against hex text.
pub(crate) fn cmp_scalar(op: Op, a: &Val, b: &Val) -> Option<bool> {
    use Val::*;
    match (a, b) {
        (Int(x) | Duration(x), Int(y) | Duration(y)) => Some(op.holds(x.cmp(y))),
        (Int(_) | Float(_) | Duration(_), Int(_) | Float(_) | Duration(_)) => Some(op.floats(a.number()?, b.number()?)),
        (Str(x), Str(y)) => Some(op.holds(x.as_bytes().cmp(y.as_bytes()))),
        (Bool(x), Bool(y)) if op == Op::Eq => Some(x == y),
        (Status(x), Status(y)) if op == Op::Eq => Some(x == y),
        (Kind(x), Kind(y)) if op == Op::Eq => Some(x == y),
        (Id(x), Id(y)) if op == Op::Eq => Some(id_eq(x, Some(y))),
        (Id(x), Str(y)) if op == Op::Eq => Some(id_eq(x, decode_id(y).as_deref())),
        (Str(x), Id(y)) if op == Op::Eq => Some(id_eq(y, decode_id(x).as_deref())),
        (Id(x), Str(y)) => Some(op.holds(hex(x).as_bytes().cmp(y.as_bytes()))),
        (Str(x), Id(y)) => Some(op.holds(x.as_bytes().cmp(hex(y).as_bytes()))),
        _ => None,
    }
}

/// Hex text of an ID, case-insensitive, with or without leading zeros (an odd length gets a
/// leading zero). `None` if it is not hex.
fn decode_id(text: &str) -> Option<Vec<u8>> {
    let padded = if text.len() % 2 == 1 { format!("0{text}") } else { text.to_owned() };
    spoor_model::ids::unhex(&padded).ok()
}

/// IDs are equal when their bytes are after leading zero bytes are dropped: trace ID
/// `0af7...` is the same as `af7...` (Tempo strips leading zeros when it prints trace IDs).
fn id_eq(stored: &[u8], literal: Option<&[u8]>) -> bool {
    fn strip(b: &[u8]) -> &[u8] {
        &b[b.iter().position(|&x| x != 0).unwrap_or(b.len())..]
    }
    literal.is_some_and(|l| strip(stored) == strip(l))
}

/// `field OP literal` compiled: the operator, the literal, the regex (compiled once, anchored
/// as Tempo does: `^(?s:pattern)$`) and the literal decoded as an ID.
#[derive(Clone, Debug)]
pub(crate) struct Matcher {
    op: Op,
    negated: bool,
    lit: Static,
    regex: Option<Regex>,
    id: Option<Vec<u8>>,
}

impl Matcher {
    pub(crate) fn new(op: Op, negated: bool, lit: Static) -> Result<Matcher> {
        let regex = match (op, &lit) {
            (Op::Regex, Static::Str(pattern)) => Some(
                Regex::new(&format!("^(?s:{pattern})$"))
                    .map_err(|e| Error::Invalid(format!("invalid regex {pattern:?}: {e}")))?,
            ),
            (Op::Regex, _) => return Err(Error::Invalid("the right-hand side of =~ and !~ must be a string".into())),
            _ => None,
        };
        let id = match &lit {
            Static::Str(s) => decode_id(s),
            _ => None,
        };
        Ok(Matcher { op, negated, lit, regex, id })
    }

    /// The positive operator applied to one scalar.
    fn cmp(&self, v: &Val) -> Option<bool> {
        match (v, &self.regex) {
            (Val::Str(s), Some(re)) => Some(re.is_match(s)),
            (Val::Id(b), Some(re)) => Some(re.is_match(&hex(b))),
            (_, Some(_)) => None,
            (Val::Id(b), None) if self.op == Op::Eq && matches!(self.lit, Static::Str(_)) => {
                Some(id_eq(b, self.id.as_deref()))
            }
            _ => cmp_scalar(self.op, v, &Val::of(&self.lit)),
        }
    }

    /// The positive operator applied to a string (a regex, or bytewise against a string).
    fn str(&self, s: &str) -> Option<bool> {
        match (&self.regex, &self.lit) {
            (Some(re), _) => Some(re.is_match(s)),
            (None, Static::Str(l)) if self.op == Op::Eq => Some(s == l),
            (None, Static::Str(l)) => Some(self.op.holds(s.as_bytes().cmp(l.as_bytes()))),
            _ => None,
        }
    }

    /// Folds one value (every element of an array) into `state`.
    fn fold(&self, state: Tri, v: &Val) -> Tri {
        match v {
            Val::Nil => state,
            Val::Arr(a) => a.fold(self.negated, state, |e| self.cmp(e)),
            v => fold(self.negated, state, self.cmp(v)),
        }
    }

    fn test(&self, v: &Val) -> Tri {
        self.fold(Tri::N, v)
    }
}

/// Compares two computed values (`.a = .b`, `.a + 1 > 3`): nil → `N`, arrays element-wise.
fn compare(op: Op, negated: bool, a: &Val, b: &Val) -> Tri {
    match (a, b) {
        (Val::Nil, _) | (_, Val::Nil) => Tri::N,
        (Val::Arr(_), Val::Arr(_)) => Tri::F,
        (Val::Arr(x), _) => x.fold(negated, Tri::N, |e| cmp_scalar(op, e, b)),
        (_, Val::Arr(y)) => y.fold(negated, Tri::N, |e| cmp_scalar(op, a, e)),
        _ => fold(negated, Tri::N, cmp_scalar(op, a, b)),
    }
}

/// Arithmetic: int ∘ int stays integer (wrapping, `/` truncates); anything with a float or a
/// duration is float64. A non-number or a division by zero gives nil.
pub(crate) fn arith<'a>(op: BinOp, a: &Val, b: &Val) -> Val<'a> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => {
            let (x, y) = (*x, *y);
            match op {
                BinOp::Add => Val::Int(x.wrapping_add(y)),
                BinOp::Sub => Val::Int(x.wrapping_sub(y)),
                BinOp::Mul => Val::Int(x.wrapping_mul(y)),
                BinOp::Div if y != 0 => Val::Int(x.wrapping_div(y)),
                BinOp::Mod if y != 0 => Val::Int(x.wrapping_rem(y)),
                BinOp::Pow if y >= 0 => Val::Int(x.wrapping_pow(u32::try_from(y).unwrap_or(u32::MAX))),
                // A negative exponent truncates toward zero, like the float result cast back.
                BinOp::Pow => Val::Int((x as f64).powf(y as f64) as i64),
                _ => Val::Nil,
            }
        }
        _ => {
            let (Some(x), Some(y)) = (a.number(), b.number()) else { return Val::Nil };
            match op {
                BinOp::Add => Val::Float(x + y),
                BinOp::Sub => Val::Float(x - y),
                BinOp::Mul => Val::Float(x * y),
                BinOp::Div if y != 0.0 => Val::Float(x / y),
                BinOp::Mod if y != 0.0 => Val::Float(x % y),
                BinOp::Pow => Val::Float(x.powf(y)),
                _ => Val::Nil,
            }
        }
    }
}

fn negate<'a>(v: &Val<'a>) -> Val<'a> {
    match *v {
        Val::Int(i) => Val::Int(i.wrapping_neg()),
        Val::Float(f) => Val::Float(-f),
        Val::Duration(d) => Val::Duration(d.wrapping_neg()),
        _ => Val::Nil,
    }
}

/// A compiled field expression.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    Const(Static),
    /// A bare reference (`{ .cached }`, an operand of arithmetic, a `by()` key).
    Field(Field),
    /// `field OP literal`: the fast path.
    Match {
        field: Field,
        m: Matcher,
    },
    /// `field = nil` (`nil: true`) or `field != nil`: absence is an answer here, never nil.
    IsNil {
        field: Field,
        nil: bool,
    },
    /// `expr OP literal` for a computed left-hand side.
    MatchValue {
        expr: Box<Expr>,
        m: Matcher,
    },
    ValueIsNil {
        expr: Box<Expr>,
        nil: bool,
    },
    /// Two computed operands.
    Compare {
        op: Op,
        negated: bool,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Arith {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
}

impl Expr {
    pub(crate) fn fields<'e>(&'e self, out: &mut Vec<&'e Field>) {
        match self {
            Expr::Const(_) => {}
            Expr::Field(f) | Expr::Match { field: f, .. } | Expr::IsNil { field: f, .. } => out.push(f),
            Expr::MatchValue { expr, .. } | Expr::ValueIsNil { expr, .. } | Expr::Not(expr) | Expr::Neg(expr) => {
                expr.fields(out)
            }
            Expr::Compare { lhs, rhs, .. }
            | Expr::And(lhs, rhs)
            | Expr::Or(lhs, rhs)
            | Expr::Arith { lhs, rhs, .. } => {
                lhs.fields(out);
                rhs.fields(out);
            }
        }
    }

    /// The truth of the expression for every row of the batch.
    pub(crate) fn tri<'c>(&'c self, ctx: &Ctx<'c>) -> Result<Vec<Tri>> {
        let n = ctx.rows;
        Ok(match self {
            Expr::Const(v) => vec![Val::of(v).truth(); n],
            Expr::Match { field, m } => ctx.source(field)?.test(m, n),
            Expr::IsNil { field, nil } => ctx.source(field)?.nil_test(*nil, n),
            Expr::MatchValue { expr, m } => expr.vals(ctx)?.iter().map(|v| m.test(v)).collect(),
            Expr::ValueIsNil { expr, nil } => {
                expr.vals(ctx)?.iter().map(|v| Tri::from_bool(v.is_nil() == *nil)).collect()
            }
            Expr::Compare { op, negated, lhs, rhs } => {
                let (a, b) = (lhs.vals(ctx)?, rhs.vals(ctx)?);
                a.iter().zip(&b).map(|(a, b)| compare(*op, *negated, a, b)).collect()
            }
            Expr::Not(e) => e.tri(ctx)?.into_iter().map(Tri::not).collect(),
            Expr::And(a, b) => {
                let mut out = a.tri(ctx)?;
                out.iter_mut().zip(b.tri(ctx)?).for_each(|(x, y)| *x = x.and(y));
                out
            }
            Expr::Or(a, b) => {
                let mut out = a.tri(ctx)?;
                out.iter_mut().zip(b.tri(ctx)?).for_each(|(x, y)| *x = x.or(y));
                out
            }
            Expr::Field(_) | Expr::Neg(_) | Expr::Arith { .. } => self.vals(ctx)?.iter().map(Val::truth).collect(),
        })
    }

    /// The value of the expression for every row of the batch.
    pub(crate) fn vals<'c>(&'c self, ctx: &Ctx<'c>) -> Result<Vec<Val<'c>>> {
        let n = ctx.rows;
        Ok(match self {
            Expr::Const(v) => vec![Val::of(v); n],
            Expr::Field(f) => ctx.source(f)?.values(n),
            Expr::Neg(e) => e.vals(ctx)?.iter().map(negate).collect(),
            Expr::Arith { op, lhs, rhs } => {
                let (a, b) = (lhs.vals(ctx)?, rhs.vals(ctx)?);
                a.iter().zip(&b).map(|(a, b)| arith(*op, a, b)).collect()
            }
            _ => self
                .tri(ctx)?
                .into_iter()
                .map(|t| match t {
                    Tri::T => Val::Bool(true),
                    Tri::F => Val::Bool(false),
                    Tri::N => Val::Nil,
                })
                .collect(),
        })
    }
}

/// Values computed per trace (see `spanset.rs`), one per row of the batch.
#[derive(Default)]
pub(crate) struct Derived {
    pub(crate) parent_id: Option<BinaryArray>,
    pub(crate) child_count: Option<Int64Array>,
    pub(crate) trace_duration: Option<Int64Array>,
    pub(crate) root_name: Option<StringArray>,
    pub(crate) root_service: Option<StringArray>,
}

/// A batch being evaluated, and the per-trace values when whole traces are at hand.
pub(crate) struct Ctx<'c> {
    batch: &'c RecordBatch,
    derived: Option<&'c Derived>,
    pub(crate) rows: usize,
}

impl<'c> Ctx<'c> {
    pub(crate) fn new(batch: &'c RecordBatch, derived: Option<&'c Derived>) -> Ctx<'c> {
        Ctx { batch, derived, rows: batch.num_rows() }
    }

    pub(crate) fn column(&self, name: &str) -> Result<&'c ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| Error::Corrupt(format!("the batch has no column {name}")))
    }

    /// How to read `field` from this batch.
    pub(crate) fn source(&self, field: &'c Field) -> Result<Source<'c>> {
        match field {
            Field::Attr { scope, key } => self.attr_source(*scope, key),
            Field::Intrinsic(i) => self.intrinsic(*i),
        }
    }

    fn attr_source(&self, scope: Scope, key: &'c str) -> Result<Source<'c>> {
        let attrs = |dedicated: Option<String>, list: &str| -> Result<Source<'c>> {
            let dedicated = match dedicated.and_then(|name| self.batch.column_by_name(&name).map(|c| (name, c))) {
                Some((name, c)) if matches!(c.data_type(), DataType::Int64) => Some(Col::Int(Num::of(&name, c)?)),
                Some((name, c)) => Some(Col::Str(StrCol::of(&name, c)?)),
                None => None,
            };
            let list = AttrList::of(list, self.column(list)?)?;
            Ok(Source::Attrs(Attrs { key: list.key_matcher(key), dedicated, list }))
        };
        Ok(match scope {
            Scope::Span => attrs(Some(format!("span.{key}")), col::ATTRS)?,
            Scope::Resource => attrs(Some(dedicated_resource_column(key)), col::RESOURCE_ATTRS)?,
            Scope::Instrumentation => attrs(None, col::SCOPE_ATTRS)?,
            Scope::Event | Scope::Link => {
                let (offsets, items) =
                    self.list_of_structs(if scope == Scope::Event { col::EVENTS } else { col::LINKS })?;
                let list = AttrList::of(col::ATTRS, struct_field(items, col::ATTRS)?)?;
                let inner = Source::Attrs(Attrs { key: list.key_matcher(key), dedicated: None, list });
                Source::Each { offsets, len: items.len(), inner: Box::new(inner) }
            }
            Scope::Unscoped => Source::First(
                [Scope::Span, Scope::Resource, Scope::Event, Scope::Link, Scope::Instrumentation]
                    .into_iter()
                    .map(|s| self.attr_source(s, key))
                    .collect::<Result<_>>()?,
            ),
            Scope::Parent => return Err(Error::Invalid("parent not yet supported".into())),
        })
    }

    fn intrinsic(&self, i: Intrinsic) -> Result<Source<'c>> {
        use Intrinsic::*;
        let str = |name: &str| Ok::<_, Error>(Source::Column(Col::Str(StrCol::of(name, self.column(name)?)?)));
        let num = |name: &str| Num::of(name, self.column(name)?);
        let derived = |what: &str| {
            self.derived.ok_or_else(|| Error::Invalid(format!("{what} needs whole traces (not in a prefilter)")))
        };
        let missing = || Error::Invalid("trace-level values were not computed".into());
        Ok(match i {
            Duration => Source::Column(Col::Duration(num(col::DURATION)?)),
            Name => str(col::NAME)?,
            Status => Source::Column(Col::Status(num(col::STATUS_CODE)?)),
            StatusMessage => str(col::STATUS_MESSAGE)?,
            Kind => Source::Column(Col::Kind(num(col::KIND)?)),
            SpanId => Source::Column(Col::Id(IdCol::of(col::SPAN_ID, self.column(col::SPAN_ID)?)?)),
            TraceId => Source::Column(Col::Id(IdCol::of(col::TRACE_ID, self.column(col::TRACE_ID)?)?)),
            ParentId => {
                Source::Column(Col::Id(IdCol::Bin(derived("span:parentID")?.parent_id.as_ref().ok_or_else(missing)?)))
            }
            ChildCount => Source::Column(Col::Int(Num::I64(
                derived("span:childCount")?.child_count.as_ref().ok_or_else(missing)?,
            ))),
            TraceDuration => Source::Column(Col::Duration(Num::I64(
                derived("trace:duration")?.trace_duration.as_ref().ok_or_else(missing)?,
            ))),
            TraceRootName => Source::Column(Col::Str(StrCol::Plain(
                derived("trace:rootName")?.root_name.as_ref().ok_or_else(missing)?,
            ))),
            TraceRootService => Source::Column(Col::Str(StrCol::Plain(
                derived("trace:rootService")?.root_service.as_ref().ok_or_else(missing)?,
            ))),
            EventName | EventTimeSinceStart => {
                let (offsets, events) = self.list_of_structs(col::EVENTS)?;
                let inner = if i == EventName {
                    Col::Str(StrCol::of(col::NAME, struct_field(events, col::NAME)?)?)
                } else {
                    Col::Duration(Num::of(col::TIME_SINCE_START, struct_field(events, col::TIME_SINCE_START)?)?)
                };
                Source::Each { offsets, len: events.len(), inner: Box::new(Source::Column(inner)) }
            }
            LinkTraceId | LinkSpanId => {
                let (offsets, links) = self.list_of_structs(col::LINKS)?;
                let name = if i == LinkTraceId { col::TRACE_ID } else { col::SPAN_ID };
                let inner = Col::Id(IdCol::of(name, struct_field(links, name)?)?);
                Source::Each { offsets, len: links.len(), inner: Box::new(Source::Column(inner)) }
            }
            InstrumentationName => str(col::SCOPE_NAME)?,
            InstrumentationVersion => str(col::SCOPE_VERSION)?,
            NestedSetLeft => Source::Column(Col::Int(num(col::NESTED_LEFT)?)),
            NestedSetRight => Source::Column(Col::Int(num(col::NESTED_RIGHT)?)),
            NestedSetParent => Source::Column(Col::Int(num(col::NESTED_PARENT)?)),
            Parent => return Err(Error::Invalid("parent not yet supported".into())),
        })
    }

    fn list_of_structs(&self, name: &str) -> Result<(&'c [i32], &'c StructArray)> {
        let column = self.column(name)?;
        let list = column.as_list_opt::<i32>().ok_or_else(|| type_error(name, column, "a list"))?;
        let items = list.values().as_struct_opt().ok_or_else(|| type_error(name, column, "a list of structs"))?;
        Ok((list.value_offsets(), items))
    }
}

fn type_error(name: &str, column: &dyn Array, expected: &str) -> Error {
    Error::Corrupt(format!("column {name} is {}, expected {expected}", column.data_type()))
}

fn struct_field<'c>(s: &'c StructArray, name: &str) -> Result<&'c ArrayRef> {
    s.column_by_name(name).ok_or_else(|| Error::Corrupt(format!("struct column has no field {name}")))
}

/// A string column, plain or dictionary-encoded (the scanner may ask Parquet for dictionaries).
#[derive(Clone, Copy)]
pub(crate) enum StrCol<'c> {
    Plain(&'c StringArray),
    Dict(&'c Int32Array, &'c StringArray),
}

impl<'c> StrCol<'c> {
    pub(crate) fn of(name: &str, column: &'c ArrayRef) -> Result<StrCol<'c>> {
        if let Some(s) = column.as_string_opt::<i32>() {
            return Ok(StrCol::Plain(s));
        }
        if let Some(d) = column.as_dictionary_opt::<Int32Type>()
            && let Some(values) = d.values().as_string_opt::<i32>()
        {
            return Ok(StrCol::Dict(d.keys(), values));
        }
        Err(type_error(name, column, "Utf8 or Dictionary(Int32, Utf8)"))
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'c str> {
        match self {
            StrCol::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Dict(keys, values) => {
                let k = usize::try_from(keys.is_valid(i).then(|| keys.value(i))?).ok()?;
                (k < values.len() && values.is_valid(k)).then(|| values.value(k))
            }
        }
    }
}

/// An integer column: nested-set numbers, codes, durations, dedicated int attributes.
#[derive(Clone, Copy)]
pub(crate) enum Num<'c> {
    I32(&'c Int32Array),
    I64(&'c Int64Array),
    U64(&'c UInt64Array),
}

impl<'c> Num<'c> {
    pub(crate) fn of(name: &str, column: &'c ArrayRef) -> Result<Num<'c>> {
        if let Some(a) = column.as_primitive_opt::<Int32Type>() {
            Ok(Num::I32(a))
        } else if let Some(a) = column.as_primitive_opt::<Int64Type>() {
            Ok(Num::I64(a))
        } else if let Some(a) = column.as_primitive_opt::<UInt64Type>() {
            Ok(Num::U64(a))
        } else {
            Err(type_error(name, column, "an integer"))
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<i64> {
        match self {
            Num::I32(a) => a.is_valid(i).then(|| a.value(i) as i64),
            Num::I64(a) => a.is_valid(i).then(|| a.value(i)),
            // Durations past i64::MAX come from spans ending before they start; wrap, as stored.
            Num::U64(a) => a.is_valid(i).then(|| a.value(i) as i64),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum IdCol<'c> {
    Bin(&'c BinaryArray),
    Fixed(&'c FixedSizeBinaryArray),
}

impl<'c> IdCol<'c> {
    pub(crate) fn of(name: &str, column: &'c ArrayRef) -> Result<IdCol<'c>> {
        if let Some(a) = column.as_binary_opt::<i32>() {
            Ok(IdCol::Bin(a))
        } else if let Some(a) = column.as_fixed_size_binary_opt() {
            Ok(IdCol::Fixed(a))
        } else {
            Err(type_error(name, column, "binary"))
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'c [u8]> {
        match self {
            IdCol::Bin(a) => a.is_valid(i).then(|| a.value(i)),
            IdCol::Fixed(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// A single-valued column, typed as TraceQL sees it.
pub(crate) enum Col<'c> {
    Str(StrCol<'c>),
    Int(Num<'c>),
    Duration(Num<'c>),
    /// OTLP status codes, seen as the status enum.
    Status(Num<'c>),
    /// OTLP span kinds, seen as the kind enum.
    Kind(Num<'c>),
    Id(IdCol<'c>),
}

impl<'c> Col<'c> {
    fn value(&self, i: usize) -> Val<'c> {
        let v = match self {
            Col::Str(c) => c.get(i).map(Val::Str),
            Col::Int(c) => c.get(i).map(Val::Int),
            Col::Duration(c) => c.get(i).map(Val::Duration),
            Col::Status(c) => c.get(i).map(|code| Val::Status(Status::from_otlp(code as i32))),
            Col::Kind(c) => c.get(i).map(|kind| Val::Kind(Kind::from_otlp(kind as i32))),
            Col::Id(c) => c.get(i).map(Val::Id),
        };
        v.unwrap_or(Val::Nil)
    }

    fn test(&self, m: &Matcher, n: usize) -> Vec<Tri> {
        match self {
            // Dictionary: the comparison (a regex, typically) runs once per distinct value.
            Col::Str(StrCol::Dict(keys, values)) => {
                let table: Vec<Tri> = (0..values.len())
                    .map(|k| if values.is_valid(k) { m.test(&Val::Str(values.value(k))) } else { Tri::N })
                    .collect();
                (0..n)
                    .map(|i| match keys.is_valid(i).then(|| keys.value(i)) {
                        Some(k) => usize::try_from(k).ok().and_then(|k| table.get(k)).copied().unwrap_or(Tri::N),
                        None => Tri::N,
                    })
                    .collect()
            }
            Col::Str(StrCol::Plain(a)) => match (&m.lit, m.op, &m.regex) {
                // The commonest filter, `name = "x"`: compare bytes without building values.
                (Static::Str(lit), Op::Eq, None) => {
                    let (offsets, data, lit) = (a.value_offsets(), a.value_data(), lit.as_bytes());
                    let (hit, miss) = hit_miss(m);
                    (0..n)
                        .map(|i| {
                            let (s, e) = (offsets[i] as usize, offsets[i + 1] as usize);
                            if a.is_null(i) {
                                Tri::N
                            } else if data.get(s..e) == Some(lit) {
                                hit
                            } else {
                                miss
                            }
                        })
                        .collect()
                }
                (_, Op::Regex, Some(re)) => {
                    let (hit, miss) = hit_miss(m);
                    let mut recent = Recent::default();
                    (0..n)
                        .map(|i| match a.is_valid(i) {
                            true if recent.is_match(re, a.value(i)) => hit,
                            true => miss,
                            false => Tri::N,
                        })
                        .collect()
                }
                _ => (0..n).map(|i| m.test(&self.value(i))).collect(),
            },
            Col::Int(c) | Col::Duration(c) => {
                numbers(c, m).unwrap_or_else(|| (0..n).map(|i| m.test(&self.value(i))).collect())
            }
            Col::Status(c) if m.op == Op::Eq && matches!(m.lit, Static::Status(_)) => {
                let Static::Status(lit) = m.lit else { unreachable!("matched above") };
                enums(c, m, |code| Status::from_otlp(code) == lit)
            }
            Col::Kind(c) if m.op == Op::Eq && matches!(m.lit, Static::Kind(_)) => {
                let Static::Kind(lit) = m.lit else { unreachable!("matched above") };
                enums(c, m, |kind| Kind::from_otlp(kind) == lit)
            }
            _ => (0..n).map(|i| m.test(&self.value(i))).collect(),
        }
    }
}

/// `hit` where the positive operator holds, else `miss` (swapped for `!=`).
fn hit_miss(m: &Matcher) -> (Tri, Tri) {
    if m.negated { (Tri::F, Tri::T) } else { (Tri::T, Tri::F) }
}

/// Nulls (no value) are nil.
fn with_nulls(mut out: Vec<Tri>, nulls: Option<&arrow_buffer::NullBuffer>) -> Vec<Tri> {
    if let Some(nulls) = nulls {
        out.iter_mut().zip(nulls.iter()).filter(|(_, valid)| !valid).for_each(|(o, _)| *o = Tri::N);
    }
    out
}

/// An integer column against a number: one tight loop per operator. `None` for literals of
/// other types (the generic path says false for each).
fn numbers(c: &Num, m: &Matcher) -> Option<Vec<Tri>> {
    let (hit, miss) = hit_miss(m);
    Some(match (c, &m.lit) {
        (Num::I32(a), Static::Int(l) | Static::Duration(l)) => {
            with_nulls(ordered(a.values(), |v| v as i64, m.op, *l, hit, miss), a.nulls())
        }
        (Num::I64(a), Static::Int(l) | Static::Duration(l)) => {
            with_nulls(ordered(a.values(), |v| v, m.op, *l, hit, miss), a.nulls())
        }
        // Durations past i64::MAX wrap, as `Num::get` reads them.
        (Num::U64(a), Static::Int(l) | Static::Duration(l)) => {
            with_nulls(ordered(a.values(), |v| v as i64, m.op, *l, hit, miss), a.nulls())
        }
        (Num::I32(a), Static::Float(l)) => {
            with_nulls(ordered(a.values(), |v| v as f64, m.op, *l, hit, miss), a.nulls())
        }
        (Num::I64(a), Static::Float(l)) => {
            with_nulls(ordered(a.values(), |v| v as f64, m.op, *l, hit, miss), a.nulls())
        }
        (Num::U64(a), Static::Float(l)) => {
            with_nulls(ordered(a.values(), |v| v as i64 as f64, m.op, *l, hit, miss), a.nulls())
        }
        _ => return None,
    })
}

fn ordered<T: Copy, K: PartialOrd>(
    values: &[T],
    key: impl Fn(T) -> K,
    op: Op,
    lit: K,
    hit: Tri,
    miss: Tri,
) -> Vec<Tri> {
    let pick = |b: bool| if b { hit } else { miss };
    match op {
        Op::Eq => values.iter().map(|&v| pick(key(v) == lit)).collect(),
        Op::Lt => values.iter().map(|&v| pick(key(v) < lit)).collect(),
        Op::Le => values.iter().map(|&v| pick(key(v) <= lit)).collect(),
        Op::Gt => values.iter().map(|&v| pick(key(v) > lit)).collect(),
        Op::Ge => values.iter().map(|&v| pick(key(v) >= lit)).collect(),
        // A regex never applies to numbers.
        Op::Regex => vec![Tri::F; values.len()],
    }
}

/// Status and kind columns hold OTLP numbers; `same` says whether one is the literal.
fn enums(c: &Num, m: &Matcher, same: impl Fn(i32) -> bool) -> Vec<Tri> {
    let (hit, miss) = hit_miss(m);
    let pick = |b: bool| if b { hit } else { miss };
    match c {
        Num::I32(a) => with_nulls(a.values().iter().map(|&v| pick(same(v))).collect(), a.nulls()),
        Num::I64(a) => with_nulls(a.values().iter().map(|&v| pick(same(v as i32))).collect(), a.nulls()),
        Num::U64(a) => with_nulls(a.values().iter().map(|&v| pick(same(v as i32))).collect(), a.nulls()),
    }
}

/// Regex results of recently seen strings, in slots picked by length and a few bytes. String
/// columns repeat few values (names, services) and a regex costs far more than a lookup; a
/// miss costs just the regex, so no input makes this slower than no cache.
struct Recent<'a> {
    slots: [Option<(&'a str, bool)>; 64],
}

impl Default for Recent<'_> {
    fn default() -> Self {
        Recent { slots: [None; 64] }
    }
}

impl<'a> Recent<'a> {
    fn is_match(&mut self, re: &Regex, s: &'a str) -> bool {
        let b = s.as_bytes();
        let byte = |i: usize| b.get(i).copied().unwrap_or(0) as usize;
        let slot = (b.len() ^ (byte(0) << 1) ^ (byte(b.len() / 2) << 2) ^ (byte(b.len().wrapping_sub(1)) << 3)) % 64;
        match self.slots[slot] {
            Some((seen, matched)) if seen == s => matched,
            _ => {
                let matched = re.is_match(s);
                self.slots[slot] = Some((s, matched));
                matched
            }
        }
    }
}

/// A comparison against the string values of an attribute list: once per distinct value
/// for dictionaries.
enum StrTest<'c> {
    Plain(&'c StringArray, Box<Recent<'c>>),
    /// Per dictionary value: `None` if it is null, else the comparison's result.
    Dict(&'c Int32Array, Vec<Option<Option<bool>>>),
}

impl<'c> StrTest<'c> {
    fn new(c: StrCol<'c>, m: &Matcher) -> StrTest<'c> {
        match c {
            StrCol::Plain(a) => StrTest::Plain(a, Box::default()),
            StrCol::Dict(keys, values) => StrTest::Dict(
                keys,
                (0..values.len()).map(|k| values.is_valid(k).then(|| m.str(values.value(k)))).collect(),
            ),
        }
    }

    /// `None` when entry `j` holds no string; else the positive operator's result.
    fn at(&mut self, m: &Matcher, j: usize) -> Option<Option<bool>> {
        match self {
            StrTest::Plain(a, recent) => a.is_valid(j).then(|| match &m.regex {
                Some(re) => Some(recent.is_match(re, a.value(j))),
                None => m.str(a.value(j)),
            }),
            StrTest::Dict(keys, table) => {
                keys.is_valid(j).then(|| table.get(keys.value(j) as usize).copied().flatten()).flatten()
            }
        }
    }
}

/// A list of attributes per row (span, resource, scope, event or link attributes).
pub(crate) struct AttrList<'c> {
    offsets: &'c [i32],
    keys: StrCol<'c>,
    str: Option<StrCol<'c>>,
    int: Option<&'c Int64Array>,
    double: Option<&'c Float64Array>,
    bool: Option<&'c BooleanArray>,
    any: Option<&'c BinaryArray>,
}

impl<'c> AttrList<'c> {
    fn of(name: &str, column: &'c ArrayRef) -> Result<AttrList<'c>> {
        let list = column.as_list_opt::<i32>().ok_or_else(|| type_error(name, column, "a list of attributes"))?;
        let attrs = list.values().as_struct_opt().ok_or_else(|| type_error(name, column, "a list of attributes"))?;
        let typed = |field: &str, ok: bool| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::Corrupt(format!("attribute field {field} of {name} has an unexpected type")))
            }
        };
        let int = attrs.column_by_name(col::INT).map(|c| c.as_primitive_opt::<Int64Type>());
        let double = attrs.column_by_name(col::DOUBLE).map(|c| c.as_primitive_opt::<Float64Type>());
        let bool = attrs.column_by_name(col::BOOL).map(|c| c.as_boolean_opt());
        let any = attrs.column_by_name(col::ANY).map(|c| c.as_binary_opt::<i32>());
        typed(col::INT, int.is_none_or(|c| c.is_some()))?;
        typed(col::DOUBLE, double.is_none_or(|c| c.is_some()))?;
        typed(col::BOOL, bool.is_none_or(|c| c.is_some()))?;
        typed(col::ANY, any.is_none_or(|c| c.is_some()))?;
        Ok(AttrList {
            offsets: list.value_offsets(),
            keys: StrCol::of(col::KEY, struct_field(attrs, col::KEY)?)?,
            str: attrs.column_by_name(col::STR).map(|c| StrCol::of(col::STR, c)).transpose()?,
            int: int.flatten(),
            double: double.flatten(),
            bool: bool.flatten(),
            any: any.flatten(),
        })
    }

    fn key_matcher(&self, key: &'c str) -> KeyMatch<'c> {
        match self.keys {
            StrCol::Plain(a) => {
                KeyMatch::Plain { offsets: a.value_offsets(), data: a.value_data(), key: key.as_bytes() }
            }
            // The key is compared once per distinct key, not once per attribute.
            StrCol::Dict(keys, values) => KeyMatch::Dict {
                keys,
                table: (0..values.len()).map(|k| values.is_valid(k) && values.value(k) == key).collect(),
            },
        }
    }

    /// The value of attribute entry `j`, if TraceQL can query it.
    fn value(&self, j: usize) -> Option<Val<'c>> {
        if let Some(s) = self.str.and_then(|c| c.get(j)) {
            return Some(Val::Str(s));
        }
        if let Some(c) = self.int.filter(|c| c.is_valid(j)) {
            return Some(Val::Int(c.value(j)));
        }
        if let Some(c) = self.double.filter(|c| c.is_valid(j)) {
            return Some(Val::Float(c.value(j)));
        }
        if let Some(c) = self.bool.filter(|c| c.is_valid(j)) {
            return Some(Val::Bool(c.value(j)));
        }
        let any = self.any.filter(|c| c.is_valid(j))?;
        ArrayVal::decode(any.value(j)).map(|a| Val::Arr(Rc::new(a)))
    }
}

/// The distinct keys of an attribute list column (span or resource attributes), sorted.
pub(crate) fn list_keys(name: &str, column: &ArrayRef) -> Result<Vec<String>> {
    let list = AttrList::of(name, column)?;
    let (first, last) = (list.offsets.first().copied().unwrap_or(0), list.offsets.last().copied().unwrap_or(0));
    let entries = first.max(0) as usize..last.max(first).max(0) as usize;
    let mut keys: Vec<&str> = entries.filter_map(|j| list.keys.get(j)).collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(keys.into_iter().map(str::to_owned).collect())
}

/// Finds the entries of one key in an attribute list's key column.
pub(crate) enum KeyMatch<'c> {
    Plain { offsets: &'c [i32], data: &'c [u8], key: &'c [u8] },
    Dict { keys: &'c Int32Array, table: Vec<bool> },
}

impl KeyMatch<'_> {
    /// The entries in `entries` with the key, ascending: one pass over the key column.
    fn matches(&self, entries: Range<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        match self {
            KeyMatch::Plain { offsets, data, key } => {
                let Some(offsets) = offsets.get(entries.start..entries.end + 1) else { return out };
                for (k, w) in offsets.windows(2).enumerate() {
                    let (s, e) = (w[0] as usize, w[1] as usize);
                    // Lengths or first bytes differ for most keys: compare the rest only then.
                    if e.wrapping_sub(s) == key.len() && data.get(s) == key.first() && data.get(s..e) == Some(*key) {
                        out.push(entries.start + k);
                    }
                }
            }
            KeyMatch::Dict { keys, table } => {
                let Some(indices) = keys.values().get(entries.clone()) else { return out };
                for (k, &i) in indices.iter().enumerate() {
                    if table.get(i as usize) == Some(&true) && keys.is_valid(entries.start + k) {
                        out.push(entries.start + k);
                    }
                }
            }
        }
        out
    }
}

/// One key of span, resource or scope attributes: the dedicated column (if the block has one)
/// and the entries of the generic list.
pub(crate) struct Attrs<'c> {
    key: KeyMatch<'c>,
    dedicated: Option<Col<'c>>,
    list: AttrList<'c>,
}

impl<'c> Attrs<'c> {
    /// Calls `f(row, entry)` for every entry with the key in `rows`, rows ascending.
    fn each_entry(&self, rows: Range<usize>, mut f: impl FnMut(usize, usize)) {
        let offsets = self.list.offsets;
        let end = rows.end.min(offsets.len().saturating_sub(1));
        let (Some(&first), Some(&last)) = (offsets.get(rows.start), offsets.get(end)) else { return };
        if first < 0 || first > last {
            return;
        }
        let mut row = rows.start;
        for j in self.key.matches(first as usize..last as usize) {
            while row < end && offsets[row + 1] as usize <= j {
                row += 1;
            }
            if row == end {
                break;
            }
            f(row, j);
        }
    }

    fn test(&self, m: &Matcher, n: usize) -> Vec<Tri> {
        let mut out = match &self.dedicated {
            Some(c) => c.test(m, n),
            None => vec![Tri::N; n],
        };
        let mut strings = self.list.str.map(|c| StrTest::new(c, m));
        self.each_entry(0..n, |row, j| {
            // Most values are strings: compare them without building a value.
            if let Some(r) = strings.as_mut().and_then(|t| t.at(m, j)) {
                out[row] = fold(m.negated, out[row], r);
            } else if let Some(v) = self.list.value(j) {
                out[row] = m.fold(out[row], &v);
            }
        });
        out
    }

    fn present(&self, n: usize) -> Vec<bool> {
        let mut out = match &self.dedicated {
            Some(c) => (0..n).map(|row| !c.value(row).is_nil()).collect(),
            None => vec![false; n],
        };
        self.each_entry(0..n, |row, j| out[row] = out[row] || self.list.value(j).is_some());
        out
    }

    /// The value of each row in `rows`: the first of the best rank (see the module docs).
    fn values(&self, rows: Range<usize>) -> Vec<Val<'c>> {
        let start = rows.start;
        let mut out: Vec<Val> = match &self.dedicated {
            Some(c) => rows.clone().map(|row| c.value(row)).collect(),
            None => vec![Val::Nil; rows.len()],
        };
        self.each_entry(rows, |row, j| {
            if let Some(v) = self.list.value(j) {
                let best = &mut out[row - start];
                if best.is_nil() || v.rank() < best.rank() {
                    *best = v;
                }
            }
        });
        out
    }
}

/// How to read one field from a batch.
pub(crate) enum Source<'c> {
    Column(Col<'c>),
    Attrs(Attrs<'c>),
    /// Events or links: `inner` has a row per event (link); a span satisfies a condition when
    /// at least one of its events does.
    Each {
        offsets: &'c [i32],
        len: usize,
        inner: Box<Source<'c>>,
    },
    /// Unscoped attributes: the first scope (span, resource, event, link, scope) with a value.
    First(Vec<Source<'c>>),
}

impl<'c> Source<'c> {
    /// `field OP literal` for `n` rows.
    pub(crate) fn test(&self, m: &Matcher, n: usize) -> Vec<Tri> {
        match self {
            Source::Column(c) => c.test(m, n),
            Source::Attrs(a) => a.test(m, n),
            Source::Each { offsets, len, inner } => {
                let items = inner.test(m, *len);
                (0..n).map(|row| any_of(&items, offsets, row)).collect()
            }
            Source::First(scopes) => {
                let mut out = vec![Tri::N; n];
                for scope in scopes {
                    for (o, t) in out.iter_mut().zip(scope.test(m, n)) {
                        if *o == Tri::N {
                            *o = t;
                        }
                    }
                }
                out
            }
        }
    }

    /// Whether each of `n` rows has a value.
    fn present(&self, n: usize) -> Vec<bool> {
        match self {
            Source::Each { offsets, len, inner } => {
                let items = inner.present(*len);
                (0..n)
                    .map(|row| range(offsets, row).is_some_and(|r| items.get(r).is_some_and(|i| i.contains(&true))))
                    .collect()
            }
            Source::First(scopes) => {
                let mut out = vec![false; n];
                for scope in scopes {
                    out.iter_mut().zip(scope.present(n)).for_each(|(o, p)| *o |= p);
                }
                out
            }
            Source::Attrs(a) => a.present(n),
            Source::Column(c) => (0..n).map(|row| !c.value(row).is_nil()).collect(),
        }
    }

    /// `field = nil` (`nil`) or `field != nil`. For events and links: some event lacks
    /// (has) the attribute, so a span without events matches neither, as in Tempo.
    pub(crate) fn nil_test(&self, nil: bool, n: usize) -> Vec<Tri> {
        match self {
            Source::Each { offsets, len, inner } => {
                let items = inner.present(*len);
                (0..n)
                    .map(|row| {
                        let found = range(offsets, row).and_then(|r| items.get(r)).is_some_and(|i| i.contains(&!nil));
                        Tri::from_bool(found)
                    })
                    .collect()
            }
            _ => self.present(n).into_iter().map(|p| Tri::from_bool(p != nil)).collect(),
        }
    }

    /// The value of each of `n` rows.
    pub(crate) fn values(&self, n: usize) -> Vec<Val<'c>> {
        match self {
            Source::Column(c) => (0..n).map(|row| c.value(row)).collect(),
            Source::Attrs(a) => a.values(0..n),
            Source::Each { offsets, len, inner } => {
                let items = inner.values(*len);
                (0..n)
                    .map(|row| {
                        let items = range(offsets, row).and_then(|r| items.get(r)).unwrap_or(&[]);
                        items.iter().find(|v| !v.is_nil()).cloned().unwrap_or(Val::Nil)
                    })
                    .collect()
            }
            Source::First(scopes) => {
                let mut out = vec![Val::Nil; n];
                for scope in scopes {
                    for (o, v) in out.iter_mut().zip(scope.values(n)) {
                        if o.is_nil() {
                            *o = v;
                        }
                    }
                }
                out
            }
        }
    }

    /// The value of one row (the first event/link with one, for events and links).
    pub(crate) fn value(&self, row: usize) -> Val<'c> {
        match self {
            Source::Column(c) => c.value(row),
            Source::Attrs(a) => a.values(row..row + 1).pop().unwrap_or(Val::Nil),
            Source::Each { offsets, inner, .. } => range(offsets, row)
                .into_iter()
                .flatten()
                .map(|i| inner.value(i))
                .find(|v| !v.is_nil())
                .unwrap_or(Val::Nil),
            Source::First(scopes) => scopes.iter().map(|s| s.value(row)).find(|v| !v.is_nil()).unwrap_or(Val::Nil),
        }
    }
}

/// The items of list row `row`, if its offsets are sane.
fn range(offsets: &[i32], row: usize) -> Option<Range<usize>> {
    let (s, e) = (*offsets.get(row)?, *offsets.get(row + 1)?);
    (0 <= s && s <= e).then_some(s as usize..e as usize)
}

/// True if any item is, else false if any item is, else nil.
fn any_of(items: &[Tri], offsets: &[i32], row: usize) -> Tri {
    let items = range(offsets, row).and_then(|r| items.get(r)).unwrap_or(&[]);
    if items.contains(&Tri::T) {
        Tri::T
    } else if items.contains(&Tri::F) {
        Tri::F
    } else {
        Tri::N
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::DictionaryArray;

    #[test]
    fn kleene_logic() {
        use Tri::*;
        let all = [F, T, N];
        let and = [[F, F, F], [F, T, N], [F, N, N]];
        let or = [[F, T, N], [T, T, T], [N, T, N]];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(a.and(*b), and[i][j], "{a:?} && {b:?}");
                assert_eq!(a.or(*b), or[i][j], "{a:?} || {b:?}");
            }
        }
        assert_eq!([F, T, N].map(Tri::not), [T, F, N]);
    }

    #[test]
    fn several_values_any_for_positive_none_for_negated() {
        let folded = |negated, results: &[Option<bool>]| results.iter().fold(Tri::N, |s, r| fold(negated, s, *r));
        // = : one equal value is enough; a value of another type is just not equal.
        assert_eq!(folded(false, &[Some(false), Some(true)]), Tri::T);
        assert_eq!(folded(false, &[None, Some(false)]), Tri::F);
        // != : every value must be comparable and different.
        assert_eq!(folded(true, &[Some(false), Some(false)]), Tri::T);
        assert_eq!(folded(true, &[Some(false), Some(true)]), Tri::F);
        assert_eq!(folded(true, &[None]), Tri::F);
        assert_eq!(folded(true, &[]), Tri::N);
    }

    #[test]
    fn scalar_comparisons() {
        let cmp = |op, a: Val, b: Val| cmp_scalar(op, &a, &b);
        assert_eq!(cmp(Op::Eq, Val::Int(3), Val::Float(3.0)), Some(true));
        assert_eq!(cmp(Op::Lt, Val::Float(0.25), Val::Int(1)), Some(true));
        assert_eq!(cmp(Op::Eq, Val::Duration(20_000_000), Val::Int(20_000_000)), Some(true));
        assert_eq!(cmp(Op::Gt, Val::Float(f64::NAN), Val::Int(0)), Some(false));
        assert_eq!(cmp(Op::Eq, Val::Str("200"), Val::Int(200)), None);
        assert_eq!(cmp(Op::Lt, Val::Str("POST"), Val::Str("p")), Some(true));
        assert_eq!(cmp(Op::Lt, Val::Bool(false), Val::Bool(true)), None);
        assert_eq!(cmp(Op::Eq, Val::Status(Status::Ok), Val::Status(Status::Ok)), Some(true));
        assert_eq!(cmp(Op::Eq, Val::Kind(Kind::Server), Val::Str("server")), None);
        assert_eq!(cmp(Op::Eq, Val::Id(&[0, 0x0a, 0xbc]), Val::Str("abc")), Some(true));
        assert_eq!(cmp(Op::Eq, Val::Id(&[0x0a, 0xbc]), Val::Str("00000abc")), Some(true));
        assert_eq!(cmp(Op::Eq, Val::Id(&[0x0a, 0xbc]), Val::Str("not hex")), Some(false));
    }

    #[test]
    fn arithmetic_never_panics() {
        let a = |op, x: Val, y: Val| format!("{:?}", arith(op, &x, &y));
        assert_eq!(a(BinOp::Div, Val::Int(7), Val::Int(2)), "Int(3)");
        assert_eq!(a(BinOp::Mod, Val::Int(-7), Val::Int(2)), "Int(-1)");
        assert_eq!(a(BinOp::Pow, Val::Int(2), Val::Int(10)), "Int(1024)");
        assert_eq!(a(BinOp::Pow, Val::Int(2), Val::Int(-1)), "Int(0)");
        assert_eq!(a(BinOp::Div, Val::Int(1), Val::Int(0)), "Nil");
        assert_eq!(a(BinOp::Mod, Val::Float(1.0), Val::Int(0)), "Nil");
        assert_eq!(a(BinOp::Div, Val::Int(i64::MIN), Val::Int(-1)), format!("Int({})", i64::MIN));
        assert_eq!(a(BinOp::Add, Val::Int(i64::MAX), Val::Int(1)), format!("Int({})", i64::MIN));
        assert_eq!(
            a(BinOp::Pow, Val::Int(3), Val::Int(i64::MAX)),
            a(BinOp::Pow, Val::Int(3), Val::Int(u32::MAX as i64))
        );
        assert_eq!(a(BinOp::Mul, Val::Duration(10), Val::Int(2)), "Float(20.0)");
        assert_eq!(a(BinOp::Add, Val::Str("a"), Val::Int(1)), "Nil");
        assert_eq!(format!("{:?}", negate(&Val::Int(i64::MIN))), format!("Int({})", i64::MIN));
    }

    #[test]
    fn only_homogeneous_scalar_arrays_decode() {
        use any_value::Value as V;
        let encode = |values: Vec<V>| {
            let values = values.into_iter().map(|v| AnyValue { value: Some(v) }).collect();
            AnyValue { value: Some(V::ArrayValue(spoor_model::otlp::ArrayValue { values })) }.encode_to_vec()
        };
        let a = ArrayVal::decode(&encode(vec![V::IntValue(1), V::IntValue(2)])).unwrap();
        assert_eq!(a.len(), 2);
        assert!(matches!(a.get(1), Val::Int(2)));
        assert!(ArrayVal::decode(&encode(vec![V::IntValue(1), V::StringValue("a".into())])).is_none());
        assert!(ArrayVal::decode(&encode(vec![])).is_none());
        assert!(ArrayVal::decode(&encode(vec![V::BytesValue(vec![1])])).is_none());
        assert!(ArrayVal::decode(&AnyValue { value: Some(V::IntValue(1)) }.encode_to_vec()).is_none());
        for garbage in [&[0xffu8, 0xff][..], &[0x2a, 0x7f], &[0x2a, 0x02, 0x0a, 0x09]] {
            assert!(ArrayVal::decode(garbage).is_none());
        }
    }

    #[test]
    fn dictionary_and_plain_strings_agree() {
        let values = [Some("GET /a"), None, Some("POST /b"), Some("GET /c"), Some("")];
        let plain = StringArray::from(values.to_vec());
        let dict: DictionaryArray<Int32Type> = values.iter().copied().collect();
        let dict_values = dict.values().as_string::<i32>();
        for (op, negated, lit) in [
            (Op::Eq, false, "GET /a"),
            (Op::Eq, true, "GET /a"),
            (Op::Regex, false, "GET.*"),
            (Op::Regex, true, ""),
            (Op::Lt, false, "P"),
        ] {
            let m = Matcher::new(op, negated, Static::Str(lit.into())).unwrap();
            let a = Col::Str(StrCol::Plain(&plain)).test(&m, values.len());
            let b = Col::Str(StrCol::Dict(dict.keys(), dict_values)).test(&m, values.len());
            assert_eq!(a, b, "{op:?} {negated} {lit:?}");
            assert_eq!(a[1], Tri::N);
        }
    }

    #[test]
    fn recent_regex_results_are_the_regex_results() {
        let re = Regex::new("^(?s:a.*)$").unwrap();
        let words: Vec<String> = (0..500).map(|i| format!("{}{}", ["a", "b", "ab", ""][i % 4], i % 37)).collect();
        let mut recent = Recent::default();
        for w in words.iter().chain(words.iter().rev()) {
            assert_eq!(recent.is_match(&re, w), re.is_match(w), "{w}");
        }
    }

    #[test]
    fn dictionary_keys_out_of_range_are_nil() {
        let keys = Int32Array::from(vec![0, 5, -1]);
        let values = StringArray::from(vec!["a"]);
        let m = Matcher::new(Op::Eq, false, Static::Str("a".into())).unwrap();
        assert_eq!(Col::Str(StrCol::Dict(&keys, &values)).test(&m, 3), [Tri::T, Tri::N, Tri::N]);
        assert!(StrCol::Dict(&keys, &values).get(1).is_none());
    }
}
