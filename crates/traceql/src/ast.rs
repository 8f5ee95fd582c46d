//! The TraceQL syntax tree: what the parser produces, the checker validates, the printer turns
//! back into text and the engine (`spoor-query`) evaluates.
//!
//! Every node that a diagnostic can point at carries a [`Span`] (byte offsets into the query).
//! Spans never take part in equality, so `parse(print(ast)) == ast` holds although printing
//! moves things around.

use std::fmt;

/// Byte range `[start, end)` in the query text.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// Positions are diagnostics, not meaning.
impl PartialEq for Span {
    fn eq(&self, _: &Span) -> bool {
        true
    }
}

/// A whole query: a spanset query or a metrics query, then optional `with(...)` hints.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub root: Root,
    pub hints: Vec<Hint>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Root {
    /// A search: pipelines, possibly combined with spanset operators.
    Spans(SpansetQuery),
    /// `pipeline | metricsFn [by(...)] {second stage}` and arithmetic between such queries.
    Metrics(MetricsExpr),
}

/// `with(name = value, ...)`. Unknown names are kept (and ignored by the engine).
#[derive(Clone, Debug, PartialEq)]
pub struct Hint {
    pub name: String,
    pub value: Static,
    pub span: Span,
}

/// A pipeline, or pipelines combined by spanset operators: `({a} | count() > 1) && ({b})`.
#[derive(Clone, Debug, PartialEq)]
pub enum SpansetQuery {
    Pipeline(Pipeline),
    Op { op: SpansetOp, lhs: Box<SpansetQuery>, rhs: Box<SpansetQuery>, span: Span },
}

/// `stage | stage | ...`. A query that starts with a stage other than a spanset expression
/// (`count() > 1`, `by(.a)`, `select(.a)`) means `{ } | ...`; the parser inserts the `{ }`,
/// so `stages[0]` is always `Stage::Spanset`.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    Spanset(SpansetExpr),
    /// `aggregate OP scalar` (or the mirror image). Keeps a spanset whole when true.
    ScalarFilter {
        op: CmpOp,
        lhs: ScalarExpr,
        rhs: ScalarExpr,
        span: Span,
    },
    /// `by(expr)`: one spanset per distinct value of `expr`.
    By {
        expr: FieldExpr,
        span: Span,
    },
    /// `coalesce()`: all spansets of a trace back into one.
    Coalesce {
        span: Span,
    },
    /// `select(a, b, ...)`: report these attributes on every returned span; never filters.
    Select {
        attrs: Vec<Attribute>,
        span: Span,
    },
}

/// Spanset expressions: `{ filter }` combined with `&&`, `||` and structural operators.
#[derive(Clone, Debug, PartialEq)]
pub enum SpansetExpr {
    /// `{ expr }`; `{ }` is `{ true }`.
    Filter {
        expr: FieldExpr,
        span: Span,
    },
    Op {
        op: SpansetOp,
        lhs: Box<SpansetExpr>,
        rhs: Box<SpansetExpr>,
        span: Span,
    },
}

impl SpansetExpr {
    pub fn span(&self) -> Span {
        match self {
            SpansetExpr::Filter { span, .. } | SpansetExpr::Op { span, .. } => *span,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpansetOp {
    And,             // &&
    Or,              // ||
    Child,           // >
    Parent,          // <
    Descendant,      // >>
    Ancestor,        // <<
    Sibling,         // ~
    NotChild,        // !>
    NotParent,       // !<
    NotDescendant,   // !>>
    NotAncestor,     // !<<
    NotSibling,      // !~
    UnionChild,      // &>
    UnionParent,     // &<
    UnionDescendant, // &>>
    UnionAncestor,   // &<<
    UnionSibling,    // &~
}

impl SpansetOp {
    pub fn as_str(self) -> &'static str {
        use SpansetOp::*;
        match self {
            And => "&&",
            Or => "||",
            Child => ">",
            Parent => "<",
            Descendant => ">>",
            Ancestor => "<<",
            Sibling => "~",
            NotChild => "!>",
            NotParent => "!<",
            NotDescendant => "!>>",
            NotAncestor => "!<<",
            NotSibling => "!~",
            UnionChild => "&>",
            UnionParent => "&<",
            UnionDescendant => "&>>",
            UnionAncestor => "&<<",
            UnionSibling => "&~",
        }
    }
}

/// Aggregate arithmetic in a scalar filter: `count()`, `avg(duration)`, constants, `+ - * / % ^`.
#[derive(Clone, Debug, PartialEq)]
pub enum ScalarExpr {
    Aggregate { func: AggFunc, arg: Option<FieldExpr>, span: Span },
    Static { value: Static, span: Span },
    Binary { op: BinOp, lhs: Box<ScalarExpr>, rhs: Box<ScalarExpr>, span: Span },
}

impl ScalarExpr {
    pub fn span(&self) -> Span {
        match self {
            ScalarExpr::Aggregate { span, .. } | ScalarExpr::Static { span, .. } | ScalarExpr::Binary { span, .. } => {
                *span
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggFunc {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

impl AggFunc {
    pub fn as_str(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Avg => "avg",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Sum => "sum",
        }
    }
}

/// Expressions inside `{ }`, in `by()` and in aggregate arguments, evaluated per span.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldExpr {
    Static { value: Static, span: Span },
    Attr { attr: Attribute, span: Span },
    Unary { op: UnaryOp, expr: Box<FieldExpr>, span: Span },
    Binary { op: BinOp, lhs: Box<FieldExpr>, rhs: Box<FieldExpr>, span: Span },
}

impl FieldExpr {
    pub fn span(&self) -> Span {
        match self {
            FieldExpr::Static { span, .. }
            | FieldExpr::Attr { span, .. }
            | FieldExpr::Unary { span, .. }
            | FieldExpr::Binary { span, .. } => *span,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg, // -
    Not, // !
}

/// Binary operators of field and scalar expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Regex,
    NotRegex,
    And,
    Or,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        use BinOp::*;
        match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Mod => "%",
            Pow => "^",
            Eq => "=",
            Ne => "!=",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            Regex => "=~",
            NotRegex => "!~",
            And => "&&",
            Or => "||",
        }
    }
    pub fn is_comparison(self) -> bool {
        use BinOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge | Regex | NotRegex)
    }
    pub fn is_arithmetic(self) -> bool {
        use BinOp::*;
        matches!(self, Add | Sub | Mul | Div | Mod | Pow)
    }
    pub fn is_logical(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or)
    }
}

/// Comparison in scalar filters and metrics second stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

impl From<CmpOp> for BinOp {
    fn from(op: CmpOp) -> BinOp {
        match op {
            CmpOp::Eq => BinOp::Eq,
            CmpOp::Ne => BinOp::Ne,
            CmpOp::Lt => BinOp::Lt,
            CmpOp::Le => BinOp::Le,
            CmpOp::Gt => BinOp::Gt,
            CmpOp::Ge => BinOp::Ge,
        }
    }
}

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Static {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Nanoseconds.
    Duration(i64),
    Status(Status),
    Kind(Kind),
}

/// TraceQL's status enum (not OTLP's numbering; never exposed as a number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Error,
    Ok,
    Unset,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Error => "error",
            Status::Ok => "ok",
            Status::Unset => "unset",
        }
    }
    /// From an OTLP status code (0 unset, 1 ok, 2 error).
    pub fn from_otlp(code: i32) -> Status {
        match code {
            1 => Status::Ok,
            2 => Status::Error,
            _ => Status::Unset,
        }
    }
}

/// TraceQL's span kind enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unspecified => "unspecified",
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }
    }
    /// From an OTLP span kind (0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub fn from_otlp(kind: i32) -> Kind {
        match kind {
            1 => Kind::Internal,
            2 => Kind::Server,
            3 => Kind::Client,
            4 => Kind::Producer,
            5 => Kind::Consumer,
            _ => Kind::Unspecified,
        }
    }
}

/// An attribute reference or an intrinsic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    Intrinsic(Intrinsic),
    /// `scope.name`; `name` is the key exactly as stored (quoted segments already joined).
    Attr {
        scope: Scope,
        name: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `.name`: span, then resource, then event, link, instrumentation.
    Unscoped,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
    /// `parent.name`: parsed, rejected by the checker (`parent not yet supported`).
    Parent,
}

impl Scope {
    /// The prefix as written, without the dot (`""` for unscoped).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Unscoped => "",
            Scope::Span => "span",
            Scope::Resource => "resource",
            Scope::Event => "event",
            Scope::Link => "link",
            Scope::Instrumentation => "instrumentation",
            Scope::Parent => "parent",
        }
    }
}

/// Intrinsics. Legacy unscoped spellings (`duration`, `rootServiceName`, ...) parse to the same
/// variant as the scoped ones (`span:duration`, `trace:rootService`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    Duration,               // span:duration, duration
    Name,                   // span:name, name
    Status,                 // span:status, status
    StatusMessage,          // span:statusMessage, statusMessage
    Kind,                   // span:kind, kind
    SpanId,                 // span:id
    ParentId,               // span:parentID
    ChildCount,             // span:childCount
    TraceId,                // trace:id
    TraceDuration,          // trace:duration, traceDuration
    TraceRootName,          // trace:rootName, rootName
    TraceRootService,       // trace:rootService, rootServiceName
    EventName,              // event:name
    EventTimeSinceStart,    // event:timeSinceStart
    LinkTraceId,            // link:traceID
    LinkSpanId,             // link:spanID
    InstrumentationName,    // instrumentation:name
    InstrumentationVersion, // instrumentation:version
    NestedSetLeft,          // nestedSetLeft
    NestedSetRight,         // nestedSetRight
    NestedSetParent,        // nestedSetParent
    /// `parent`: parses, rejected by the checker.
    Parent,
}

impl Intrinsic {
    /// Every intrinsic with its canonical spelling: the legacy unscoped name where one exists
    /// (that is how Tempo prints them in results and metric labels), else the scoped one.
    pub const ALL: [(Intrinsic, &'static str); 22] = [
        (Intrinsic::Duration, "duration"),
        (Intrinsic::Name, "name"),
        (Intrinsic::Status, "status"),
        (Intrinsic::StatusMessage, "statusMessage"),
        (Intrinsic::Kind, "kind"),
        (Intrinsic::SpanId, "span:id"),
        (Intrinsic::ParentId, "span:parentID"),
        (Intrinsic::ChildCount, "span:childCount"),
        (Intrinsic::TraceId, "trace:id"),
        (Intrinsic::TraceDuration, "traceDuration"),
        (Intrinsic::TraceRootName, "rootName"),
        (Intrinsic::TraceRootService, "rootServiceName"),
        (Intrinsic::EventName, "event:name"),
        (Intrinsic::EventTimeSinceStart, "event:timeSinceStart"),
        (Intrinsic::LinkTraceId, "link:traceID"),
        (Intrinsic::LinkSpanId, "link:spanID"),
        (Intrinsic::InstrumentationName, "instrumentation:name"),
        (Intrinsic::InstrumentationVersion, "instrumentation:version"),
        (Intrinsic::NestedSetLeft, "nestedSetLeft"),
        (Intrinsic::NestedSetRight, "nestedSetRight"),
        (Intrinsic::NestedSetParent, "nestedSetParent"),
        (Intrinsic::Parent, "parent"),
    ];

    /// Canonical spelling (see [`Intrinsic::ALL`]).
    pub fn as_str(self) -> &'static str {
        Intrinsic::ALL.iter().find(|(i, _)| *i == self).map(|(_, s)| *s).unwrap_or("?")
    }
}

impl fmt::Display for Attribute {
    /// As TraceQL prints it: `resource.service.name`, `.foo`, `span."a b"`, `name`, `span:id`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Intrinsic(i) => f.write_str(i.as_str()),
            Attribute::Attr { scope, name } => {
                f.write_str(scope.as_str())?;
                f.write_str(".")?;
                // Unquoted, `.5` would lex as the number 0.5.
                let digit_first = *scope == Scope::Unscoped && name.starts_with(|c: char| c.is_ascii_digit());
                if needs_quotes(name) || digit_first {
                    f.write_str("\"")?;
                    for c in name.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")
                } else {
                    f.write_str(name)
                }
            }
        }
    }
}

/// Whether an attribute name must be quoted to survive the lexer: empty, or it contains a
/// character that ends an unquoted name (whitespace, `{}()=~!<>&|^,`) or a quote.
pub fn needs_quotes(name: &str) -> bool {
    name.is_empty() || name.chars().any(|c| c.is_whitespace() || "{}()=~!<>&|^,\"\\".contains(c))
}

/// Metrics queries (`spoor-query` evaluates them with the metrics issue; search evaluates only
/// their spanset part, as Tempo does).
#[derive(Clone, Debug, PartialEq)]
pub enum MetricsExpr {
    Query(Box<MetricsQuery>),
    Binary {
        op: BinOp,
        lhs: Box<MetricsExpr>,
        rhs: Box<MetricsExpr>,
        span: Span,
    },
    Scalar {
        value: Static,
        span: Span,
    },
    /// Second stages after metrics arithmetic: `(q1) + (q2) > 10`, `((q1) * 100) | topk(5)`. A
    /// single query keeps its own in [`MetricsQuery::second`].
    Staged {
        expr: Box<MetricsExpr>,
        second: Vec<SecondStage>,
        span: Span,
    },
}

impl MetricsExpr {
    pub fn span(&self) -> Span {
        match self {
            MetricsExpr::Query(q) => q.span,
            MetricsExpr::Binary { span, .. } | MetricsExpr::Scalar { span, .. } | MetricsExpr::Staged { span, .. } => {
                *span
            }
        }
    }

    /// This expression followed by `stage`, which ends at `end`.
    pub fn then(self, stage: SecondStage, end: Span) -> MetricsExpr {
        match self {
            MetricsExpr::Query(mut q) => {
                q.second.push(stage);
                q.span = q.span.to(end);
                MetricsExpr::Query(q)
            }
            MetricsExpr::Staged { expr, mut second, span } => {
                second.push(stage);
                MetricsExpr::Staged { expr, second, span: span.to(end) }
            }
            expr => {
                let span = expr.span().to(end);
                MetricsExpr::Staged { expr: Box::new(expr), second: vec![stage], span }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricsQuery {
    pub spans: SpansetQuery,
    pub func: MetricsFn,
    pub by: Vec<Attribute>,
    pub second: Vec<SecondStage>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetricsFn {
    Rate,
    CountOverTime,
    MinOverTime(Attribute),
    MaxOverTime(Attribute),
    SumOverTime(Attribute),
    AvgOverTime(Attribute),
    QuantileOverTime(Attribute, Vec<f64>),
    HistogramOverTime(Attribute),
    /// `compare({filter}[, topN[, start, end]])`.
    Compare {
        filter: SpansetExpr,
        top: Option<i64>,
        start: Option<i64>,
        end: Option<i64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum SecondStage {
    TopK(i64),
    BottomK(i64),
    Filter(CmpOp, Static),
}
