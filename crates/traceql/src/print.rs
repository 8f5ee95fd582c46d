//! Syntax tree → TraceQL text that parses back to an equal tree. Parentheses appear only where
//! precedence (§2.3) needs them, so the output is also the canonical, compact form the engine
//! uses for labels such as `by(resource.service.name)` and `avg(duration)`.

use std::fmt::{self, Display, Formatter, Write};

use crate::ast::*;

/// Binding strength while printing, matching the parser's: operands that bind less tightly
/// than their position requires get parentheses.
const PIPE: u8 = 1;
const ADDITIVE: u8 = 4;
const NOT: u8 = 5;
const NEGATION: u8 = 8;
const ATOM: u8 = 9;

fn binary_precedence(op: BinOp) -> u8 {
    match op {
        BinOp::And | BinOp::Or => 2,
        BinOp::Add | BinOp::Sub => ADDITIVE,
        BinOp::Mul | BinOp::Div | BinOp::Mod => 6,
        BinOp::Pow => 7,
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Regex | BinOp::NotRegex => 3,
    }
}

fn spanset_precedence(op: SpansetOp) -> u8 {
    match op {
        SpansetOp::And | SpansetOp::Or => 2,
        _ => 3,
    }
}

/// The minimum precedence of the left and right operands of a binary operator.
fn operand_precedence(prec: u8, right_associative: bool) -> (u8, u8) {
    if right_associative { (prec + 1, prec) } else { (prec, prec + 1) }
}

/// Writes `inner` in parentheses if it binds less tightly (`prec`) than required (`min`).
fn parenthesise(
    f: &mut Formatter<'_>,
    prec: u8,
    min: u8,
    inner: impl FnOnce(&mut Formatter<'_>) -> fmt::Result,
) -> fmt::Result {
    if prec < min {
        f.write_char('(')?;
        inner(f)?;
        f.write_char(')')
    } else {
        inner(f)
    }
}

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)?;
        if !self.hints.is_empty() {
            f.write_str(" with(")?;
            write_list(f, &self.hints)?;
            f.write_char(')')?;
        }
        Ok(())
    }
}

impl Display for Hint {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

impl Display for Root {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Root::Spans(q) => write!(f, "{q}"),
            Root::Metrics(m) => write!(f, "{m}"),
        }
    }
}

impl Display for SpansetQuery {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_query(f, self, 0)
    }
}

fn write_query(f: &mut Formatter<'_>, q: &SpansetQuery, min: u8) -> fmt::Result {
    match q {
        // Pipelines combined by spanset operators must be parenthesised (§2.9).
        SpansetQuery::Pipeline(p) => parenthesise(f, PIPE, min, |f| write!(f, "{p}")),
        SpansetQuery::Op { op, lhs, rhs, .. } => {
            let prec = spanset_precedence(*op);
            let (l, r) = operand_precedence(prec, false);
            parenthesise(f, prec, min, |f| {
                write_query(f, lhs, l)?;
                write!(f, " {} ", op.as_str())?;
                write_query(f, rhs, r)
            })
        }
    }
}

impl Display for Pipeline {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{stage}")?;
        }
        Ok(())
    }
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Spanset(e) => write!(f, "{e}"),
            Stage::ScalarFilter { op, lhs, rhs, .. } => {
                write_scalar(f, lhs, ADDITIVE)?;
                write!(f, " {} ", op.as_str())?;
                write_scalar(f, rhs, ADDITIVE)
            }
            Stage::By { expr, .. } => write!(f, "by({expr})"),
            Stage::Coalesce { .. } => f.write_str("coalesce()"),
            Stage::Select { attrs, .. } => {
                f.write_str("select(")?;
                write_list(f, attrs)?;
                f.write_char(')')
            }
        }
    }
}

fn write_list<T: Display>(f: &mut Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl Display for SpansetExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_spans(f, self, 0)
    }
}

fn write_spans(f: &mut Formatter<'_>, e: &SpansetExpr, min: u8) -> fmt::Result {
    match e {
        SpansetExpr::Filter { expr: FieldExpr::Static { value: Static::Bool(true), .. }, .. } => f.write_str("{}"),
        SpansetExpr::Filter { expr, .. } => write!(f, "{{ {expr} }}"),
        SpansetExpr::Op { op, lhs, rhs, .. } => {
            let prec = spanset_precedence(*op);
            let (l, r) = operand_precedence(prec, false);
            parenthesise(f, prec, min, |f| {
                write_spans(f, lhs, l)?;
                write!(f, " {} ", op.as_str())?;
                write_spans(f, rhs, r)
            })
        }
    }
}

impl Display for ScalarExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_scalar(f, self, 0)
    }
}

fn write_scalar(f: &mut Formatter<'_>, e: &ScalarExpr, min: u8) -> fmt::Result {
    match e {
        ScalarExpr::Aggregate { func, arg, .. } => match arg {
            Some(arg) => write!(f, "{}({arg})", func.as_str()),
            None => write!(f, "{}()", func.as_str()),
        },
        ScalarExpr::Static { value, .. } => parenthesise(f, static_precedence(value), min, |f| write!(f, "{value}")),
        ScalarExpr::Binary { op, lhs, rhs, .. } => {
            let prec = binary_precedence(*op);
            let (l, r) = operand_precedence(prec, *op == BinOp::Pow);
            parenthesise(f, prec, min, |f| {
                write_scalar(f, lhs, l)?;
                write!(f, " {} ", op.as_str())?;
                write_scalar(f, rhs, r)
            })
        }
    }
}

impl Display for FieldExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_field(f, self, 0)
    }
}

fn write_field(f: &mut Formatter<'_>, e: &FieldExpr, min: u8) -> fmt::Result {
    match e {
        FieldExpr::Static { value, .. } => parenthesise(f, static_precedence(value), min, |f| write!(f, "{value}")),
        FieldExpr::Attr { attr, .. } => write!(f, "{attr}"),
        // `!` takes everything that binds at least as tightly as `*` (§2.3), and prefix operators.
        FieldExpr::Unary { op: UnaryOp::Not, expr, .. } => parenthesise(f, NOT, min, |f| {
            f.write_char('!')?;
            write_field(f, expr, NOT)
        }),
        FieldExpr::Unary { op: UnaryOp::Neg, expr, .. } => parenthesise(f, NEGATION, min, |f| {
            f.write_char('-')?;
            write_field(f, expr, NEGATION)
        }),
        FieldExpr::Binary { op, lhs, rhs, .. } => {
            let prec = binary_precedence(*op);
            let (l, r) = operand_precedence(prec, *op == BinOp::Pow);
            parenthesise(f, prec, min, |f| {
                write_field(f, lhs, l)?;
                write!(f, " {} ", op.as_str())?;
                write_field(f, rhs, r)
            })
        }
    }
}

/// A negative number prints with a leading `-`, which re-parses as unary minus (folded back):
/// it binds like one.
fn static_precedence(value: &Static) -> u8 {
    match *value {
        Static::Int(i) if i < 0 && i != i64::MIN => NEGATION,
        Static::Duration(d) if d < 0 => NEGATION,
        Static::Float(x) if x.is_sign_negative() => NEGATION,
        _ => ATOM,
    }
}

impl Display for Static {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Static::Nil => f.write_str("nil"),
            Static::Bool(b) => write!(f, "{b}"),
            // No literal reaches it: 9223372036854775808 does not fit before the minus applies.
            Static::Int(i64::MIN) => f.write_str("minInt"),
            Static::Int(i) => write!(f, "{i}"),
            // Debug keeps a `.0` or an exponent, so the text lexes as a float again, and it is the
            // shortest text that reads back as the same value.
            Static::Float(x) => write!(f, "{x:?}"),
            Static::Str(s) => write_string(f, s),
            Static::Duration(ns) => write_duration(f, *ns),
            Static::Status(s) => f.write_str(s.as_str()),
            Static::Kind(k) => f.write_str(k.as_str()),
        }
    }
}

/// A Go double-quoted string literal.
fn write_string(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// In the largest unit that keeps it exact: `1500ms`, `2h`, `17ns`.
fn write_duration(f: &mut Formatter<'_>, ns: i64) -> fmt::Result {
    const UNITS: [(u64, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if ns < 0 {
        f.write_char('-')?;
    }
    let n = ns.unsigned_abs();
    match UNITS.iter().find(|(size, _)| n.is_multiple_of(*size)) {
        Some((size, unit)) if n > 0 => write!(f, "{}{unit}", n / size),
        _ => write!(f, "{n}ns"),
    }
}

impl Display for MetricsExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_metrics(f, self, 0)
    }
}

fn write_metrics(f: &mut Formatter<'_>, e: &MetricsExpr, min: u8) -> fmt::Result {
    match e {
        // Operands of metrics arithmetic must be parenthesised (§2.11).
        MetricsExpr::Query(q) => parenthesise(f, PIPE, min, |f| write!(f, "{q}")),
        MetricsExpr::Scalar { value, .. } => parenthesise(f, static_precedence(value), min, |f| write!(f, "{value}")),
        MetricsExpr::Binary { op, lhs, rhs, .. } => {
            let prec = binary_precedence(*op);
            let (l, r) = operand_precedence(prec, false);
            parenthesise(f, prec, min, |f| {
                write_metrics(f, lhs, l)?;
                write!(f, " {} ", op.as_str())?;
                write_metrics(f, rhs, r)
            })
        }
        MetricsExpr::Staged { expr, second, .. } => {
            // A filter binds like a comparison, `| topk` like a pipe; the operand binds tighter.
            let limited = second.iter().any(|s| matches!(s, SecondStage::TopK(_) | SecondStage::BottomK(_)));
            let prec = if limited { PIPE } else { binary_precedence(BinOp::Gt) };
            parenthesise(f, prec, min, |f| {
                write_metrics(f, expr, prec + 1)?;
                for stage in second {
                    write!(f, " {stage}")?;
                }
                Ok(())
            })
        }
    }
}

impl Display for MetricsQuery {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} | {}", self.spans, self.func)?;
        if !self.by.is_empty() {
            f.write_str(" by(")?;
            write_list(f, &self.by)?;
            f.write_char(')')?;
        }
        for stage in &self.second {
            write!(f, " {stage}")?;
        }
        Ok(())
    }
}

impl Display for MetricsFn {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            MetricsFn::Rate => f.write_str("rate()"),
            MetricsFn::CountOverTime => f.write_str("count_over_time()"),
            MetricsFn::MinOverTime(a) => write!(f, "min_over_time({a})"),
            MetricsFn::MaxOverTime(a) => write!(f, "max_over_time({a})"),
            MetricsFn::SumOverTime(a) => write!(f, "sum_over_time({a})"),
            MetricsFn::AvgOverTime(a) => write!(f, "avg_over_time({a})"),
            MetricsFn::HistogramOverTime(a) => write!(f, "histogram_over_time({a})"),
            MetricsFn::QuantileOverTime(a, qs) => {
                write!(f, "quantile_over_time({a}")?;
                for q in qs {
                    write!(f, ", {}", Static::Float(*q))?;
                }
                f.write_char(')')
            }
            MetricsFn::Compare { filter, top, start, end } => {
                write!(f, "compare({filter}")?;
                if let Some(top) = top {
                    write!(f, ", {}", Static::Int(*top))?;
                    if let (Some(start), Some(end)) = (start, end) {
                        write!(f, ", {}, {}", Static::Int(*start), Static::Int(*end))?;
                    }
                }
                f.write_char(')')
            }
        }
    }
}

impl Display for SecondStage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SecondStage::TopK(n) => write!(f, "| topk({})", Static::Int(*n)),
            SecondStage::BottomK(n) => write!(f, "| bottomk({})", Static::Int(*n)),
            SecondStage::Filter(op, value) => write!(f, "{} {value}", op.as_str()),
        }
    }
}
