//! The value of a field for one span ([`Val`]), arrays decoded from attributes, and arithmetic
//! on values.

use std::rc::Rc;

use prost::Message;
use spoor_model::otlp::{AnyValue, any_value};
use spoor_traceql::ast::{BinOp, Kind, Static, Status};

use super::truth::{Tri, fold};

/// A value of one span. Strings and IDs borrow from the batch (or the plan, for literals).
#[derive(Clone, Debug)]
pub(crate) enum Val<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// Nanoseconds.
    Duration(i64),
    Status(Status),
    Kind(Kind),
    /// Span, trace or link IDs: compared as bytes, shown as hex.
    Id(&'a [u8]),
    Arr(Rc<ArrayVal>),
}

impl Val<'_> {
    pub(crate) fn of(v: &Static) -> Val<'_> {
        match v {
            Static::Nil => Val::Nil,
            Static::Bool(b) => Val::Bool(*b),
            Static::Int(i) => Val::Int(*i),
            Static::Float(f) => Val::Float(*f),
            Static::Str(s) => Val::Str(s),
            Static::Duration(d) => Val::Duration(*d),
            Static::Status(s) => Val::Status(*s),
            Static::Kind(k) => Val::Kind(*k),
        }
    }

    pub(crate) fn is_nil(&self) -> bool {
        matches!(self, Val::Nil)
    }

    pub(crate) fn number(&self) -> Option<f64> {
        match *self {
            Val::Int(i) | Val::Duration(i) => Some(i as f64),
            Val::Float(f) => Some(f),
            _ => None,
        }
    }

    pub(super) fn truth(&self) -> Tri {
        match self {
            Val::Bool(b) => Tri::from_bool(*b),
            _ => Tri::N,
        }
    }

    /// Order among several values of one attribute: the first of the best rank is its value.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Val::Str(_) => 0,
            Val::Int(_) => 1,
            Val::Float(_) => 2,
            Val::Bool(_) => 3,
            _ => 4,
        }
    }
}

/// A homogeneous array of scalars, decoded from an attribute's protobuf `AnyValue`.
#[derive(Debug)]
pub(crate) struct ArrayVal {
    /// The encoded `AnyValue`, as results report it.
    pub(crate) raw: Vec<u8>,
    elems: Elems,
}

#[derive(Debug)]
enum Elems {
    Str(Vec<String>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
}

impl ArrayVal {
    /// `None` for anything TraceQL cannot query: undecodable bytes, key-value lists, bytes,
    /// empty or mixed arrays.
    pub(super) fn decode(raw: &[u8]) -> Option<ArrayVal> {
        use any_value::Value as V;
        let Some(V::ArrayValue(array)) = AnyValue::decode(raw).ok()?.value else { return None };
        let values = array.values;
        let elems = match values.first()?.value.as_ref()? {
            V::StringValue(_) => Elems::Str(
                values
                    .into_iter()
                    .map(|v| if let Some(V::StringValue(s)) = v.value { Some(s) } else { None })
                    .collect::<Option<_>>()?,
            ),
            V::IntValue(_) => Elems::Int(
                values
                    .into_iter()
                    .map(|v| if let Some(V::IntValue(i)) = v.value { Some(i) } else { None })
                    .collect::<Option<_>>()?,
            ),
            V::DoubleValue(_) => Elems::Float(
                values
                    .into_iter()
                    .map(|v| if let Some(V::DoubleValue(f)) = v.value { Some(f) } else { None })
                    .collect::<Option<_>>()?,
            ),
            V::BoolValue(_) => Elems::Bool(
                values
                    .into_iter()
                    .map(|v| if let Some(V::BoolValue(b)) = v.value { Some(b) } else { None })
                    .collect::<Option<_>>()?,
            ),
            _ => return None,
        };
        Some(ArrayVal { raw: raw.to_vec(), elems })
    }

    fn len(&self) -> usize {
        match &self.elems {
            Elems::Str(v) => v.len(),
            Elems::Int(v) => v.len(),
            Elems::Float(v) => v.len(),
            Elems::Bool(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> Val<'_> {
        match &self.elems {
            Elems::Str(v) => Val::Str(&v[i]),
            Elems::Int(v) => Val::Int(v[i]),
            Elems::Float(v) => Val::Float(v[i]),
            Elems::Bool(v) => Val::Bool(v[i]),
        }
    }

    /// Folds a per-element comparison into `state` (see [`fold`]).
    pub(super) fn fold(&self, negated: bool, mut state: Tri, mut cmp: impl FnMut(&Val) -> Option<bool>) -> Tri {
        for i in 0..self.len() {
            state = fold(negated, state, cmp(&self.get(i)));
        }
        state
    }
}

/// Arithmetic: int ∘ int stays integer (wrapping, `/` truncates); anything with a float or a
/// duration is float64. A non-number or a division by zero gives nil.
pub(crate) fn arith<'a>(op: BinOp, a: &Val, b: &Val) -> Val<'a> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => {
            let (x, y) = (*x, *y);
            match op {
                BinOp::Add => Val::Int(x.wrapping_add(y)),
                BinOp::Sub => Val::Int(x.wrapping_sub(y)),
                BinOp::Mul => Val::Int(x.wrapping_mul(y)),
                BinOp::Div if y != 0 => Val::Int(x.wrapping_div(y)),
                BinOp::Mod if y != 0 => Val::Int(x.wrapping_rem(y)),
                BinOp::Pow if y >= 0 => Val::Int(x.wrapping_pow(u32::try_from(y).unwrap_or(u32::MAX))),
                // A negative exponent truncates toward zero, like the float result cast back.
                BinOp::Pow => Val::Int((x as f64).powf(y as f64) as i64),
                _ => Val::Nil,
            }
        }
        _ => {
            let (Some(x), Some(y)) = (a.number(), b.number()) else { return Val::Nil };
            match op {
                BinOp::Add => Val::Float(x + y),
                BinOp::Sub => Val::Float(x - y),
                BinOp::Mul => Val::Float(x * y),
                BinOp::Div if y != 0.0 => Val::Float(x / y),
                BinOp::Mod if y != 0.0 => Val::Float(x % y),
                BinOp::Pow => Val::Float(x.powf(y)),
                _ => Val::Nil,
            }
        }
    }
}

/// Unary minus; nil for anything but a number.
pub(super) fn negate<'a>(v: &Val<'a>) -> Val<'a> {
    match *v {
        Val::Int(i) => Val::Int(i.wrapping_neg()),
        Val::Float(f) => Val::Float(-f),
        Val::Duration(d) => Val::Duration(d.wrapping_neg()),
        _ => Val::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_never_panics() {
        let a = |op, x: Val, y: Val| format!("{:?}", arith(op, &x, &y));
        assert_eq!(a(BinOp::Div, Val::Int(7), Val::Int(2)), "Int(3)");
        assert_eq!(a(BinOp::Mod, Val::Int(-7), Val::Int(2)), "Int(-1)");
        assert_eq!(a(BinOp::Pow, Val::Int(2), Val::Int(10)), "Int(1024)");
        assert_eq!(a(BinOp::Pow, Val::Int(2), Val::Int(-1)), "Int(0)");
        assert_eq!(a(BinOp::Div, Val::Int(1), Val::Int(0)), "Nil");
        assert_eq!(a(BinOp::Mod, Val::Float(1.0), Val::Int(0)), "Nil");
        assert_eq!(a(BinOp::Div, Val::Int(i64::MIN), Val::Int(-1)), format!("Int({})", i64::MIN));
        assert_eq!(a(BinOp::Add, Val::Int(i64::MAX), Val::Int(1)), format!("Int({})", i64::MIN));
        assert_eq!(
            a(BinOp::Pow, Val::Int(3), Val::Int(i64::MAX)),
            a(BinOp::Pow, Val::Int(3), Val::Int(u32::MAX as i64))
        );
        assert_eq!(a(BinOp::Mul, Val::Duration(10), Val::Int(2)), "Float(20.0)");
        assert_eq!(a(BinOp::Add, Val::Str("a"), Val::Int(1)), "Nil");
        assert_eq!(format!("{:?}", negate(&Val::Int(i64::MIN))), format!("Int({})", i64::MIN));
    }

    #[test]
    fn only_homogeneous_scalar_arrays_decode() {
        use any_value::Value as V;
        let encode = |values: Vec<V>| {
            let values = values.into_iter().map(|v| AnyValue { value: Some(v) }).collect();
            AnyValue { value: Some(V::ArrayValue(spoor_model::otlp::ArrayValue { values })) }.encode_to_vec()
        };
        let a = ArrayVal::decode(&encode(vec![V::IntValue(1), V::IntValue(2)])).unwrap();
        assert_eq!(a.len(), 2);
        assert!(matches!(a.get(1), Val::Int(2)));
        assert!(ArrayVal::decode(&encode(vec![V::IntValue(1), V::StringValue("a".into())])).is_none());
        assert!(ArrayVal::decode(&encode(vec![])).is_none());
        assert!(ArrayVal::decode(&encode(vec![V::BytesValue(vec![1])])).is_none());
        assert!(ArrayVal::decode(&AnyValue { value: Some(V::IntValue(1)) }.encode_to_vec()).is_none());
        for garbage in [&[0xffu8, 0xff][..], &[0x2a, 0x7f], &[0x2a, 0x02, 0x0a, 0x09]] {
            assert!(ArrayVal::decode(garbage).is_none());
        }
    }
}
