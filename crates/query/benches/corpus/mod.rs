//! The eval bench's corpus, shared with `examples/prefilter.rs`: a block of synthetic spans
//! as the writer makes it, read back with plain or dictionary-encoded strings.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use spoor_block::{BlockWriter, DedicatedColumn, DedicatedPolicy, WriteOptions};
use spoor_model::TraceId;
use spoor_model::synth::{Rng, build_request};

/// A block as the writer makes it, with `http.request.method` dedicated and `user.id` left in
/// the generic attribute list.
pub fn block(spans: usize) -> Bytes {
    let mut rng = Rng::new(42);
    let mut now = 1_700_000_000_000_000_000u64;
    let mut traces: BTreeMap<TraceId, Vec<Bytes>> = BTreeMap::new();
    let mut total = 0;
    while total < spans {
        let (req, ids) = build_request(&mut rng, 10, now);
        total += ids.len();
        now += ids.len() as u64 * 10_000;
        for f in spoor_model::split_request(&req).fragments {
            traces.entry(f.trace_id).or_default().push(f.bytes);
        }
    }
    let dedicated = [("http.request.method", "string"), ("http.route", "string"), ("http.response.status_code", "int")]
        .iter()
        .map(|(key, kind)| DedicatedColumn {
            scope: "span".into(),
            key: key.to_string(),
            kind: kind.to_string(),
            column: String::new(),
        })
        .collect();
    let options = WriteOptions { dedicated: DedicatedPolicy::Fixed(dedicated), ..Default::default() };
    let mut out = Vec::new();
    let mut w = BlockWriter::new(&mut out, "bench", "block", &options).unwrap();
    for (id, fragments) in &traces {
        w.push_trace(*id, fragments).unwrap();
    }
    w.finish().unwrap();
    Bytes::from(out)
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

pub fn read(data: &Bytes, dictionaries: bool) -> RecordBatch {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(data.clone()).unwrap();
    if dictionaries {
        let fields: Vec<Field> = builder.schema().fields().iter().map(|f| dictionary_field(f)).collect();
        let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)));
        builder = ParquetRecordBatchReaderBuilder::try_new_with_options(data.clone(), options).unwrap();
    }
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.with_batch_size(1 << 16).build().unwrap().map(|b| b.unwrap()).collect();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}
