//! No input makes the parser panic or overflow the stack, and whatever it accepts prints back
//! to the same tree. (The fuzz target in `fuzz/` checks the same, for longer.)

use proptest::prelude::*;
use spoor_traceql::{parse, parse_unchecked};

fn accepts_or_refuses(text: &str) {
    if let Ok(q) = parse_unchecked(text) {
        let printed = q.to_string();
        assert_eq!(parse_unchecked(&printed), Ok(q), "{text:?} printed as {printed:?}");
    }
    let _ = parse(text);
}

/// Fragments of TraceQL, glued together at random.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    ",",
    "|",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=~",
    "!~",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "!",
    "~",
    "&&",
    "||",
    ">>",
    "<<",
    "!>",
    "!<",
    "!>>",
    "!<<",
    "&>",
    "&<",
    "&>>",
    "&<<",
    "&~",
    "&",
    ":",
    ".",
    "'",
    "\"",
    "`",
    "//",
    "/*",
    "*/",
    "\n",
    " ",
    "true",
    "false",
    "nil",
    "ok",
    "error",
    "unset",
    "server",
    "client",
    "minInt",
    "maxInt",
    "count",
    "avg",
    "min",
    "max",
    "sum",
    "by",
    "coalesce",
    "select",
    "rate",
    "count_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
    "topk",
    "bottomk",
    "with",
    "duration",
    "name",
    "status",
    "kind",
    "parent",
    "span:id",
    "trace:duration",
    "span:",
    "trace:",
    ".a",
    "span.a",
    "resource.service.name",
    "parent.a",
    "span.\"a b\"",
    ".\"",
    "foo",
    "durationn",
    "0",
    "1",
    "-1",
    "2",
    "0.5",
    ".5",
    "1e3",
    "1e",
    "0x10",
    "9223372036854775807",
    "9223372036854775808",
    "1s",
    "1.5h",
    "1h30m",
    "1d",
    "300y",
    "1x",
    "\"s\"",
    "\"\\x\"",
    "\"\\u00e9\"",
    "`r`",
    "é",
];

fn soup(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(TOKENS), prop::bool::ANY), len).prop_map(|parts| {
        parts.into_iter().map(|(t, space)| if space { format!("{t} ") } else { t.to_string() }).collect()
    })
}

/// Valid queries with a few tokens inserted, so that more inputs get deep into the parser and
/// some are accepted.
fn near_miss() -> impl Strategy<Value = String> {
    let valid = prop::sample::select(vec![
        "{ .a = 1 && duration > 1s }",
        "{ .a } >> { .b } | count() > 1",
        "({} | count() > 1) && ({ .b })",
        "{} | rate() by(resource.service.name) > 1 | topk(5)",
        "({} | rate()) / ({} | count_over_time())",
        "{ status = error } | by(.a) | select(.b) with(most_recent=true)",
    ]);
    (valid, soup(1..4), 0usize..60).prop_map(|(valid, soup, at)| {
        let at = valid.char_indices().map(|(i, _)| i).nth(at).unwrap_or(valid.len());
        format!("{}{soup}{}", &valid[..at], &valid[at..])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn any_string(text in any::<String>()) {
        accepts_or_refuses(&text);
    }

    #[test]
    fn traceql_characters(text in "[{}()=!~<>&|^,.:\"`'a-z0-9 *+/%\\\\\n-]{0,60}") {
        accepts_or_refuses(&text);
    }

    #[test]
    fn token_soup(text in soup(0..40)) {
        accepts_or_refuses(&text);
    }

    #[test]
    fn near_misses(text in near_miss()) {
        accepts_or_refuses(&text);
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let n = 100_000;
    let cases = [
        "(".repeat(n),
        format!("{}{{}}{}", "(".repeat(n), ")".repeat(n)),
        format!("{{ {}.a{} }}", "(".repeat(n), ")".repeat(n)),
        format!("{{ {}.a }}", "!".repeat(n)),
        format!("{{ .a = {}1 }}", "-".repeat(n)),
        format!("{{ {}.a }}", "-".repeat(n)),
        format!("count() > {}1", "-".repeat(n)),
        format!("{{ .a{} }}", " || .a".repeat(n)),
        format!("{{ .a{} = 1 }}", " ^ .a".repeat(n)),
        format!("{{}}{}", " && {}".repeat(n)),
        format!("{{}}{}", " >> {}".repeat(n)),
        format!("({{}} | rate()){}", " + 1".repeat(n)),
        format!("count(){} > 1", " + count()".repeat(n)),
        format!("{{ .a = {}1 }}", "1 + ".repeat(n)),
    ];
    for text in cases {
        let e = parse(&text).unwrap_err();
        assert!(e.message().contains("nested") || e.message().contains("parentheses"), "{}: {e}", &text[..40]);
    }
}

#[test]
fn long_flat_queries_are_fine() {
    // A pipeline is a list, not a nesting.
    let stages = format!("{{}}{}", " | { .a }".repeat(10_000));
    assert!(parse(&stages).is_ok());
    // Chains up to the depth limit parse, print and re-parse.
    let chain = format!("{{ .a = 0{} }}", (1..200).map(|i| format!(" || .a = {i}")).collect::<String>());
    let q = parse(&chain).unwrap();
    assert_eq!(parse(&q.to_string()), Ok(q));
}

#[test]
fn huge_numbers_are_errors() {
    for text in ["{ .a = 99999999999999999999999 }", "{ .a = 1e400 }", "{ .a = 999999999999h }", "{ .a = maxInt * 2 }"]
    {
        assert!(parse(text).is_err(), "{text}");
    }
}
