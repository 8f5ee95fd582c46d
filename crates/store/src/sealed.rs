//! An object store that seals every object it stores and opens what it reads: blocks are
//! encrypted at rest without the block format or its readers knowing.
//!
//! Objects are `spoor_seal` framed files (header with the wrapped data key, then 64 KiB
//! AES-256-GCM frames). Sizes reported (list, head, get) are plaintext sizes, computed from the
//! stored size, so a reader's byte ranges are plaintext ranges: a range read fetches and opens
//! only the frames covering it, plus the header on the first read of an object (its data key
//! is then kept while the object is in use).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use spoor_seal::{FrameWriter, Frames, HEADER_LEN, MasterKey};

/// Data keys kept for objects read recently; past this many the map starts over.
const MAX_KEYS: usize = 65_536;

pub struct SealedStore {
    inner: Arc<dyn ObjectStore>,
    key: Arc<MasterKey>,
    frames: Arc<Mutex<HashMap<Path, Arc<Frames>>>>,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, key: Arc<MasterKey>) -> SealedStore {
        SealedStore { inner, key, frames: Arc::default() }
    }

    fn forget(&self, location: &Path) {
        self.frames.lock().unwrap_or_else(|e| e.into_inner()).remove(location);
    }

    /// The object's data key and plaintext size: from the cache, or from its header (one
    /// ranged read, which also checks `options`' preconditions).
    async fn frames(&self, location: &Path, options: &GetOptions) -> object_store::Result<Arc<Frames>> {
        if let Some(f) = self.frames.lock().unwrap_or_else(|e| e.into_inner()).get(location) {
            return Ok(f.clone());
        }
        let head = GetOptions { range: Some(GetRange::Bounded(0..HEADER_LEN as u64)), head: false, ..options.clone() };
        let got = self.inner.get_opts(location, head).await?;
        let size = got.meta.size;
        let header = got.bytes().await?;
        let frames = Arc::new(Frames::open(&header, size, &self.key, std_path(location)).map_err(sealed)?);
        let mut map = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS {
            map.clear();
        }
        map.insert(location.clone(), frames.clone());
        Ok(frames)
    }
}

fn std_path(location: &Path) -> &std::path::Path {
    std::path::Path::new(location.as_ref())
}

fn sealed(e: spoor_seal::Error) -> object_store::Error {
    object_store::Error::Generic { store: "sealed", source: Box::new(e) }
}

fn plain_meta(mut meta: ObjectMeta) -> ObjectMeta {
    // A size no sealed object has stays as it is: reading it fails with a clear error anyway.
    meta.size = spoor_seal::frame::plain_len(meta.size).unwrap_or(meta.size);
    meta
}

impl fmt::Display for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({})", self.inner)
    }
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedStore({:?}, {:?})", self.inner, self.key)
    }
}

#[async_trait]
impl ObjectStore for SealedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.forget(location);
        let plain: Bytes = payload.into();
        let key = self.key.clone();
        let sealed = tokio::task::spawn_blocking(move || spoor_seal::frame::seal(&key, &plain))
            .await
            .map_err(|e| object_store::Error::Generic { store: "sealed", source: Box::new(e) })?;
        self.inner.put_opts(location, PutPayload::from(sealed), opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.forget(location);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        let writer = FrameWriter::new(&self.key, Vec::new()).expect("writing to a Vec cannot fail");
        Ok(Box::new(SealedUpload { inner, writer: Some(writer) }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if options.head {
            // The size is arithmetic on the stored size: no need to open the header.
            let got = self.inner.get_opts(location, options).await?;
            let meta = plain_meta(got.meta.clone());
            return Ok(GetResult { range: 0..meta.size, meta, ..got });
        }
        let frames = self.frames(location, &options).await?;
        let range = match &options.range {
            None => 0..frames.plain_len(),
            Some(r) => r.as_range(frames.plain_len()).map_err(|e| object_store::Error::Generic {
                store: "sealed",
                source: format!("{location}: {e}").into(),
            })?,
        };
        let stored = frames.sealed_range(&range);
        let got =
            self.inner.get_opts(location, GetOptions { range: Some(GetRange::Bounded(stored)), ..options }).await?;
        let (meta, attributes, extensions) =
            (plain_meta(got.meta.clone()), got.attributes.clone(), got.extensions.clone());
        let bytes = got.bytes().await?;
        let (r, loc) = (range.clone(), location.clone());
        let open = move || frames.open_range(&r, &bytes, std_path(&loc)).map_err(sealed);
        // Large reads (compaction downloads) decrypt off the async workers.
        let plain = if range.end - range.start > (1 << 20) {
            tokio::task::spawn_blocking(open)
                .await
                .map_err(|e| object_store::Error::Generic { store: "sealed", source: Box::new(e) })??
        } else {
            open()?
        };
        let stream = futures_util::stream::once(async move { Ok(Bytes::from(plain)) }).boxed();
        Ok(GetResult { payload: GetResultPayload::Stream(stream), meta, range, attributes, extensions })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let got = self.get_opts(location, GetOptions { range: Some(r.clone().into()), ..Default::default() });
            out.push(got.await?.bytes().await?);
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let frames = self.frames.clone();
        self.inner
            .delete_stream(locations)
            .inspect_ok(move |p| {
                frames.lock().unwrap_or_else(|e| e.into_inner()).remove(p);
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix).map_ok(plain_meta).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset).map_ok(plain_meta).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects = listed.objects.into_iter().map(plain_meta).collect();
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.forget(from);
        self.forget(to);
        self.inner.rename_opts(from, to, options).await
    }
}

/// Seals parts as they come: each part sends the frames completed so far; the last frame goes
/// with `complete`.
struct SealedUpload {
    inner: Box<dyn MultipartUpload>,
    writer: Option<FrameWriter<Vec<u8>>>,
}

impl fmt::Debug for SealedUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedUpload({:?})", self.inner)
    }
}

#[async_trait]
impl MultipartUpload for SealedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let Some(writer) = self.writer.as_mut() else {
            return Box::pin(async {
                Err(object_store::Error::Generic { store: "sealed", source: "upload completed".into() })
            });
        };
        for chunk in data.iter() {
            std::io::Write::write_all(writer, chunk).expect("writing to a Vec cannot fail");
        }
        let sealed = writer.take_sealed();
        if sealed.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        self.inner.put_part(PutPayload::from(sealed))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| object_store::Error::Generic { store: "sealed", source: "upload completed twice".into() })?;
        let last = writer.finish().expect("writing to a Vec cannot fail");
        self.inner.put_part(PutPayload::from(last)).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.writer = None;
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests;
