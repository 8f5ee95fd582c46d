//! Printing is the parser's inverse: every tree prints as TraceQL that parses back to it.

use proptest::prelude::*;
use spoor_traceql::ast::*;
use spoor_traceql::{parse, parse_unchecked};

/// The corpus, one query per line (a line starting with `|` continues the previous one).
fn corpus() -> Vec<String> {
    let mut queries: Vec<String> = Vec::new();
    for line in include_str!("queries.txt").lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match queries.last_mut() {
            Some(last) if line.trim_start().starts_with('|') => {
                last.push('\n');
                last.push_str(line);
            }
            _ => queries.push(line.to_string()),
        }
    }
    queries
}

#[test]
fn corpus_round_trips() {
    for query in corpus() {
        let parsed = parse(&query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let printed = parsed.to_string();
        assert_eq!(parse(&printed).as_ref(), Ok(&parsed), "{query}\nprinted as {printed}");
        assert_eq!(parse(&printed).unwrap().to_string(), printed, "printing is not canonical for {query}");
    }
}

#[test]
fn printed_forms() {
    let cases = [
        ("{}", "{}"),
        ("{ true }", "{}"),
        ("{span.db.system=\"postgresql\"&&duration>1s}", "{ span.db.system = \"postgresql\" && duration > 1s }"),
        ("count() > 10", "{} | count() > 10"),
        ("{ span:duration > 1500ms }", "{ duration > 1500ms }"),
        ("{ trace:rootService = \"a\" }", "{ rootServiceName = \"a\" }"),
        ("{ span:id = \"a\" }", "{ span:id = \"a\" }"),
        ("{ .a = 1e3 }", "{ .a = 1000.0 }"),
        ("{ .a = 1h30m }", "{ .a = 90m }"),
        ("{ .a = 1.5s }", "{ .a = 1500ms }"),
        ("{ .a = 1d }", "{ .a = 24h }"),
        ("{ .a = 1s + 1ns }", "{ .a = 1000000001ns }"),
        ("{ .a = -(1) }", "{ .a = -1 }"),
        ("{ .a - -1 = 2 }", "{ .a - -1 = 2 }"),
        ("{ -.a ^ 2 = 4 }", "{ -.a ^ 2 = 4 }"),
        ("{ -(.a ^ 2) = 4 }", "{ -(.a ^ 2) = 4 }"),
        ("{ (.a + 1) * 2 = 4 }", "{ (.a + 1) * 2 = 4 }"),
        ("{ .a ^ (.b ^ .c) = 1 }", "{ .a ^ .b ^ .c = 1 }"),
        ("{ (.a ^ .b) ^ .c = 1 }", "{ (.a ^ .b) ^ .c = 1 }"),
        ("{ (.a || .b) && .c }", "{ .a || .b && .c }"),
        ("{ .a || (.b && .c) }", "{ .a || (.b && .c) }"),
        ("{ !(.a * .b) = 1 }", "{ !.a * .b = 1 }"),
        ("{ (!.a) * .b = 1 }", "{ (!.a) * .b = 1 }"),
        ("{ !(.a = 1) }", "{ !(.a = 1) }"),
        ("{ .s = `a\"b\\c` }", "{ .s = \"a\\\"b\\\\c\" }"),
        ("{ .s = \"\\x01\" }", "{ .s = \"\\u0001\" }"),
        ("{ resource.\"k8s.namespace.name\" = 1 }", "{ resource.k8s.namespace.name = 1 }"),
        ("{ span.attribute.\"a b\" = 1 }", "{ span.\"attribute.a b\" = 1 }"),
        ("{ .\"5\" = 1 }", "{ .\"5\" = 1 }"),
        ("{ .a = minInt }", "{ .a = minInt }"),
        ("{ status = error } | by(resource.service.name)", "{ status = error } | by(resource.service.name)"),
        ("{}|avg(duration)>1s", "{} | avg(duration) > 1s"),
        ("{.a} && {.b} | count() > 1", "{ .a } && { .b } | count() > 1"),
        (
            "{ } | rate() by (resource.service.name, span.http.method) > 10",
            "{} | rate() by(resource.service.name, span.http.method) > 10",
        ),
        ("({} | rate())", "{} | rate()"),
        ("({} | rate()) | topk(5)", "{} | rate() | topk(5)"),
        ("(({} | rate()) + 1) * 2", "(({} | rate()) + 1) * 2"),
        ("({}|rate())+({}|rate())*2", "({} | rate()) + ({} | rate()) * 2"),
        ("{ } | quantile_over_time(duration, .5, 1)", "{} | quantile_over_time(duration, 0.5, 1.0)"),
        ("{} with ( most_recent = true , x = \"y\" )", "{} with(most_recent=true, x=\"y\")"),
    ];
    for (query, printed) in cases {
        let parsed = parse_unchecked(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(parsed.to_string(), printed, "{query}");
    }
}

// ---- random trees ----
//
// The parser folds constant sub-expressions, so the generators never put an operator over
// constants only (where they would, an operand becomes an attribute); printing such a tree
// would read back folded.

fn attribute() -> impl Strategy<Value = Attribute> {
    let scope = prop::sample::select(vec![
        Scope::Unscoped,
        Scope::Span,
        Scope::Resource,
        Scope::Event,
        Scope::Link,
        Scope::Instrumentation,
        Scope::Parent,
    ]);
    let name = prop_oneof![
        3 => "[a-z][a-z0-9_.]{0,12}",
        1 => "[a-z0-9 ./:+*%\\-\"\\\\{}()=~!<>&|^,'`]{0,8}",
        1 => any::<String>(),
    ];
    prop_oneof![
        1 => prop::sample::select(Intrinsic::ALL.map(|(i, _)| i).to_vec()).prop_map(Attribute::Intrinsic),
        3 => (scope, name).prop_map(|(scope, name)| Attribute::Attr { scope, name }),
    ]
}

fn number() -> impl Strategy<Value = Static> {
    prop_oneof![
        any::<i64>().prop_map(Static::Int),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Static::Float),
        (i64::MIN + 1..=i64::MAX).prop_map(Static::Duration),
        (0i64..100_000).prop_map(|s| Static::Duration(s * 1_000_000)),
    ]
}

fn constant() -> impl Strategy<Value = Static> {
    prop_oneof![
        Just(Static::Nil),
        any::<bool>().prop_map(Static::Bool),
        number(),
        any::<String>().prop_map(Static::Str),
        prop::sample::select(vec![Status::Error, Status::Ok, Status::Unset]).prop_map(Static::Status),
        prop::sample::select(vec![
            Kind::Unspecified,
            Kind::Internal,
            Kind::Server,
            Kind::Client,
            Kind::Producer,
            Kind::Consumer
        ])
        .prop_map(Static::Kind),
    ]
}

fn field() -> impl Strategy<Value = FieldExpr> {
    let span = Span::default();
    let leaf = prop_oneof![
        constant().prop_map(move |value| FieldExpr::Static { value, span }),
        attribute().prop_map(move |attr| FieldExpr::Attr { attr, span }),
    ];
    leaf.prop_recursive(4, 24, 2, move |inner| {
        let op = prop::sample::select(vec![
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
            BinOp::Mod,
            BinOp::Pow,
            BinOp::Eq,
            BinOp::Ne,
            BinOp::Lt,
            BinOp::Le,
            BinOp::Gt,
            BinOp::Ge,
            BinOp::Regex,
            BinOp::NotRegex,
            BinOp::And,
            BinOp::Or,
        ]);
        let unary = prop::sample::select(vec![UnaryOp::Neg, UnaryOp::Not]);
        prop_oneof![
            (unary, inner.clone(), attribute()).prop_map(move |(op, expr, attr)| {
                let expr = if is_static(&expr) { FieldExpr::Attr { attr, span } } else { expr };
                FieldExpr::Unary { op, expr: Box::new(expr), span }
            }),
            (op, inner.clone(), inner, attribute()).prop_map(move |(op, lhs, rhs, attr)| {
                let rhs = if is_static(&lhs) && is_static(&rhs) { FieldExpr::Attr { attr, span } } else { rhs };
                FieldExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span }
            }),
        ]
    })
}

fn is_static(e: &FieldExpr) -> bool {
    matches!(e, FieldExpr::Static { .. })
}

fn spanset_op() -> impl Strategy<Value = SpansetOp> {
    use SpansetOp::*;
    prop::sample::select(vec![
        And,
        Or,
        Child,
        Parent,
        Descendant,
        Ancestor,
        Sibling,
        NotChild,
        NotParent,
        NotDescendant,
        NotAncestor,
        NotSibling,
        UnionChild,
        UnionParent,
        UnionDescendant,
        UnionAncestor,
        UnionSibling,
    ])
}

fn filter() -> impl Strategy<Value = SpansetExpr> {
    field().prop_map(|expr| SpansetExpr::Filter { expr, span: Span::default() })
}

fn spans() -> impl Strategy<Value = SpansetExpr> {
    filter().prop_recursive(3, 8, 2, |inner| {
        (spanset_op(), inner.clone(), inner).prop_map(|(op, lhs, rhs)| SpansetExpr::Op {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            span: Span::default(),
        })
    })
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge])
}

fn scalar() -> impl Strategy<Value = ScalarExpr> {
    let span = Span::default();
    let func = prop::sample::select(vec![AggFunc::Count, AggFunc::Avg, AggFunc::Min, AggFunc::Max, AggFunc::Sum]);
    let leaf = prop_oneof![
        (func, field()).prop_map(move |(func, arg)| ScalarExpr::Aggregate {
            func,
            arg: (func != AggFunc::Count).then_some(arg),
            span
        }),
        number().prop_map(move |value| ScalarExpr::Static { value, span }),
    ];
    leaf.prop_recursive(2, 6, 2, move |inner| {
        let op = prop::sample::select(vec![BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div, BinOp::Mod, BinOp::Pow]);
        (op, inner.clone(), inner).prop_map(move |(op, lhs, rhs)| {
            let rhs = if matches!((&lhs, &rhs), (ScalarExpr::Static { .. }, ScalarExpr::Static { .. })) {
                ScalarExpr::Aggregate { func: AggFunc::Count, arg: None, span }
            } else {
                rhs
            };
            ScalarExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span }
        })
    })
}

fn has_aggregate(e: &ScalarExpr) -> bool {
    match e {
        ScalarExpr::Aggregate { .. } => true,
        ScalarExpr::Static { .. } => false,
        ScalarExpr::Binary { lhs, rhs, .. } => has_aggregate(lhs) || has_aggregate(rhs),
    }
}

fn stage() -> impl Strategy<Value = Stage> {
    let span = Span::default();
    prop_oneof![
        spans().prop_map(Stage::Spanset),
        (cmp_op(), scalar(), scalar()).prop_map(move |(op, lhs, rhs)| {
            // Outside { } a comparison needs an aggregate to be a scalar filter.
            let lhs = if has_aggregate(&lhs) || has_aggregate(&rhs) {
                lhs
            } else {
                ScalarExpr::Aggregate { func: AggFunc::Count, arg: None, span }
            };
            Stage::ScalarFilter { op, lhs, rhs, span }
        }),
        field().prop_map(move |expr| Stage::By { expr, span }),
        Just(Stage::Coalesce { span }),
        prop::collection::vec(attribute(), 1..4).prop_map(move |attrs| Stage::Select { attrs, span }),
    ]
}

fn pipeline() -> impl Strategy<Value = Pipeline> {
    (spans(), prop::collection::vec(stage(), 0..3)).prop_map(|(first, rest)| {
        let mut stages = vec![Stage::Spanset(first)];
        stages.extend(rest);
        Pipeline { stages }
    })
}

/// A pipeline of one spanset expression: between pipelines it reads back as a spanset operand.
fn is_plain(q: &SpansetQuery) -> bool {
    matches!(q, SpansetQuery::Pipeline(p) if p.stages.len() == 1)
}

fn spanset_query() -> impl Strategy<Value = SpansetQuery> {
    pipeline().prop_map(SpansetQuery::Pipeline).prop_recursive(2, 6, 2, |inner| {
        (spanset_op(), inner.clone(), inner).prop_map(|(op, lhs, mut rhs)| {
            if is_plain(&lhs) && is_plain(&rhs) {
                // Else it reads back as one spanset expression.
                if let SpansetQuery::Pipeline(p) = &mut rhs {
                    p.stages.push(Stage::Coalesce { span: Span::default() });
                }
            }
            SpansetQuery::Op { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span: Span::default() }
        })
    })
}

fn metrics_fn() -> impl Strategy<Value = MetricsFn> {
    let quantiles = prop::collection::vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), 1..4);
    let window = prop::option::of((any::<i64>(), prop::option::of((any::<i64>(), any::<i64>()))));
    prop_oneof![
        Just(MetricsFn::Rate),
        Just(MetricsFn::CountOverTime),
        attribute().prop_map(MetricsFn::MinOverTime),
        attribute().prop_map(MetricsFn::MaxOverTime),
        attribute().prop_map(MetricsFn::SumOverTime),
        attribute().prop_map(MetricsFn::AvgOverTime),
        attribute().prop_map(MetricsFn::HistogramOverTime),
        (attribute(), quantiles).prop_map(|(a, q)| MetricsFn::QuantileOverTime(a, q)),
        (filter(), window).prop_map(|(filter, window)| MetricsFn::Compare {
            filter,
            top: window.map(|(top, _)| top),
            start: window.and_then(|(_, range)| range).map(|(start, _)| start),
            end: window.and_then(|(_, range)| range).map(|(_, end)| end),
        }),
    ]
}

fn second_stage() -> impl Strategy<Value = SecondStage> {
    prop_oneof![
        any::<i64>().prop_map(SecondStage::TopK),
        any::<i64>().prop_map(SecondStage::BottomK),
        (cmp_op(), number()).prop_map(|(op, value)| SecondStage::Filter(op, value)),
    ]
}

fn metrics_query() -> impl Strategy<Value = MetricsExpr> {
    (
        spanset_query(),
        metrics_fn(),
        prop::collection::vec(attribute(), 0..3),
        prop::collection::vec(second_stage(), 0..3),
    )
        .prop_map(|(spans, func, by, second)| {
            MetricsExpr::Query(Box::new(MetricsQuery { spans, func, by, second, span: Span::default() }))
        })
}

fn metrics() -> impl Strategy<Value = MetricsExpr> {
    let span = Span::default();
    let scalar = prop_oneof![
        any::<i64>().prop_map(Static::Int),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Static::Float)
    ]
    .prop_map(move |value| MetricsExpr::Scalar { value, span });
    let leaf = prop_oneof![3 => metrics_query(), 1 => scalar];
    leaf.prop_recursive(2, 4, 2, move |inner| {
        let op = prop::sample::select(vec![BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div]);
        let stages = prop::collection::vec(second_stage(), 0..3);
        (op, inner.clone(), inner, metrics_query(), stages).prop_map(move |(op, lhs, rhs, query, second)| {
            let scalar = |m: &MetricsExpr| matches!(m, MetricsExpr::Scalar { .. });
            let rhs = if scalar(&lhs) && scalar(&rhs) { query } else { rhs };
            let expr = MetricsExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), span };
            if second.is_empty() { expr } else { MetricsExpr::Staged { expr: Box::new(expr), second, span } }
        })
    })
    .prop_filter_map("a lone number is no query", |m| match m {
        MetricsExpr::Scalar { .. } => None,
        m => Some(m),
    })
}

fn hint() -> impl Strategy<Value = Hint> {
    let name =
        "[a-z_]{1,12}".prop_filter("intrinsics lex as attributes", |n| !Intrinsic::ALL.iter().any(|(_, s)| s == n));
    (name, constant()).prop_map(|(name, value)| Hint { name, value, span: Span::default() })
}

fn query() -> impl Strategy<Value = Query> {
    let root = prop_oneof![spanset_query().prop_map(Root::Spans), metrics().prop_map(Root::Metrics)];
    (root, prop::collection::vec(hint(), 0..3)).prop_map(|(root, hints)| Query { root, hints })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(q in query()) {
        let printed = q.to_string();
        prop_assert_eq!(parse_unchecked(&printed), Ok(q), "printed as {}", printed);
    }

    #[test]
    fn by_labels_round_trip(expr in field()) {
        // The engine keys groups by the printed `by()` expression.
        let stage = Stage::By { expr, span: Span::default() };
        let printed = format!("{{}} | {stage}");
        let parsed = parse_unchecked(&printed).unwrap();
        let Root::Spans(SpansetQuery::Pipeline(p)) = parsed.root else { panic!("{printed}") };
        prop_assert_eq!(&p.stages[1], &stage);
        prop_assert_eq!(p.stages[1].to_string(), stage.to_string());
    }
}
