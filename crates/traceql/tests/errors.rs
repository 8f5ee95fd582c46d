//! Error messages and positions: what a client sees when a query is refused.

use spoor_traceql::{Error, parse};

#[test]
fn messages() {
    let lines: Vec<&str> =
        include_str!("errors.txt").lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(lines.len() % 2, 0, "errors.txt holds query/message pairs");
    let mut wrong = Vec::new();
    for pair in lines.chunks(2) {
        let (query, expected) = (pair[0], pair[1]);
        match parse(query) {
            Ok(q) => wrong.push(format!("{query}\n  accepted as {q}")),
            Err(e) if e.to_string() != expected => {
                wrong.push(format!("{query}\n  expected {expected}\n  got      {e}"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn empty_queries() {
    for query in ["", "  \n ", "// nothing"] {
        let e = parse(query).unwrap_err();
        assert!(e.message().starts_with("syntax error: unexpected end of query, expecting '{'"), "{e}");
    }
}

#[test]
fn positions_are_lines_and_characters() {
    let e = parse("{ .a = 1 &&\n  durationn > 1s }").unwrap_err();
    assert_eq!((e.line(), e.col()), (2, 3));
    assert_eq!(e.to_string(), "parse error at line 2, col 3: unknown intrinsic 'durationn', did you mean 'duration'?");
    assert_eq!((e.span().start, e.span().end), (14, 23));

    // Columns count characters, spans count bytes.
    let e = parse("{ .é = \"ü\" } | foo").unwrap_err();
    assert_eq!((e.line(), e.col()), (1, 16));
    assert_eq!(e.span().start, 17);
}

#[test]
fn validation_errors_carry_their_position_too() {
    let e = parse("{ .a = 1 } && { name = 1 }").unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }));
    assert_eq!(e.to_string(), "binary operations must operate on the same type: name = 1");
    assert_eq!((e.line(), e.col()), (1, 17));
    assert_eq!(e.message(), e.to_string());

    let e = parse("{}\n| count() + 1 > 2").unwrap_err();
    assert_eq!((e.line(), e.col()), (2, 3));
}

#[test]
fn unchecked_parsing_skips_validation_only() {
    assert!(spoor_traceql::parse_unchecked("{ name = 1 }").is_ok());
    assert!(matches!(spoor_traceql::parse_unchecked("{ name = }"), Err(Error::Parse { .. })));
}
