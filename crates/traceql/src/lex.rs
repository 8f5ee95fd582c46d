//! Text → tokens with byte spans (§2.1). Lexing is context-free: an attribute name, a duration and
//! a greedy operator are recognised by their characters alone.

use crate::ast::{Attribute, Intrinsic, Scope, Span};
use crate::error::{Error, closest};

#[derive(Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub(crate) enum Tok {
    /// Operators and punctuation, as written.
    Sym(&'static str),
    /// Reserved words, as written.
    Keyword(&'static str),
    /// Any other bare word: a hint name, or an error the parser explains.
    Ident(String),
    /// `.x`, `span.x`, ... and intrinsics in legacy or scoped spelling.
    Attr(Attribute),
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Eof,
    /// Lexing stops at the first error; the parser reports it when it gets there, so an earlier
    /// syntax error still wins, as it would with an on-demand lexer.
    Error(Error),
}

/// Longest first, so that matching is greedy.
const SYMBOLS: [&str; 35] = [
    "!>>", "!<<", "&>>", "&<<", "!=", "=~", "!~", ">=", "<=", "&&", "||", ">>", "<<", "!>", "!<", "&>", "&<", "&~",
    "{", "}", "(", ")", ",", "=", ">", "<", "+", "-", "*", "/", "%", "^", "!", "|", "~",
];

pub(crate) const KEYWORDS: [&str; 34] = [
    "true",
    "false",
    "nil",
    "ok",
    "error",
    "unset",
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
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
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
    "topk",
    "bottomk",
    "with",
];

const ATTRIBUTE_SCOPES: [(&str, Scope); 6] = [
    ("span", Scope::Span),
    ("resource", Scope::Resource),
    ("event", Scope::Event),
    ("link", Scope::Link),
    ("instrumentation", Scope::Instrumentation),
    ("parent", Scope::Parent),
];

const INTRINSIC_SCOPES: [&str; 5] = ["trace", "span", "event", "link", "instrumentation"];

/// Every accepted spelling of every intrinsic: legacy unscoped names, then scoped ones.
pub(crate) const INTRINSICS: [(&str, Intrinsic); 30] = [
    ("duration", Intrinsic::Duration),
    ("name", Intrinsic::Name),
    ("status", Intrinsic::Status),
    ("statusMessage", Intrinsic::StatusMessage),
    ("kind", Intrinsic::Kind),
    ("rootName", Intrinsic::TraceRootName),
    ("rootServiceName", Intrinsic::TraceRootService),
    ("traceDuration", Intrinsic::TraceDuration),
    ("nestedSetLeft", Intrinsic::NestedSetLeft),
    ("nestedSetRight", Intrinsic::NestedSetRight),
    ("nestedSetParent", Intrinsic::NestedSetParent),
    ("parent", Intrinsic::Parent),
    ("trace:duration", Intrinsic::TraceDuration),
    ("trace:rootName", Intrinsic::TraceRootName),
    ("trace:rootService", Intrinsic::TraceRootService),
    ("trace:id", Intrinsic::TraceId),
    ("span:duration", Intrinsic::Duration),
    ("span:name", Intrinsic::Name),
    ("span:kind", Intrinsic::Kind),
    ("span:status", Intrinsic::Status),
    ("span:statusMessage", Intrinsic::StatusMessage),
    ("span:id", Intrinsic::SpanId),
    ("span:parentID", Intrinsic::ParentId),
    ("span:childCount", Intrinsic::ChildCount),
    ("event:name", Intrinsic::EventName),
    ("event:timeSinceStart", Intrinsic::EventTimeSinceStart),
    ("link:traceID", Intrinsic::LinkTraceId),
    ("link:spanID", Intrinsic::LinkSpanId),
    ("instrumentation:name", Intrinsic::InstrumentationName),
    ("instrumentation:version", Intrinsic::InstrumentationVersion),
];

/// The whole query as tokens, ending with `Eof` or, at the first lexical error, `Error`.
pub(crate) fn lex(text: &str) -> Vec<Token> {
    let mut lexer = Lexer { text, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        match lexer.token() {
            Ok(token) => {
                let end = matches!(token.tok, Tok::Eof);
                tokens.push(token);
                if end {
                    return tokens;
                }
            }
            Err(e) => {
                tokens.push(Token { span: e.span(), tok: Tok::Error(e) });
                return tokens;
            }
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

/// Characters that end an unquoted attribute name (besides whitespace). Everything else,
/// including `.`, `-`, `/`, `:`, `+`, `*` and `%`, belongs to the name.
const NAME_TERMINATORS: &str = "{}()=~!<>&|^,";

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_while(&mut self, f: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&f) {
            self.bump();
        }
    }

    fn error(&self, start: usize, message: impl Into<String>) -> Error {
        Error::parse(self.text, Span::new(start, self.pos.max(start)), message)
    }

    fn token(&mut self) -> Result<Token, Error> {
        self.skip_space()?;
        let start = self.pos;
        let tok = match self.peek() {
            None => Tok::Eof,
            Some('"') => Tok::Str(self.string()?),
            Some('`') => Tok::Str(self.raw_string()?),
            Some('\'') => {
                self.bump();
                return Err(self.error(start, "single quotes do not delimit strings; use \"...\" or `...`"));
            }
            Some('0'..='9') => self.number()?,
            Some('.') if self.rest()[1..].starts_with(|c: char| c.is_ascii_digit()) => self.number()?,
            Some('.') => {
                self.bump();
                Tok::Attr(Attribute::Attr { scope: Scope::Unscoped, name: self.attribute_name(start)? })
            }
            Some(c) if c.is_alphabetic() || c == '_' => self.word()?,
            Some(c) => match SYMBOLS.iter().find(|s| self.rest().starts_with(**s)) {
                Some(s) => {
                    self.pos += s.len();
                    Tok::Sym(s)
                }
                None => {
                    self.bump();
                    return Err(self.error(start, format!("unexpected character '{c}'")));
                }
            },
        };
        Ok(Token { tok, span: Span::new(start, self.pos) })
    }

    fn skip_space(&mut self) -> Result<(), Error> {
        loop {
            let start = self.pos;
            if self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            } else if self.rest().starts_with("//") {
                self.eat_while(|c| c != '\n');
            } else if self.rest().starts_with("/*") {
                match self.rest()[2..].find("*/") {
                    Some(end) => self.pos += end + 4,
                    None => {
                        self.pos = self.text.len();
                        return Err(self.error(start, "comment not terminated"));
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    /// A Go interpreted string literal.
    fn string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        self.bump();
        // Bytes, because `\x` and octal escapes produce bytes; checked as UTF-8 at the end.
        let mut bytes = Vec::new();
        loop {
            let escape_start = self.pos;
            match self.bump() {
                None | Some('\n') => return Err(self.error(start, "string not terminated")),
                Some('"') => break,
                Some('\\') => {
                    let mut buf = [0; 4];
                    match self.escape() {
                        Some(Escaped::Byte(b)) => bytes.push(b),
                        Some(Escaped::Char(c)) => bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
                        None => return Err(self.error(escape_start, "invalid char escape")),
                    }
                }
                Some(c) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        String::from_utf8(bytes).map_err(|_| self.error(start, "string is not valid UTF-8"))
    }

    /// The escape after a backslash, as Go's `strconv.Unquote` reads it in a double-quoted string.
    fn escape(&mut self) -> Option<Escaped> {
        let simple = |c| {
            Some(Escaped::Char(match c {
                'a' => '\x07',
                'b' => '\x08',
                'f' => '\x0c',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'v' => '\x0b',
                '\\' => '\\',
                '"' => '"',
                _ => return None,
            }))
        };
        match self.bump()? {
            'x' => self.digits(2, 16).and_then(|v| u8::try_from(v).ok()).map(Escaped::Byte),
            'u' => self.digits(4, 16).and_then(char::from_u32).map(Escaped::Char),
            'U' => self.digits(8, 16).and_then(char::from_u32).map(Escaped::Char),
            '0'..='7' => {
                self.pos -= 1;
                self.digits(3, 8).and_then(|v| u8::try_from(v).ok()).map(Escaped::Byte)
            }
            c => simple(c),
        }
    }

    /// Exactly `n` digits in `radix`.
    fn digits(&mut self, n: usize, radix: u32) -> Option<u32> {
        let mut value = 0;
        for _ in 0..n {
            value = value * radix + self.peek()?.to_digit(radix)?;
            self.bump();
        }
        Some(value)
    }

    fn raw_string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        self.bump();
        match self.rest().find('`') {
            Some(end) => {
                let s = self.rest()[..end].to_string();
                self.pos += end + 1;
                Ok(s)
            }
            None => {
                self.pos = self.text.len();
                Err(self.error(start, "string not terminated"))
            }
        }
    }

    /// An integer, a float, or a duration: a number immediately followed by units.
    fn number(&mut self) -> Result<Tok, Error> {
        let start = self.pos;
        let digits = |c: char| c.is_ascii_digit();
        self.eat_while(digits);
        let mut float = false;
        if self.peek() == Some('.') {
            float = true;
            self.bump();
            self.eat_while(digits);
        }
        if let Some(exponent) = self.rest().strip_prefix(['e', 'E']) {
            let sign = usize::from(exponent.starts_with(['+', '-']));
            if exponent[sign..].starts_with(digits) {
                float = true;
                self.pos += 1 + sign;
                self.eat_while(digits);
            }
        }
        let number_end = self.pos;
        if self.peek().is_some_and(char::is_alphabetic) {
            let unit = self.peek();
            self.eat_while(|c| c.is_alphanumeric() || c == '.');
            let text = &self.text[start..self.pos];
            return match parse_duration(text) {
                Some(ns) => Ok(Tok::Duration(ns)),
                None if unit.is_some_and(|c| "nuµμmshdwy".contains(c)) => {
                    Err(self.error(start, format!("invalid duration '{text}'")))
                }
                None => Err(self.error(start, format!("invalid number '{text}'"))),
            };
        }
        let text = &self.text[start..number_end];
        if float {
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Tok::Float(f)),
                _ => Err(self.error(start, format!("number out of range '{text}'"))),
            }
        } else {
            text.parse().map(Tok::Int).map_err(|_| self.error(start, format!("integer out of range '{text}'")))
        }
    }

    /// After `.` or `scope.`: up to whitespace or a terminator; `"..."` segments may hold
    /// anything and concatenate with their neighbours.
    fn attribute_name(&mut self, start: usize) -> Result<String, Error> {
        let mut name = String::new();
        let mut quoted = false;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || NAME_TERMINATORS.contains(c) {
                break;
            }
            self.bump();
            if c != '"' {
                name.push(c);
                continue;
            }
            quoted = true;
            loop {
                let escape_start = self.pos;
                match self.bump() {
                    None => return Err(self.error(start, "quoted attribute name not terminated")),
                    Some('"') => break,
                    Some('\\') => match self.bump() {
                        Some(c @ ('"' | '\\')) => name.push(c),
                        _ => return Err(self.error(escape_start, "invalid char escape")),
                    },
                    Some(c) => name.push(c),
                }
            }
        }
        if name.is_empty() && !quoted {
            let prefix = &self.text[start..self.pos];
            return Err(self.error(start, format!("expecting an attribute name after '{prefix}'")));
        }
        Ok(name)
    }

    /// A keyword, an intrinsic, a scoped attribute (`span.x`), a scoped intrinsic (`span:id`) or
    /// an identifier.
    fn word(&mut self) -> Result<Tok, Error> {
        let start = self.pos;
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        self.eat_while(ident);
        let word = &self.text[start..self.pos];
        match self.peek() {
            Some('.') => {
                self.bump();
                return match ATTRIBUTE_SCOPES.iter().find(|(s, _)| *s == word) {
                    Some(&(_, scope)) => Ok(Tok::Attr(Attribute::Attr { scope, name: self.attribute_name(start)? })),
                    None => Err(self.error(start, unknown_scope(word))),
                };
            }
            Some(':') => {
                self.bump();
                self.eat_while(ident);
                let spelling = &self.text[start..self.pos];
                return match INTRINSICS.iter().find(|(s, _)| *s == spelling) {
                    Some(&(_, i)) => Ok(Tok::Attr(Attribute::Intrinsic(i))),
                    None => Err(self.error(start, unknown_scoped_intrinsic(word, spelling))),
                };
            }
            _ => {}
        }
        Ok(if let Some(&(_, i)) = INTRINSICS.iter().find(|(s, _)| *s == word) {
            Tok::Attr(Attribute::Intrinsic(i))
        } else if let Some(k) = KEYWORDS.iter().find(|k| **k == word) {
            Tok::Keyword(k)
        } else {
            Tok::Ident(word.to_string())
        })
    }
}

enum Escaped {
    Byte(u8),
    Char(char),
}

fn unknown_scope(word: &str) -> String {
    let scopes = ATTRIBUTE_SCOPES.map(|(s, _)| s);
    match closest(word, scopes) {
        Some(s) => format!("unknown scope '{word}', did you mean '{s}'?"),
        None => format!("unknown scope '{word}', expecting one of {}", scopes.join(", ")),
    }
}

fn unknown_scoped_intrinsic(scope: &str, spelling: &str) -> String {
    let scoped = || INTRINSICS.iter().map(|(s, _)| *s).filter(|s| s.contains(':'));
    if !INTRINSIC_SCOPES.contains(&scope) {
        return match closest(scope, INTRINSIC_SCOPES) {
            Some(s) => format!("unknown scope '{scope}', did you mean '{s}'?"),
            None => format!("unknown intrinsic scope '{scope}', expecting one of {}", INTRINSIC_SCOPES.join(", ")),
        };
    }
    // `trace:status`: the right name in the wrong scope.
    let name = &spelling[scope.len() + 1..];
    let elsewhere = scoped().find(|s| s.split_once(':').is_some_and(|(_, n)| n == name));
    match elsewhere.or_else(|| closest(spelling, scoped())) {
        Some(s) => format!("unknown intrinsic '{spelling}', did you mean '{s}'?"),
        None => {
            let same_scope: Vec<_> =
                scoped().filter(|s| s.split_once(':').is_some_and(|(sc, _)| sc == scope)).collect();
            format!("unknown intrinsic '{spelling}', expecting one of {}", same_scope.join(", "))
        }
    }
}

/// Nanoseconds. Prometheus syntax (`1d2h`, units `y w d h m s ms`, integers, each unit once and
/// largest first) or Go's `time.ParseDuration` (`1.5h`, `300us`, units `ns us µs ms s m h` in
/// any order); the first that accepts the text wins, and both agree where both accept it.
fn parse_duration(text: &str) -> Option<i64> {
    const UNITS: [(&str, u64); 11] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
        ("w", 604_800_000_000_000),
        ("y", 31_536_000_000_000_000),
    ];
    let digits_len = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (mut prometheus_only, mut go_only, mut descending) = (false, false, true);
    let mut last_unit = u64::MAX;
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (int, after) = rest.split_at(digits_len(rest));
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => {
                go_only = true;
                after.split_at(digits_len(after))
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let &(name, unit) = UNITS.iter().find(|(name, _)| after.starts_with(name))?;
        rest = &after[name.len()..];
        match name {
            "d" | "w" | "y" => prometheus_only = true,
            "ns" | "us" | "µs" | "μs" => go_only = true,
            _ => {}
        }
        descending &= unit < last_unit;
        last_unit = unit;
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        // Like Go, digits beyond what can matter are ignored rather than overflowing.
        let frac = &frac[..frac.len().min(20)];
        let frac_ns = if frac.is_empty() {
            0
        } else {
            frac.parse::<u128>().ok()? * u128::from(unit) / 10u128.pow(frac.len() as u32)
        };
        total = total.checked_add(int.checked_mul(u128::from(unit))?)?.checked_add(frac_ns)?;
    }
    if prometheus_only && (go_only || !descending) {
        return None;
    }
    i64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        lex(text).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn durations() {
        let cases = [
            ("1ns", 1),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("1ms", 1_000_000),
            ("1s", 1_000_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1m", 60_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1h1.5m", 3_690_000_000_000),
            ("1d", 86_400_000_000_000),
            ("1w", 604_800_000_000_000),
            ("1y", 31_536_000_000_000_000),
            ("1d2h3m4s5ms", 93_784_005_000_000),
            ("1m1m", 120_000_000_000),
        ];
        for (text, ns) in cases {
            assert_eq!(parse_duration(text), Some(ns), "{text}");
        }
        for text in ["1", "1x", "1h1d", "1.5d", "1d1ns", "1hm", "1e3s", "300y", "99999999999999999999999s"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn greedy_operators() {
        let syms: Vec<_> = toks("!>> !<< &>> &<< &~ != =~ !~ >= <= >> << ! > ~")
            .into_iter()
            .filter_map(|t| if let Tok::Sym(s) = t { Some(s) } else { None })
            .collect();
        assert_eq!(syms, ["!>>", "!<<", "&>>", "&<<", "&~", "!=", "=~", "!~", ">=", "<=", ">>", "<<", "!", ">", "~"]);
    }

    #[test]
    fn attribute_names_run_to_terminators() {
        let Tok::Attr(Attribute::Attr { scope, name }) = &toks("span.foo.bar-baz/qux:1+2*3%4=")[0] else { panic!() };
        assert_eq!((*scope, name.as_str()), (Scope::Span, "foo.bar-baz/qux:1+2*3%4"));
        let Tok::Attr(Attribute::Attr { name, .. }) = &toks(r#"span.attribute."name with \"space\"""#)[0] else {
            panic!()
        };
        assert_eq!(name, "attribute.name with \"space\"");
    }
}
