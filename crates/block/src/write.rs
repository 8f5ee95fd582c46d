//! The streaming block writer: decodes each trace's fragments, de-duplicates and sorts its spans,
//! numbers them as a nested set, and appends one row per span to Arrow builders that are
//! handed to the Parquet writer a batch at a time. Row groups end on trace boundaries.
//!
//! The writer drives three parts: [`decode`] turns a trace's fragments into spans in row order,
//! [`keys`] catalogs attribute keys (and picks dedicated columns from a sample), and
//! [`columns`] builds the Arrow columns.

mod columns;
mod decode;
mod keys;
pub(crate) mod view;

use std::collections::HashSet;
use std::io::Write;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use spoor_model::TraceId;
use spoor_model::otlp::ResourceSpans;
use spoor_model::time::now_nanos;

use self::columns::Rows;
use self::decode::{TraceView, decode_trace, view_trace};
use self::keys::{KeyCatalog, KeyStats};
use self::view::SpanV;
use crate::error::{Error, Result};
use crate::filter;
use crate::index::IndexBuilder;
use crate::meta::{AttributeKeys, BlockMeta, ColumnSize, DedicatedColumn, FORMAT, column_sizes};
use crate::schema::{self, AttrKind, AttrScope, Dedicated, Encodings};

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
            // Every key on 2% of the sample gets a column: a column per key costs a few
            // hundred bytes of footer per row group and reads far faster than the generic list.
            dedicated: DedicatedPolicy::FromData {
                min_share: 0.02,
                max_span: 64,
                max_resource: 32,
                sample_spans: 50_000,
            },
            encodings: Encodings::default(),
        }
    }
}

/// A sampled trace kept until the dedicated columns are chosen, as it came.
enum Pending {
    Encoded(Vec<Bytes>),
    Decoded(Vec<ResourceSpans>),
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
        pending: Vec<(TraceId, Pending)>,
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
        self.check_order(trace_id)?;
        if self.push(&decode_trace(trace_id, fragments)?)? {
            self.keep(trace_id, Pending::Encoded(fragments.to_vec()))?;
        }
        Ok(())
    }

    /// Appends one trace given as decoded `ResourceSpans` (a compaction's input, read back
    /// from blocks): the same as [`Self::push_trace`] without encoding them first.
    pub fn push_decoded(&mut self, trace_id: TraceId, fragments: Vec<ResourceSpans>) -> Result<()> {
        self.check_order(trace_id)?;
        if self.push(&view_trace(trace_id, &fragments))? {
            self.keep(trace_id, Pending::Decoded(fragments))?;
        }
        Ok(())
    }

    fn check_order(&self, trace_id: TraceId) -> Result<()> {
        match self.last_trace {
            Some(previous) if trace_id <= previous => Err(Error::Order { previous, next: trace_id }),
            _ => Ok(()),
        }
    }

    /// Catalogs a trace's keys and writes it, or counts it into the sample. Ok(true): the
    /// writer is sampling, and the caller must [`Self::keep`] the trace.
    fn push(&mut self, trace: &TraceView<'_>) -> Result<bool> {
        if trace.order.is_empty() {
            return Ok(false);
        }
        let trace_id = trace.trace_id();
        self.last_trace = Some(trace_id);
        self.trace_ids.push(trace_id);
        self.keys.new_trace();
        let mut previous: Option<&SpanV<'_>> = None;
        for s in trace.view().spans {
            let scope = &s.rs.scope_spans[s.scope].scope.attributes;
            self.keys.span(s.span, previous, &s.rs.resource, scope);
            previous = Some(s.span);
            self.spans += 1;
            self.start = self.start.min(s.span.start_time_unix_nano);
            self.end = self.end.max(s.span.end_time_unix_nano);
        }
        match &mut self.state {
            State::Writing(encoder) => {
                let written = encoder.push(trace);
                // Bad input was refused above; a failure here leaves a half-written row group.
                if written.is_err() {
                    self.state = State::Poisoned;
                }
                written.map(|()| false)
            }
            State::Sampling { stats, .. } => {
                stats.count(trace);
                Ok(true)
            }
            State::Poisoned => Err(Error::WriterFailed),
        }
    }

    /// Buffers a sampled trace; once the sample is full, chooses the columns and writes it all.
    fn keep(&mut self, trace_id: TraceId, trace: Pending) -> Result<()> {
        let DedicatedPolicy::FromData { sample_spans, .. } = self.options.dedicated else {
            unreachable!("sampling only with FromData")
        };
        let State::Sampling { pending, stats, .. } = &mut self.state else { unreachable!("push said sampling") };
        pending.push((trace_id, trace));
        if stats.spans >= sample_spans as u64 { self.start_writing() } else { Ok(()) }
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
        for (trace_id, kept) in pending {
            match kept {
                Pending::Encoded(fragments) => encoder.push(&decode_trace(trace_id, &fragments)?)?,
                Pending::Decoded(fragments) => encoder.push(&view_trace(trace_id, &fragments))?,
            }
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
        let filter = filter::build(&self.trace_ids, written.index.as_deref())?;
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
            created_unix_nano: now_nanos(),
            dedicated_columns: written.dedicated.iter().map(Dedicated::to_meta).collect(),
            columns: written.columns,
            keys: AttributeKeys {
                generic_span: written.generic_span,
                generic_resource: written.generic_resource,
                ..self.keys.finish()
            },
            tier: Default::default(),
            log: Default::default(),
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

/// What the encoder reports when the file is closed.
struct Written {
    bytes: u64,
    row_groups: u32,
    columns: Vec<ColumnSize>,
    dedicated: Vec<Dedicated>,
    /// Keys in the generic span and resource lists, when known.
    generic_span: Option<Vec<String>>,
    generic_resource: Option<Vec<String>>,
    /// The encoded value index, one entry per row group.
    index: Option<Vec<u8>>,
}

/// Rows → Arrow batches → Parquet, once the schema is known.
struct Encoder<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    rows: Rows,
    rows_in_group: usize,
    row_group_spans: usize,
    dedicated: Vec<Dedicated>,
    index: IndexBuilder,
}

impl<W: Write + Send> Encoder<W> {
    fn new(out: W, dedicated: Vec<Dedicated>, options: &WriteOptions) -> Result<Self> {
        let schema = schema::block_schema(&dedicated);
        let parquet = ArrowSchemaConverter::new().convert(&schema)?;
        let props =
            schema::writer_properties(&parquet, &dedicated, options.zstd_level, options.page_rows, &options.encodings)?;
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
        Ok(Encoder {
            writer,
            schema,
            rows: Rows::new(&dedicated),
            rows_in_group: 0,
            row_group_spans: options.row_group_spans.max(1),
            dedicated,
            index: IndexBuilder::default(),
        })
    }

    fn push(&mut self, trace: &TraceView<'_>) -> Result<()> {
        let view = trace.view();
        self.rows.push_trace(&view);
        self.index.new_trace();
        for s in &view.spans {
            self.index.span(&s.span.attributes, &s.rs.resource);
        }
        self.rows_in_group += view.spans.len();
        if self.rows_in_group >= self.row_group_spans {
            self.write_batch()?;
            self.writer.flush()?;
            self.index.end_group();
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
        if self.rows_in_group > 0 {
            self.index.end_group();
        }
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
            index: self.index.finish(metadata.num_row_groups()),
        })
    }
}
