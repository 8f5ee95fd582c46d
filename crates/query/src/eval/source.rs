//! Where a field's values are in a batch ([`Source`]): a typed column, one key of attribute
//! lists, a column of events or links, or the first scope with a value for unscoped
//! attributes; and the batch being evaluated ([`Ctx`]) that resolves fields to sources.

use std::ops::Range;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::DataType;
use spoor_block::columns as col;
use spoor_traceql::ast::{Intrinsic, Scope};

use super::attributes::{AttrList, Attrs};
use super::columns::{Col, IdCol, Num, StrCol, struct_field, type_error};
use super::compare::Matcher;
use super::field::{Field, dedicated_resource_column};
use super::truth::Tri;
use super::value::Val;
use crate::error::{Error, Result};

/// Values computed per trace (see `spanset.rs`), one per row of the batch.
#[derive(Default)]
pub(crate) struct Derived {
    pub(crate) parent_id: Option<BinaryArray>,
    pub(crate) child_count: Option<Int64Array>,
    pub(crate) trace_duration: Option<Int64Array>,
    pub(crate) root_name: Option<StringArray>,
    pub(crate) root_service: Option<StringArray>,
}

/// A batch being evaluated, and the per-trace values when whole traces are at hand.
pub(crate) struct Ctx<'c> {
    batch: &'c RecordBatch,
    derived: Option<&'c Derived>,
    pub(crate) rows: usize,
}

impl<'c> Ctx<'c> {
    pub(crate) fn new(batch: &'c RecordBatch, derived: Option<&'c Derived>) -> Ctx<'c> {
        Ctx { batch, derived, rows: batch.num_rows() }
    }

    pub(crate) fn column(&self, name: &str) -> Result<&'c ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| Error::Corrupt(format!("the batch has no column {name}")))
    }

    /// How to read `field` from this batch.
    pub(crate) fn source(&self, field: &'c Field) -> Result<Source<'c>> {
        match field {
            Field::Attr { scope, key } => self.attr_source(*scope, key),
            Field::Intrinsic(i) => self.intrinsic(*i),
        }
    }

    fn attr_source(&self, scope: Scope, key: &'c str) -> Result<Source<'c>> {
        let attrs = |dedicated: Option<String>, list: &str| -> Result<Source<'c>> {
            let dedicated = match dedicated.and_then(|name| self.batch.column_by_name(&name).map(|c| (name, c))) {
                Some((name, c)) if matches!(c.data_type(), DataType::Int64) => Some(Col::Int(Num::of(&name, c)?)),
                Some((name, c)) => Some(Col::Str(StrCol::of(&name, c)?)),
                None => None,
            };
            let list = AttrList::of(list, self.column(list)?)?;
            Ok(Source::Attrs(Attrs::new(key, dedicated, list)))
        };
        Ok(match scope {
            Scope::Span => attrs(Some(format!("span.{key}")), col::ATTRS)?,
            Scope::Resource => attrs(Some(dedicated_resource_column(key)), col::RESOURCE_ATTRS)?,
            Scope::Instrumentation => attrs(None, col::SCOPE_ATTRS)?,
            Scope::Event | Scope::Link => {
                let (offsets, items) =
                    self.list_of_structs(if scope == Scope::Event { col::EVENTS } else { col::LINKS })?;
                let list = AttrList::of(col::ATTRS, struct_field(items, col::ATTRS)?)?;
                let inner = Source::Attrs(Attrs::new(key, None, list));
                Source::Each { offsets, len: items.len(), inner: Box::new(inner) }
            }
            Scope::Unscoped => Source::First(
                [Scope::Span, Scope::Resource, Scope::Event, Scope::Link, Scope::Instrumentation]
                    .into_iter()
                    .map(|s| self.attr_source(s, key))
                    .collect::<Result<_>>()?,
            ),
            Scope::Parent => return Err(Error::Invalid("parent not yet supported".into())),
        })
    }

    fn intrinsic(&self, i: Intrinsic) -> Result<Source<'c>> {
        use Intrinsic::*;
        let str = |name: &str| Ok::<_, Error>(Source::Column(Col::Str(StrCol::of(name, self.column(name)?)?)));
        let num = |name: &str| Num::of(name, self.column(name)?);
        let derived = |what: &str| {
            self.derived.ok_or_else(|| Error::Invalid(format!("{what} needs whole traces (not in a prefilter)")))
        };
        let missing = || Error::Invalid("trace-level values were not computed".into());
        Ok(match i {
            Duration => Source::Column(Col::Duration(num(col::DURATION)?)),
            Name => str(col::NAME)?,
            Status => Source::Column(Col::Status(num(col::STATUS_CODE)?)),
            StatusMessage => str(col::STATUS_MESSAGE)?,
            Kind => Source::Column(Col::Kind(num(col::KIND)?)),
            SpanId => Source::Column(Col::Id(IdCol::of(col::SPAN_ID, self.column(col::SPAN_ID)?)?)),
            TraceId => Source::Column(Col::Id(IdCol::of(col::TRACE_ID, self.column(col::TRACE_ID)?)?)),
            ParentId => {
                Source::Column(Col::Id(IdCol::Bin(derived("span:parentID")?.parent_id.as_ref().ok_or_else(missing)?)))
            }
            ChildCount => Source::Column(Col::Int(Num::I64(
                derived("span:childCount")?.child_count.as_ref().ok_or_else(missing)?,
            ))),
            TraceDuration => Source::Column(Col::Duration(Num::I64(
                derived("trace:duration")?.trace_duration.as_ref().ok_or_else(missing)?,
            ))),
            TraceRootName => Source::Column(Col::Str(StrCol::Plain(
                derived("trace:rootName")?.root_name.as_ref().ok_or_else(missing)?,
            ))),
            TraceRootService => Source::Column(Col::Str(StrCol::Plain(
                derived("trace:rootService")?.root_service.as_ref().ok_or_else(missing)?,
            ))),
            EventName | EventTimeSinceStart => {
                let (offsets, events) = self.list_of_structs(col::EVENTS)?;
                let inner = if i == EventName {
                    Col::Str(StrCol::of(col::NAME, struct_field(events, col::NAME)?)?)
                } else {
                    Col::Duration(Num::of(col::TIME_SINCE_START, struct_field(events, col::TIME_SINCE_START)?)?)
                };
                Source::Each { offsets, len: events.len(), inner: Box::new(Source::Column(inner)) }
            }
            LinkTraceId | LinkSpanId => {
                let (offsets, links) = self.list_of_structs(col::LINKS)?;
                let name = if i == LinkTraceId { col::TRACE_ID } else { col::SPAN_ID };
                let inner = Col::Id(IdCol::of(name, struct_field(links, name)?)?);
                Source::Each { offsets, len: links.len(), inner: Box::new(Source::Column(inner)) }
            }
            InstrumentationName => str(col::SCOPE_NAME)?,
            InstrumentationVersion => str(col::SCOPE_VERSION)?,
            NestedSetLeft => Source::Column(Col::Int(num(col::NESTED_LEFT)?)),
            NestedSetRight => Source::Column(Col::Int(num(col::NESTED_RIGHT)?)),
            NestedSetParent => Source::Column(Col::Int(num(col::NESTED_PARENT)?)),
            Parent => return Err(Error::Invalid("parent not yet supported".into())),
        })
    }

    fn list_of_structs(&self, name: &str) -> Result<(&'c [i32], &'c StructArray)> {
        let column = self.column(name)?;
        let list = column.as_list_opt::<i32>().ok_or_else(|| type_error(name, column, "a list"))?;
        let items = list.values().as_struct_opt().ok_or_else(|| type_error(name, column, "a list of structs"))?;
        Ok((list.value_offsets(), items))
    }
}

/// How to read one field from a batch.
pub(crate) enum Source<'c> {
    Column(Col<'c>),
    Attrs(Attrs<'c>),
    /// Events or links: `inner` has a row per event (link); a span satisfies a condition when
    /// at least one of its events does.
    Each {
        offsets: &'c [i32],
        len: usize,
        inner: Box<Source<'c>>,
    },
    /// Unscoped attributes: the first scope (span, resource, event, link, scope) with a value.
    First(Vec<Source<'c>>),
}

impl<'c> Source<'c> {
    /// `field OP literal` for `n` rows.
    pub(crate) fn test(&self, m: &Matcher, n: usize) -> Vec<Tri> {
        match self {
            Source::Column(c) => c.test(m, n),
            Source::Attrs(a) => a.test(m, n),
            Source::Each { offsets, len, inner } => {
                let items = inner.test(m, *len);
                (0..n).map(|row| any_of(&items, offsets, row)).collect()
            }
            Source::First(scopes) => {
                let mut out = vec![Tri::N; n];
                for scope in scopes {
                    for (o, t) in out.iter_mut().zip(scope.test(m, n)) {
                        if *o == Tri::N {
                            *o = t;
                        }
                    }
                }
                out
            }
        }
    }

    /// Whether each of `n` rows has a value.
    fn present(&self, n: usize) -> Vec<bool> {
        match self {
            Source::Each { offsets, len, inner } => {
                let items = inner.present(*len);
                (0..n)
                    .map(|row| range(offsets, row).is_some_and(|r| items.get(r).is_some_and(|i| i.contains(&true))))
                    .collect()
            }
            Source::First(scopes) => {
                let mut out = vec![false; n];
                for scope in scopes {
                    out.iter_mut().zip(scope.present(n)).for_each(|(o, p)| *o |= p);
                }
                out
            }
            Source::Attrs(a) => a.present(n),
            Source::Column(c) => (0..n).map(|row| !c.value(row).is_nil()).collect(),
        }
    }

    /// `field = nil` (`nil`) or `field != nil`. For events and links: some event lacks
    /// (has) the attribute, so a span without events matches neither, as in Tempo.
    pub(crate) fn nil_test(&self, nil: bool, n: usize) -> Vec<Tri> {
        match self {
            Source::Each { offsets, len, inner } => {
                let items = inner.present(*len);
                (0..n)
                    .map(|row| {
                        let found = range(offsets, row).and_then(|r| items.get(r)).is_some_and(|i| i.contains(&!nil));
                        Tri::from_bool(found)
                    })
                    .collect()
            }
            _ => self.present(n).into_iter().map(|p| Tri::from_bool(p != nil)).collect(),
        }
    }

    /// The value of each of `n` rows.
    pub(crate) fn values(&self, n: usize) -> Vec<Val<'c>> {
        match self {
            Source::Column(c) => (0..n).map(|row| c.value(row)).collect(),
            Source::Attrs(a) => a.values(0..n),
            Source::Each { offsets, len, inner } => {
                let items = inner.values(*len);
                (0..n)
                    .map(|row| {
                        let items = range(offsets, row).and_then(|r| items.get(r)).unwrap_or(&[]);
                        items.iter().find(|v| !v.is_nil()).cloned().unwrap_or(Val::Nil)
                    })
                    .collect()
            }
            Source::First(scopes) => {
                let mut out = vec![Val::Nil; n];
                for scope in scopes {
                    for (o, v) in out.iter_mut().zip(scope.values(n)) {
                        if o.is_nil() {
                            *o = v;
                        }
                    }
                }
                out
            }
        }
    }

    /// The value of one row (the first event/link with one, for events and links).
    pub(crate) fn value(&self, row: usize) -> Val<'c> {
        match self {
            Source::Column(c) => c.value(row),
            Source::Attrs(a) => a.values(row..row + 1).pop().unwrap_or(Val::Nil),
            Source::Each { offsets, inner, .. } => range(offsets, row)
                .into_iter()
                .flatten()
                .map(|i| inner.value(i))
                .find(|v| !v.is_nil())
                .unwrap_or(Val::Nil),
            Source::First(scopes) => scopes.iter().map(|s| s.value(row)).find(|v| !v.is_nil()).unwrap_or(Val::Nil),
        }
    }
}

/// The items of list row `row`, if its offsets are sane.
fn range(offsets: &[i32], row: usize) -> Option<Range<usize>> {
    let (s, e) = (*offsets.get(row)?, *offsets.get(row + 1)?);
    (0 <= s && s <= e).then_some(s as usize..e as usize)
}

/// True if any item is, else false if any item is, else nil.
fn any_of(items: &[Tri], offsets: &[i32], row: usize) -> Tri {
    let items = range(offsets, row).and_then(|r| items.get(r)).unwrap_or(&[]);
    if items.contains(&Tri::T) {
        Tri::T
    } else if items.contains(&Tri::F) {
        Tri::F
    } else {
        Tri::N
    }
}
