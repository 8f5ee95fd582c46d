//! Attribute lookup: one key among the attribute lists of the block layout (span, resource,
//! scope, event and link attributes), plus the key's dedicated column where a block has one.
//! A span may hold several values of one key: see the docs of the `eval` module.

use std::ops::Range;
use std::rc::Rc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use spoor_block::columns as col;

use super::columns::{Col, StrCol, struct_field, type_error};
use super::compare::{Matcher, Recent};
use super::truth::{Tri, fold};
use super::value::{ArrayVal, Val};
use crate::error::{Error, Result};

/// A comparison against the string values of an attribute list: once per distinct value
/// for dictionaries.
enum StrTest<'c> {
    Plain(&'c StringArray, Box<Recent<'c>>),
    /// Per dictionary value: `None` if it is null, else the comparison's result.
    Dict(&'c Int32Array, Vec<Option<Option<bool>>>),
}

impl<'c> StrTest<'c> {
    fn new(c: StrCol<'c>, m: &Matcher) -> StrTest<'c> {
        match c {
            StrCol::Plain(a) => StrTest::Plain(a, Box::default()),
            StrCol::Dict(keys, values) => StrTest::Dict(
                keys,
                (0..values.len()).map(|k| values.is_valid(k).then(|| m.str(values.value(k)))).collect(),
            ),
        }
    }

    /// `None` when entry `j` holds no string; else the positive operator's result.
    fn at(&mut self, m: &Matcher, j: usize) -> Option<Option<bool>> {
        match self {
            StrTest::Plain(a, recent) => a.is_valid(j).then(|| match &m.regex {
                Some(re) => Some(recent.is_match(re, a.value(j))),
                None => m.str(a.value(j)),
            }),
            StrTest::Dict(keys, table) => {
                keys.is_valid(j).then(|| table.get(keys.value(j) as usize).copied().flatten()).flatten()
            }
        }
    }
}

/// A list of attributes per row (span, resource, scope, event or link attributes).
pub(crate) struct AttrList<'c> {
    offsets: &'c [i32],
    keys: StrCol<'c>,
    str: Option<StrCol<'c>>,
    int: Option<&'c Int64Array>,
    double: Option<&'c Float64Array>,
    bool: Option<&'c BooleanArray>,
    any: Option<&'c BinaryArray>,
}

impl<'c> AttrList<'c> {
    pub(super) fn of(name: &str, column: &'c ArrayRef) -> Result<AttrList<'c>> {
        let list = column.as_list_opt::<i32>().ok_or_else(|| type_error(name, column, "a list of attributes"))?;
        let attrs = list.values().as_struct_opt().ok_or_else(|| type_error(name, column, "a list of attributes"))?;
        let typed = |field: &str, ok: bool| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::Corrupt(format!("attribute field {field} of {name} has an unexpected type")))
            }
        };
        let int = attrs.column_by_name(col::INT).map(|c| c.as_primitive_opt::<Int64Type>());
        let double = attrs.column_by_name(col::DOUBLE).map(|c| c.as_primitive_opt::<Float64Type>());
        let bool = attrs.column_by_name(col::BOOL).map(|c| c.as_boolean_opt());
        let any = attrs.column_by_name(col::ANY).map(|c| c.as_binary_opt::<i32>());
        typed(col::INT, int.is_none_or(|c| c.is_some()))?;
        typed(col::DOUBLE, double.is_none_or(|c| c.is_some()))?;
        typed(col::BOOL, bool.is_none_or(|c| c.is_some()))?;
        typed(col::ANY, any.is_none_or(|c| c.is_some()))?;
        Ok(AttrList {
            offsets: list.value_offsets(),
            keys: StrCol::of(col::KEY, struct_field(attrs, col::KEY)?)?,
            str: attrs.column_by_name(col::STR).map(|c| StrCol::of(col::STR, c)).transpose()?,
            int: int.flatten(),
            double: double.flatten(),
            bool: bool.flatten(),
            any: any.flatten(),
        })
    }

    fn key_matcher(&self, key: &'c str) -> KeyMatch<'c> {
        match self.keys {
            StrCol::Plain(a) => {
                KeyMatch::Plain { offsets: a.value_offsets(), data: a.value_data(), key: key.as_bytes() }
            }
            // The key is compared once per distinct key, not once per attribute.
            StrCol::Dict(keys, values) => KeyMatch::Dict {
                keys,
                table: (0..values.len()).map(|k| values.is_valid(k) && values.value(k) == key).collect(),
            },
        }
    }

    /// The value of attribute entry `j`, if TraceQL can query it.
    fn value(&self, j: usize) -> Option<Val<'c>> {
        if let Some(s) = self.str.and_then(|c| c.get(j)) {
            return Some(Val::Str(s));
        }
        if let Some(c) = self.int.filter(|c| c.is_valid(j)) {
            return Some(Val::Int(c.value(j)));
        }
        if let Some(c) = self.double.filter(|c| c.is_valid(j)) {
            return Some(Val::Float(c.value(j)));
        }
        if let Some(c) = self.bool.filter(|c| c.is_valid(j)) {
            return Some(Val::Bool(c.value(j)));
        }
        let any = self.any.filter(|c| c.is_valid(j))?;
        ArrayVal::decode(any.value(j)).map(|a| Val::Arr(Rc::new(a)))
    }
}

/// The distinct keys of an attribute list column (span or resource attributes), sorted.
pub(crate) fn list_keys(name: &str, column: &ArrayRef) -> Result<Vec<String>> {
    let list = AttrList::of(name, column)?;
    let (first, last) = (list.offsets.first().copied().unwrap_or(0), list.offsets.last().copied().unwrap_or(0));
    let entries = first.max(0) as usize..last.max(first).max(0) as usize;
    let mut keys: Vec<&str> = entries.filter_map(|j| list.keys.get(j)).collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(keys.into_iter().map(str::to_owned).collect())
}

/// Finds the entries of one key in an attribute list's key column.
pub(crate) enum KeyMatch<'c> {
    Plain { offsets: &'c [i32], data: &'c [u8], key: &'c [u8] },
    Dict { keys: &'c Int32Array, table: Vec<bool> },
}

impl KeyMatch<'_> {
    /// The entries in `entries` with the key, ascending: one pass over the key column.
    fn matches(&self, entries: Range<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        match self {
            KeyMatch::Plain { offsets, data, key } => {
                let Some(offsets) = offsets.get(entries.start..entries.end + 1) else { return out };
                for (k, w) in offsets.windows(2).enumerate() {
                    let (s, e) = (w[0] as usize, w[1] as usize);
                    // Lengths or first bytes differ for most keys: compare the rest only then.
                    if e.wrapping_sub(s) == key.len() && data.get(s) == key.first() && data.get(s..e) == Some(*key) {
                        out.push(entries.start + k);
                    }
                }
            }
            KeyMatch::Dict { keys, table } => {
                let Some(indices) = keys.values().get(entries.clone()) else { return out };
                for (k, &i) in indices.iter().enumerate() {
                    if table.get(i as usize) == Some(&true) && keys.is_valid(entries.start + k) {
                        out.push(entries.start + k);
                    }
                }
            }
        }
        out
    }
}

/// One key of span, resource or scope attributes: the dedicated column (if the block has one)
/// and the entries of the generic list.
pub(crate) struct Attrs<'c> {
    key: KeyMatch<'c>,
    dedicated: Option<Col<'c>>,
    list: AttrList<'c>,
}

impl<'c> Attrs<'c> {
    pub(super) fn new(key: &'c str, dedicated: Option<Col<'c>>, list: AttrList<'c>) -> Attrs<'c> {
        Attrs { key: list.key_matcher(key), dedicated, list }
    }

    /// Calls `f(row, entry)` for every entry with the key in `rows`, rows ascending.
    fn each_entry(&self, rows: Range<usize>, mut f: impl FnMut(usize, usize)) {
        let offsets = self.list.offsets;
        let end = rows.end.min(offsets.len().saturating_sub(1));
        let (Some(&first), Some(&last)) = (offsets.get(rows.start), offsets.get(end)) else { return };
        if first < 0 || first > last {
            return;
        }
        let mut row = rows.start;
        for j in self.key.matches(first as usize..last as usize) {
            while row < end && offsets[row + 1] as usize <= j {
                row += 1;
            }
            if row == end {
                break;
            }
            f(row, j);
        }
    }

    pub(super) fn test(&self, m: &Matcher, n: usize) -> Vec<Tri> {
        let mut out = match &self.dedicated {
            Some(c) => c.test(m, n),
            None => vec![Tri::N; n],
        };
        let mut strings = self.list.str.map(|c| StrTest::new(c, m));
        self.each_entry(0..n, |row, j| {
            // Most values are strings: compare them without building a value.
            if let Some(r) = strings.as_mut().and_then(|t| t.at(m, j)) {
                out[row] = fold(m.negated, out[row], r);
            } else if let Some(v) = self.list.value(j) {
                out[row] = m.fold(out[row], &v);
            }
        });
        out
    }

    pub(super) fn present(&self, n: usize) -> Vec<bool> {
        let mut out = match &self.dedicated {
            Some(c) => (0..n).map(|row| !c.value(row).is_nil()).collect(),
            None => vec![false; n],
        };
        self.each_entry(0..n, |row, j| out[row] = out[row] || self.list.value(j).is_some());
        out
    }

    /// The value of each row in `rows`: the first of the best rank (see the module docs).
    pub(super) fn values(&self, rows: Range<usize>) -> Vec<Val<'c>> {
        let start = rows.start;
        let mut out: Vec<Val> = match &self.dedicated {
            Some(c) => rows.clone().map(|row| c.value(row)).collect(),
            None => vec![Val::Nil; rows.len()],
        };
        self.each_entry(rows, |row, j| {
            if let Some(v) = self.list.value(j) {
                let best = &mut out[row - start];
                if best.is_nil() || v.rank() < best.rank() {
                    *best = v;
                }
            }
        });
        out
    }
}
