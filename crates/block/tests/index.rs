//! The value index in `filter.bin`: written per row group from the spans (whatever columns the
//! values went to), read back through `BlockReader`, and absent (not an error) in blocks of
//! the previous `filter.bin` version.

mod common;

use std::sync::Arc;

use common::*;
use object_store::memory::InMemory;
use spoor_block::schema::AttrScope;
use spoor_block::{DedicatedPolicy, WriteOptions, kinds};

#[tokio::test]
async fn every_row_group_lists_its_keys_and_values() {
    let traces = synth(3000, 21);
    for dedicated in [DedicatedPolicy::Fixed(Vec::new()), WriteOptions::default().dedicated] {
        let options = WriteOptions { row_group_spans: 10_000, dedicated, ..WriteOptions::default() };
        let block = write(&traces, &options);
        assert!(block.meta.row_groups > 3);
        let reader = upload(Arc::new(InMemory::new()), &block).await;
        for rg in 0..block.meta.row_groups as usize {
            let g = reader.row_group_index(rg).expect("an index per row group");
            // The load generator's keys, whichever column they went to.
            let method = g.key(AttrScope::Span, "http.request.method").unwrap();
            assert_eq!(method.kinds(), kinds::STR);
            assert!(method.may_have_str("GET") && !method.may_have_str("PATCHX"));
            let status = g.key(AttrScope::Span, "http.response.status_code").unwrap();
            assert!(status.ints().is_some_and(|v| v.contains(&200)) && !status.may_have_int(999));
            let user = g.key(AttrScope::Span, "user.id").unwrap();
            assert!(user.strings().is_none(), "thousands of users are filtered, not listed");
            assert!(!user.may_have_str("user-nobody"));
            assert_eq!(g.key(AttrScope::Span, "sample.ratio").unwrap().kinds(), kinds::DOUBLE);
            assert!(g.key(AttrScope::Resource, "service.name").unwrap().strings().is_some());
            assert!(g.key(AttrScope::Span, "no.such.key").is_none());
        }
        assert!(reader.row_group_index(block.meta.row_groups as usize).is_none());
        // The index costs little next to the data.
        assert!(block.filter.len() * 20 < block.data.len(), "{} vs {}", block.filter.len(), block.data.len());
    }
}

#[tokio::test]
async fn blocks_of_the_previous_filter_version_are_read_without_an_index() {
    let traces = synth(500, 22);
    let mut block = write(&traces, &WriteOptions::default());
    // filter.bin version 1 is version 2's trace filter without the index section: rebuild it.
    let v2 = block.filter.clone();
    let fuse_len = u32::from_le_bytes(v2[26..30].try_into().unwrap()) as usize;
    let mut v1 = v2[..30 + fuse_len].to_vec();
    v1[4] = 1;
    block.filter = v1;
    let reader = upload(Arc::new(InMemory::new()), &block).await;
    assert!(reader.row_group_index(0).is_none());
    for (id, fragments) in traces.iter().step_by(50) {
        assert_eq!(normalize(*id, &reader.find_trace(id).await.unwrap()), normalize(*id, fragments));
    }
}
