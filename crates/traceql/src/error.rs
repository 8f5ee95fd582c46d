//! The crate's one error type: what is wrong with a query, and where.

use crate::ast::Span;

/// A query that cannot be accepted. Positions are 1-based; `col` counts characters.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    /// The text is not TraceQL.
    #[error("parse error at line {line}, col {col}: {message}")]
    Parse { message: String, line: u32, col: u32, span: Span },
    /// TraceQL that parses but cannot run: type errors, unsupported features. Displayed without
    /// the position, as Tempo does.
    #[error("{message}")]
    Invalid { message: String, line: u32, col: u32, span: Span },
}

impl Error {
    pub(crate) fn parse(text: &str, span: Span, message: impl Into<String>) -> Error {
        let (line, col) = position(text, span.start);
        Error::Parse { message: message.into(), line, col, span }
    }

    pub(crate) fn invalid(text: &str, span: Span, message: impl Into<String>) -> Error {
        let (line, col) = position(text, span.start);
        Error::Invalid { message: message.into(), line, col, span }
    }

    /// What is wrong, without the position.
    pub fn message(&self) -> &str {
        match self {
            Error::Parse { message, .. } | Error::Invalid { message, .. } => message,
        }
    }

    /// The byte range of the offending text.
    pub fn span(&self) -> Span {
        match self {
            Error::Parse { span, .. } | Error::Invalid { span, .. } => *span,
        }
    }

    pub fn line(&self) -> u32 {
        match self {
            Error::Parse { line, .. } | Error::Invalid { line, .. } => *line,
        }
    }

    pub fn col(&self) -> u32 {
        match self {
            Error::Parse { col, .. } | Error::Invalid { col, .. } => *col,
        }
    }
}

/// 1-based line and character column of a byte offset.
fn position(text: &str, offset: u32) -> (u32, u32) {
    let before = text.get(..offset as usize).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line as u32, col as u32)
}

/// The candidate that `word` is most plausibly a typo of, for "did you mean" hints: the nearest
/// by edit distance (ignoring case), if it is near enough that the hint helps rather than puzzles.
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let len = word.chars().count();
    let tolerance = match len {
        0..=2 => 0,
        3..=5 => 1,
        _ => len / 3,
    };
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (distance(&word, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= tolerance)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: edits are insertions, deletions, substitutions and swaps of
/// adjacent characters (the commonest typo).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    rows[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters() {
        assert_eq!(position("{ .a = 1 }", 0), (1, 1));
        assert_eq!(position("{ .é = x }", 9), (1, 9));
        assert_eq!(position("{\n  foo }", 4), (2, 3));
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("durationn", ["duration", "name"]), Some("duration"));
        assert_eq!(closest("stauts", ["status", "kind"]), Some("status"));
        assert_eq!(closest("Duration", ["duration"]), Some("duration"));
        assert_eq!(closest("foo", ["duration", "ok"]), None);
        assert_eq!(closest("o", ["ok"]), None);
    }
}
