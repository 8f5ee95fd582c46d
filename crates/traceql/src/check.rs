//! Static validation (§2.7): queries that parse but cannot run are refused before they reach the
//! engine, with Tempo's messages. Types are those a query implies; an attribute's type is only
//! known at run time, so it is compatible with everything.

use crate::ast::*;
use crate::error::Error;

pub(crate) fn check(query: &Query, text: &str) -> Result<(), Error> {
    let checker = Checker { text };
    match &query.root {
        Root::Spans(q) => checker.spanset_query(q),
        Root::Metrics(m) => checker.metrics(m, false),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Type {
    /// An attribute: typed only at run time.
    Unknown,
    Nil,
    Bool,
    Int,
    Float,
    Duration,
    Str,
    Status,
    Kind,
}

impl Type {
    fn of(value: &Static) -> Type {
        match value {
            Static::Nil => Type::Nil,
            Static::Bool(_) => Type::Bool,
            Static::Int(_) => Type::Int,
            Static::Float(_) => Type::Float,
            Static::Str(_) => Type::Str,
            Static::Duration(_) => Type::Duration,
            Static::Status(_) => Type::Status,
            Static::Kind(_) => Type::Kind,
        }
    }

    fn of_intrinsic(i: Intrinsic) -> Type {
        use Intrinsic::*;
        match i {
            Duration | TraceDuration | EventTimeSinceStart => Type::Duration,
            Status => Type::Status,
            Kind => Type::Kind,
            ChildCount | NestedSetLeft | NestedSetRight | NestedSetParent => Type::Int,
            Parent => Type::Unknown,
            Name
            | StatusMessage
            | SpanId
            | ParentId
            | TraceId
            | TraceRootName
            | TraceRootService
            | EventName
            | LinkTraceId
            | LinkSpanId
            | InstrumentationName
            | InstrumentationVersion => Type::Str,
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Duration)
    }

    /// Whether the two may meet in a binary operation: int, float and duration form one family.
    fn compatible(self, other: Type) -> bool {
        self == other
            || [self, other].iter().any(|t| matches!(t, Type::Unknown | Type::Nil))
            || (self.numeric() && other.numeric())
    }

    /// The operator table of §2.7.
    fn allows(self, other: Type, op: BinOp) -> bool {
        use BinOp::*;
        let equality = matches!(op, Eq | Ne);
        if self == Type::Nil || other == Type::Nil {
            return equality;
        }
        let known = if self == Type::Unknown { other } else { self };
        match known {
            Type::Unknown => true,
            Type::Bool => equality || op.is_logical(),
            Type::Int | Type::Float | Type::Duration => op.is_arithmetic() || matches!(op, Eq | Ne | Lt | Le | Gt | Ge),
            Type::Str => matches!(op, Eq | Ne | Lt | Le | Gt | Ge | Regex | NotRegex),
            Type::Nil | Type::Status | Type::Kind => equality,
        }
    }

    /// The type of arithmetic on the two: a duration wins, then a float.
    fn arithmetic(self, other: Type) -> Type {
        [Type::Duration, Type::Float, Type::Int]
            .into_iter()
            .find(|t| *t == self || *t == other)
            .unwrap_or(Type::Unknown)
    }
}

struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    fn fail(&self, span: Span, message: impl Into<String>) -> Error {
        Error::invalid(self.text, span, message)
    }

    fn spanset_query(&self, q: &SpansetQuery) -> Result<(), Error> {
        match q {
            SpansetQuery::Pipeline(p) => p.stages.iter().try_for_each(|s| self.stage(s)),
            SpansetQuery::Op { lhs, rhs, .. } => {
                self.spanset_query(lhs)?;
                self.spanset_query(rhs)
            }
        }
    }

    fn stage(&self, stage: &Stage) -> Result<(), Error> {
        match stage {
            Stage::Spanset(e) => self.spans(e),
            Stage::ScalarFilter { op, lhs, rhs, span } => {
                let (l, r) = (self.scalar(lhs)?, self.scalar(rhs)?);
                self.operands(l, r, BinOp::from(*op), *span, stage)?;
                if !matches!(lhs, ScalarExpr::Aggregate { .. }) {
                    return Err(self.fail(
                        lhs.span(),
                        format!("scalar filter lhs '{lhs}' not yet supported: only aggregate OP number can run"),
                    ));
                }
                if !matches!(rhs, ScalarExpr::Static { .. }) {
                    return Err(self.fail(
                        rhs.span(),
                        format!("scalar filter rhs '{rhs}' not yet supported: only aggregate OP number can run"),
                    ));
                }
                Ok(())
            }
            Stage::By { expr, span } => {
                self.field(expr)?;
                if !references_span(expr) {
                    return Err(
                        self.fail(*span, format!("grouping field expressions must reference the span: {stage}"))
                    );
                }
                Ok(())
            }
            Stage::Coalesce { .. } => Ok(()),
            Stage::Select { attrs, span } => attrs.iter().try_for_each(|a| self.attribute(a, *span).map(drop)),
        }
    }

    fn spans(&self, e: &SpansetExpr) -> Result<(), Error> {
        match e {
            SpansetExpr::Filter { expr, span } => match self.field(expr)? {
                Type::Bool | Type::Unknown => Ok(()),
                _ => Err(self.fail(*span, format!("span filter field expressions must resolve to a boolean: {e}"))),
            },
            SpansetExpr::Op { lhs, rhs, .. } => {
                self.spans(lhs)?;
                self.spans(rhs)
            }
        }
    }

    fn attribute(&self, attr: &Attribute, span: Span) -> Result<Type, Error> {
        match attr {
            Attribute::Intrinsic(Intrinsic::Parent) | Attribute::Attr { scope: Scope::Parent, .. } => {
                Err(self.fail(span, "parent not yet supported"))
            }
            Attribute::Intrinsic(i) => Ok(Type::of_intrinsic(*i)),
            Attribute::Attr { .. } => Ok(Type::Unknown),
        }
    }

    fn field(&self, e: &FieldExpr) -> Result<Type, Error> {
        match e {
            FieldExpr::Static { value, .. } => Ok(Type::of(value)),
            FieldExpr::Attr { attr, span } => self.attribute(attr, *span),
            FieldExpr::Unary { op, expr, span } => {
                let t = self.field(expr)?;
                let result = match op {
                    UnaryOp::Neg if t == Type::Unknown || t.numeric() => t,
                    UnaryOp::Not if matches!(t, Type::Unknown | Type::Bool) => Type::Bool,
                    _ => return Err(self.fail(*span, format!("illegal operation for the given type: {e}"))),
                };
                Ok(result)
            }
            FieldExpr::Binary { op, lhs, rhs, span } => {
                let (l, r) = (self.field(lhs)?, self.field(rhs)?);
                if matches!(op, BinOp::Eq | BinOp::Ne) {
                    self.nil_comparison(lhs, rhs, e)?;
                }
                self.operands(l, r, *op, *span, e)?;
                if matches!(op, BinOp::Regex | BinOp::NotRegex) {
                    self.regex(rhs, e)?;
                }
                Ok(if op.is_arithmetic() { l.arithmetic(r) } else { Type::Bool })
            }
        }
    }

    /// Type compatibility, then the operator table; `shown` is what the message quotes.
    fn operands(&self, l: Type, r: Type, op: BinOp, span: Span, shown: &dyn std::fmt::Display) -> Result<(), Error> {
        if !l.compatible(r) {
            return Err(self.fail(span, format!("binary operations must operate on the same type: {shown}")));
        }
        if !l.allows(r, op) {
            return Err(self.fail(span, format!("illegal operation for the given types: {shown}")));
        }
        Ok(())
    }

    /// Intrinsics and `resource.service.name` are never missing, so `= nil` is a mistake. The
    /// span name is the exception Tempo makes: `{ name != nil }` is valid (and every span has one).
    fn nil_comparison(&self, lhs: &FieldExpr, rhs: &FieldExpr, e: &FieldExpr) -> Result<(), Error> {
        let (attr, span) = match (lhs, rhs) {
            (FieldExpr::Attr { attr, span }, FieldExpr::Static { value: Static::Nil, .. })
            | (FieldExpr::Static { value: Static::Nil, .. }, FieldExpr::Attr { attr, span }) => (attr, *span),
            _ => return Ok(()),
        };
        let always_present = match attr {
            Attribute::Intrinsic(Intrinsic::Name) => false,
            Attribute::Intrinsic(_) => true,
            Attribute::Attr { scope, name } => *scope == Scope::Resource && name == "service.name",
        };
        if always_present {
            return Err(self.fail(span, format!("{e} is not valid: {attr} is always present")));
        }
        Ok(())
    }

    /// Matching is anchored like Tempo's (`^(?s:pattern)$`), so the pattern must compile so.
    fn regex(&self, rhs: &FieldExpr, e: &FieldExpr) -> Result<(), Error> {
        let FieldExpr::Static { value: Static::Str(pattern), span } = rhs else {
            return Err(self.fail(rhs.span(), format!("the right-hand side of a regex match must be a string: {e}")));
        };
        match regex::Regex::new(&format!("^(?s:{pattern})$")) {
            Ok(_) => Ok(()),
            Err(err) => {
                // The crate's syntax errors draw the pattern over several lines; the last says why.
                let reason =
                    err.to_string().lines().last().unwrap_or_default().trim_start_matches("error: ").to_string();
                Err(self.fail(*span, format!("invalid regex {rhs}: {reason}")))
            }
        }
    }

    fn scalar(&self, e: &ScalarExpr) -> Result<Type, Error> {
        match e {
            ScalarExpr::Aggregate { func, arg, span } => {
                let Some(arg) = arg.as_ref().filter(|_| *func != AggFunc::Count) else { return Ok(Type::Int) };
                let t = self.field(arg)?;
                if t != Type::Unknown && !t.numeric() {
                    return Err(
                        self.fail(*span, format!("aggregate field expressions must resolve to a number type: {e}"))
                    );
                }
                if !references_span(arg) {
                    return Err(self.fail(*span, format!("aggregate field expressions must reference the span: {e}")));
                }
                Ok(match func {
                    AggFunc::Avg if t != Type::Duration => Type::Float,
                    _ => t,
                })
            }
            ScalarExpr::Static { value, .. } => Ok(Type::of(value)),
            ScalarExpr::Binary { op, lhs, rhs, span } => {
                let (l, r) = (self.scalar(lhs)?, self.scalar(rhs)?);
                self.operands(l, r, *op, *span, e)?;
                Ok(l.arithmetic(r))
            }
        }
    }

    fn metrics(&self, m: &MetricsExpr, in_arithmetic: bool) -> Result<(), Error> {
        let q = match m {
            MetricsExpr::Query(q) => q,
            MetricsExpr::Binary { lhs, rhs, .. } => {
                self.metrics(lhs, true)?;
                return self.metrics(rhs, true);
            }
            MetricsExpr::Scalar { .. } => return Ok(()),
            MetricsExpr::Staged { expr, second, span } => {
                self.metrics(expr, in_arithmetic)?;
                self.durations(second, "metrics arithmetic", *span)?;
                return self.limits(second, *span);
            }
        };
        self.spanset_query(&q.spans)?;
        match &q.func {
            MetricsFn::Rate | MetricsFn::CountOverTime => {}
            MetricsFn::MinOverTime(a)
            | MetricsFn::MaxOverTime(a)
            | MetricsFn::SumOverTime(a)
            | MetricsFn::AvgOverTime(a)
            | MetricsFn::HistogramOverTime(a) => self.attribute(a, q.span).map(drop)?,
            MetricsFn::QuantileOverTime(a, quantiles) => {
                self.attribute(a, q.span)?;
                if let Some(bad) = quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
                    return Err(self.fail(q.span, format!("quantile must be between 0 and 1: {}", Static::Float(*bad))));
                }
            }
            MetricsFn::Compare { filter, top, .. } => {
                self.spans(filter)?;
                if top.is_some_and(|top| top <= 0) {
                    return Err(self.fail(q.span, "compare() limit must be greater than 0"));
                }
                if in_arithmetic {
                    return Err(self.fail(q.span, "compare() cannot be used in metrics arithmetic"));
                }
                if !q.second.is_empty() {
                    return Err(self.fail(q.span, "compare() cannot be followed by topk, bottomk or a filter"));
                }
            }
        }
        for a in &q.by {
            self.attribute(a, q.span)?;
        }
        let plain = match &q.func {
            MetricsFn::Rate => Some("rate()"),
            MetricsFn::CountOverTime => Some("count_over_time()"),
            MetricsFn::HistogramOverTime(_) => Some("histogram_over_time()"),
            _ => None,
        };
        if let Some(plain) = plain {
            self.durations(&q.second, plain, q.span)?;
        }
        self.limits(&q.second, q.span)
    }

    /// A duration compares only with values in seconds (`quantile_over_time(duration, .9) >
    /// 200ms`), never with a rate, a count or arithmetic on series: they are plain numbers.
    fn durations(&self, second: &[SecondStage], what: &str, span: Span) -> Result<(), Error> {
        match second.iter().find(|s| matches!(s, SecondStage::Filter(_, Static::Duration(_)))) {
            Some(filter) => Err(self.fail(span, format!("a duration cannot be compared with {what}: {filter}"))),
            None => Ok(()),
        }
    }

    /// `topk(n)` and `bottomk(n)` need `n > 0`.
    fn limits(&self, second: &[SecondStage], span: Span) -> Result<(), Error> {
        for stage in second {
            let (name, n) = match stage {
                SecondStage::TopK(n) => ("topk", *n),
                SecondStage::BottomK(n) => ("bottomk", *n),
                SecondStage::Filter(..) => continue,
            };
            if n <= 0 {
                return Err(self.fail(span, format!("limit must be greater than 0: {name}({n})")));
            }
        }
        Ok(())
    }
}

/// Whether the expression depends on the span at all (else aggregating or grouping by it is
/// pointless, and Tempo refuses it).
fn references_span(e: &FieldExpr) -> bool {
    match e {
        FieldExpr::Static { .. } => false,
        FieldExpr::Attr { .. } => true,
        FieldExpr::Unary { expr, .. } => references_span(expr),
        FieldExpr::Binary { lhs, rhs, .. } => references_span(lhs) || references_span(rhs),
    }
}
