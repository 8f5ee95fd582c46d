//! Row-group pruning: whether a per-span condition can be true anywhere in a row group, from
//! the block's value index (which keys the row group has, their value types, their distinct
//! values when few, a filter over the rest) without reading it. Sound by construction: every
//! answer other than "may hold" is backed by the index saying which values exist, and
//! everything the index does not describe (events, links, scope attributes, intrinsics,
//! computed values) may hold.

use spoor_block::schema::AttrScope;
use spoor_block::{AttributeKeys, GroupIndex, KeyValues, kinds};
use spoor_traceql::ast::{Scope, Static};

use super::compare::{Matcher, Op};
use super::expr::Expr;
use super::field::Field;
use super::truth::Tri;
use super::value::Val;

/// Floats beyond this are not exact integers of their own: an int compared with such a float
/// may be equal after rounding, so the index is not asked.
const EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

impl Expr {
    /// False when no row of the row group can make this expression true (Kleene truth: `&&`
    /// needs both sides true, `||` one). `catalog`: the block's key catalog, for keys the index
    /// does not cover (unscoped attributes may be event, link or scope attributes).
    pub(crate) fn may_hold(&self, group: &GroupIndex, catalog: &AttributeKeys) -> bool {
        match self {
            Expr::And(a, b) => a.may_hold(group, catalog) && b.may_hold(group, catalog),
            Expr::Or(a, b) => a.may_hold(group, catalog) || b.may_hold(group, catalog),
            Expr::Match { field: Field::Attr { scope, key }, m } => {
                attribute(*scope, key, group, catalog, |v| may_satisfy(m, v))
            }
            // `!= nil` needs the key; `= nil` holds on any span without it.
            Expr::IsNil { field: Field::Attr { scope, key }, nil: false } => {
                attribute(*scope, key, group, catalog, |v| v.kinds() & !kinds::NONE != 0)
            }
            _ => true,
        }
    }
}

/// Whether some span may satisfy `test` for `key` in `scope`.
fn attribute(
    scope: Scope,
    key: &str,
    group: &GroupIndex,
    catalog: &AttributeKeys,
    test: impl Fn(KeyValues<'_>) -> bool,
) -> bool {
    let look = |s: AttrScope| group.key(s, key).is_some_and(&test);
    match scope {
        Scope::Span => look(AttrScope::Span),
        Scope::Resource => look(AttrScope::Resource),
        // The first scope with a value decides: true only where some scope's test is.
        Scope::Unscoped => look(AttrScope::Span) || look(AttrScope::Resource) || elsewhere(catalog, key),
        _ => true,
    }
}

/// Whether `key` may be an event, link or scope attribute of the block.
fn elsewhere(catalog: &AttributeKeys, key: &str) -> bool {
    catalog.truncated
        || [&catalog.event, &catalog.link, &catalog.instrumentation]
            .iter()
            .any(|list| list.binary_search_by(|k| k.as_str().cmp(key)).is_ok())
}

/// Whether some span with these values may satisfy `m` (any value for positive operators; for
/// `!=` and `!~` a value that differs, which is necessary for none to be equal).
fn may_satisfy(m: &Matcher, v: KeyValues<'_>) -> bool {
    let k = v.kinds();
    // Elements of arrays and key-value lists may compare with anything.
    if k & kinds::LIST != 0 {
        return true;
    }
    if m.op == Op::Eq && !m.negated {
        return match &m.lit {
            Static::Str(s) => v.may_have_str(s),
            // Numbers compare by value across int, float and duration.
            Static::Int(i) | Static::Duration(i) => k & kinds::DOUBLE != 0 || v.may_have_int(*i),
            // Only an integral float can equal an int (NaN and infinities have no fraction of 0).
            Static::Float(f) => {
                k & kinds::DOUBLE != 0
                    || (k & kinds::INT != 0
                        && f.fract() == 0.0
                        && (f.abs() >= EXACT_FLOAT_INT || v.may_have_int(*f as i64)))
            }
            Static::Bool(_) => k & kinds::BOOL != 0,
            _ => true,
        };
    }
    // Other operators are decided on the exact values, when the row group lists all of them.
    // Bytes and absent values never satisfy a comparison; doubles and bools are not listed.
    if k & (kinds::DOUBLE | kinds::BOOL) != 0 {
        return true;
    }
    let (strings, ints) = (v.strings(), v.ints());
    if (k & kinds::STR != 0 && strings.is_none()) || (k & kinds::INT != 0 && ints.is_none()) {
        return true;
    }
    strings.unwrap_or_default().iter().any(|s| m.test(&Val::Str(s)) == Tri::T)
        || ints.unwrap_or_default().iter().any(|&i| m.test(&Val::Int(i)) == Tri::T)
}
