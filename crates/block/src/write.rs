//! The streaming block writer: decodes each trace's fragments, de-duplicates and sorts its spans,
//! numbers them as a nested set, and appends one row per span to Arrow builders that are
//! handed to the Parquet writer a batch at a time. Row groups end on trace boundaries.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{ArrayBuilder, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{
    ArrayRef, FixedSizeBinaryArray, Int32Array, ListArray, RecordBatch, StructArray, UInt32Array, UInt64Array,
};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, SchemaRef};
use bytes::Bytes;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use prost::Message;
use spoor_model::TraceId;
use spoor_model::otlp::{AnyValue, Event, KeyValue, Link, ResourceSpans, Span, any_value};

use crate::filter;
use crate::meta::{AttributeKeys, BlockMeta, ColumnSize, DedicatedColumn, column_sizes, now_unix_nano};
use crate::schema::{self, AttrKind, AttrScope, Dedicated, Encodings};
use crate::{Error, FORMAT, Result};

/// How the writer picks dedicated columns.
#[derive(Clone, Debug)]
pub enum DedicatedPolicy {
    /// Exactly these attributes (plus the resource `service.name`, always dedicated).
    Fixed(Vec<DedicatedColumn>),
    /// Scalar string and int attributes found on at least `min_share` of the first
    /// `sample_spans` spans, most frequent first, at most `max_span` span and `max_resource`
    /// resource columns. The writer buffers the sample's fragments (not decoded) to decide.
    FromData { min_share: f64, max_span: usize, max_resource: usize, sample_spans: usize },
}

#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// A row group ends at the first trace boundary at or after this many spans.
    pub row_group_spans: usize,
    pub zstd_level: i32,
    /// Data-page row limit: the unit find_trace fetches and decompresses per column.
    pub page_rows: usize,
    pub dedicated: DedicatedPolicy,
    /// Encodings of the columns worth tuning (benchmarks compare them).
    pub encodings: Encodings,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            row_group_spans: 100_000,
            zstd_level: 3,
            page_rows: 2_000,
            dedicated: DedicatedPolicy::FromData {
                min_share: 0.05,
                max_span: 20,
                max_resource: 10,
                sample_spans: 50_000,
            },
            encodings: Encodings::default(),
        }
    }
}

/// What a finished block is: its meta (complete) and the bytes of `filter.bin`.
pub struct Finished {
    pub meta: BlockMeta,
    pub filter: Vec<u8>,
}

/// Rows are handed to the Parquet writer in batches of about this many spans.
const BATCH_SPANS: usize = 8192;

pub struct BlockWriter<W: Write + Send> {
    options: WriteOptions,
    tenant: String,
    block_id: String,
    state: State<W>,
    last_trace: Option<TraceId>,
    trace_ids: Vec<TraceId>,
    spans: u64,
    start: u64,
    end: u64,
    keys: KeyCatalog,
}

enum State<W: Write + Send> {
    /// Choosing dedicated columns from the data: fragments are kept until the sample is full.
    Sampling {
        out: W,
        pending: Vec<(TraceId, Vec<Bytes>)>,
        stats: KeyStats,
    },
    Writing(Box<Encoder<W>>),
    /// Only while moving between states, or after an error left the writer unusable.
    Poisoned,
}

impl<W: Write + Send> BlockWriter<W> {
    pub fn new(out: W, tenant: &str, block_id: &str, options: &WriteOptions) -> Result<Self> {
        let state = match &options.dedicated {
            DedicatedPolicy::Fixed(list) => {
                let mut dedicated = vec![Dedicated::new(AttrScope::Resource, "service.name", AttrKind::String)];
                for d in list {
                    let d = Dedicated::from_meta(d)?;
                    let d = Dedicated::new(d.scope, &d.key, d.kind);
                    if !dedicated.iter().any(|x| x.scope == d.scope && x.key == d.key) {
                        dedicated.push(d);
                    }
                }
                State::Writing(Box::new(Encoder::new(out, dedicated, options)?))
            }
            DedicatedPolicy::FromData { .. } => {
                State::Sampling { out, pending: Vec::new(), stats: KeyStats::default() }
            }
        };
        Ok(BlockWriter {
            options: options.clone(),
            tenant: tenant.to_owned(),
            block_id: block_id.to_owned(),
            state,
            last_trace: None,
            trace_ids: Vec::new(),
            spans: 0,
            start: u64::MAX,
            end: 0,
            keys: KeyCatalog::default(),
        })
    }

    /// Appends one trace. `fragments` are encoded `ResourceSpans` of this trace, possibly from
    /// several sources; spans repeated with the same (span ID, kind) are written once (first wins).
    pub fn push_trace(&mut self, trace_id: TraceId, fragments: &[Bytes]) -> Result<()> {
        if let Some(previous) = self.last_trace
            && trace_id <= previous
        {
            return Err(Error::Order { previous, next: trace_id });
        }
        let trace = decode_trace(trace_id, fragments)?;
        if trace.order.is_empty() {
            return Ok(());
        }
        self.last_trace = Some(trace_id);
        self.trace_ids.push(trace_id);
        self.keys.new_trace();
        let mut previous: Option<&Span> = None;
        for s in trace.view().spans {
            let resource = s.rs.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or_default();
            let scope = s.rs.scope_spans[s.scope].scope.as_ref().map(|sc| &sc.attributes[..]).unwrap_or_default();
            self.keys.span(s.span, previous, resource, scope);
            previous = Some(s.span);
            self.spans += 1;
            self.start = self.start.min(s.span.start_time_unix_nano);
            self.end = self.end.max(s.span.end_time_unix_nano);
        }
        let written = match &mut self.state {
            State::Writing(encoder) => encoder.push(&trace),
            State::Sampling { pending, stats, .. } => {
                stats.count(&trace);
                pending.push((trace_id, fragments.to_vec()));
                let DedicatedPolicy::FromData { sample_spans, .. } = self.options.dedicated else {
                    unreachable!("sampling only with FromData")
                };
                if stats.spans >= sample_spans as u64 { self.start_writing() } else { Ok(()) }
            }
            State::Poisoned => return Err(Error::WriterFailed),
        };
        // Bad input was refused above; a failure here leaves a half-written row group behind.
        if written.is_err() {
            self.state = State::Poisoned;
        }
        written
    }

    /// Decides the dedicated columns from the sample and writes the buffered traces.
    fn start_writing(&mut self) -> Result<()> {
        if !matches!(self.state, State::Sampling { .. }) {
            return Ok(());
        }
        let State::Sampling { out, pending, stats } = std::mem::replace(&mut self.state, State::Poisoned) else {
            unreachable!("checked above")
        };
        let DedicatedPolicy::FromData { min_share, max_span, max_resource, .. } = self.options.dedicated else {
            unreachable!("sampling only with FromData")
        };
        let dedicated = stats.choose(min_share, max_span, max_resource);
        let mut encoder = Box::new(Encoder::new(out, dedicated, &self.options)?);
        for (trace_id, fragments) in pending {
            encoder.push(&decode_trace(trace_id, &fragments)?)?;
        }
        self.state = State::Writing(encoder);
        Ok(())
    }

    /// Flushes the last row group and closes the Parquet file.
    pub fn finish(mut self) -> Result<Finished> {
        self.start_writing()?;
        let State::Writing(encoder) = std::mem::replace(&mut self.state, State::Poisoned) else {
            return Err(Error::WriterFailed);
        };
        let written = encoder.finish()?;
        let filter = filter::build(&self.trace_ids)?;
        let empty = self.spans == 0;
        let meta = BlockMeta {
            format: FORMAT.into(),
            block_id: self.block_id,
            tenant: self.tenant,
            start_unix_nano: if empty { 0 } else { self.start },
            end_unix_nano: self.end,
            spans: self.spans,
            traces: self.trace_ids.len() as u64,
            row_groups: written.row_groups,
            data_bytes: written.bytes,
            filter_bytes: filter.len() as u64,
            compaction_level: 0,
            replaces: Vec::new(),
            created_unix_nano: now_unix_nano(),
            dedicated_columns: written.dedicated.iter().map(Dedicated::to_meta).collect(),
            columns: written.columns,
            keys: AttributeKeys {
                generic_span: written.generic_span,
                generic_resource: written.generic_resource,
                ..self.keys.finish()
            },
        };
        Ok(Finished { meta, filter })
    }
}

/// Encodes traces into the Arrow layout of a block (`schema::block_schema` with only the
/// always-dedicated resource `service.name`) without writing Parquet: how the query engine
/// reads live traces with the same evaluator as blocks. Traces must be given in ascending ID
/// order, as in a block; duplicates of a span (same ID and kind) are kept once.
pub fn encode_batch<'a>(traces: impl IntoIterator<Item = (TraceId, &'a [Bytes])>) -> Result<RecordBatch> {
    let dedicated = vec![Dedicated::new(AttrScope::Resource, "service.name", AttrKind::String)];
    let schema = schema::block_schema(&dedicated);
    let mut rows = Rows::new(&dedicated);
    for (trace_id, fragments) in traces {
        let trace = decode_trace(trace_id, fragments)?;
        rows.push_trace(&trace.view());
    }
    rows.finish(&schema)
}

/// Distinct attribute keys per scope as rows are written (for `BlockMeta::keys`).
#[derive(Default)]
struct KeyCatalog {
    scopes: [HashSet<String>; 5],
    truncated: bool,
    /// The resource and scope attributes seen last in the current trace (by address: the
    /// trace's decoded fragments stay put until `new_trace`): the spans of one resource come
    /// together, and looking their shared keys up again per span cost ~5% of encoding.
    last_resource: usize,
    last_scope: usize,
}

impl KeyCatalog {
    const SPAN: usize = 0;
    const RESOURCE: usize = 1;
    const EVENT: usize = 2;
    const LINK: usize = 3;
    const INSTRUMENTATION: usize = 4;

    fn add(&mut self, scope: usize, attrs: &[KeyValue]) {
        let set = &mut self.scopes[scope];
        for kv in attrs {
            // Look up by &str first: allocating only for new keys keeps this cheap.
            if !set.contains(kv.key.as_str()) {
                if set.len() >= AttributeKeys::MAX_PER_SCOPE {
                    self.truncated = true;
                    continue;
                }
                set.insert(kv.key.clone());
            }
        }
    }

    /// Addresses of the previous trace's fragments mean nothing once it is dropped.
    fn new_trace(&mut self) {
        self.last_resource = 0;
        self.last_scope = 0;
    }

    /// `previous`: the span before in the trace; spans of one kind repeat their key list.
    fn span(&mut self, span: &Span, previous: Option<&Span>, resource: &[KeyValue], scope: &[KeyValue]) {
        let same_keys = |p: &Span| p.attributes.iter().map(|kv| &kv.key).eq(span.attributes.iter().map(|kv| &kv.key));
        if !previous.is_some_and(same_keys) {
            self.add(Self::SPAN, &span.attributes);
        }
        if std::mem::replace(&mut self.last_resource, resource.as_ptr() as usize) != resource.as_ptr() as usize {
            self.add(Self::RESOURCE, resource);
        }
        if std::mem::replace(&mut self.last_scope, scope.as_ptr() as usize) != scope.as_ptr() as usize {
            self.add(Self::INSTRUMENTATION, scope);
        }
        for e in &span.events {
            self.add(Self::EVENT, &e.attributes);
        }
        for l in &span.links {
            self.add(Self::LINK, &l.attributes);
        }
    }

    fn finish(&self) -> AttributeKeys {
        let sorted = |i: usize| {
            let mut v: Vec<String> = self.scopes[i].iter().cloned().collect();
            v.sort();
            v
        };
        AttributeKeys {
            span: sorted(Self::SPAN),
            resource: sorted(Self::RESOURCE),
            event: sorted(Self::EVENT),
            link: sorted(Self::LINK),
            instrumentation: sorted(Self::INSTRUMENTATION),
            truncated: self.truncated,
            generic_span: None,
            generic_resource: None,
        }
    }
}

/// One span of a trace being written, with the resource and scope it came with.
struct SpanRef<'a> {
    rs: &'a ResourceSpans,
    scope: usize,
    span: &'a Span,
}

/// A trace's spans, de-duplicated and sorted by start time.
struct Trace<'a> {
    trace_id: TraceId,
    spans: Vec<SpanRef<'a>>,
}

/// A decoded trace: its fragments and the (fragment, scope, span) index of every span kept.
struct OwnedTrace {
    trace_id: TraceId,
    fragments: Vec<ResourceSpans>,
    order: Vec<(u32, u32, u32)>,
}

fn decode_trace(trace_id: TraceId, fragments: &[Bytes]) -> Result<OwnedTrace> {
    let mut decoded = Vec::with_capacity(fragments.len());
    for f in fragments {
        decoded.push(ResourceSpans::decode(f.clone()).map_err(|source| Error::Fragment { trace: trace_id, source })?);
    }
    let mut seen = HashSet::<(&[u8], i32)>::new();
    let mut order = Vec::new();
    for (fi, rs) in decoded.iter().enumerate() {
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for (pi, span) in ss.spans.iter().enumerate() {
                if seen.insert((&span.span_id, span.kind)) {
                    order.push((fi as u32, si as u32, pi as u32));
                }
            }
        }
    }
    drop(seen);
    // Stable: spans that start together keep their arrival order.
    order.sort_by_key(|&(f, s, p)| decoded[f as usize].scope_spans[s as usize].spans[p as usize].start_time_unix_nano);
    Ok(OwnedTrace { trace_id, fragments: decoded, order })
}

impl OwnedTrace {
    fn view(&self) -> Trace<'_> {
        let spans = self
            .order
            .iter()
            .map(|&(f, s, p)| {
                let rs = &self.fragments[f as usize];
                SpanRef { rs, scope: s as usize, span: &rs.scope_spans[s as usize].spans[p as usize] }
            })
            .collect();
        Trace { trace_id: self.trace_id, spans }
    }
}

/// Nested-set numbers of one span: DFS order within the trace, children by start time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Nested {
    pub left: i32,
    pub right: i32,
    /// The parent's `left`, 0 for a root, -1 for a span whose parent is not in the trace.
    pub parent: i32,
    /// The parent span ID cannot be derived from `parent` and is stored.
    pub explicit_parent: bool,
}

/// Numbers spans (already in start-time order) as a nested set. A span whose parent ID is not
/// in the trace is an orphan root (-1); spans only reachable through a cycle are entered at
/// the earliest of them, which becomes an orphan root too, so every span gets numbers.
pub(crate) fn nested_set(span_ids: &[&[u8]], parent_ids: &[&[u8]]) -> Vec<Nested> {
    let n = span_ids.len();
    let mut first = HashMap::<&[u8], usize>::with_capacity(n);
    for (i, id) in span_ids.iter().enumerate() {
        first.entry(id).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut has_parent = vec![false; n];
    for (i, parent) in parent_ids.iter().enumerate() {
        if parent.is_empty() {
            continue;
        }
        if let Some(&p) = first.get(parent)
            && p != i
        {
            children[p].push(i);
            has_parent[i] = true;
        }
    }
    let mut out = vec![Nested::default(); n];
    let mut visited = vec![false; n];
    let mut counter = 0i32;
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut dfs = |root: usize, out: &mut Vec<Nested>, visited: &mut Vec<bool>| {
        let orphan = !parent_ids[root].is_empty();
        counter += 1;
        out[root] = Nested { left: counter, right: 0, parent: if orphan { -1 } else { 0 }, explicit_parent: orphan };
        visited[root] = true;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            if let Some(&child) = children[node].get(next) {
                top.1 += 1;
                if !visited[child] {
                    visited[child] = true;
                    counter += 1;
                    out[child] = Nested { left: counter, right: 0, parent: out[node].left, explicit_parent: false };
                    stack.push((child, 0));
                }
            } else {
                counter += 1;
                out[node].right = counter;
                stack.pop();
            }
        }
    };
    for (i, has_parent) in has_parent.iter().enumerate() {
        if !has_parent {
            dfs(i, &mut out, &mut visited);
        }
    }
    for i in 0..n {
        if !visited[i] {
            dfs(i, &mut out, &mut visited);
        }
    }
    out
}

/// Per-key counts of scalar string/int attributes, to choose dedicated columns from data.
#[derive(Default)]
struct KeyStats {
    spans: u64,
    counts: HashMap<(AttrScope, String, AttrKind), u64>,
}

impl KeyStats {
    fn count(&mut self, trace: &OwnedTrace) {
        let view = trace.view();
        self.spans += view.spans.len() as u64;
        let mut seen = HashSet::new();
        for s in &view.spans {
            seen.clear();
            let resource = s.rs.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or_default();
            for (scope, attrs) in [(AttrScope::Span, &s.span.attributes[..]), (AttrScope::Resource, resource)] {
                for kv in attrs {
                    let Some(kind) = scalar_kind(kv) else { continue };
                    if kv.key.is_empty() || kv.key.len() > 128 || !seen.insert((scope, kv.key.as_str(), kind)) {
                        continue;
                    }
                    *self.counts.entry((scope, kv.key.clone(), kind)).or_default() += 1;
                }
            }
        }
    }

    fn choose(&self, min_share: f64, max_span: usize, max_resource: usize) -> Vec<Dedicated> {
        let service = Dedicated::new(AttrScope::Resource, "service.name", AttrKind::String);
        let threshold = (min_share * self.spans as f64).max(1.0);
        // Per (scope, key) the more frequent kind; a key is dedicated with one kind only.
        let mut best = HashMap::<(AttrScope, &str), (u64, AttrKind)>::new();
        for ((scope, key, kind), &n) in &self.counts {
            let e = best.entry((*scope, key.as_str())).or_insert((n, *kind));
            if n > e.0 || (n == e.0 && *kind == AttrKind::String) {
                *e = (n, *kind);
            }
        }
        let mut candidates: Vec<(u64, AttrScope, &str, AttrKind)> = best
            .into_iter()
            .filter(|((scope, key), (n, _))| {
                *n as f64 >= threshold && !(*scope == AttrScope::Resource && *key == "service.name")
            })
            .map(|((scope, key), (n, kind))| (n, scope, key, kind))
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(b.2)));
        let mut out = vec![service];
        for (scope, max) in [(AttrScope::Span, max_span), (AttrScope::Resource, max_resource)] {
            out.extend(
                candidates
                    .iter()
                    .filter(|c| c.1 == scope)
                    .take(max)
                    .map(|&(_, scope, key, kind)| Dedicated::new(scope, key, kind)),
            );
        }
        out
    }
}

fn scalar_kind(kv: &KeyValue) -> Option<AttrKind> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(_) => Some(AttrKind::String),
        any_value::Value::IntValue(_) => Some(AttrKind::Int),
        _ => None,
    }
}

/// What the encoder reports when the file is closed.
struct Written {
    bytes: u64,
    row_groups: u32,
    columns: Vec<ColumnSize>,
    dedicated: Vec<Dedicated>,
    /// Keys in the generic span and resource lists, when known.
    generic_span: Option<Vec<String>>,
    generic_resource: Option<Vec<String>>,
}

/// Rows → Arrow batches → Parquet, once the schema is known.
struct Encoder<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    rows: Rows,
    rows_in_group: usize,
    row_group_spans: usize,
    dedicated: Vec<Dedicated>,
}

impl<W: Write + Send> Encoder<W> {
    fn new(out: W, dedicated: Vec<Dedicated>, options: &WriteOptions) -> Result<Self> {
        let schema = schema::block_schema(&dedicated);
        let parquet = ArrowSchemaConverter::new().convert(&schema)?;
        let props = schema::writer_properties(&parquet, &dedicated, options)?;
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
        Ok(Encoder {
            writer,
            schema,
            rows: Rows::new(&dedicated),
            rows_in_group: 0,
            row_group_spans: options.row_group_spans.max(1),
            dedicated,
        })
    }

    fn push(&mut self, trace: &OwnedTrace) -> Result<()> {
        let view = trace.view();
        self.rows.push_trace(&view);
        self.rows_in_group += view.spans.len();
        if self.rows_in_group >= self.row_group_spans {
            self.write_batch()?;
            self.writer.flush()?;
            self.rows_in_group = 0;
        } else if self.rows.len >= BATCH_SPANS {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<()> {
        if self.rows.len > 0 {
            let batch = self.rows.finish(&self.schema)?;
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Written> {
        self.write_batch()?;
        let metadata = self.writer.finish()?;
        // finish() flushed everything through to `W`; dropping the writer drops `W`.
        let bytes = self.writer.bytes_written() as u64;
        let columns = column_sizes(&metadata);
        let sorted = |keys: &Option<HashSet<String>>| {
            keys.as_ref().map(|k| {
                let mut v: Vec<String> = k.iter().cloned().collect();
                v.sort();
                v
            })
        };
        Ok(Written {
            bytes,
            row_groups: metadata.num_row_groups() as u32,
            columns,
            dedicated: self.dedicated,
            generic_span: sorted(&self.rows.span_attrs.generic_keys),
            generic_resource: sorted(&self.rows.resource_attrs.generic_keys),
        })
    }
}

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
    scratch: Vec<u8>,
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
            scratch: Vec::new(),
        }
    }

    fn push(&mut self, kv: &KeyValue) {
        use any_value::Value;
        self.key.append_value(&kv.key);
        let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
        match value {
            Some(Value::StringValue(s)) => self.str.append_value(s),
            _ => self.str.append_null(),
        }
        match value {
            Some(Value::IntValue(i)) => self.int.append_value(*i),
            _ => self.int.append_null(),
        }
        match value {
            Some(Value::DoubleValue(d)) => self.double.append_value(*d),
            _ => self.double.append_null(),
        }
        match value {
            Some(Value::BoolValue(b)) => self.bool.append_value(*b),
            _ => self.bool.append_null(),
        }
        match value {
            Some(Value::BytesValue(b)) => self.bytes.append_value(b),
            _ => self.bytes.append_null(),
        }
        match (kv.value.as_ref(), value) {
            (_, Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_)))) => {
                self.scratch.clear();
                AnyValue { value: Some(v.clone()) }.encode(&mut self.scratch).expect("Vec grows");
                self.any.append_value(&self.scratch);
            }
            // An empty AnyValue (the SDKs send one for a None attribute) is not the same as
            // no value at all: it is kept as zero bytes, which decode to the empty AnyValue.
            (Some(_), None) => self.any.append_value(b""),
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

    fn push_row(&mut self, events: &[Event], span_start: u64) {
        for e in events {
            // Relative to the span start: small numbers; wrapping keeps any u64 lossless.
            self.time.push(e.time_unix_nano.wrapping_sub(span_start) as i64);
            self.name.append_value(&e.name);
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

    fn push_row(&mut self, links: &[Link]) {
        for l in links {
            self.trace_id.append_value(&l.trace_id);
            self.span_id.append_value(&l.span_id);
            self.trace_state.append_value(&l.trace_state);
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
struct ScopedAttrs {
    columns: Vec<DedicatedBuilder>,
    index: KeyIndex,
    filled: Vec<bool>,
    generic: AttrsBuilder,
    /// Keys that went to the generic list (None once there are too many to be worth listing):
    /// a query for any other key never needs to read that list.
    generic_keys: Option<HashSet<String>>,
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
    fn push_row(&mut self, attrs: &[KeyValue]) {
        self.filled.iter_mut().for_each(|f| *f = false);
        for kv in attrs {
            if let Some(&i) = self.index.get(kv.key.as_str())
                && !self.filled[i]
            {
                let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                let taken = match (&mut self.columns[i], value) {
                    (DedicatedBuilder::Str(b), Some(any_value::Value::StringValue(s))) => {
                        b.append_value(s);
                        true
                    }
                    (DedicatedBuilder::Int(b), Some(any_value::Value::IntValue(v))) => {
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
                && !keys.contains(kv.key.as_str())
            {
                if keys.len() >= AttributeKeys::MAX_PER_SCOPE {
                    self.generic_keys = None;
                } else {
                    keys.insert(kv.key.clone());
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
struct Rows {
    len: usize,
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
    span_attrs: ScopedAttrs,
    events: EventsBuilder,
    links: LinksBuilder,
    resource_attrs: ScopedAttrs,
    resource_dropped: Vec<u32>,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attrs: AttrsBuilder,
    scope_dropped: Vec<u32>,
    scope_schema_url: StringBuilder,
}

impl Rows {
    fn new(dedicated: &[Dedicated]) -> Self {
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

    fn push_trace(&mut self, trace: &Trace<'_>) {
        let span_ids: Vec<&[u8]> = trace.spans.iter().map(|s| &s.span.span_id[..]).collect();
        let parent_ids: Vec<&[u8]> = trace.spans.iter().map(|s| &s.span.parent_span_id[..]).collect();
        let nested = nested_set(&span_ids, &parent_ids);
        for (s, n) in trace.spans.iter().zip(&nested) {
            let span = s.span;
            self.len += 1;
            self.trace_id.extend_from_slice(&trace.trace_id.0);
            self.span_id.append_value(&span.span_id);
            if n.explicit_parent {
                self.parent_span_id.append_value(&span.parent_span_id);
            } else {
                self.parent_span_id.append_null();
            }
            self.nested_left.push(n.left);
            self.nested_right.push(n.right);
            self.nested_parent.push(n.parent);
            self.start.push(span.start_time_unix_nano);
            // Wrapping keeps an end before the start lossless.
            self.duration.push(span.end_time_unix_nano.wrapping_sub(span.start_time_unix_nano));
            self.name.append_value(&span.name);
            self.kind.push(span.kind);
            self.trace_state.append_value(&span.trace_state);
            self.flags.push(span.flags);
            let status = span.status.as_ref();
            self.status_code.push(status.map_or(0, |s| s.code));
            self.status_message.append_value(status.map_or("", |s| &s.message));
            self.dropped_attributes.push(span.dropped_attributes_count);
            self.dropped_events.push(span.dropped_events_count);
            self.dropped_links.push(span.dropped_links_count);
            self.span_attrs.push_row(&span.attributes);
            self.events.push_row(&span.events, span.start_time_unix_nano);
            self.links.push_row(&span.links);
            let resource = s.rs.resource.as_ref();
            self.resource_attrs.push_row(resource.map(|r| &r.attributes[..]).unwrap_or_default());
            self.resource_dropped.push(resource.map_or(0, |r| r.dropped_attributes_count));
            self.resource_schema_url.append_value(&s.rs.schema_url);
            let ss = &s.rs.scope_spans[s.scope];
            let scope = ss.scope.as_ref();
            self.scope_name.append_value(scope.map_or("", |s| &s.name));
            self.scope_version.append_value(scope.map_or("", |s| &s.version));
            scope.map(|s| &s.attributes[..]).unwrap_or_default().iter().for_each(|kv| self.scope_attrs.push(kv));
            self.scope_attrs.end_row();
            self.scope_dropped.push(scope.map_or(0, |s| s.dropped_attributes_count));
            self.scope_schema_url.append_value(&ss.schema_url);
        }
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(spans: &[(&[u8], &[u8])]) -> Vec<(i32, i32, i32, bool)> {
        let ids: Vec<&[u8]> = spans.iter().map(|s| s.0).collect();
        let parents: Vec<&[u8]> = spans.iter().map(|s| s.1).collect();
        nested_set(&ids, &parents).into_iter().map(|n| (n.left, n.right, n.parent, n.explicit_parent)).collect()
    }

    #[test]
    fn cycles_and_self_parents_become_orphan_roots() {
        // a is a root with child e; d names itself as parent; b and c are each other's parent,
        // so only a cycle reaches them: after all other trees, b (the earlier) is entered as an
        // orphan and c hangs below it.
        let got = numbers(&[(b"a", b""), (b"b", b"c"), (b"c", b"b"), (b"d", b"d"), (b"e", b"a")]);
        assert_eq!(got, [(1, 4, 0, false), (7, 10, -1, true), (8, 9, 7, false), (5, 6, -1, true), (2, 3, 1, false)]);
    }

    #[test]
    fn a_shared_span_id_parents_to_its_first_span() {
        // Two spans share ID x (client and server kinds); the child hangs below the first.
        let got = numbers(&[(b"x", b""), (b"x", b"r"), (b"y", b"x")]);
        assert_eq!(got, [(1, 4, 0, false), (5, 6, -1, true), (2, 3, 1, false)]);
    }
}
