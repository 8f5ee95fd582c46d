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

/// Parse without validation (the tag-values `q` filter is lenient, as Tempo's is).
pub fn parse_unchecked(text: &str) -> Result<ast::Query, Error> {
    parse::parse(text)
}
