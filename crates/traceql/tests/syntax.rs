//! Precedence (§2.3), lexing (§2.1) and the shapes of §2.2, through the public API.

use spoor_traceql::ast::*;
use spoor_traceql::{parse, parse_unchecked};

/// Both parse (unchecked: some are type errors on purpose) to the same tree.
fn same(a: &str, b: &str) {
    let pa = parse_unchecked(a).unwrap_or_else(|e| panic!("{a}: {e}"));
    let pb = parse_unchecked(b).unwrap_or_else(|e| panic!("{b}: {e}"));
    assert_eq!(pa, pb, "{a}  vs  {b}");
}

fn differ(a: &str, b: &str) {
    assert_ne!(parse_unchecked(a).unwrap(), parse_unchecked(b).unwrap(), "{a}  vs  {b}");
}

/// The expression inside the first `{ }` of a query.
fn filter(query: &str) -> FieldExpr {
    match parse_unchecked(query).unwrap_or_else(|e| panic!("{query}: {e}")).root {
        Root::Spans(SpansetQuery::Pipeline(p)) => match &p.stages[0] {
            Stage::Spanset(SpansetExpr::Filter { expr, .. }) => expr.clone(),
            other => panic!("{query}: {other:?}"),
        },
        other => panic!("{query}: {other:?}"),
    }
}

/// The value of constant `text`, read as `{ .x = (text) }`.
fn value(text: &str) -> Static {
    match filter(&format!("{{ .x = ({text}) }}")) {
        FieldExpr::Binary { rhs, .. } => match *rhs {
            FieldExpr::Static { value, .. } => value,
            other => panic!("{text}: {other:?}"),
        },
        other => panic!("{text}: {other:?}"),
    }
}

fn attribute(text: &str) -> Attribute {
    match filter(&format!("{{ {text} }}")) {
        FieldExpr::Attr { attr, .. } => attr,
        other => panic!("{text}: {other:?}"),
    }
}

fn attr(scope: Scope, name: &str) -> Attribute {
    Attribute::Attr { scope, name: name.to_string() }
}

// ---- precedence: every consequence listed in §2.3, and the table around them ----

#[test]
fn and_and_or_have_equal_precedence_left_to_right() {
    same("{ .a = 1 || .b = 2 && .c = 3 }", "{ (.a = 1 || .b = 2) && .c = 3 }");
    same("{ .a = 1 && .b = 2 || .c = 3 }", "{ (.a = 1 && .b = 2) || .c = 3 }");
    differ("{ .a = 1 || .b = 2 && .c = 3 }", "{ .a = 1 || (.b = 2 && .c = 3) }");
    same("{ name=\"render\" || name=\"parse\" && status=ok }", "{ (name=\"render\" || name=\"parse\") && status=ok }");
    // The same between spansets.
    same("{ .a } || { .b } && { .c }", "({ .a } || { .b }) && { .c }");
    same("{ .a } && { .b } || { .c }", "({ .a } && { .b }) || { .c }");
}

#[test]
fn structural_operators_bind_tighter_than_and_or() {
    same("{ .a } && { .b } >> { .c }", "{ .a } && ({ .b } >> { .c })");
    same("{ .a } >> { .b } || { .c }", "({ .a } >> { .b }) || { .c }");
    for op in [">", "<", ">>", "<<", "~", "!>", "!<", "!>>", "!<<", "!~", "&>", "&<", "&>>", "&<<", "&~"] {
        same(&format!("{{ .a }} || {{ .b }} {op} {{ .c }}"), &format!("{{ .a }} || ({{ .b }} {op} {{ .c }})"));
    }
}

#[test]
fn structural_operators_are_left_associative_at_one_level() {
    same("{ .a } >> { .b } >> { .c }", "({ .a } >> { .b }) >> { .c }");
    differ("{ .a } >> { .b } >> { .c }", "{ .a } >> ({ .b } >> { .c })");
    same("{ .a } > { .b } < { .c }", "({ .a } > { .b }) < { .c }");
    same("{ .a } ~ { .b } !< { .c } &>> { .d }", "(({ .a } ~ { .b }) !< { .c }) &>> { .d }");
}

#[test]
fn pipe_binds_loosest() {
    same("{ .a } && { .b } | count() > 1", "({ .a } && { .b }) | count() > 1");
    same("{ .a } | { .b } >> { .c }", "{ .a } | ({ .b } >> { .c })");
    same("{ .a } | count() + 1 > 2", "{ .a } | (count() + 1) > 2");
}

#[test]
fn arithmetic_binds_tighter_than_comparison() {
    same("{ .a + 2 * 3 = 7 }", "{ .a + 6 = 7 }");
    same("{ .a + .b * .c = 7 }", "{ .a + (.b * .c) = 7 }");
    same("{ .a * .b + .c = 7 }", "{ (.a * .b) + .c = 7 }");
    same("{ .a - .b - .c = 7 }", "{ (.a - .b) - .c = 7 }");
    same("{ .a / .b % .c = 7 }", "{ (.a / .b) % .c = 7 }");
    same("{ .a = .b + 1 && .c }", "{ (.a = (.b + 1)) && .c }");
    same("{ .a < .b = true }", "{ (.a < .b) = true }");
}

#[test]
fn power_is_right_associative_and_above_multiplication() {
    same("{ .a ^ .b ^ .c = 1 }", "{ .a ^ (.b ^ .c) = 1 }");
    differ("{ .a ^ .b ^ .c = 1 }", "{ (.a ^ .b) ^ .c = 1 }");
    same("{ .a * .b ^ .c = 1 }", "{ .a * (.b ^ .c) = 1 }");
}

#[test]
fn not_sits_between_additive_and_multiplicative() {
    same("{ !.a = 1 }", "{ (!.a) = 1 }");
    same("{ !.a + .b = 1 }", "{ (!.a) + .b = 1 }");
    same("{ !.a * .b = 1 }", "{ !(.a * .b) = 1 }");
    same("{ !.a ^ .b = 1 }", "{ !(.a ^ .b) = 1 }");
    same("{ .a * !.b * .c = 1 }", "{ .a * !(.b * .c) = 1 }");
    same("{ !.a && .b }", "{ (!.a) && .b }");
    let FieldExpr::Binary { op: BinOp::Eq, lhs, .. } = filter("{ !.a = 1 }") else { panic!() };
    assert!(matches!(*lhs, FieldExpr::Unary { op: UnaryOp::Not, .. }));
}

#[test]
fn negation_binds_tightest() {
    same("{ -.a ^ 2 = 1 }", "{ (-.a) ^ 2 = 1 }");
    same("{ -.a * .b = 1 }", "{ (-.a) * .b = 1 }");
    same("{ .a - -.b = 1 }", "{ .a - (-.b) = 1 }");
    assert_eq!(value("-2 ^ 2"), Static::Int(4));
}

#[test]
fn constants_fold() {
    same("{ 1 = 1 }", "{ true }");
    same("{ 1 = 1 }", "{}");
    same("{ .a = 1 + 2 }", "{ .a = 3 }");
    assert_eq!(value("2 ^ 3"), Static::Int(8), "a^b is a to the power b (quirk Q2 fixed)");
    assert_eq!(value("2 ^ 3 ^ 2"), Static::Int(512));
    assert_eq!(value("2 ^ -1"), Static::Int(0));
    assert_eq!(value("7 / 2"), Static::Int(3));
    assert_eq!(value("-7 % 3"), Static::Int(-1));
    assert_eq!(value("7.0 / 2"), Static::Float(3.5));
    assert_eq!(value("1 + 0.5"), Static::Float(1.5));
    assert_eq!(value("1s * 2"), Static::Duration(2_000_000_000));
    assert_eq!(value("1.5 * 1s"), Static::Duration(1_500_000_000));
    assert_eq!(value("1s - 1ms"), Static::Duration(999_000_000));
    assert_eq!(value("1s = 1000ms"), Static::Bool(true));
    assert_eq!(value("20ms = 20000000"), Static::Bool(true));
    assert_eq!(value("\"a\" < \"b\""), Static::Bool(true));
    assert_eq!(value("true && !false"), Static::Bool(true));
    assert_eq!(value("ok != error"), Static::Bool(true));
    assert_eq!(value("server = server"), Static::Bool(true));
    assert_eq!(value("minInt + maxInt"), Static::Int(-1));
    // Left as written: the checker or the engine decides.
    assert!(matches!(filter("{ \"a\" =~ \"a\" }"), FieldExpr::Binary { .. }));
    assert!(matches!(filter("{ nil = nil }"), FieldExpr::Binary { .. }));
    assert!(matches!(filter("{ 1 = \"a\" }"), FieldExpr::Binary { .. }));
}

// ---- shapes (§2.2) ----

#[test]
fn a_query_may_start_with_another_stage() {
    same("count() > 10", "{ } | count() > 10");
    same("avg(duration) > 20ms", "{} | avg(duration) > 20ms");
    same("by(.a) | count() > 1", "{ true } | by(.a) | count() > 1");
    same("select(.a)", "{} | select(.a)");
    let Root::Spans(SpansetQuery::Pipeline(p)) = parse("count() > 10").unwrap().root else { panic!() };
    assert_eq!(p.stages.len(), 2);
    assert!(matches!(
        &p.stages[0],
        Stage::Spanset(SpansetExpr::Filter { expr: FieldExpr::Static { value: Static::Bool(true), .. }, .. })
    ));
}

#[test]
fn pipelines_combine_when_parenthesised() {
    let q = parse("({ .a = 1 } | count() > 1) && ({ .b = 2 })").unwrap();
    let Root::Spans(SpansetQuery::Op { op: SpansetOp::And, lhs, rhs, .. }) = q.root else { panic!("{q:?}") };
    assert!(matches!(*lhs, SpansetQuery::Pipeline(ref p) if p.stages.len() == 2));
    assert!(matches!(*rhs, SpansetQuery::Pipeline(ref p) if p.stages.len() == 1));
    // Parenthesised spanset expressions stay spanset expressions.
    same("({ .a }) && ({ .b })", "{ .a } && { .b }");
    same("({ .a }) && ({ .b }) && ({ .c } | count() > 1)", "({ .a } && { .b }) && ({ .c } | count() > 1)");
}

#[test]
fn metrics_queries() {
    let q = parse("{ status = error } | rate() by(resource.service.name) > 10 | topk(5) with(exemplars=true)").unwrap();
    let Root::Metrics(MetricsExpr::Query(m)) = &q.root else { panic!("{q:?}") };
    assert_eq!(m.func, MetricsFn::Rate);
    assert_eq!(m.by, [attr(Scope::Resource, "service.name")]);
    assert_eq!(m.second, [SecondStage::Filter(CmpOp::Gt, Static::Int(10)), SecondStage::TopK(5)]);
    assert_eq!(q.hints, [Hint { name: "exemplars".into(), value: Static::Bool(true), span: Span::default() }]);

    let q = parse("{} | quantile_over_time(duration, .5, 0.99, 1)").unwrap();
    let Root::Metrics(MetricsExpr::Query(m)) = &q.root else { panic!() };
    assert_eq!(m.func, MetricsFn::QuantileOverTime(Attribute::Intrinsic(Intrinsic::Duration), vec![0.5, 0.99, 1.0]));

    let q = parse("{} | compare({ status = error }, 10, 1, 2)").unwrap();
    let Root::Metrics(MetricsExpr::Query(m)) = &q.root else { panic!() };
    assert!(matches!(m.func, MetricsFn::Compare { top: Some(10), start: Some(1), end: Some(2), .. }));

    same("({} | rate()) + 1", "(({} | rate())) + (1)");
    same("({} | rate()) > 200ms", "{} | rate() > 200ms");
    same("({} | rate()) | topk(3)", "{} | rate() | topk(3)");
    same("({} | rate()) + ({} | rate()) * 2", "({} | rate()) + (({} | rate()) * 2)");
    same("({} | rate()) * (1 + 2)", "({} | rate()) * 3");
    let Root::Metrics(MetricsExpr::Binary { op: BinOp::Div, .. }) =
        parse("({ status = error } | count_over_time()) / ({ } | count_over_time())").unwrap().root
    else {
        panic!()
    };
}

// ---- lexing (§2.1) ----

#[test]
fn durations() {
    let ms = 1_000_000;
    let s = 1_000_000_000;
    let cases = [
        ("1ns", 1),
        ("1us", 1_000),
        ("1µs", 1_000),
        ("1μs", 1_000),
        ("1ms", ms),
        ("1s", s),
        ("1m", 60 * s),
        ("1h", 3_600 * s),
        ("1d", 86_400 * s),
        ("1w", 7 * 86_400 * s),
        ("1y", 365 * 86_400 * s),
        ("1h30m", 5_400 * s),
        ("1d12h", 36 * 3_600 * s),
        ("1y2w3d4h5m6s7ms", (365 + 14 + 3) * 86_400 * s + 4 * 3_600 * s + 5 * 60 * s + 6 * s + 7 * ms),
        ("1.5s", 1_500 * ms),
        (".5s", 500 * ms),
        ("1.5h", 5_400 * s),
        ("2h45.5m", 2 * 3_600 * s + 2_730 * s),
        ("1m30s500ms", 90_500 * ms),
        ("300ms", 300 * ms),
        ("0s", 0),
        ("9223372036854775807ns", i64::MAX),
    ];
    for (text, ns) in cases {
        assert_eq!(value(text), Static::Duration(ns), "{text}");
    }
    assert_eq!(value("-1s"), Static::Duration(-s));
    assert_eq!(value("1h30m"), value("90m"));
}

#[test]
fn invalid_durations() {
    for text in ["1x", "1hm", "1.5d", "1h1d", "1d1ns", "300y", "9223372036854775808ns", "1e3s"] {
        assert!(parse(&format!("{{ duration > {text} }}")).is_err(), "{text}");
    }
}

#[test]
fn numbers() {
    assert_eq!(value("10"), Static::Int(10));
    assert_eq!(value("007"), Static::Int(7));
    assert_eq!(value("1.5"), Static::Float(1.5));
    assert_eq!(value(".5"), Static::Float(0.5));
    assert_eq!(value("1."), Static::Float(1.0));
    assert_eq!(value("1e3"), Static::Float(1000.0), "1e3 is a float");
    assert_eq!(value("1E-3"), Static::Float(0.001));
    assert_eq!(value("-1"), Static::Int(-1));
    assert_eq!(value("minInt"), Static::Int(i64::MIN));
    assert_eq!(value("maxInt"), Static::Int(i64::MAX));
    assert_eq!(value("9223372036854775807"), Static::Int(i64::MAX));
    for text in ["0x10", "0b1", "1_000", "9223372036854775808", "1e999", "1a"] {
        assert!(parse(&format!("{{ .x = {text} }}")).is_err(), "{text}");
    }
}

#[test]
fn string_escapes() {
    let cases = [
        (r#""plain""#, "plain"),
        (r#""\a\b\f\n\r\t\v""#, "\x07\x08\x0c\n\r\t\x0b"),
        (r#""\\ \"""#, "\\ \""),
        (r#""\x41\101\u00e9\U0001F600""#, "AAé😀"),
        (r#""\xc3\xa9""#, "é"),
        (r#""é""#, "é"),
        (r#""""#, ""),
        ("`raw \\n \" '`", "raw \\n \" '"),
        ("`multi\nline`", "multi\nline"),
    ];
    for (text, s) in cases {
        assert_eq!(value(text), Static::Str(s.to_string()), "{text}");
    }
    for text in [r#""\/""#, r#""\'""#, r#""\x4""#, r#""\u00""#, r#""\ud800""#, r#""\400""#, r#""\xff""#, r#""\q""#] {
        assert!(parse(&format!("{{ .x = {text} }}")).is_err(), "{text}");
    }
}

#[test]
fn attribute_names() {
    assert_eq!(attribute(".foo"), attr(Scope::Unscoped, "foo"));
    assert_eq!(
        attribute(".service.name"),
        attr(Scope::Unscoped, "service.name"),
        "only the first segment can be a scope"
    );
    assert_eq!(attribute("span.foo"), attr(Scope::Span, "foo"));
    assert_eq!(attribute("resource.service.name"), attr(Scope::Resource, "service.name"));
    assert_eq!(attribute("event.exception.type"), attr(Scope::Event, "exception.type"));
    assert_eq!(attribute("link.opentracing.ref_type"), attr(Scope::Link, "opentracing.ref_type"));
    assert_eq!(attribute("instrumentation.x"), attr(Scope::Instrumentation, "x"));
    assert_eq!(attribute("parent.x"), attr(Scope::Parent, "x"));
    assert_eq!(attribute("span.span.x"), attr(Scope::Span, "span.x"));
    assert_eq!(attribute("span.foo.bar-baz/qux:1+2*3%4"), attr(Scope::Span, "foo.bar-baz/qux:1+2*3%4"));
    assert_eq!(attribute("span.a//b/*c*/"), attr(Scope::Span, "a//b/*c*/"), "no comments inside names");
    assert_eq!(attribute("span.attribute.\"name with space\""), attr(Scope::Span, "attribute.name with space"));
    assert_eq!(attribute("resource.\"k8s.namespace.name\""), attr(Scope::Resource, "k8s.namespace.name"));
    assert_eq!(attribute("span.\"a\".\"b\"c"), attr(Scope::Span, "a.bc"));
    assert_eq!(attribute(r#"."a\"b\\c{}=""#), attr(Scope::Unscoped, "a\"b\\c{}="));
    assert_eq!(attribute(".\"\""), attr(Scope::Unscoped, ""));
    assert_eq!(attribute(".é"), attr(Scope::Unscoped, "é"));
    // Terminators end a name, so `span.a+1 = 2` compares attribute `a+1`.
    same("{ span.a+1 = 2 }", "{ span.\"a+1\" = 2 }");
    same("{ span.a=2 }", "{ span.a = 2 }");
    same("{ span.a!=2&&.b}", "{ span.a != 2 && .b }");
    for bad in [r#"span."a\n""#, r#"span."unterminated"#, "span.", ". = 1"] {
        assert!(parse(&format!("{{ {bad} }}")).is_err(), "{bad}");
    }
}

#[test]
fn intrinsics() {
    use Intrinsic::*;
    let spellings = [
        ("duration", Duration),
        ("span:duration", Duration),
        ("name", Name),
        ("span:name", Name),
        ("status", Status),
        ("span:status", Status),
        ("statusMessage", StatusMessage),
        ("span:statusMessage", StatusMessage),
        ("kind", Kind),
        ("span:kind", Kind),
        ("span:id", SpanId),
        ("span:parentID", ParentId),
        ("span:childCount", ChildCount),
        ("trace:id", TraceId),
        ("traceDuration", TraceDuration),
        ("trace:duration", TraceDuration),
        ("rootName", TraceRootName),
        ("trace:rootName", TraceRootName),
        ("rootServiceName", TraceRootService),
        ("trace:rootService", TraceRootService),
        ("event:name", EventName),
        ("event:timeSinceStart", EventTimeSinceStart),
        ("link:traceID", LinkTraceId),
        ("link:spanID", LinkSpanId),
        ("instrumentation:name", InstrumentationName),
        ("instrumentation:version", InstrumentationVersion),
        ("nestedSetLeft", NestedSetLeft),
        ("nestedSetRight", NestedSetRight),
        ("nestedSetParent", NestedSetParent),
        ("parent", Parent),
    ];
    for (text, i) in spellings {
        assert_eq!(attribute(text), Attribute::Intrinsic(i), "{text}");
    }
    for (i, canonical) in Intrinsic::ALL {
        assert_eq!(attribute(canonical), Attribute::Intrinsic(i));
        assert_eq!(Attribute::Intrinsic(i).to_string(), canonical);
    }
    for bad in ["trace:status", "span:rootName", "trace:rootServiceName", "Duration", "span:Duration", "attribute"] {
        assert!(parse_unchecked(&format!("{{ {bad} = 1 }}")).is_err(), "{bad}");
    }
}

#[test]
fn keywords_are_case_sensitive() {
    for bad in
        ["{ .a = TRUE }", "{ .a = Nil }", "{ Status = error }", "{ status = ERROR }", "COUNT() > 1", "{ } | Rate()"]
    {
        assert!(parse_unchecked(bad).is_err(), "{bad}");
    }
}

#[test]
fn comments_are_skipped() {
    same("{ /* a */ .a = 1 // b\n } // c", "{ .a = 1 }");
    same("{ .a = 1 }\n// { .b = 2 }", "{ .a = 1 }");
    same("{ .a = 4 / 2 }", "{ .a = 2 }");
    assert!(parse("{ .a = 4 // 2 }").is_err(), "`//` always starts a comment");
    assert!(parse("{ .a = 1 } /* unterminated").is_err());
}

#[test]
fn multi_character_operators_are_greedy() {
    same("{.a}!>>{.b}", "{ .a } !>> { .b }");
    same("{.a}&<<{.b}", "{ .a } &<< { .b }");
    same("{.a}>>{.b}", "{ .a } >> { .b }");
    same("{.a}&~{.b}", "{ .a } &~ { .b }");
    same("{.a}!~{.b}", "{ .a } !~ { .b }");
    same("{ .a!~\"x\" }", "{ .a !~ \"x\" }");
    same("{ .a>=-1 }", "{ .a >= -1 }");
    same("{ .a<=.b }", "{ .a <= .b }");
    assert!(parse("{} == 10").is_err());
    assert!(parse("{ .a & .b }").is_err());
}

#[test]
fn spans_locate_nodes() {
    let q = parse("{ .a = 1 } >> { name = \"x\" }").unwrap();
    let Root::Spans(SpansetQuery::Pipeline(p)) = &q.root else { panic!() };
    let Stage::Spanset(SpansetExpr::Op { lhs, rhs, span, .. }) = &p.stages[0] else { panic!() };
    assert_eq!((span.start, span.end), (0, 28));
    assert_eq!((lhs.span().start, lhs.span().end), (0, 10));
    assert_eq!((rhs.span().start, rhs.span().end), (14, 28));
}
