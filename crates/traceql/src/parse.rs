//! Tokens → syntax tree (§2.2, §2.3): recursive descent with precedence climbing, folding
//! constant sub-expressions on the way.
//!
//! Outside `{ }` the grammar cannot be decided token by token: `(` may open a spanset
//! expression, a pipeline, a scalar or a metrics query, and `>` means "child" between spansets
//! but "greater than" after an aggregate. So operands are parsed into [`Item`]s and each operator
//! decides what it means from what its operands turned out to be.

use crate::ast::*;
use crate::error::{Error, closest};
use crate::lex::{self, INTRINSICS, KEYWORDS, Tok, Token};

/// Bound on the height of the syntax tree, so that no input overflows the stack, neither here
/// nor in the recursive walks over the tree (checking, printing, evaluating, dropping).
const MAX_DEPTH: usize = 256;

/// Bound on nested parentheses outside `{ }`, where each level costs the parser far more stack
/// than a level of the tree does (about 10 KiB in a debug build); real queries nest a few.
const MAX_PARENS: usize = 32;

const METRICS_FUNCTIONS: [&str; 9] = [
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
];

pub(crate) fn parse(text: &str) -> Result<Query, Error> {
    let mut p = Parser { text, tokens: lex::lex(text), pos: 0, depth: 0, parens: 0 };
    let item = p.pipe()?;
    let hints = if p.at_keyword("with") { p.hints()? } else { Vec::new() };
    if !matches!(p.peek(), Tok::Eof) {
        return Err(p.unexpected(&item.expecting("end of query")));
    }
    let root = match item {
        Item::Metrics(m) => Root::Metrics(m),
        item => Root::Spans(p.spanset_query(item)?),
    };
    Ok(Query { root, hints })
}

/// What a sub-expression outside `{ }` turned out to be.
enum Item {
    /// A spanset expression. `pipeable` if it may also stand for a (one-stage) pipeline beside
    /// parenthesised pipelines: it was parenthesised, or combines parenthesised operands.
    Spans {
        expr: SpansetExpr,
        pipeable: bool,
    },
    /// Pipeline stages; the first may still be other than a spanset expression.
    Pipeline {
        stages: Vec<Stage>,
        parenthesised: bool,
        span: Span,
    },
    /// Parenthesised pipelines combined by spanset operators.
    Query {
        query: SpansetQuery,
        span: Span,
    },
    /// Aggregate arithmetic, or a constant.
    Scalar(ScalarExpr),
    Metrics(MetricsExpr),
}

impl Item {
    fn span(&self) -> Span {
        match self {
            Item::Spans { expr, .. } => expr.span(),
            Item::Pipeline { span, .. } | Item::Query { span, .. } => *span,
            Item::Scalar(s) => s.span(),
            Item::Metrics(m) => m.span(),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Item::Spans { .. } => "spanset",
            Item::Pipeline { .. } | Item::Query { .. } => "pipeline",
            Item::Scalar(s) if has_aggregate(s) => "aggregate",
            Item::Scalar(_) => "number",
            Item::Metrics(_) => "metrics query",
        }
    }

    /// Whether binary operator `op` can follow this item.
    fn takes(&self, op: &str) -> bool {
        match self {
            Item::Spans { .. } | Item::Query { .. } | Item::Pipeline { parenthesised: true, .. } => {
                spanset_op(op).is_some()
            }
            Item::Pipeline { parenthesised: false, .. } => false,
            Item::Scalar(_) | Item::Metrics(_) => arithmetic_op(op).is_some() || comparison_op(op).is_some(),
        }
    }

    /// What may follow this item, for "expecting ..." in syntax errors.
    fn expecting(&self, end: &str) -> String {
        match self {
            Item::Spans { .. } | Item::Query { .. } | Item::Pipeline { parenthesised: true, .. } => {
                format!("a spanset operator, '|' or {end}")
            }
            Item::Pipeline { parenthesised: false, .. } => format!("'|' or {end}"),
            Item::Scalar(_) => "an arithmetic or comparison operator".to_string(),
            Item::Metrics(_) => format!("'|', an arithmetic or comparison operator, or {end}"),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    /// Ends with `Eof` or `Error`, which are never consumed.
    tokens: Vec<Token>,
    pos: usize,
    /// Grows with every nesting and every operator in a chain; see [`MAX_DEPTH`].
    depth: usize,
    /// Open parentheses outside `{ }`, to say whether `)` or the end is expected.
    parens: usize,
}

impl Parser<'_> {
    // ---- token access ----

    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].tok
    }

    fn peek_next(&self) -> &Tok {
        &self.tokens[(self.pos + 1).min(self.tokens.len() - 1)].tok
    }

    fn span(&self) -> Span {
        self.tokens[self.pos].span
    }

    fn bump(&mut self) -> Span {
        let span = self.span();
        self.pos = (self.pos + 1).min(self.tokens.len() - 1);
        span
    }

    fn at_sym(&self, sym: &str) -> bool {
        matches!(self.peek(), Tok::Sym(s) if *s == sym)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Tok::Keyword(k) if *k == keyword)
    }

    fn eat(&mut self, sym: &str) -> bool {
        let at = self.at_sym(sym);
        if at {
            self.bump();
        }
        at
    }

    fn expect(&mut self, sym: &str, expecting: &str) -> Result<Span, Error> {
        if self.at_sym(sym) { Ok(self.bump()) } else { Err(self.unexpected(expecting)) }
    }

    fn error(&self, span: Span, message: impl Into<String>) -> Error {
        Error::parse(self.text, span, message)
    }

    /// A syntax error at the current token, or the lexical error that stands there.
    fn unexpected(&self, expecting: &str) -> Error {
        let token = &self.tokens[self.pos];
        match &token.tok {
            Tok::Error(e) => e.clone(),
            Tok::Eof => self.error(token.span, format!("syntax error: unexpected end of query, expecting {expecting}")),
            _ => self.unexpected_text(token.span, expecting),
        }
    }

    fn unexpected_text(&self, span: Span, expecting: &str) -> Error {
        let found = &self.text[span.start as usize..span.end as usize];
        self.error(span, format!("syntax error: unexpected '{found}', expecting {expecting}"))
    }

    fn wrong(&self, item: &Item, expecting: &str) -> Error {
        self.error(item.span(), format!("syntax error: unexpected {}, expecting {expecting}", item.describe()))
    }

    fn descend(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(self.span(), format!("query is nested too deeply (more than {MAX_DEPTH} levels)")));
        }
        Ok(())
    }

    /// The current token is an identifier that means nothing: say what it was probably meant to be.
    fn unknown_word(&self, word: &str) -> Error {
        let message = if matches!(self.peek_next(), Tok::Sym("(")) {
            match closest(word, KEYWORDS) {
                Some(f) => format!("unknown function '{word}', did you mean '{f}'?"),
                None => format!("unknown function '{word}'"),
            }
        } else if let Some(i) = INTRINSICS
            .iter()
            .map(|(s, _)| *s)
            // `childCount`: the name of a scoped intrinsic, written without its scope.
            .find(|s| s.split_once(':').is_some_and(|(_, name)| name == word))
            .or_else(|| closest(word, INTRINSICS.map(|(s, _)| s)))
        {
            format!("unknown intrinsic '{word}', did you mean '{i}'?")
        } else if let Some(k) = closest(word, KEYWORDS) {
            format!("unknown identifier '{word}', did you mean '{k}'?")
        } else {
            format!("unknown identifier: {word}")
        };
        self.error(self.span(), message)
    }

    // ---- outside { } ----

    /// `item ('|' stage)*`, possibly turning into a metrics query.
    fn pipe(&mut self) -> Result<Item, Error> {
        let mut item = self.binary(2)?;
        while self.at_sym("|") {
            let next = match self.peek_next() {
                Tok::Keyword(k) => Some(*k),
                _ => None,
            };
            item = match (item, next) {
                (Item::Scalar(_), _) => return Err(self.unexpected("a comparison operator")),
                (item @ Item::Metrics(_), Some("topk" | "bottomk")) => {
                    self.bump();
                    self.limit(item)?
                }
                (Item::Metrics(_), _) => {
                    self.bump();
                    return Err(self.unexpected("'topk' or 'bottomk'"));
                }
                (_, Some("topk" | "bottomk")) => {
                    self.bump();
                    return Err(self.error(
                        self.span(),
                        "topk and bottomk need a metrics function first, e.g. { } | rate() | topk(10)",
                    ));
                }
                (item, Some(f)) if METRICS_FUNCTIONS.contains(&f) => {
                    self.bump();
                    self.metrics_query(item, f)?
                }
                (Item::Spans { expr, .. }, _) => {
                    let span = expr.span();
                    self.bump();
                    self.push_stage(vec![Stage::Spanset(expr)], span)?
                }
                (Item::Pipeline { stages, parenthesised: false, span }, _) => {
                    self.bump();
                    self.push_stage(stages, span)?
                }
                (item, _) => {
                    return Err(self.error(
                        item.span(),
                        "a parenthesised pipeline can only be followed by a metrics function; \
                         move further stages inside the parentheses",
                    ));
                }
            };
        }
        Ok(item)
    }

    fn push_stage(&mut self, mut stages: Vec<Stage>, span: Span) -> Result<Item, Error> {
        let item = self.binary(2)?;
        let span = span.to(item.span());
        match item {
            Item::Spans { expr, .. } => stages.push(Stage::Spanset(expr)),
            Item::Pipeline { stages: more, parenthesised: false, .. } => stages.extend(more),
            Item::Scalar(_) => return Err(self.unexpected("a comparison operator")),
            item => return Err(self.wrong(&item, "a pipeline stage")),
        }
        Ok(Item::Pipeline { stages, parenthesised: false, span })
    }

    /// Precedence climbing over operators with precedence `min` and above.
    fn binary(&mut self, min: u8) -> Result<Item, Error> {
        let depth = self.depth;
        self.descend()?;
        let mut lhs = self.unary()?;
        while let Tok::Sym(op) = *self.peek() {
            let Some(prec) = precedence(op).filter(|p| *p >= min) else { break };
            if !lhs.takes(op) {
                if spanset_op(op).is_some() && matches!(lhs, Item::Pipeline { .. }) {
                    return Err(self.error(
                        self.span(),
                        format!("pipelines combined with '{op}' must each be parenthesised, e.g. ({{ }} | count() > 1) {op} ({{ }})"),
                    ));
                }
                let end = if self.parens > 0 { "')'" } else { "end of query" };
                return Err(self.unexpected(&lhs.expecting(end)));
            }
            self.descend()?;
            let op_span = self.bump();
            let rhs = self.binary(if op == "^" { prec } else { prec + 1 })?;
            lhs = self.combine(op, op_span, lhs, rhs)?;
        }
        // An error ends the parse, so only success needs to restore the depth.
        self.depth = depth;
        Ok(lhs)
    }

    fn combine(&self, op: &'static str, op_span: Span, lhs: Item, rhs: Item) -> Result<Item, Error> {
        let span = lhs.span().to(rhs.span());
        match lhs {
            Item::Spans { .. } | Item::Pipeline { .. } | Item::Query { .. } => {
                let op = spanset_op(op).expect("takes() admitted only spanset operators");
                self.spanset_operation(op, lhs, rhs, span)
            }
            Item::Scalar(l) => match (comparison_op(op), rhs) {
                (Some(cmp), Item::Scalar(r)) => {
                    if !has_aggregate(&l) && !has_aggregate(&r) {
                        return Err(self.error(span, "a comparison outside { } needs an aggregate, e.g. count() > 1"));
                    }
                    let stages = vec![Stage::ScalarFilter { op: cmp, lhs: l, rhs: r, span }];
                    Ok(Item::Pipeline { stages, parenthesised: false, span })
                }
                (None, Item::Scalar(r)) => {
                    let op = arithmetic_op(op).expect("takes() admitted only arithmetic or comparisons");
                    Ok(Item::Scalar(self.fold_scalar(op, l, r, span)?))
                }
                (None, rhs @ Item::Metrics(_)) => self.metrics_arithmetic(op, op_span, Item::Scalar(l), rhs, span),
                (_, rhs) => Err(self.wrong(&rhs, "a number or an aggregate")),
            },
            Item::Metrics(l) => match comparison_op(op) {
                Some(cmp) => {
                    let Item::Scalar(ScalarExpr::Static { value, span: value_span }) = rhs else {
                        return Err(self.wrong(&rhs, "a number or a duration"));
                    };
                    Ok(Item::Metrics(l.then(SecondStage::Filter(cmp, value), value_span)))
                }
                None => self.metrics_arithmetic(op, op_span, Item::Metrics(l), rhs, span),
            },
        }
    }

    fn spanset_operation(&self, op: SpansetOp, lhs: Item, rhs: Item, span: Span) -> Result<Item, Error> {
        match (lhs, rhs) {
            (Item::Spans { expr: l, pipeable: lp }, Item::Spans { expr: r, pipeable: rp }) => {
                let expr = SpansetExpr::Op { op, lhs: Box::new(l), rhs: Box::new(r), span };
                Ok(Item::Spans { expr, pipeable: lp && rp })
            }
            (lhs, rhs) => {
                // The right-hand side first: `{ } && 1` is about the 1, not about parentheses.
                let rhs = Box::new(self.pipeline_operand(op, rhs)?);
                let lhs = Box::new(self.pipeline_operand(op, lhs)?);
                Ok(Item::Query { query: SpansetQuery::Op { op, lhs, rhs, span }, span })
            }
        }
    }

    fn pipeline_operand(&self, op: SpansetOp, item: Item) -> Result<SpansetQuery, Error> {
        match item {
            Item::Spans { expr, pipeable: true } => {
                Ok(SpansetQuery::Pipeline(Pipeline { stages: vec![Stage::Spanset(expr)] }))
            }
            Item::Pipeline { stages, parenthesised: true, span } => {
                Ok(SpansetQuery::Pipeline(self.finish(stages, span)?))
            }
            Item::Query { query, .. } => Ok(query),
            Item::Spans { .. } | Item::Pipeline { .. } => Err(self
                .error(item.span(), format!("pipelines combined with '{}' must each be parenthesised", op.as_str()))),
            item => Err(self.wrong(&item, "a spanset")),
        }
    }

    fn metrics_arithmetic(&self, op: &str, op_span: Span, lhs: Item, rhs: Item, span: Span) -> Result<Item, Error> {
        let op = match op {
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            _ => return Err(self.error(op_span, format!("'{op}' cannot combine metrics queries, only + - * / can"))),
        };
        let lhs = Box::new(self.metrics_operand(lhs)?);
        let rhs = Box::new(self.metrics_operand(rhs)?);
        Ok(Item::Metrics(MetricsExpr::Binary { op, lhs, rhs, span }))
    }

    fn metrics_operand(&self, item: Item) -> Result<MetricsExpr, Error> {
        match item {
            Item::Metrics(m) => Ok(m),
            Item::Scalar(ScalarExpr::Static { value: value @ (Static::Int(_) | Static::Float(_)), span }) => {
                Ok(MetricsExpr::Scalar { value, span })
            }
            Item::Scalar(ScalarExpr::Static { value: Static::Duration(_), span }) => {
                Err(self.error(span, "durations cannot be used in metrics arithmetic"))
            }
            item => Err(self.wrong(&item, "a parenthesised metrics query or a number")),
        }
    }

    fn unary(&mut self) -> Result<Item, Error> {
        if !self.at_sym("-") {
            return self.primary();
        }
        let start = self.bump();
        self.descend()?;
        match self.unary()? {
            Item::Scalar(ScalarExpr::Static { value, span }) => {
                let span = start.to(span);
                let value = fold_unary(UnaryOp::Neg, &value)
                    .map_err(|m| self.error(span, m))?
                    .expect("statics outside { } are numbers");
                Ok(Item::Scalar(ScalarExpr::Static { value, span }))
            }
            item => Err(self.error(item.span(), "unary '-' outside { } applies only to numbers")),
        }
    }

    fn primary(&mut self) -> Result<Item, Error> {
        if let Some(value) =
            literal(self.peek()).filter(|v| matches!(v, Static::Int(_) | Static::Float(_) | Static::Duration(_)))
        {
            let span = self.bump();
            return Ok(Item::Scalar(ScalarExpr::Static { value, span }));
        }
        let start = self.span();
        let stage = match self.peek() {
            Tok::Sym("{") => return Ok(Item::Spans { expr: self.filter()?, pipeable: false }),
            Tok::Sym("(") => return self.parenthesised(),
            Tok::Keyword(f @ ("count" | "avg" | "min" | "max" | "sum")) => {
                let f = *f;
                return Ok(Item::Scalar(self.aggregate(f)?));
            }
            Tok::Keyword("by") => {
                self.bump();
                self.expect("(", "'('")?;
                let expr = self.field(0)?;
                let span = start.to(self.expect(")", "an operator or ')'")?);
                Stage::By { expr, span }
            }
            Tok::Keyword("coalesce") => {
                self.bump();
                self.expect("(", "'('")?;
                Stage::Coalesce { span: start.to(self.expect(")", "')'")?) }
            }
            Tok::Keyword("select") => {
                self.bump();
                let (attrs, end) = self.attribute_list()?;
                Stage::Select { attrs, span: start.to(end) }
            }
            Tok::Keyword(f) if METRICS_FUNCTIONS.contains(f) => {
                return Err(self.error(start, format!("metrics functions follow a pipeline, e.g. {{ }} | {f}(...)")));
            }
            Tok::Ident(word) => return Err(self.unknown_word(word)),
            _ => return Err(self.unexpected("'{', '(', an aggregate such as count(), by(), select() or a number")),
        };
        let span = start.to(self.tokens[self.pos.saturating_sub(1)].span);
        Ok(Item::Pipeline { stages: vec![stage], parenthesised: false, span })
    }

    fn parenthesised(&mut self) -> Result<Item, Error> {
        if self.parens == MAX_PARENS {
            return Err(self.error(self.span(), format!("too many nested parentheses (more than {MAX_PARENS})")));
        }
        self.bump();
        self.parens += 1;
        let item = self.pipe()?;
        self.parens -= 1;
        if !self.at_sym(")") {
            return Err(self.unexpected(&item.expecting("')'")));
        }
        self.bump();
        Ok(match item {
            Item::Spans { expr, .. } => Item::Spans { expr, pipeable: true },
            Item::Pipeline { stages, span, .. } => Item::Pipeline { stages, parenthesised: true, span },
            item => item,
        })
    }

    fn aggregate(&mut self, name: &str) -> Result<ScalarExpr, Error> {
        let start = self.bump();
        self.expect("(", "'('")?;
        let (func, arg) = match name {
            "count" => (AggFunc::Count, None),
            "avg" => (AggFunc::Avg, Some(self.field(0)?)),
            "min" => (AggFunc::Min, Some(self.field(0)?)),
            "max" => (AggFunc::Max, Some(self.field(0)?)),
            _ => (AggFunc::Sum, Some(self.field(0)?)),
        };
        let end = self.expect(")", if arg.is_some() { "an operator or ')'" } else { "')'" })?;
        Ok(ScalarExpr::Aggregate { func, arg, span: start.to(end) })
    }

    fn attribute(&mut self) -> Result<Attribute, Error> {
        match self.peek() {
            Tok::Attr(a) => {
                let a = a.clone();
                self.bump();
                Ok(a)
            }
            Tok::Ident(word) => Err(self.unknown_word(word)),
            _ => Err(self.unexpected("an attribute")),
        }
    }

    /// `(attr, ...)`, and where it ends.
    fn attribute_list(&mut self) -> Result<(Vec<Attribute>, Span), Error> {
        self.expect("(", "'('")?;
        let mut attrs = vec![self.attribute()?];
        while self.eat(",") {
            attrs.push(self.attribute()?);
        }
        Ok((attrs, self.expect(")", "',' or ')'")?))
    }

    /// A constant number outside `{ }`: an operand of topk, quantile_over_time, ...
    fn constant(&mut self, expecting: &str) -> Result<(Static, Span), Error> {
        match self.binary(4)? {
            Item::Scalar(ScalarExpr::Static { value, span }) => Ok((value, span)),
            item => Err(self.wrong(&item, expecting)),
        }
    }

    fn integer(&mut self) -> Result<i64, Error> {
        match self.constant("an integer")? {
            (Static::Int(i), _) => Ok(i),
            (_, span) => Err(self.unexpected_text(span, "an integer")),
        }
    }

    // ---- metrics ----

    /// `pipeline | fn(...) [by(...)] [filters]`, at the function's keyword.
    fn metrics_query(&mut self, item: Item, name: &str) -> Result<Item, Error> {
        let start = item.span();
        let spans = self.spanset_query(item)?;
        let func = self.metrics_function(name)?;
        let by = if self.at_keyword("by") {
            self.bump();
            self.attribute_list()?.0
        } else {
            Vec::new()
        };
        let span = start.to(self.tokens[self.pos - 1].span);
        let query = Box::new(MetricsQuery { spans, func, by, second: Vec::new(), span });
        let expr = self.filters(MetricsExpr::Query(query))?;
        if let Tok::Sym(op @ ("+" | "-" | "*" | "/" | "%" | "^")) = self.peek() {
            return Err(self.error(
                self.span(),
                format!("metrics arithmetic needs each query in parentheses, e.g. ({{ }} | rate()) {op} 2"),
            ));
        }
        Ok(Item::Metrics(expr))
    }

    fn metrics_function(&mut self, name: &str) -> Result<MetricsFn, Error> {
        self.bump();
        self.expect("(", "'('")?;
        let func = match name {
            "rate" => MetricsFn::Rate,
            "count_over_time" => MetricsFn::CountOverTime,
            "min_over_time" => MetricsFn::MinOverTime(self.attribute()?),
            "max_over_time" => MetricsFn::MaxOverTime(self.attribute()?),
            "sum_over_time" => MetricsFn::SumOverTime(self.attribute()?),
            "avg_over_time" => MetricsFn::AvgOverTime(self.attribute()?),
            "histogram_over_time" => MetricsFn::HistogramOverTime(self.attribute()?),
            "quantile_over_time" => {
                let attr = self.attribute()?;
                self.expect(",", "',' and a quantile")?;
                let mut quantiles = vec![self.quantile()?];
                while self.eat(",") {
                    quantiles.push(self.quantile()?);
                }
                MetricsFn::QuantileOverTime(attr, quantiles)
            }
            _ => {
                let filter = self.filter()?;
                let (mut top, mut start, mut end) = (None, None, None);
                if self.eat(",") {
                    top = Some(self.integer()?);
                    if self.eat(",") {
                        start = Some(self.integer()?);
                        self.expect(",", "',' and the end")?;
                        end = Some(self.integer()?);
                    }
                }
                MetricsFn::Compare { filter, top, start, end }
            }
        };
        let more = matches!(func, MetricsFn::QuantileOverTime(..) | MetricsFn::Compare { end: None, .. });
        self.expect(")", if more { "',' or ')'" } else { "')'" })?;
        Ok(func)
    }

    fn quantile(&mut self) -> Result<f64, Error> {
        match self.constant("a quantile")? {
            (Static::Int(i), _) => Ok(i as f64),
            (Static::Float(f), _) => Ok(f),
            (_, span) => Err(self.unexpected_text(span, "a quantile")),
        }
    }

    /// `| topk(n)` or `| bottomk(n)`, at the keyword.
    fn limit(&mut self, item: Item) -> Result<Item, Error> {
        let Item::Metrics(expr) = item else {
            return Err(self.error(self.span(), "topk and bottomk need a metrics function first"));
        };
        let bottom = self.at_keyword("bottomk");
        self.bump();
        self.expect("(", "'('")?;
        let n = self.integer()?;
        let end = self.expect(")", "')'")?;
        let expr = expr.then(if bottom { SecondStage::BottomK(n) } else { SecondStage::TopK(n) }, end);
        Ok(Item::Metrics(self.filters(expr)?))
    }

    /// Second-stage comparisons: `> 10`, `<= 200ms`, ...
    fn filters(&mut self, mut expr: MetricsExpr) -> Result<MetricsExpr, Error> {
        while let Some(op) = match self.peek() {
            Tok::Sym(s) => comparison_op(s),
            _ => None,
        } {
            self.bump();
            let (value, span) = self.constant("a number or a duration")?;
            expr = expr.then(SecondStage::Filter(op, value), span);
        }
        Ok(expr)
    }

    // ---- pipelines ----

    fn spanset_query(&self, item: Item) -> Result<SpansetQuery, Error> {
        match item {
            Item::Spans { expr, .. } => Ok(SpansetQuery::Pipeline(Pipeline { stages: vec![Stage::Spanset(expr)] })),
            Item::Pipeline { stages, span, .. } => Ok(SpansetQuery::Pipeline(self.finish(stages, span)?)),
            Item::Query { query, .. } => Ok(query),
            Item::Scalar(_) => Err(self.unexpected("a comparison operator")),
            item => Err(self.wrong(&item, "a spanset")),
        }
    }

    /// A pipeline that starts with another stage than a spanset expression means `{ } | ...`.
    fn finish(&self, mut stages: Vec<Stage>, span: Span) -> Result<Pipeline, Error> {
        match stages.first() {
            Some(Stage::Spanset(_)) => {}
            Some(Stage::Coalesce { span }) => return Err(self.error(*span, "coalesce() cannot start a pipeline")),
            _ => {
                let at = Span::new(span.start as usize, span.start as usize);
                let all =
                    SpansetExpr::Filter { expr: FieldExpr::Static { value: Static::Bool(true), span: at }, span: at };
                stages.insert(0, Stage::Spanset(all));
            }
        }
        Ok(Pipeline { stages })
    }

    // ---- hints ----

    fn hints(&mut self) -> Result<Vec<Hint>, Error> {
        self.bump();
        self.expect("(", "'('")?;
        let mut hints = Vec::new();
        loop {
            let start = self.span();
            let name = match self.peek() {
                Tok::Ident(name) => name.clone(),
                Tok::Keyword(name) => name.to_string(),
                _ => return Err(self.unexpected("a hint name")),
            };
            self.bump();
            self.expect("=", "'='")?;
            let value = self.field(0)?;
            let span = value.span();
            let FieldExpr::Static { value, .. } = value else {
                return Err(self.error(span, "hint values must be constants"));
            };
            hints.push(Hint { name, value, span: start.to(span) });
            if !self.eat(",") {
                break;
            }
        }
        self.expect(")", "',' or ')'")?;
        Ok(hints)
    }

    // ---- inside { } ----

    fn filter(&mut self) -> Result<SpansetExpr, Error> {
        let open = self.expect("{", "'{'")?;
        if self.at_sym("}") {
            let close = self.bump();
            let expr = FieldExpr::Static { value: Static::Bool(true), span: close };
            return Ok(SpansetExpr::Filter { expr, span: open.to(close) });
        }
        let expr = self.field(0)?;
        let close = self.expect("}", "an operator or '}'")?;
        Ok(SpansetExpr::Filter { expr, span: open.to(close) })
    }

    fn field(&mut self, min: u8) -> Result<FieldExpr, Error> {
        let depth = self.depth;
        self.descend()?;
        let mut lhs = self.field_unary()?;
        while let Tok::Sym(sym) = *self.peek() {
            let (Some(op), Some(prec)) = (field_op(sym), precedence(sym)) else { break };
            if prec < min {
                break;
            }
            self.descend()?;
            self.bump();
            let rhs = self.field(if op == BinOp::Pow { prec } else { prec + 1 })?;
            let span = lhs.span().to(rhs.span());
            lhs = match (&lhs, &rhs) {
                (FieldExpr::Static { value: a, .. }, FieldExpr::Static { value: b, .. }) => {
                    match fold(op, a, b).map_err(|m| self.error(span, m))? {
                        Some(value) => FieldExpr::Static { value, span },
                        None => FieldExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span },
                    }
                }
                _ => FieldExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span },
            };
        }
        self.depth = depth;
        Ok(lhs)
    }

    /// Unary `-` binds tightest; unary `!` sits between `+ -` and `* / %` (§2.3), so its
    /// operand extends over `* / % ^`: `!a * b` is `!(a * b)` and `!a = b` is `(!a) = b`.
    fn field_unary(&mut self) -> Result<FieldExpr, Error> {
        let op = match self.peek() {
            Tok::Sym("-") => UnaryOp::Neg,
            Tok::Sym("!") => UnaryOp::Not,
            _ => return self.field_primary(),
        };
        let start = self.bump();
        let expr = match op {
            UnaryOp::Neg => {
                self.descend()?;
                self.field_unary()?
            }
            UnaryOp::Not => self.field(6)?,
        };
        let span = start.to(expr.span());
        if let FieldExpr::Static { value, .. } = &expr
            && let Some(value) = fold_unary(op, value).map_err(|m| self.error(span, m))?
        {
            return Ok(FieldExpr::Static { value, span });
        }
        Ok(FieldExpr::Unary { op, expr: Box::new(expr), span })
    }

    fn field_primary(&mut self) -> Result<FieldExpr, Error> {
        if let Some(value) = literal(self.peek()) {
            let span = self.bump();
            return Ok(FieldExpr::Static { value, span });
        }
        match self.peek() {
            Tok::Attr(attr) => {
                let attr = attr.clone();
                let span = self.bump();
                Ok(FieldExpr::Attr { attr, span })
            }
            Tok::Sym("(") => {
                self.bump();
                let expr = self.field(0)?;
                self.expect(")", "an operator or ')'")?;
                Ok(expr)
            }
            Tok::Ident(word) => Err(self.unknown_word(word)),
            _ => Err(self.unexpected("a value, an attribute or '('")),
        }
    }

    fn fold_scalar(&self, op: BinOp, lhs: ScalarExpr, rhs: ScalarExpr, span: Span) -> Result<ScalarExpr, Error> {
        if let (ScalarExpr::Static { value: a, .. }, ScalarExpr::Static { value: b, .. }) = (&lhs, &rhs)
            && let Some(value) = fold(op, a, b).map_err(|m| self.error(span, m))?
        {
            return Ok(ScalarExpr::Static { value, span });
        }
        Ok(ScalarExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span })
    }
}

// ---- operator tables ----

/// Binding strength of binary operators (§2.3); `|` (1) is handled by [`Parser::pipe`].
fn precedence(op: &str) -> Option<u8> {
    Some(match op {
        "&&" | "||" => 2,
        "=" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~" | ">>" | "<<" | "~" | "!>" | "!<" | "!>>" | "!<<" | "&>"
        | "&<" | "&>>" | "&<<" | "&~" => 3,
        "+" | "-" => 4,
        "*" | "/" | "%" => 6,
        "^" => 7,
        _ => return None,
    })
}

fn spanset_op(op: &str) -> Option<SpansetOp> {
    Some(match op {
        "&&" => SpansetOp::And,
        "||" => SpansetOp::Or,
        ">" => SpansetOp::Child,
        "<" => SpansetOp::Parent,
        ">>" => SpansetOp::Descendant,
        "<<" => SpansetOp::Ancestor,
        "~" => SpansetOp::Sibling,
        "!>" => SpansetOp::NotChild,
        "!<" => SpansetOp::NotParent,
        "!>>" => SpansetOp::NotDescendant,
        "!<<" => SpansetOp::NotAncestor,
        "!~" => SpansetOp::NotSibling,
        "&>" => SpansetOp::UnionChild,
        "&<" => SpansetOp::UnionParent,
        "&>>" => SpansetOp::UnionDescendant,
        "&<<" => SpansetOp::UnionAncestor,
        "&~" => SpansetOp::UnionSibling,
        _ => return None,
    })
}

fn comparison_op(op: &str) -> Option<CmpOp> {
    Some(match op {
        "=" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        ">" => CmpOp::Gt,
        ">=" => CmpOp::Ge,
        _ => return None,
    })
}

fn arithmetic_op(op: &str) -> Option<BinOp> {
    field_op(op).filter(|op| op.is_arithmetic())
}

fn field_op(op: &str) -> Option<BinOp> {
    Some(match op {
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "%" => BinOp::Mod,
        "^" => BinOp::Pow,
        "=" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "=~" => BinOp::Regex,
        "!~" => BinOp::NotRegex,
        "&&" => BinOp::And,
        "||" => BinOp::Or,
        _ => return None,
    })
}

fn literal(tok: &Tok) -> Option<Static> {
    Some(match tok {
        Tok::Str(s) => Static::Str(s.clone()),
        Tok::Int(i) => Static::Int(*i),
        Tok::Float(f) => Static::Float(*f),
        Tok::Duration(d) => Static::Duration(*d),
        Tok::Keyword(k) => match *k {
            "true" => Static::Bool(true),
            "false" => Static::Bool(false),
            "nil" => Static::Nil,
            "ok" => Static::Status(Status::Ok),
            "error" => Static::Status(Status::Error),
            "unset" => Static::Status(Status::Unset),
            "unspecified" => Static::Kind(Kind::Unspecified),
            "internal" => Static::Kind(Kind::Internal),
            "server" => Static::Kind(Kind::Server),
            "client" => Static::Kind(Kind::Client),
            "producer" => Static::Kind(Kind::Producer),
            "consumer" => Static::Kind(Kind::Consumer),
            "minInt" => Static::Int(i64::MIN),
            "maxInt" => Static::Int(i64::MAX),
            _ => return None,
        },
        _ => return None,
    })
}

fn has_aggregate(e: &ScalarExpr) -> bool {
    match e {
        ScalarExpr::Aggregate { .. } => true,
        ScalarExpr::Static { .. } => false,
        ScalarExpr::Binary { lhs, rhs, .. } => has_aggregate(lhs) || has_aggregate(rhs),
    }
}

// ---- constant folding ----

const OUT_OF_RANGE: &str = "constant arithmetic out of range";

/// `a op b` for two constants, or `None` when the operation does not apply to them; the checker
/// then says why, or (regexes, nil) it is left as written.
fn fold(op: BinOp, a: &Static, b: &Static) -> Result<Option<Static>, &'static str> {
    use Static::*;
    let equality = |eq: bool| match op {
        BinOp::Eq => Some(Bool(eq)),
        BinOp::Ne => Some(Bool(!eq)),
        _ => None,
    };
    Ok(match (a, b) {
        (Bool(x), Bool(y)) => match op {
            BinOp::And => Some(Bool(*x && *y)),
            BinOp::Or => Some(Bool(*x || *y)),
            _ => equality(x == y),
        },
        (Str(x), Str(y)) => ordering(op, x.as_bytes().cmp(y.as_bytes())).map(Bool),
        (Status(x), Status(y)) => equality(x == y),
        (Kind(x), Kind(y)) => equality(x == y),
        _ => match (Num::of(a), Num::of(b)) {
            (Some(x), Some(y)) => fold_numbers(op, x, y)?,
            _ => None,
        },
    })
}

/// Whether comparison `op` holds for operands ordered `ord`; `None` if `op` is no ordering.
fn ordering(op: BinOp, ord: std::cmp::Ordering) -> Option<bool> {
    use std::cmp::Ordering::*;
    Some(match op {
        BinOp::Eq => ord == Equal,
        BinOp::Ne => ord != Equal,
        BinOp::Lt => ord == Less,
        BinOp::Le => ord != Greater,
        BinOp::Gt => ord == Greater,
        BinOp::Ge => ord != Less,
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
}

impl Num {
    fn of(s: &Static) -> Option<Num> {
        match *s {
            Static::Int(i) => Some(Num::Int(i)),
            Static::Float(f) => Some(Num::Float(f)),
            Static::Duration(d) => Some(Num::Duration(d)),
            _ => None,
        }
    }

    fn integral(self) -> Option<i64> {
        match self {
            Num::Int(i) | Num::Duration(i) => Some(i),
            Num::Float(_) => None,
        }
    }

    fn float(self) -> f64 {
        match self {
            Num::Int(i) | Num::Duration(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Numbers fold exactly in i64 when neither is a float, else in f64. A duration operand makes the
/// result a duration; int and duration compare as raw nanoseconds (§2.5).
fn fold_numbers(op: BinOp, a: Num, b: Num) -> Result<Option<Static>, &'static str> {
    let duration = matches!(a, Num::Duration(_)) || matches!(b, Num::Duration(_));
    if let (BinOp::Mul, Num::Duration(x), Num::Duration(y)) = (op, a, b) {
        // Tempo multiplies the nanoseconds (`10s * 20s` overflows and wraps); a product of two
        // durations is taken in seconds instead, so `10s * 20s` is `200s`.
        let v = (x as f64 / 1e9) * (y as f64 / 1e9) * 1e9;
        if !v.is_finite() || v.abs() >= i64::MAX as f64 {
            return Err(OUT_OF_RANGE);
        }
        return Ok(Some(Static::Duration(v.round() as i64)));
    }
    if op.is_comparison() {
        let ord = match (a.integral(), b.integral()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a.float().partial_cmp(&b.float()),
        };
        return Ok(ord.and_then(|ord| ordering(op, ord)).map(Static::Bool));
    }
    if !op.is_arithmetic() {
        return Ok(None);
    }
    Ok(Some(match (a.integral(), b.integral()) {
        (Some(x), Some(y)) => {
            let v = int_arithmetic(op, x, y)?;
            if duration {
                // i64::MIN ns has no literal spelling, so it could not be printed back.
                Static::Duration(v.checked_neg().map(|_| v).ok_or(OUT_OF_RANGE)?)
            } else {
                Static::Int(v)
            }
        }
        _ => {
            let v = float_arithmetic(op, a.float(), b.float())?;
            if duration {
                if v.abs() >= i64::MAX as f64 {
                    return Err(OUT_OF_RANGE);
                }
                Static::Duration(v as i64)
            } else {
                Static::Float(v)
            }
        }
    }))
}

fn int_arithmetic(op: BinOp, a: i64, b: i64) -> Result<i64, &'static str> {
    if b == 0 && matches!(op, BinOp::Div | BinOp::Mod) {
        return Err("division by zero");
    }
    match op {
        BinOp::Add => a.checked_add(b),
        BinOp::Sub => a.checked_sub(b),
        BinOp::Mul => a.checked_mul(b),
        BinOp::Div => a.checked_div(b),
        BinOp::Mod => a.checked_rem(b),
        _ => return int_power(a, b),
    }
    .ok_or(OUT_OF_RANGE)
}

/// `a` to the power `b` (Tempo computes `b^a`: quirk Q2, fixed). A negative exponent truncates
/// the fraction toward zero, as converting Go's `math.Pow` result to an int does.
fn int_power(a: i64, b: i64) -> Result<i64, &'static str> {
    match (a, b) {
        (0, ..0) => Err("division by zero"),
        (_, 0) | (1, _) => Ok(1),
        (-1, _) => Ok(if b % 2 == 0 { 1 } else { -1 }),
        (_, ..0) => Ok(0),
        _ => u32::try_from(b).ok().and_then(|b| a.checked_pow(b)).ok_or(OUT_OF_RANGE),
    }
}

fn float_arithmetic(op: BinOp, a: f64, b: f64) -> Result<f64, &'static str> {
    if b == 0.0 && matches!(op, BinOp::Div | BinOp::Mod) {
        return Err("division by zero");
    }
    let v = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        _ => a.powf(b),
    };
    if v.is_finite() { Ok(v) } else { Err(OUT_OF_RANGE) }
}

fn fold_unary(op: UnaryOp, v: &Static) -> Result<Option<Static>, &'static str> {
    Ok(match (op, v) {
        (UnaryOp::Neg, Static::Int(i)) => Some(Static::Int(i.checked_neg().ok_or(OUT_OF_RANGE)?)),
        (UnaryOp::Neg, Static::Float(f)) => Some(Static::Float(-f)),
        (UnaryOp::Neg, Static::Duration(d)) => Some(Static::Duration(-d)),
        (UnaryOp::Not, Static::Bool(b)) => Some(Static::Bool(!b)),
        _ => None,
    })
}
