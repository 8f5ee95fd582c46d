//! Typed access to the single-valued columns of the block layout (strings plain or
//! dictionary-encoded, integers of any width, IDs), and the tight per-column loops that compare
//! a column with a literal without building values.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, Int32Array, Int64Array, StringArray, StructArray, UInt64Array,
};
use spoor_traceql::ast::{Kind, Static, Status};

use super::compare::{Matcher, Op, Recent};
use super::truth::Tri;
use super::value::Val;
use crate::error::{Error, Result};

pub(super) fn type_error(name: &str, column: &dyn Array, expected: &str) -> Error {
    Error::Corrupt(format!("column {name} is {}, expected {expected}", column.data_type()))
}

pub(super) fn struct_field<'c>(s: &'c StructArray, name: &str) -> Result<&'c ArrayRef> {
    s.column_by_name(name).ok_or_else(|| Error::Corrupt(format!("struct column has no field {name}")))
}

/// A string column, plain or dictionary-encoded (the scanner may ask Parquet for dictionaries).
#[derive(Clone, Copy)]
pub(crate) enum StrCol<'c> {
    Plain(&'c StringArray),
    Dict(&'c Int32Array, &'c StringArray),
}

impl<'c> StrCol<'c> {
    pub(crate) fn of(name: &str, column: &'c ArrayRef) -> Result<StrCol<'c>> {
        if let Some(s) = column.as_string_opt::<i32>() {
            return Ok(StrCol::Plain(s));
        }
        if let Some(d) = column.as_dictionary_opt::<Int32Type>()
            && let Some(values) = d.values().as_string_opt::<i32>()
        {
            return Ok(StrCol::Dict(d.keys(), values));
        }
        Err(type_error(name, column, "Utf8 or Dictionary(Int32, Utf8)"))
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&'c str> {
        match self {
            StrCol::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Dict(keys, values) => {
                let k = usize::try_from(keys.is_valid(i).then(|| keys.value(i))?).ok()?;
                (k < values.len() && values.is_valid(k)).then(|| values.value(k))
            }
        }
    }
}

/// An integer column: nested-set numbers, codes, durations, dedicated int attributes.
#[derive(Clone, Copy)]
pub(crate) enum Num<'c> {
    I32(&'c Int32Array),
    I64(&'c Int64Array),
    U64(&'c UInt64Array),
}

impl<'c> Num<'c> {
    pub(crate) fn of(name: &str, column: &'c ArrayRef) -> Result<Num<'c>> {
        if let Some(a) = column.as_primitive_opt::<Int32Type>() {
            Ok(Num::I32(a))
        } else if let Some(a) = column.as_primitive_opt::<Int64Type>() {
            Ok(Num::I64(a))
        } else if let Some(a) = column.as_primitive_opt::<UInt64Type>() {
            Ok(Num::U64(a))
        } else {
            Err(type_error(name, column, "an integer"))
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<i64> {
        match self {
            Num::I32(a) => a.is_valid(i).then(|| a.value(i) as i64),
            Num::I64(a) => a.is_valid(i).then(|| a.value(i)),
            // Durations past i64::MAX come from spans ending before they start; wrap, as stored.
            Num::U64(a) => a.is_valid(i).then(|| a.value(i) as i64),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum IdCol<'c> {
    Bin(&'c BinaryArray),
    Fixed(&'c FixedSizeBinaryArray),
}

impl<'c> IdCol<'c> {
    pub(crate) fn of(name: &str, column: &'c ArrayRef) -> Result<IdCol<'c>> {
        if let Some(a) = column.as_binary_opt::<i32>() {
            Ok(IdCol::Bin(a))
        } else if let Some(a) = column.as_fixed_size_binary_opt() {
            Ok(IdCol::Fixed(a))
        } else {
            Err(type_error(name, column, "binary"))
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'c [u8]> {
        match self {
            IdCol::Bin(a) => a.is_valid(i).then(|| a.value(i)),
            IdCol::Fixed(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// A single-valued column, typed as TraceQL sees it.
pub(crate) enum Col<'c> {
    Str(StrCol<'c>),
    Int(Num<'c>),
    Duration(Num<'c>),
    /// OTLP status codes, seen as the status enum.
    Status(Num<'c>),
    /// OTLP span kinds, seen as the kind enum.
    Kind(Num<'c>),
    Id(IdCol<'c>),
}

impl<'c> Col<'c> {
    pub(super) fn value(&self, i: usize) -> Val<'c> {
        let v = match self {
            Col::Str(c) => c.get(i).map(Val::Str),
            Col::Int(c) => c.get(i).map(Val::Int),
            Col::Duration(c) => c.get(i).map(Val::Duration),
            Col::Status(c) => c.get(i).map(|code| Val::Status(Status::from_otlp(code as i32))),
            Col::Kind(c) => c.get(i).map(|kind| Val::Kind(Kind::from_otlp(kind as i32))),
            Col::Id(c) => c.get(i).map(Val::Id),
        };
        v.unwrap_or(Val::Nil)
    }

    pub(super) fn test(&self, m: &Matcher, n: usize) -> Vec<Tri> {
        match self {
            // Dictionary: the comparison (a regex, typically) runs once per distinct value.
            Col::Str(StrCol::Dict(keys, values)) => {
                let table: Vec<Tri> = (0..values.len())
                    .map(|k| if values.is_valid(k) { m.test(&Val::Str(values.value(k))) } else { Tri::N })
                    .collect();
                (0..n)
                    .map(|i| match keys.is_valid(i).then(|| keys.value(i)) {
                        Some(k) => usize::try_from(k).ok().and_then(|k| table.get(k)).copied().unwrap_or(Tri::N),
                        None => Tri::N,
                    })
                    .collect()
            }
            Col::Str(StrCol::Plain(a)) => match (&m.lit, m.op, &m.regex) {
                // The commonest filter, `name = "x"`: compare bytes without building values.
                (Static::Str(lit), Op::Eq, None) => {
                    let (offsets, data, lit) = (a.value_offsets(), a.value_data(), lit.as_bytes());
                    let (hit, miss) = hit_miss(m);
                    (0..n)
                        .map(|i| {
                            let (s, e) = (offsets[i] as usize, offsets[i + 1] as usize);
                            if a.is_null(i) {
                                Tri::N
                            } else if data.get(s..e) == Some(lit) {
                                hit
                            } else {
                                miss
                            }
                        })
                        .collect()
                }
                (_, Op::Regex, Some(re)) => {
                    let (hit, miss) = hit_miss(m);
                    let mut recent = Recent::default();
                    (0..n)
                        .map(|i| match a.is_valid(i) {
                            true if recent.is_match(re, a.value(i)) => hit,
                            true => miss,
                            false => Tri::N,
                        })
                        .collect()
                }
                _ => (0..n).map(|i| m.test(&self.value(i))).collect(),
            },
            Col::Int(c) | Col::Duration(c) => {
                numbers(c, m).unwrap_or_else(|| (0..n).map(|i| m.test(&self.value(i))).collect())
            }
            Col::Status(c) if m.op == Op::Eq && matches!(m.lit, Static::Status(_)) => {
                let Static::Status(lit) = m.lit else { unreachable!("matched above") };
                enums(c, m, |code| Status::from_otlp(code) == lit)
            }
            Col::Kind(c) if m.op == Op::Eq && matches!(m.lit, Static::Kind(_)) => {
                let Static::Kind(lit) = m.lit else { unreachable!("matched above") };
                enums(c, m, |kind| Kind::from_otlp(kind) == lit)
            }
            _ => (0..n).map(|i| m.test(&self.value(i))).collect(),
        }
    }
}

/// `hit` where the positive operator holds, else `miss` (swapped for `!=`).
fn hit_miss(m: &Matcher) -> (Tri, Tri) {
    if m.negated { (Tri::F, Tri::T) } else { (Tri::T, Tri::F) }
}

/// Nulls (no value) are nil.
fn with_nulls(mut out: Vec<Tri>, nulls: Option<&arrow_buffer::NullBuffer>) -> Vec<Tri> {
    if let Some(nulls) = nulls {
        out.iter_mut().zip(nulls.iter()).filter(|(_, valid)| !valid).for_each(|(o, _)| *o = Tri::N);
    }
    out
}

/// An integer column against a number: one tight loop per operator. `None` for literals of
/// other types (the generic path says false for each).
fn numbers(c: &Num, m: &Matcher) -> Option<Vec<Tri>> {
    let (hit, miss) = hit_miss(m);
    Some(match (c, &m.lit) {
        (Num::I32(a), Static::Int(l) | Static::Duration(l)) => {
            with_nulls(ordered(a.values(), |v| v as i64, m.op, *l, hit, miss), a.nulls())
        }
        (Num::I64(a), Static::Int(l) | Static::Duration(l)) => {
            with_nulls(ordered(a.values(), |v| v, m.op, *l, hit, miss), a.nulls())
        }
        // Durations past i64::MAX wrap, as `Num::get` reads them.
        (Num::U64(a), Static::Int(l) | Static::Duration(l)) => {
            with_nulls(ordered(a.values(), |v| v as i64, m.op, *l, hit, miss), a.nulls())
        }
        (Num::I32(a), Static::Float(l)) => {
            with_nulls(ordered(a.values(), |v| v as f64, m.op, *l, hit, miss), a.nulls())
        }
        (Num::I64(a), Static::Float(l)) => {
            with_nulls(ordered(a.values(), |v| v as f64, m.op, *l, hit, miss), a.nulls())
        }
        (Num::U64(a), Static::Float(l)) => {
            with_nulls(ordered(a.values(), |v| v as i64 as f64, m.op, *l, hit, miss), a.nulls())
        }
        _ => return None,
    })
}

fn ordered<T: Copy, K: PartialOrd>(
    values: &[T],
    key: impl Fn(T) -> K,
    op: Op,
    lit: K,
    hit: Tri,
    miss: Tri,
) -> Vec<Tri> {
    let pick = |b: bool| if b { hit } else { miss };
    match op {
        Op::Eq => values.iter().map(|&v| pick(key(v) == lit)).collect(),
        Op::Lt => values.iter().map(|&v| pick(key(v) < lit)).collect(),
        Op::Le => values.iter().map(|&v| pick(key(v) <= lit)).collect(),
        Op::Gt => values.iter().map(|&v| pick(key(v) > lit)).collect(),
        Op::Ge => values.iter().map(|&v| pick(key(v) >= lit)).collect(),
        // A regex never applies to numbers.
        Op::Regex => vec![Tri::F; values.len()],
    }
}

/// Status and kind columns hold OTLP numbers; `same` says whether one is the literal.
fn enums(c: &Num, m: &Matcher, same: impl Fn(i32) -> bool) -> Vec<Tri> {
    let (hit, miss) = hit_miss(m);
    let pick = |b: bool| if b { hit } else { miss };
    match c {
        Num::I32(a) => with_nulls(a.values().iter().map(|&v| pick(same(v))).collect(), a.nulls()),
        Num::I64(a) => with_nulls(a.values().iter().map(|&v| pick(same(v as i32))).collect(), a.nulls()),
        Num::U64(a) => with_nulls(a.values().iter().map(|&v| pick(same(v as i32))).collect(), a.nulls()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::DictionaryArray;

    #[test]
    fn dictionary_and_plain_strings_agree() {
        let values = [Some("GET /a"), None, Some("POST /b"), Some("GET /c"), Some("")];
        let plain = StringArray::from(values.to_vec());
        let dict: DictionaryArray<Int32Type> = values.iter().copied().collect();
        let dict_values = dict.values().as_string::<i32>();
        for (op, negated, lit) in [
            (Op::Eq, false, "GET /a"),
            (Op::Eq, true, "GET /a"),
            (Op::Regex, false, "GET.*"),
            (Op::Regex, true, ""),
            (Op::Lt, false, "P"),
        ] {
            let m = Matcher::new(op, negated, Static::Str(lit.into())).unwrap();
            let a = Col::Str(StrCol::Plain(&plain)).test(&m, values.len());
            let b = Col::Str(StrCol::Dict(dict.keys(), dict_values)).test(&m, values.len());
            assert_eq!(a, b, "{op:?} {negated} {lit:?}");
            assert_eq!(a[1], Tri::N);
        }
    }

    #[test]
    fn dictionary_keys_out_of_range_are_nil() {
        let keys = Int32Array::from(vec![0, 5, -1]);
        let values = StringArray::from(vec!["a"]);
        let m = Matcher::new(Op::Eq, false, Static::Str("a".into())).unwrap();
        assert_eq!(Col::Str(StrCol::Dict(&keys, &values)).test(&m, 3), [Tri::T, Tri::N, Tri::N]);
        assert!(StrCol::Dict(&keys, &values).get(1).is_none());
    }
}
