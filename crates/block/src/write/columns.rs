//! Column builders: span rows are appended to Arrow builders in schema order and finished into
//! a `RecordBatch` a batch at a time. Attributes of a dedicated key go to their own column; all
//! others to the generic attribute list of their scope.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::{ArrayBuilder, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{
    ArrayRef, FixedSizeBinaryArray, Int32Array, ListArray, RecordBatch, StructArray, UInt32Array, UInt64Array,
};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, SchemaRef};

use super::decode::{Trace, nested_set};
use super::view::{EventV, Kv, LinkV, Val};
use crate::error::Result;
use crate::meta::AttributeKeys;
use crate::schema::{self, AttrKind, AttrScope, Dedicated};

/// Builder for a list of attributes per row (span, resource, scope, event or link attributes).
struct AttrsBuilder {
    offsets: Vec<i32>,
    key: StringBuilder,
    str: StringBuilder,
    int: Int64Builder,
    double: Float64Builder,
    bool: BooleanBuilder,
    bytes: BinaryBuilder,
    any: BinaryBuilder,
}

impl AttrsBuilder {
    fn new() -> Self {
        AttrsBuilder {
            offsets: vec![0],
            key: StringBuilder::new(),
            str: StringBuilder::new(),
            int: Int64Builder::new(),
            double: Float64Builder::new(),
            bool: BooleanBuilder::new(),
            bytes: BinaryBuilder::new(),
            any: BinaryBuilder::new(),
        }
    }

    fn push(&mut self, kv: &Kv<'_>) {
        self.key.append_value(kv.key);
        let value = &kv.value;
        match value {
            Val::Str(s) => self.str.append_value(s),
            _ => self.str.append_null(),
        }
        match value {
            Val::Int(i) => self.int.append_value(*i),
            _ => self.int.append_null(),
        }
        match value {
            Val::Double(d) => self.double.append_value(*d),
            _ => self.double.append_null(),
        }
        match value {
            Val::Bool(b) => self.bool.append_value(*b),
            _ => self.bool.append_null(),
        }
        match value {
            Val::Bytes(b) => self.bytes.append_value(b),
            _ => self.bytes.append_null(),
        }
        match value {
            Val::Nested(encoded) => self.any.append_value(encoded),
            // An empty AnyValue (the SDKs send one for a None attribute) is not the same as
            // no value at all: it is kept as zero bytes, which decode to the empty AnyValue.
            Val::Empty => self.any.append_value(b""),
            _ => self.any.append_null(),
        }
    }

    fn end_row(&mut self) {
        self.offsets.push(self.key.len() as i32);
    }

    fn finish(&mut self) -> ArrayRef {
        let fields = schema::attr_fields();
        let values = StructArray::new(
            fields.clone(),
            vec![
                Arc::new(self.key.finish()),
                Arc::new(self.str.finish()),
                Arc::new(self.int.finish()),
                Arc::new(self.double.finish()),
                Arc::new(self.bool.finish()),
                Arc::new(self.bytes.finish()),
                Arc::new(self.any.finish()),
            ],
            None,
        );
        list(std::mem::replace(&mut self.offsets, vec![0]), Arc::new(values), &schema::attrs_type())
    }
}

/// A ListArray of non-null rows over `values`, typed as `list_type`.
fn list(offsets: Vec<i32>, values: ArrayRef, list_type: &DataType) -> ArrayRef {
    let DataType::List(field) = list_type else { unreachable!("list types only") };
    let field: FieldRef = field.clone();
    Arc::new(ListArray::new(field, OffsetBuffer::new(ScalarBuffer::from(offsets)), values, None))
}

struct EventsBuilder {
    offsets: Vec<i32>,
    time: Vec<i64>,
    name: StringBuilder,
    attrs: AttrsBuilder,
    dropped: Vec<u32>,
}

impl EventsBuilder {
    fn new() -> Self {
        EventsBuilder {
            offsets: vec![0],
            time: Vec::new(),
            name: StringBuilder::new(),
            attrs: AttrsBuilder::new(),
            dropped: Vec::new(),
        }
    }

    fn push_row(&mut self, events: &[EventV<'_>], span_start: u64) {
        for e in events {
            // Relative to the span start: small numbers; wrapping keeps any u64 lossless.
            self.time.push(e.time_unix_nano.wrapping_sub(span_start) as i64);
            self.name.append_value(e.name);
            e.attributes.iter().for_each(|kv| self.attrs.push(kv));
            self.attrs.end_row();
            self.dropped.push(e.dropped_attributes_count);
        }
        self.offsets.push(self.time.len() as i32);
    }

    fn finish(&mut self) -> ArrayRef {
        let values = StructArray::new(
            schema::event_fields(),
            vec![
                Arc::new(arrow_array::Int64Array::from(std::mem::take(&mut self.time))),
                Arc::new(self.name.finish()),
                self.attrs.finish(),
                Arc::new(UInt32Array::from(std::mem::take(&mut self.dropped))),
            ],
            None,
        );
        list(std::mem::replace(&mut self.offsets, vec![0]), Arc::new(values), &schema::list_of(schema::event_fields()))
    }
}

struct LinksBuilder {
    offsets: Vec<i32>,
    trace_id: BinaryBuilder,
    span_id: BinaryBuilder,
    trace_state: StringBuilder,
    flags: Vec<u32>,
    attrs: AttrsBuilder,
    dropped: Vec<u32>,
}

impl LinksBuilder {
    fn new() -> Self {
        LinksBuilder {
            offsets: vec![0],
            trace_id: BinaryBuilder::new(),
            span_id: BinaryBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: Vec::new(),
            attrs: AttrsBuilder::new(),
            dropped: Vec::new(),
        }
    }

    fn push_row(&mut self, links: &[LinkV<'_>]) {
        for l in links {
            self.trace_id.append_value(l.trace_id);
            self.span_id.append_value(l.span_id);
            self.trace_state.append_value(l.trace_state);
            self.flags.push(l.flags);
            l.attributes.iter().for_each(|kv| self.attrs.push(kv));
            self.attrs.end_row();
            self.dropped.push(l.dropped_attributes_count);
        }
        self.offsets.push(self.flags.len() as i32);
    }

    fn finish(&mut self) -> ArrayRef {
        let values = StructArray::new(
            schema::link_fields(),
            vec![
                Arc::new(self.trace_id.finish()),
                Arc::new(self.span_id.finish()),
                Arc::new(self.trace_state.finish()),
                Arc::new(UInt32Array::from(std::mem::take(&mut self.flags))),
                self.attrs.finish(),
                Arc::new(UInt32Array::from(std::mem::take(&mut self.dropped))),
            ],
            None,
        );
        list(std::mem::replace(&mut self.offsets, vec![0]), Arc::new(values), &schema::list_of(schema::link_fields()))
    }
}

enum DedicatedBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
}

/// A quick multiply-rotate hash for the dedicated-key index, looked up for every attribute.
/// Its keys are the few dedicated keys, fixed per block, so colliding input only costs a few
/// extra comparisons (the usual hash-flooding worry needs a map that grows with the input).
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type KeyIndex = HashMap<String, usize, std::hash::BuildHasherDefault<KeyHasher>>;

/// Dedicated columns of one scope and the generic list for the attributes they do not take.
pub(super) struct ScopedAttrs {
    columns: Vec<DedicatedBuilder>,
    index: KeyIndex,
    filled: Vec<bool>,
    generic: AttrsBuilder,
    /// Keys that went to the generic list (None once there are too many to be worth listing):
    /// a query for any other key never needs to read that list.
    pub generic_keys: Option<HashSet<String>>,
}

impl ScopedAttrs {
    fn new(dedicated: &[Dedicated], scope: AttrScope) -> Self {
        let mut columns = Vec::new();
        let mut index = KeyIndex::default();
        for d in dedicated.iter().filter(|d| d.scope == scope) {
            index.insert(d.key.clone(), columns.len());
            columns.push(match d.kind {
                AttrKind::String => DedicatedBuilder::Str(StringBuilder::new()),
                AttrKind::Int => DedicatedBuilder::Int(Int64Builder::new()),
            });
        }
        let filled = vec![false; columns.len()];
        ScopedAttrs { columns, index, filled, generic: AttrsBuilder::new(), generic_keys: Some(HashSet::new()) }
    }

    /// One row: the first scalar of the dedicated type per dedicated key goes to its column,
    /// everything else (other types, repeated keys) to the generic list, so nothing is lost.
    fn push_row(&mut self, attrs: &[Kv<'_>]) {
        self.filled.iter_mut().for_each(|f| *f = false);
        for kv in attrs {
            if let Some(&i) = self.index.get(kv.key)
                && !self.filled[i]
            {
                let taken = match (&mut self.columns[i], &kv.value) {
                    (DedicatedBuilder::Str(b), Val::Str(s)) => {
                        b.append_value(s);
                        true
                    }
                    (DedicatedBuilder::Int(b), Val::Int(v)) => {
                        b.append_value(*v);
                        true
                    }
                    _ => false,
                };
                if taken {
                    self.filled[i] = true;
                    continue;
                }
            }
            self.generic.push(kv);
            if let Some(keys) = &mut self.generic_keys
                && !keys.contains(kv.key)
            {
                if keys.len() >= AttributeKeys::MAX_PER_SCOPE {
                    self.generic_keys = None;
                } else {
                    keys.insert(kv.key.to_owned());
                }
            }
        }
        for (column, filled) in self.columns.iter_mut().zip(&self.filled) {
            if !filled {
                match column {
                    DedicatedBuilder::Str(b) => b.append_null(),
                    DedicatedBuilder::Int(b) => b.append_null(),
                }
            }
        }
        self.generic.end_row();
    }

    fn finish_columns(&mut self) -> Vec<ArrayRef> {
        self.columns
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    DedicatedBuilder::Str(b) => Arc::new(b.finish()),
                    DedicatedBuilder::Int(b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }
}

/// Column builders for one batch of span rows, in schema order.
pub(super) struct Rows {
    pub len: usize,
    trace_id: Vec<u8>,
    span_id: BinaryBuilder,
    parent_span_id: BinaryBuilder,
    nested_left: Vec<i32>,
    nested_right: Vec<i32>,
    nested_parent: Vec<i32>,
    start: Vec<u64>,
    duration: Vec<u64>,
    name: StringBuilder,
    kind: Vec<i32>,
    trace_state: StringBuilder,
    flags: Vec<u32>,
    status_code: Vec<i32>,
    status_message: StringBuilder,
    dropped_attributes: Vec<u32>,
    dropped_events: Vec<u32>,
    dropped_links: Vec<u32>,
    pub span_attrs: ScopedAttrs,
    events: EventsBuilder,
    links: LinksBuilder,
    pub resource_attrs: ScopedAttrs,
    resource_dropped: Vec<u32>,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attrs: AttrsBuilder,
    scope_dropped: Vec<u32>,
    scope_schema_url: StringBuilder,
}

impl Rows {
    pub fn new(dedicated: &[Dedicated]) -> Self {
        Rows {
            len: 0,
            trace_id: Vec::new(),
            span_id: BinaryBuilder::new(),
            parent_span_id: BinaryBuilder::new(),
            nested_left: Vec::new(),
            nested_right: Vec::new(),
            nested_parent: Vec::new(),
            start: Vec::new(),
            duration: Vec::new(),
            name: StringBuilder::new(),
            kind: Vec::new(),
            trace_state: StringBuilder::new(),
            flags: Vec::new(),
            status_code: Vec::new(),
            status_message: StringBuilder::new(),
            dropped_attributes: Vec::new(),
            dropped_events: Vec::new(),
            dropped_links: Vec::new(),
            span_attrs: ScopedAttrs::new(dedicated, AttrScope::Span),
            events: EventsBuilder::new(),
            links: LinksBuilder::new(),
            resource_attrs: ScopedAttrs::new(dedicated, AttrScope::Resource),
            resource_dropped: Vec::new(),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attrs: AttrsBuilder::new(),
            scope_dropped: Vec::new(),
            scope_schema_url: StringBuilder::new(),
        }
    }

    pub fn push_trace(&mut self, trace: &Trace<'_, '_>) {
        let span_ids: Vec<&[u8]> = trace.spans.iter().map(|s| s.span.span_id).collect();
        let parent_ids: Vec<&[u8]> = trace.spans.iter().map(|s| s.span.parent_span_id).collect();
        let nested = nested_set(&span_ids, &parent_ids);
        for (s, n) in trace.spans.iter().zip(&nested) {
            let span = s.span;
            self.len += 1;
            self.trace_id.extend_from_slice(&trace.trace_id.0);
            self.span_id.append_value(span.span_id);
            if n.explicit_parent {
                self.parent_span_id.append_value(span.parent_span_id);
            } else {
                self.parent_span_id.append_null();
            }
            self.nested_left.push(n.left);
            self.nested_right.push(n.right);
            self.nested_parent.push(n.parent);
            self.start.push(span.start_time_unix_nano);
            // Wrapping keeps an end before the start lossless.
            self.duration.push(span.end_time_unix_nano.wrapping_sub(span.start_time_unix_nano));
            self.name.append_value(span.name);
            self.kind.push(span.kind);
            self.trace_state.append_value(span.trace_state);
            self.flags.push(span.flags);
            self.status_code.push(span.status_code);
            self.status_message.append_value(span.status_message);
            self.dropped_attributes.push(span.dropped_attributes_count);
            self.dropped_events.push(span.dropped_events_count);
            self.dropped_links.push(span.dropped_links_count);
            self.span_attrs.push_row(&span.attributes);
            self.events.push_row(&span.events, span.start_time_unix_nano);
            self.links.push_row(&span.links);
            self.resource_attrs.push_row(&s.rs.resource);
            self.resource_dropped.push(s.rs.resource_dropped);
            self.resource_schema_url.append_value(s.rs.schema_url);
            let ss = &s.rs.scope_spans[s.scope];
            self.scope_name.append_value(ss.scope.name);
            self.scope_version.append_value(ss.scope.version);
            ss.scope.attributes.iter().for_each(|kv| self.scope_attrs.push(kv));
            self.scope_attrs.end_row();
            self.scope_dropped.push(ss.scope.dropped_attributes_count);
            self.scope_schema_url.append_value(ss.schema_url);
        }
    }

    pub fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let trace_id = FixedSizeBinaryArray::new(16, Buffer::from_vec(std::mem::take(&mut self.trace_id)), None);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(trace_id),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(Int32Array::from(std::mem::take(&mut self.nested_left))),
            Arc::new(Int32Array::from(std::mem::take(&mut self.nested_right))),
            Arc::new(Int32Array::from(std::mem::take(&mut self.nested_parent))),
            Arc::new(UInt64Array::from(std::mem::take(&mut self.start))),
            Arc::new(UInt64Array::from(std::mem::take(&mut self.duration))),
            Arc::new(self.name.finish()),
            Arc::new(Int32Array::from(std::mem::take(&mut self.kind))),
            Arc::new(self.trace_state.finish()),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.flags))),
            Arc::new(Int32Array::from(std::mem::take(&mut self.status_code))),
            Arc::new(self.status_message.finish()),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.dropped_attributes))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.dropped_events))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.dropped_links))),
        ];
        columns.extend(self.span_attrs.finish_columns());
        columns.push(self.span_attrs.generic.finish());
        columns.push(self.events.finish());
        columns.push(self.links.finish());
        columns.extend(self.resource_attrs.finish_columns());
        columns.extend([
            self.resource_attrs.generic.finish(),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.resource_dropped))),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.scope_attrs.finish(),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.scope_dropped))),
            Arc::new(self.scope_schema_url.finish()),
        ]);
        self.len = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}
