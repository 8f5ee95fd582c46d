//! Reading blocks: point lookups from an object store, full scans from a local file.

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use spoor_model::TraceId;

use crate::{BlockMeta, Result};

#[derive(Clone)]
pub struct BlockReader {
    inner: Arc<Inner>,
}

struct Inner {
    meta: BlockMeta,
}

impl BlockReader {
    pub async fn open(_store: Arc<dyn ObjectStore>, _dir: Path, _meta: BlockMeta) -> Result<BlockReader> {
        todo!()
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.inner.meta
    }

    pub fn may_contain(&self, _id: &TraceId) -> bool {
        todo!()
    }

    pub async fn find_trace(&self, _id: &TraceId) -> Result<Vec<Bytes>> {
        todo!()
    }
}

pub struct TraceIter {}

impl TraceIter {
    pub fn open(_file: std::fs::File) -> Result<TraceIter> {
        todo!()
    }
}

impl Iterator for TraceIter {
    type Item = Result<(TraceId, Vec<Bytes>)>;
    fn next(&mut self) -> Option<Self::Item> {
        todo!()
    }
}
