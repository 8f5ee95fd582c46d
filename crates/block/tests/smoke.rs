use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use spoor_block::*;
use spoor_model::TraceId;
use spoor_model::synth::{Rng, build_request};

fn synth(traces: usize) -> BTreeMap<TraceId, Vec<Bytes>> {
    let mut rng = Rng::new(7);
    let mut out: BTreeMap<TraceId, Vec<Bytes>> = BTreeMap::new();
    let mut left = traces;
    while left > 0 {
        let n = left.min(100);
        let (req, _) = build_request(&mut rng, n, 1_700_000_000_000_000_000);
        for f in spoor_model::split_request(&req).fragments {
            out.entry(f.trace_id).or_default().push(f.bytes);
        }
        left -= n;
    }
    out
}

#[tokio::test]
async fn smoke() {
    let traces = synth(10_000);
    let mut buf = Vec::new();
    let mut w = BlockWriter::new(&mut buf, "t", "b", &WriteOptions::default()).unwrap();
    for (id, f) in &traces {
        w.push_trace(*id, f).unwrap();
    }
    let fin = w.finish().unwrap();
    println!("{}", serde_json::to_string_pretty(&fin.meta).unwrap());
    println!("bytes/span {:.2}", (fin.meta.data_bytes + fin.meta.filter_bytes) as f64 / fin.meta.spans as f64);
    let store = Arc::new(object_store::memory::InMemory::new());
    store.put(&Path::from("t/b/data.parquet"), Bytes::from(buf).into()).await.unwrap();
    store.put(&Path::from("t/b/filter.bin"), Bytes::from(fin.filter).into()).await.unwrap();
    let r = BlockReader::open(store, Path::from("t/b"), fin.meta).await.unwrap();
    let (id, frags) = traces.iter().nth(1234).unwrap();
    let got = r.find_trace(id).await.unwrap();
    let want = spoor_model::trace::assemble(frags.iter().map(|b| &b[..])).unwrap();
    let have = spoor_model::trace::assemble(got.iter().map(|b| &b[..])).unwrap();
    assert_eq!(want.spans, have.spans);
}
