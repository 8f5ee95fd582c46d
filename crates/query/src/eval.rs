//! Per-span evaluation of field expressions (what `{ ... }`, `by()` and aggregate arguments
//! hold) over the Arrow columns of the block layout, a column at a time.
//!
//! Truth is three-valued (Kleene): a missing attribute is `nil`, `nil` propagates through
//! comparisons, arithmetic and `!`, and a filter keeps a span only where its condition is
//! [`Tri::T`]. A comparison of an attribute with a literal ([`Expr::Match`]) never builds
//! values: it is one loop over the column (once per value for dictionary columns) writing a
//! [`Tri`] per row. Everything else materialises a [`Val`] per row, borrowing strings from the
//! batch.
//!
//! An attribute of a span may hold several values: the dedicated column's plus every entry of
//! the generic list with that key (a repeated key, or a second value of another type), and an
//! array holds several too. A comparison is true when any value satisfies it; `!=` and `!~`
//! when none equals (matches). Where a single value is needed (arithmetic, `by()`, results),
//! the first string wins, else the first int, float, bool, array: that choice does not depend
//! on which key a block dedicated, since a dedicated column holds the first value of its type.
//!
//! The parts, each depending only on those listed before it:
//!
//! - `truth`: [`Tri`] and how several values' comparisons fold into one truth per span.
//! - `field`: what a field reads ([`Field`]) and the block columns that takes.
//! - `value`: the value of a field for one span ([`Val`]), arrays, arithmetic.
//! - `compare`: operators, scalar comparisons, the literal [`Matcher`].
//! - `columns`: typed single-valued columns and the per-column comparison loops.
//! - `attributes`: one key of attribute lists, with its dedicated column.
//! - `source`: where a field is in a batch, and the batch being evaluated ([`Ctx`]).
//! - `expr`: compiled expressions ([`Expr`]) evaluated a column at a time.
//! - `prune`: whether an expression can hold in a row group, by the block's value index.
//!
//! The rest of the crate imports from here only; the parts import each other directly, never
//! this file, so the module has no import cycle.

mod attributes;
pub(crate) mod columns;
mod compare;
mod expr;
mod field;
mod prune;
mod source;
mod truth;
mod value;

pub(crate) use attributes::list_keys;
pub(crate) use columns::{IdCol, Num, StrCol};
pub(crate) use compare::{Matcher, Op, cmp_scalar};
pub(crate) use expr::Expr;
pub(crate) use field::Field;
pub(crate) use source::{Ctx, Derived, Source};
pub(crate) use truth::{Tri, fold};
pub(crate) use value::{Val, arith};
