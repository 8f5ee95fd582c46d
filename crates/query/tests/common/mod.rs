//! The golden dataset and the ways a batch reaches the engine: as live traces
//! (`encode_batch`), as a block read back from Parquet, and as a block read with string
//! columns as dictionaries. Plus a stable text rendering of search hits.

#![allow(dead_code)] // each test crate uses part of this

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use prost::Message;
use spoor_block::{BlockWriter, DedicatedColumn, DedicatedPolicy, WriteOptions};
use spoor_model::TraceId;
use spoor_model::otlp::*;
use spoor_query::{Plan, TraceHit, Value};

/// Every time in the dataset is an offset from this.
pub const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

pub const T1: [u8; 16] =
    [0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c];
pub const T2: [u8; 16] = [0x22; 16];
pub const T3: [u8; 16] = [0x33; 16];
pub const T4: [u8; 16] = [0x44; 16];
pub const T5: [u8; 16] = [0x55; 16];

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }) }
}
fn s(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}
fn f(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}
fn b(key: &str, v: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(v))
}
fn arr(key: &str, values: Vec<any_value::Value>) -> KeyValue {
    let values = values.into_iter().map(|v| AnyValue { value: Some(v) }).collect();
    kv(key, any_value::Value::ArrayValue(ArrayValue { values }))
}
fn sv(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}
fn iv(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

/// A span: ID `[id; 8]`, parent `[parent; 8]` (0: none), times in ms from T0.
fn span(trace: [u8; 16], id: u8, parent: u8, name: &str, kind: i32, ms: (u64, u64)) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { Vec::new() } else { vec![parent; 8] },
        name: name.into(),
        kind,
        start_time_unix_nano: T0 + ms.0 * MS,
        end_time_unix_nano: T0 + ms.1 * MS,
        ..Default::default()
    }
}

fn status(code: i32, message: &str) -> Option<Status> {
    Some(Status { code, message: message.into() })
}

fn resource(attrs: Vec<KeyValue>, scope: InstrumentationScope, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource { attributes: attrs, dropped_attributes_count: 0 }),
        scope_spans: vec![ScopeSpans { scope: Some(scope), spans, schema_url: String::new() }],
        schema_url: String::new(),
    }
}

fn scope(name: &str, version: &str, attrs: Vec<KeyValue>) -> InstrumentationScope {
    InstrumentationScope { name: name.into(), version: version.into(), attributes: attrs, dropped_attributes_count: 0 }
}

/// The dataset of the golden tests, described in `tests/golden/README.md`.
pub fn dataset() -> Vec<(TraceId, Vec<Bytes>)> {
    // T1: a checkout over three services, four levels deep (A > B > C > D, A > E).
    let mut a = span(T1, 0xa1, 0, "GET /checkout", 2, (0, 100));
    a.attributes = vec![
        s("http.method", "GET"),
        i("http.status_code", 200),
        s("shadow", "from-span"),
        i("retries", 3),
        f("ratio", 0.25),
        b("cached", true),
        arr("tags", vec![sv("a"), sv("b")]),
        arr("codes", vec![iv(200), iv(404)]),
        arr("weights", vec![any_value::Value::DoubleValue(0.5), any_value::Value::DoubleValue(1.5)]),
        arr("flags", vec![any_value::Value::BoolValue(true), any_value::Value::BoolValue(false)]),
    ];
    let mut bb = span(T1, 0xa2, 0xa1, "POST /pay", 3, (10, 60));
    bb.status = status(2, "card declined");
    bb.attributes = vec![s("http.method", "POST"), i("http.status_code", 500), i("retries", 0), b("cached", false)];
    bb.events = vec![
        Event {
            time_unix_nano: T0 + 15 * MS,
            name: "exception".into(),
            attributes: vec![s("exception.type", "CardError"), s("exception.message", "declined")],
            dropped_attributes_count: 0,
        },
        Event {
            time_unix_nano: T0 + 20 * MS,
            name: "retry".into(),
            attributes: vec![i("attempt", 1)],
            dropped_attributes_count: 0,
        },
    ];
    let mut c = span(T1, 0xa3, 0xa2, "SELECT payments", 3, (20, 40));
    c.status = status(1, "");
    c.attributes = vec![s("db.system", "postgresql"), i("db.rows", 42)];
    c.links = vec![Link {
        trace_id: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34].to_vec(),
        span_id: [0, 0, 0, 0, 0, 0, 0x56, 0x78].to_vec(),
        trace_state: String::new(),
        attributes: vec![s("link.kind", "follows-from")],
        dropped_attributes_count: 0,
        flags: 0,
    }];
    let mut d = span(T1, 0xa4, 0xa3, "fetch row", 1, (25, 30));
    d.attributes = vec![i("db.rows", 1)];
    let mut e = span(T1, 0xa5, 0xa1, "render", 1, (60, 90));
    e.attributes = vec![s("http.status_code", "200"), i("retries", 1), s("note", "multi\nline")];
    let t1 = vec![
        resource(
            vec![
                s("service.name", "frontend"),
                s("deployment.environment", "prod"),
                s("shadow", "from-resource"),
                i("host.cpus", 8),
            ],
            scope("io.opentelemetry.http", "1.2.3", vec![s("scope.flavor", "instrumented")]),
            vec![a, e],
        ),
        resource(
            vec![s("service.name", "backend"), s("deployment.environment", "prod")],
            scope("io.opentelemetry.grpc", "2.0.0", vec![]),
            vec![bb],
        ),
        resource(
            vec![s("service.name", "db"), s("deployment.environment", "staging")],
            scope("db-driver", "", vec![]),
            vec![c, d],
        ),
    ];

    // T2: two roots, an orphan subtree (O1 > O2 > O3, O1 > O4) and a parent cycle (X, Y).
    let mut r1 = span(T2, 0xb1, 0, "job", 2, (0, 50));
    r1.status = status(1, "");
    let k1 = span(T2, 0xb2, 0xb1, "step", 1, (5, 15));
    let r2 = span(T2, 0xb3, 0, "cleanup", 1, (10, 20));
    let mut o1 = span(T2, 0xb4, 0xee, "orphan-handler", 2, (20, 40));
    o1.attributes = vec![s("http.method", "GET")];
    let o2 = span(T2, 0xb5, 0xb4, "orphan-child", 1, (22, 30));
    let o3 = span(T2, 0xb6, 0xb5, "orphan-grandchild", 1, (24, 26));
    let o4 = span(T2, 0xb7, 0xb4, "orphan-sibling", 1, (31, 35));
    let x = span(T2, 0xb8, 0xb9, "cycle-a", 1, (40, 45));
    let y = span(T2, 0xb9, 0xb8, "cycle-b", 1, (41, 44));
    let t2 = vec![
        resource(
            vec![s("service.name", "worker")],
            scope("worker-lib", "0.1", vec![]),
            vec![r1, k1, o1, o2, o3, o4, x, y],
        ),
        resource(vec![s("service.name", "cron")], scope("worker-lib", "0.1", vec![]), vec![r2]),
    ];

    // T3: a single span.
    let mut lonely = span(T3, 0xc1, 0, "lonely", 5, (0, 1000));
    lonely.status = status(2, "");
    let t3 = vec![resource(vec![s("service.name", "solo")], scope("", "", vec![]), vec![lonely])];

    // T4: values TraceQL cannot query, repeated keys, NaN; no service name.
    let mut odd = span(T4, 0xd1, 0, "odd-values", 0, (0, 10));
    odd.attributes = vec![
        i("dup", 1),
        s("dup", "x"),
        arr("empty", vec![]),
        arr("mixed", vec![iv(1), sv("a")]),
        kv("kv", any_value::Value::KvlistValue(KeyValueList { values: vec![i("a", 1)] })),
        kv("raw", any_value::Value::BytesValue(vec![1, 2])),
        KeyValue { key: "none".into(), value: Some(AnyValue { value: None }) },
        f("nan", f64::NAN),
    ];
    odd.status = status(0, "");
    let mut child = span(T4, 0xd2, 0xd1, "odd-child", 4, (2, 8));
    child.attributes = vec![s("dup", "y"), s("http.method", "PUT"), i("retries", 7)];
    child.status = status(2, "timeout");
    let t4 = vec![resource(vec![s("host.name", "box")], scope("", "", vec![]), vec![odd, child])];

    // T5: a fragment without its root: its only span is an orphan.
    let partial = span(T5, 0xe1, 0xff, "partial", 1, (0, 7));
    let t5 = vec![resource(vec![s("service.name", "late")], scope("", "", vec![]), vec![partial])];

    [(T1, t1), (T2, t2), (T3, t3), (T4, t4), (T5, t5)]
        .into_iter()
        .map(|(id, rs)| (TraceId(id), rs.into_iter().map(|r| Bytes::from(r.encode_to_vec())).collect()))
        .collect()
}

/// The dataset as the engine sees live traces.
pub fn live_batch() -> RecordBatch {
    let data = dataset();
    spoor_block::encode_batch(data.iter().map(|(id, f)| (*id, &f[..]))).unwrap()
}

/// The dataset written as a block with some dedicated columns, read back in one batch;
/// `dictionaries` reads every string column (nested ones too) as Dictionary(Int32, Utf8).
pub fn block_batch(dictionaries: bool) -> RecordBatch {
    let dedicated = [
        ("span", "http.method", "string"),
        ("span", "http.status_code", "int"),
        ("span", "retries", "int"),
        ("span", "db.system", "string"),
        ("resource", "deployment.environment", "string"),
    ]
    .iter()
    .map(|(scope, key, kind)| DedicatedColumn::new(scope, key, kind))
    .collect();
    let options = WriteOptions { dedicated: DedicatedPolicy::Fixed(dedicated), page_rows: 3, ..Default::default() };
    let mut out = Vec::new();
    let mut w = BlockWriter::new(&mut out, "tenant", "block", &options).unwrap();
    for (id, fragments) in dataset() {
        w.push_trace(id, &fragments).unwrap();
    }
    w.finish().unwrap();
    read_parquet(Bytes::from(out), dictionaries)
}

/// The dataset written as a block of one trace per row group, with or without dedicated
/// columns: each row group read alone, the block's value index and its key catalog.
pub fn row_groups(dedicated: bool) -> (Vec<RecordBatch>, spoor_block::ValueIndex, spoor_block::AttributeKeys) {
    let policy = if dedicated {
        DedicatedPolicy::Fixed(vec![
            DedicatedColumn::new("span", "http.method", "string"),
            DedicatedColumn::new("span", "http.status_code", "int"),
            DedicatedColumn::new("resource", "deployment.environment", "string"),
        ])
    } else {
        DedicatedPolicy::Fixed(Vec::new())
    };
    let options = WriteOptions { dedicated: policy, row_group_spans: 1, ..Default::default() };
    let mut out = Vec::new();
    let mut w = BlockWriter::new(&mut out, "tenant", "block", &options).unwrap();
    for (id, fragments) in dataset() {
        w.push_trace(id, &fragments).unwrap();
    }
    let finished = w.finish().unwrap();
    let data = Bytes::from(out);
    let groups = (0..finished.meta.row_groups as usize)
        .map(|rg| {
            let reader = ParquetRecordBatchReaderBuilder::try_new(data.clone()).unwrap().with_row_groups(vec![rg]);
            let schema = reader.schema().clone();
            let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
            arrow_select::concat::concat_batches(&schema, &batches).unwrap()
        })
        .collect();
    let index = spoor_block::BlockFilter::parse(&finished.filter).unwrap().index.expect("a value index");
    (groups, index, finished.meta.keys)
}

pub fn read_parquet(data: Bytes, dictionaries: bool) -> RecordBatch {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data.clone()).unwrap();
    let builder = if dictionaries {
        let schema = Arc::new(Schema::new_with_metadata(
            builder.schema().fields().iter().map(|f| Arc::new(dictionary_field(f))).collect::<Vec<_>>(),
            builder.schema().metadata().clone(),
        ));
        ParquetRecordBatchReaderBuilder::try_new_with_options(data, ArrowReaderOptions::new().with_schema(schema))
            .unwrap()
    } else {
        builder
    };
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

fn dictionary_field(f: &Field) -> Field {
    let t = match f.data_type() {
        DataType::Utf8 => DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        DataType::List(item) => DataType::List(Arc::new(dictionary_field(item))),
        DataType::Struct(fields) => {
            DataType::Struct(Fields::from(fields.iter().map(|f| dictionary_field(f)).collect::<Vec<_>>()))
        }
        other => other.clone(),
    };
    f.clone().with_data_type(t)
}

/// Evaluates as the scanner does: the prefilter over just its columns, then whole candidate
/// traces with just `columns()`.
pub fn two_phase(plan: &Plan, batch: &RecordBatch, spss: usize) -> Vec<TraceHit> {
    let schema = batch.schema();
    let project = |columns: &[String]| {
        let indices: Vec<usize> = columns.iter().map(|c| schema.index_of(c).unwrap()).collect();
        batch.project(&indices).unwrap()
    };
    let candidates = match plan.prefilter_columns(&schema) {
        Some(columns) => {
            let mask = plan.prefilter(&project(&columns)).unwrap();
            let ids = batch.column_by_name("trace_id").unwrap();
            let ids = ids.as_any().downcast_ref::<arrow_array::FixedSizeBinaryArray>().unwrap();
            let wanted: Vec<&[u8]> = (0..batch.num_rows()).filter(|&r| mask.value(r)).map(|r| ids.value(r)).collect();
            let keep = arrow_array::BooleanArray::from_iter(
                (0..batch.num_rows()).map(|r| Some(wanted.contains(&ids.value(r)))),
            );
            arrow_select::filter::filter_record_batch(batch, &keep).unwrap()
        }
        None => batch.clone(),
    };
    let full_schema = candidates.schema();
    let indices: Vec<usize> = plan.columns(&full_schema).iter().map(|c| full_schema.index_of(c).unwrap()).collect();
    plan.evaluate(&candidates.project(&indices).unwrap(), spss).unwrap()
}

/// Nanoseconds in the largest unit that is at most the value, with an exact fraction:
/// `1.5s`, `716.666666ms`, `5us`, `7ns`.
pub fn duration(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    for (unit, digits, name) in [(1_000_000_000u64, 9, "s"), (1_000_000, 6, "ms"), (1_000, 3, "us")] {
        if ns >= unit {
            let (whole, frac) = (ns / unit, ns % unit);
            if frac == 0 {
                return format!("{sign}{whole}{name}");
            }
            let frac = format!("{frac:0digits$}");
            return format!("{sign}{whole}.{}{name}", frac.trim_end_matches('0'));
        }
    }
    format!("{sign}{ns}ns")
}

pub fn value(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => format!("{s:?}"),
        Value::Duration(d) => duration(*d),
        Value::Status(s) => s.as_str().into(),
        Value::Kind(k) => k.as_str().into(),
        Value::Any(bytes) => match AnyValue::decode(&bytes[..]) {
            Ok(AnyValue { value: Some(any_value::Value::ArrayValue(a)) }) => {
                let items: Vec<String> = a
                    .values
                    .iter()
                    .map(|v| match &v.value {
                        Some(any_value::Value::StringValue(s)) => format!("{s:?}"),
                        Some(any_value::Value::IntValue(i)) => i.to_string(),
                        Some(any_value::Value::DoubleValue(f)) => format!("{f:?}"),
                        Some(any_value::Value::BoolValue(b)) => b.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                format!("[{}]", items.join(", "))
            }
            other => format!("any:{other:?}"),
        },
    }
}

fn offset(ns: u64) -> String {
    format!("+{}", duration(ns.wrapping_sub(T0) as i64))
}

/// The stable text form of search hits that `.expected` files hold.
pub fn render(hits: &[TraceHit]) -> String {
    let mut out = String::new();
    for h in hits {
        let services: Vec<String> = h.service_stats.iter().map(|(s, (n, e))| format!("{s}:{n}/{e}")).collect();
        out += &format!(
            "trace {} root={}/{} start={} end={} services={}\n",
            h.trace_id,
            h.root_service.as_deref().map_or("-".into(), |s| format!("{s:?}")),
            h.root_name.as_deref().map_or("-".into(), |s| format!("{s:?}")),
            offset(h.start_unix_nano),
            offset(h.end_unix_nano),
            services.join(",")
        );
        for set in &h.spansets {
            out += &format!("  spanset matched={}", set.matched);
            for (k, v) in &set.attributes {
                out += &format!(" {k}={}", value(v));
            }
            out += "\n";
            for sp in &set.spans {
                out += &format!(
                    "    {} {:?} {} {}",
                    spoor_model::ids::hex(&sp.span_id),
                    sp.name,
                    offset(sp.start_unix_nano),
                    duration(sp.duration_nano as i64)
                );
                for (k, v) in &sp.attributes {
                    out += &format!(" {k}={}", value(v));
                }
                out += "\n";
            }
        }
    }
    if out.is_empty() { "no traces\n".into() } else { out }
}

/// The `.traceql` files of `tests/<dir>`, sorted; at least `min` of them (so a lost directory
/// cannot pass as an empty one).
pub fn golden_files(dir: &str, min: usize) -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "traceql"))
        .collect();
    files.sort();
    assert!(files.len() >= min, "only {} queries in {}", files.len(), dir.display());
    files
}
