//! Rollups: what stays of spans once their traces are dropped. Per (minute, service, span name,
//! kind, status): span count, error count, duration sum, a latency histogram over the span
//! metrics generator's buckets, the durations' log2 histogram (the buckets TraceQL's
//! `quantile_over_time` and `histogram_over_time` use, so those answer from rollups exactly as
//! from spans) and one exemplar trace ID. Written by the compactor before the
//! full → sampled rewrite drops anything, so the counts are of every span.
//!
//! Layout: `<tenant>/rollups/<id>/{data.parquet, meta.json}`; the meta is written last, as a
//! block's is. A rollup counts only once none of the blocks it `covers` is visible any more
//! (before that the spans are still there, in those blocks), so a rewrite cut short never
//! counts a span twice.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    FixedSizeBinaryBuilder, Int32Builder, ListBuilder, StringBuilder, UInt8Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, UInt8Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use spoor_model::TraceId;
use spoor_model::otlp::ResourceSpans;
use spoor_model::otlp::any_value::Value;

use crate::error::{Error, Result};

/// The folder of a tenant's rollups, beside its blocks.
pub const ROLLUP_DIR: &str = "rollups";
/// `meta.format` of rollups this crate writes.
pub const ROLLUP_FORMAT: &str = "spoor-rollup-1";
/// One rollup row per this much time (its key is the minute's end, see [`RollupRow::minute`]).
pub const MINUTE_NS: u64 = 60_000_000_000;
/// Upper bounds (seconds) of the latency histogram: the span metrics generator's defaults, so a
/// rollup's histogram reads like `traces_spanmetrics_latency`'s. A last bucket counts the rest.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];

/// Upper bounds (seconds) of the service-graph edges' latency histogram: the generator's
/// service-graph defaults. A last bucket counts the rest.
pub const EDGE_BUCKETS: [f64; 8] = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8];
/// The edges' file in a rollup's folder, beside `data.parquet`.
pub const EDGES_FILE: &str = "edges.parquet";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollupMeta {
    pub format: String,
    pub rollup_id: String,
    pub tenant: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub rows: u64,
    pub spans: u64,
    pub data_bytes: u64,
    /// The blocks whose spans this rollup counts.
    pub covers: Vec<String>,
    /// Rows of `edges.parquet` (0: no such file).
    #[serde(default)]
    pub edge_rows: u64,
    pub created_unix_nano: u64,
}

/// One group of spans.
#[derive(Clone, Debug, PartialEq)]
pub struct RollupRow {
    /// The end of the minute the spans started in: they started in `(minute - 1m, minute]`,
    /// the right-closed buckets TraceQL metrics count spans into, so a step that is a multiple
    /// of a minute takes whole rows.
    pub minute: u64,
    /// `None`: the resource had no `service.name`.
    pub service: Option<String>,
    pub name: String,
    /// OTLP span kind (0..=5).
    pub kind: u8,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status: u8,
    pub spans: u64,
    pub errors: u64,
    pub duration_sum_ns: u64,
    /// Per [`LATENCY_BUCKETS`] bound, then the rest; not cumulative.
    pub buckets: Vec<u64>,
    /// (exponent, spans) sorted by exponent: spans whose duration in ns is in
    /// `(2^(exp-1), 2^exp]` ([`log2_exp`]).
    pub log2: Vec<(i32, u64)>,
    pub exemplar: Option<TraceId>,
}

type Key = (u64, Option<String>, String, u8, u8);

/// One service-graph edge in one minute: requests from a client span of one service to a server
/// span of another (its child), as the generator's service graph counts them.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeRow {
    /// As [`RollupRow::minute`], of the client span's start.
    pub minute: u64,
    pub client: Option<String>,
    pub server: Option<String>,
    pub count: u64,
    /// Either side had an error status.
    pub failed: u64,
    /// The server span's duration, per [`EDGE_BUCKETS`] bound, then the rest; not cumulative.
    pub buckets: Vec<u64>,
}

/// Rollup rows (and service-graph edges) being gathered from whole traces.
#[derive(Default)]
pub struct RollupBuilder {
    rows: HashMap<Key, RollupRow>,
    edges: HashMap<(u64, Option<String>, Option<String>), EdgeRow>,
}

fn minute_of(start: u64) -> u64 {
    start.div_ceil(MINUTE_NS).saturating_mul(MINUTE_NS)
}

impl RollupBuilder {
    pub fn add_trace(&mut self, trace_id: TraceId, fragments: &[ResourceSpans]) {
        self.add_edges(fragments);
        for rs in fragments {
            let service = service_of(rs).map(str::to_owned);
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let status = s.status.as_ref().map_or(0, |st| st.code.clamp(0, 2) as u8);
                let kind = s.kind.clamp(0, 5) as u8;
                let minute = minute_of(s.start_time_unix_nano);
                let key = (minute, service.clone(), s.name.clone(), kind, status);
                let row = self.rows.entry(key).or_insert_with(|| RollupRow {
                    minute,
                    service: service.clone(),
                    name: s.name.clone(),
                    kind,
                    status,
                    spans: 0,
                    errors: 0,
                    duration_sum_ns: 0,
                    buckets: vec![0; LATENCY_BUCKETS.len() + 1],
                    log2: Vec::new(),
                    exemplar: Some(trace_id),
                });
                let d = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
                row.spans += 1;
                row.errors += u64::from(status == 2);
                row.duration_sum_ns = row.duration_sum_ns.saturating_add(d);
                let secs = d as f64 / 1e9;
                let b = LATENCY_BUCKETS.iter().position(|le| secs <= *le).unwrap_or(LATENCY_BUCKETS.len());
                row.buckets[b] += 1;
                let exp = log2_exp(d);
                match row.log2.binary_search_by_key(&exp, |(e, _)| *e) {
                    Ok(i) => row.log2[i].1 += 1,
                    Err(i) => row.log2.insert(i, (exp, 1)),
                }
            }
        }
    }

    /// Client spans (kind 3) with a server child (kind 2) in the same trace.
    fn add_edges(&mut self, fragments: &[ResourceSpans]) {
        let spans: Vec<(Option<&str>, &spoor_model::otlp::Span)> = fragments
            .iter()
            .flat_map(|rs| {
                let service = service_of(rs);
                rs.scope_spans.iter().flat_map(move |ss| ss.spans.iter().map(move |s| (service, s)))
            })
            .collect();
        let clients: HashMap<&[u8], (Option<&str>, &spoor_model::otlp::Span)> =
            spans.iter().filter(|(_, s)| s.kind == 3).map(|(svc, s)| (s.span_id.as_slice(), (*svc, *s))).collect();
        // A root (no parent ID) is nobody's child, however its client spans' IDs read.
        let has_parent = |s: &spoor_model::otlp::Span| s.parent_span_id.iter().any(|b| *b != 0);
        for (server_svc, server) in spans.iter().filter(|(_, s)| s.kind == 2 && has_parent(s)) {
            let Some((client_svc, client)) = clients.get(server.parent_span_id.as_slice()) else { continue };
            let minute = minute_of(client.start_time_unix_nano);
            let (c, sv) = (client_svc.map(str::to_owned), server_svc.map(str::to_owned));
            let edge = self.edges.entry((minute, c.clone(), sv.clone())).or_insert_with(|| EdgeRow {
                minute,
                client: c,
                server: sv,
                count: 0,
                failed: 0,
                buckets: vec![0; EDGE_BUCKETS.len() + 1],
            });
            let error = |s: &spoor_model::otlp::Span| s.status.as_ref().is_some_and(|st| st.code == 2);
            edge.count += 1;
            edge.failed += u64::from(error(client) || error(server));
            let secs = server.end_time_unix_nano.saturating_sub(server.start_time_unix_nano) as f64 / 1e9;
            let b = EDGE_BUCKETS.iter().position(|le| secs <= *le).unwrap_or(EDGE_BUCKETS.len());
            edge.buckets[b] += 1;
        }
    }

    /// The rows and the edges, sorted by minute then key.
    pub fn finish(self) -> (Vec<RollupRow>, Vec<EdgeRow>) {
        let mut rows: Vec<RollupRow> = self.rows.into_values().collect();
        rows.sort_by(|a, b| {
            (a.minute, &a.service, &a.name, a.kind, a.status).cmp(&(b.minute, &b.service, &b.name, b.kind, b.status))
        });
        let mut edges: Vec<EdgeRow> = self.edges.into_values().collect();
        edges.sort_by(|a, b| (a.minute, &a.client, &a.server).cmp(&(b.minute, &b.client, &b.server)));
        (rows, edges)
    }
}

fn service_of(rs: &ResourceSpans) -> Option<&str> {
    rs.resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

/// The log2 bucket of a duration as TraceQL metrics compute it: the bit length of `ns - 1`
/// (ceil(log2(ns)), exact for integers), `i32::MIN` for 0.
pub fn log2_exp(ns: u64) -> i32 {
    if ns == 0 { i32::MIN } else { (u64::BITS - (ns - 1).leading_zeros()) as i32 }
}

/// The trace IDs rollup rows name as exemplars: the sampled tier keeps them.
pub fn exemplar_ids(rows: &[RollupRow]) -> impl Iterator<Item = TraceId> + '_ {
    rows.iter().filter_map(|r| r.exemplar)
}

fn schema() -> Arc<Schema> {
    let item = Arc::new(Field::new("item", DataType::UInt64, true));
    Arc::new(Schema::new(vec![
        Field::new("minute", DataType::UInt64, false),
        Field::new("service", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::UInt8, false),
        Field::new("status", DataType::UInt8, false),
        Field::new("spans", DataType::UInt64, false),
        Field::new("errors", DataType::UInt64, false),
        Field::new("duration_sum_ns", DataType::UInt64, false),
        Field::new("buckets", DataType::List(item.clone()), false),
        Field::new("log2_exp", DataType::List(Arc::new(Field::new("item", DataType::Int32, true))), false),
        Field::new("log2_count", DataType::List(item), false),
        Field::new("exemplar", DataType::FixedSizeBinary(16), true),
    ]))
}

/// Rows as a Parquet file.
pub fn encode(rows: &[RollupRow]) -> Result<Vec<u8>> {
    let (mut minute, mut spans, mut errors, mut sum) =
        (UInt64Builder::new(), UInt64Builder::new(), UInt64Builder::new(), UInt64Builder::new());
    let (mut service, mut name) = (StringBuilder::new(), StringBuilder::new());
    let (mut kind, mut status) = (UInt8Builder::new(), UInt8Builder::new());
    let mut buckets = ListBuilder::new(UInt64Builder::new());
    let mut log2_exp = ListBuilder::new(Int32Builder::new());
    let mut log2_count = ListBuilder::new(UInt64Builder::new());
    let mut exemplar = FixedSizeBinaryBuilder::new(16);
    for r in rows {
        minute.append_value(r.minute);
        service.append_option(r.service.as_deref());
        name.append_value(&r.name);
        kind.append_value(r.kind);
        status.append_value(r.status);
        spans.append_value(r.spans);
        errors.append_value(r.errors);
        sum.append_value(r.duration_sum_ns);
        buckets.values().append_slice(&r.buckets);
        buckets.append(true);
        for (e, n) in &r.log2 {
            log2_exp.values().append_value(*e);
            log2_count.values().append_value(*n);
        }
        log2_exp.append(true);
        log2_count.append(true);
        match r.exemplar {
            Some(id) => exemplar.append_value(id.0)?,
            None => exemplar.append_null(),
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(minute.finish()),
        Arc::new(service.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(status.finish()),
        Arc::new(spans.finish()),
        Arc::new(errors.finish()),
        Arc::new(sum.finish()),
        Arc::new(buckets.finish()),
        Arc::new(log2_exp.finish()),
        Arc::new(log2_count.finish()),
        Arc::new(exemplar.finish()),
    ];
    write_parquet(RecordBatch::try_new(schema(), columns)?)
}

fn edge_schema() -> Arc<Schema> {
    let item = Arc::new(Field::new("item", DataType::UInt64, true));
    Arc::new(Schema::new(vec![
        Field::new("minute", DataType::UInt64, false),
        Field::new("client", DataType::Utf8, true),
        Field::new("server", DataType::Utf8, true),
        Field::new("count", DataType::UInt64, false),
        Field::new("failed", DataType::UInt64, false),
        Field::new("buckets", DataType::List(item), false),
    ]))
}

/// Edges as a Parquet file.
pub fn encode_edges(edges: &[EdgeRow]) -> Result<Vec<u8>> {
    let (mut minute, mut count, mut failed) = (UInt64Builder::new(), UInt64Builder::new(), UInt64Builder::new());
    let (mut client, mut server) = (StringBuilder::new(), StringBuilder::new());
    let mut buckets = ListBuilder::new(UInt64Builder::new());
    for e in edges {
        minute.append_value(e.minute);
        client.append_option(e.client.as_deref());
        server.append_option(e.server.as_deref());
        count.append_value(e.count);
        failed.append_value(e.failed);
        buckets.values().append_slice(&e.buckets);
        buckets.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(minute.finish()),
        Arc::new(client.finish()),
        Arc::new(server.finish()),
        Arc::new(count.finish()),
        Arc::new(failed.finish()),
        Arc::new(buckets.finish()),
    ];
    write_parquet(RecordBatch::try_new(edge_schema(), columns)?)
}

fn write_parquet(batch: RecordBatch) -> Result<Vec<u8>> {
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

/// An edges file back as rows; anything not in this format is an error, not a panic.
pub fn decode_edges(data: Bytes) -> Result<Vec<EdgeRow>> {
    let bad = |what: &str| Error::Corrupt(format!("rollup edges: {what}"));
    let mut out = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(data)?.build()? {
        let batch = batch?;
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(&format!("no column {name}")));
        let u64s = |name: &str| -> Result<_> {
            col(name)?.as_primitive_opt::<UInt64Type>().cloned().ok_or_else(|| bad(&format!("{name} is not u64")))
        };
        let (minute, count, failed) = (u64s("minute")?, u64s("count")?, u64s("failed")?);
        let client = col("client")?.as_string_opt::<i32>().cloned().ok_or_else(|| bad("client"))?;
        let server = col("server")?.as_string_opt::<i32>().cloned().ok_or_else(|| bad("server"))?;
        let buckets = col("buckets")?.as_list_opt::<i32>().cloned().ok_or_else(|| bad("buckets"))?;
        for i in 0..batch.num_rows() {
            let b = buckets.value(i);
            let b = b.as_primitive_opt::<UInt64Type>().ok_or_else(|| bad("bucket values"))?;
            out.push(EdgeRow {
                minute: minute.value(i),
                client: client.is_valid(i).then(|| client.value(i).to_owned()),
                server: server.is_valid(i).then(|| server.value(i).to_owned()),
                count: count.value(i),
                failed: failed.value(i),
                buckets: b.values().to_vec(),
            });
        }
    }
    Ok(out)
}

/// A rollup's Parquet file back as rows; anything not in this format is an error, not a panic.
pub fn decode(data: Bytes) -> Result<Vec<RollupRow>> {
    let bad = |what: &str| Error::Corrupt(format!("rollup: {what}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(&format!("no column {name}")));
        let u64s = |name: &str| -> Result<_> {
            col(name)?.as_primitive_opt::<UInt64Type>().cloned().ok_or_else(|| bad(&format!("{name} is not u64")))
        };
        let u8s = |name: &str| -> Result<_> {
            col(name)?.as_primitive_opt::<UInt8Type>().cloned().ok_or_else(|| bad(&format!("{name} is not u8")))
        };
        let (minute, spans, errors, sum) = (u64s("minute")?, u64s("spans")?, u64s("errors")?, u64s("duration_sum_ns")?);
        let (kind, status) = (u8s("kind")?, u8s("status")?);
        let service = col("service")?.as_string_opt::<i32>().cloned().ok_or_else(|| bad("service"))?;
        let name = col("name")?.as_string_opt::<i32>().cloned().ok_or_else(|| bad("name"))?;
        let buckets = col("buckets")?.as_list_opt::<i32>().cloned().ok_or_else(|| bad("buckets"))?;
        let log2_exp = col("log2_exp")?.as_list_opt::<i32>().cloned().ok_or_else(|| bad("log2_exp"))?;
        let log2_count = col("log2_count")?.as_list_opt::<i32>().cloned().ok_or_else(|| bad("log2_count"))?;
        let exemplar = col("exemplar")?.as_fixed_size_binary_opt().cloned().ok_or_else(|| bad("exemplar"))?;
        for i in 0..batch.num_rows() {
            let b = buckets.value(i);
            let b = b.as_primitive_opt::<UInt64Type>().ok_or_else(|| bad("bucket values"))?;
            let (e, n) = (log2_exp.value(i), log2_count.value(i));
            let e = e.as_primitive_opt::<Int32Type>().ok_or_else(|| bad("log2 exponents"))?;
            let n = n.as_primitive_opt::<UInt64Type>().ok_or_else(|| bad("log2 counts"))?;
            if e.len() != n.len() {
                return Err(bad("log2 exponents and counts differ in length"));
            }
            out.push(RollupRow {
                minute: minute.value(i),
                service: service.is_valid(i).then(|| service.value(i).to_owned()),
                name: name.value(i).to_owned(),
                kind: kind.value(i),
                status: status.value(i),
                spans: spans.value(i),
                errors: errors.value(i),
                duration_sum_ns: sum.value(i),
                buckets: b.values().to_vec(),
                log2: e.values().iter().copied().zip(n.values().iter().copied()).collect(),
                exemplar: exemplar.is_valid(i).then(|| exemplar.value(i).try_into().ok().map(TraceId)).flatten(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_model::otlp::{AnyValue, KeyValue, Resource, ScopeSpans, Span, Status};

    fn span(start: u64, ms: u64, kind: i32, code: i32) -> Span {
        Span {
            name: "GET /".into(),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + ms * 1_000_000,
            status: Some(Status { code, message: String::new() }),
            ..Default::default()
        }
    }

    #[test]
    fn rows_count_every_span_and_survive_parquet() {
        let rs = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue("api".into())) }),
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(MINUTE_NS, 1, 2, 0),
                    span(MINUTE_NS + 1, 3, 2, 0),
                    span(MINUTE_NS + 2, 20_000, 2, 2),
                    span(MINUTE_NS + 3, 5, 3, 2),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut b = RollupBuilder::default();
        b.add_trace(TraceId([7; 16]), std::slice::from_ref(&rs));
        let (rows, edges) = b.finish();
        assert!(edges.is_empty(), "no client span has a server child here");
        // A span starting exactly on a minute belongs to the minute ending there.
        assert_eq!(
            rows.iter().map(|r| (r.minute / MINUTE_NS, r.spans)).collect::<Vec<_>>(),
            [(1, 1), (2, 1), (2, 1), (2, 1)]
        );
        let decoded = decode(Bytes::from(encode(&rows).unwrap())).unwrap();
        assert_eq!(decoded, rows);
        let err = decoded.iter().find(|r| r.status == 2 && r.kind == 2).unwrap();
        assert_eq!((err.errors, err.buckets[LATENCY_BUCKETS.len()]), (1, 1), "20 s is past the last bound");
        assert_eq!(err.log2, [(log2_exp(20_000_000_000), 1)]);
        assert_eq!((log2_exp(1), log2_exp(2), log2_exp(3), log2_exp(1024), log2_exp(1025)), (0, 1, 2, 10, 11));
        assert!(decode(Bytes::from_static(b"not parquet")).is_err());
    }

    #[test]
    fn edges_join_client_spans_to_their_server_children() {
        let svc = |name: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue(name.into())) }),
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        };
        let with = |s: Span, id: u8, parent: u8| Span { span_id: vec![id; 8], parent_span_id: vec![parent; 8], ..s };
        let trace = [
            svc("web", vec![with(span(MINUTE_NS, 300, 3, 0), 1, 0), with(span(MINUTE_NS, 1, 3, 0), 2, 0)]),
            svc("api", vec![with(span(MINUTE_NS + 5, 250, 2, 2), 3, 1), with(span(MINUTE_NS + 6, 50, 2, 0), 4, 9)]),
        ];
        let mut b = RollupBuilder::default();
        b.add_trace(TraceId([1; 16]), &trace);
        let (_, edges) = b.finish();
        // Span 4's parent is no client span of the trace: no edge.
        assert_eq!(edges.len(), 1);
        let e = &edges[0];
        assert_eq!((e.client.as_deref(), e.server.as_deref(), e.count, e.failed), (Some("web"), Some("api"), 1, 1));
        assert_eq!(e.buckets[2], 1, "250 ms is in (0.2, 0.4]");
        assert_eq!(decode_edges(Bytes::from(encode_edges(&edges).unwrap())).unwrap(), edges);
    }
}
