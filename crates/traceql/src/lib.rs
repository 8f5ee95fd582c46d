//! TraceQL, the language: text → checked syntax tree ([`parse`]) and back ([`ast::Query`]'s
//! `Display`). Evaluation lives in `spoor-query`. `docs/traceql.md` lists every decision taken
//! where Tempo's behaviour is a quirk.

pub mod ast;
mod check;
mod error;
mod lex;
mod parse;
mod print;

pub use error::Error;

/// Parse and validate a query. Errors carry the position and read like
/// `parse error at line 1, col 3: unknown intrinsic 'durationn', did you mean 'duration'?`.
pub fn parse(text: &str) -> Result<ast::Query, Error> {
    let query = parse::parse(text)?;
    check::check(&query, text)?;
    Ok(query)
}

/// Every attribute and intrinsic a query's text names, wherever it stands (filters, `by()`,
/// `select()`, anything later added to the grammar): found by lexing, so no part of the syntax
/// tree can be missed. For access checks before a query runs. Text that does not lex is an
/// error (it would not parse either).
pub fn referenced(text: &str) -> Result<Vec<ast::Attribute>, Error> {
    let mut out = Vec::new();
    for t in lex::lex(text) {
        match t.tok {
            lex::Tok::Attr(a) => out.push(a),
            lex::Tok::Error(e) => return Err(e),
            _ => {}
        }
    }
    Ok(out)
}

/// Parse without validation (the tag-values `q` filter is lenient, as Tempo's is).
pub fn parse_unchecked(text: &str) -> Result<ast::Query, Error> {
    parse::parse(text)
}
