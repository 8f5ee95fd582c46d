//! Comparisons: operators, scalar against scalar across types (numbers by value, IDs against
//! hex text), a field against a literal ([`Matcher`]), and a cache of regex results for the
//! column loops.

use std::cmp::Ordering;

use regex::Regex;
use spoor_model::ids::hex;
use spoor_traceql::ast::{BinOp, Static};

use super::truth::{Tri, fold};
use super::value::Val;
use crate::error::{Error, Result};

/// A comparison without its negation: `!=` is not-`=`, `!~` is not-`=~`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Regex,
}

impl Op {
    /// (operator, negated) of a comparison operator; `None` for other operators.
    pub(crate) fn split(op: BinOp) -> Option<(Op, bool)> {
        Some(match op {
            BinOp::Eq => (Op::Eq, false),
            BinOp::Ne => (Op::Eq, true),
            BinOp::Lt => (Op::Lt, false),
            BinOp::Le => (Op::Le, false),
            BinOp::Gt => (Op::Gt, false),
            BinOp::Ge => (Op::Ge, false),
            BinOp::Regex => (Op::Regex, false),
            BinOp::NotRegex => (Op::Regex, true),
            _ => return None,
        })
    }

    /// The operator with its operands swapped (`3 < x` is `x > 3`).
    pub(crate) fn mirror(self) -> Op {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            other => other,
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord == Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Regex => false,
        }
    }

    fn floats(self, a: f64, b: f64) -> bool {
        // partial_cmp is None for NaN: every comparison with NaN is false.
        a.partial_cmp(&b).is_some_and(|ord| self.holds(ord))
    }
}

/// Compares two scalars with a positive operator; `None` when their types do not compare.
/// Numbers compare by value across int, float and duration; strings bytewise; IDs as bytes
/// against hex text.
pub(crate) fn cmp_scalar(op: Op, a: &Val, b: &Val) -> Option<bool> {
    use Val::*;
    match (a, b) {
        (Int(x) | Duration(x), Int(y) | Duration(y)) => Some(op.holds(x.cmp(y))),
        (Int(_) | Float(_) | Duration(_), Int(_) | Float(_) | Duration(_)) => Some(op.floats(a.number()?, b.number()?)),
        (Str(x), Str(y)) => Some(op.holds(x.as_bytes().cmp(y.as_bytes()))),
        (Bool(x), Bool(y)) if op == Op::Eq => Some(x == y),
        (Status(x), Status(y)) if op == Op::Eq => Some(x == y),
        (Kind(x), Kind(y)) if op == Op::Eq => Some(x == y),
        (Id(x), Id(y)) if op == Op::Eq => Some(id_eq(x, Some(y))),
        (Id(x), Str(y)) if op == Op::Eq => Some(id_eq(x, decode_id(y).as_deref())),
        (Str(x), Id(y)) if op == Op::Eq => Some(id_eq(y, decode_id(x).as_deref())),
        (Id(x), Str(y)) => Some(op.holds(hex(x).as_bytes().cmp(y.as_bytes()))),
        (Str(x), Id(y)) => Some(op.holds(x.as_bytes().cmp(hex(y).as_bytes()))),
        _ => None,
    }
}

/// Hex text of an ID, case-insensitive, with or without leading zeros (an odd length gets a
/// leading zero). `None` if it is not hex.
fn decode_id(text: &str) -> Option<Vec<u8>> {
    let padded = if text.len() % 2 == 1 { format!("0{text}") } else { text.to_owned() };
    spoor_model::ids::unhex(&padded).ok()
}

/// IDs are equal when their bytes are after leading zero bytes are dropped: trace ID
/// `0af7...` is the same as `af7...` (Tempo strips leading zeros when it prints trace IDs).
fn id_eq(stored: &[u8], literal: Option<&[u8]>) -> bool {
    fn strip(b: &[u8]) -> &[u8] {
        &b[b.iter().position(|&x| x != 0).unwrap_or(b.len())..]
    }
    literal.is_some_and(|l| strip(stored) == strip(l))
}

/// `field OP literal` compiled: the operator, the literal, the regex (compiled once, anchored
/// as Tempo does: `^(?s:pattern)$`) and the literal decoded as an ID.
#[derive(Clone, Debug)]
pub(crate) struct Matcher {
    pub(super) op: Op,
    pub(super) negated: bool,
    pub(super) lit: Static,
    pub(super) regex: Option<Regex>,
    id: Option<Vec<u8>>,
}

impl Matcher {
    pub(crate) fn new(op: Op, negated: bool, lit: Static) -> Result<Matcher> {
        let regex = match (op, &lit) {
            (Op::Regex, Static::Str(pattern)) => Some(
                Regex::new(&format!("^(?s:{pattern})$"))
                    .map_err(|e| Error::Invalid(format!("invalid regex {pattern:?}: {e}")))?,
            ),
            (Op::Regex, _) => return Err(Error::Invalid("the right-hand side of =~ and !~ must be a string".into())),
            _ => None,
        };
        let id = match &lit {
            Static::Str(s) => decode_id(s),
            _ => None,
        };
        Ok(Matcher { op, negated, lit, regex, id })
    }

    /// The positive operator applied to one scalar.
    fn cmp(&self, v: &Val) -> Option<bool> {
        match (v, &self.regex) {
            (Val::Str(s), Some(re)) => Some(re.is_match(s)),
            (Val::Id(b), Some(re)) => Some(re.is_match(&hex(b))),
            (_, Some(_)) => None,
            (Val::Id(b), None) if self.op == Op::Eq && matches!(self.lit, Static::Str(_)) => {
                Some(id_eq(b, self.id.as_deref()))
            }
            _ => cmp_scalar(self.op, v, &Val::of(&self.lit)),
        }
    }

    /// The positive operator applied to a string (a regex, or bytewise against a string).
    // Called per attribute entry from other files of the evaluator: inlined across them.
    #[inline]
    pub(super) fn str(&self, s: &str) -> Option<bool> {
        match (&self.regex, &self.lit) {
            (Some(re), _) => Some(re.is_match(s)),
            (None, Static::Str(l)) if self.op == Op::Eq => Some(s == l),
            (None, Static::Str(l)) => Some(self.op.holds(s.as_bytes().cmp(l.as_bytes()))),
            _ => None,
        }
    }

    /// Folds one value (every element of an array) into `state`.
    #[inline]
    pub(super) fn fold(&self, state: Tri, v: &Val) -> Tri {
        match v {
            Val::Nil => state,
            Val::Arr(a) => a.fold(self.negated, state, |e| self.cmp(e)),
            v => fold(self.negated, state, self.cmp(v)),
        }
    }

    pub(super) fn test(&self, v: &Val) -> Tri {
        self.fold(Tri::N, v)
    }
}

/// Compares two computed values (`.a = .b`, `.a + 1 > 3`): nil → `N`, arrays element-wise.
pub(super) fn compare(op: Op, negated: bool, a: &Val, b: &Val) -> Tri {
    match (a, b) {
        (Val::Nil, _) | (_, Val::Nil) => Tri::N,
        (Val::Arr(_), Val::Arr(_)) => Tri::F,
        (Val::Arr(x), _) => x.fold(negated, Tri::N, |e| cmp_scalar(op, e, b)),
        (_, Val::Arr(y)) => y.fold(negated, Tri::N, |e| cmp_scalar(op, a, e)),
        _ => fold(negated, Tri::N, cmp_scalar(op, a, b)),
    }
}

/// Regex results of recently seen strings, in slots picked by length and a few bytes. String
/// columns repeat few values (names, services) and a regex costs far more than a lookup; a
/// miss costs just the regex, so no input makes this slower than no cache.
pub(super) struct Recent<'a> {
    slots: [Option<(&'a str, bool)>; 64],
}

impl Default for Recent<'_> {
    fn default() -> Self {
        Recent { slots: [None; 64] }
    }
}

impl<'a> Recent<'a> {
    #[inline]
    pub(super) fn is_match(&mut self, re: &Regex, s: &'a str) -> bool {
        let b = s.as_bytes();
        let byte = |i: usize| b.get(i).copied().unwrap_or(0) as usize;
        let slot = (b.len() ^ (byte(0) << 1) ^ (byte(b.len() / 2) << 2) ^ (byte(b.len().wrapping_sub(1)) << 3)) % 64;
        match self.slots[slot] {
            Some((seen, matched)) if seen == s => matched,
            _ => {
                let matched = re.is_match(s);
                self.slots[slot] = Some((s, matched));
                matched
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_traceql::ast::{Kind, Status};

    #[test]
    fn scalar_comparisons() {
        let cmp = |op, a: Val, b: Val| cmp_scalar(op, &a, &b);
        assert_eq!(cmp(Op::Eq, Val::Int(3), Val::Float(3.0)), Some(true));
        assert_eq!(cmp(Op::Lt, Val::Float(0.25), Val::Int(1)), Some(true));
        assert_eq!(cmp(Op::Eq, Val::Duration(20_000_000), Val::Int(20_000_000)), Some(true));
        assert_eq!(cmp(Op::Gt, Val::Float(f64::NAN), Val::Int(0)), Some(false));
        assert_eq!(cmp(Op::Eq, Val::Str("200"), Val::Int(200)), None);
        assert_eq!(cmp(Op::Lt, Val::Str("POST"), Val::Str("p")), Some(true));
        assert_eq!(cmp(Op::Lt, Val::Bool(false), Val::Bool(true)), None);
        assert_eq!(cmp(Op::Eq, Val::Status(Status::Ok), Val::Status(Status::Ok)), Some(true));
        assert_eq!(cmp(Op::Eq, Val::Kind(Kind::Server), Val::Str("server")), None);
        assert_eq!(cmp(Op::Eq, Val::Id(&[0, 0x0a, 0xbc]), Val::Str("abc")), Some(true));
        assert_eq!(cmp(Op::Eq, Val::Id(&[0x0a, 0xbc]), Val::Str("00000abc")), Some(true));
        assert_eq!(cmp(Op::Eq, Val::Id(&[0x0a, 0xbc]), Val::Str("not hex")), Some(false));
    }

    #[test]
    fn recent_regex_results_are_the_regex_results() {
        let re = Regex::new("^(?s:a.*)$").unwrap();
        let words: Vec<String> = (0..500).map(|i| format!("{}{}", ["a", "b", "ab", ""][i % 4], i % 37)).collect();
        let mut recent = Recent::default();
        for w in words.iter().chain(words.iter().rev()) {
            assert_eq!(recent.is_match(&re, w), re.is_match(w), "{w}");
        }
    }
}
