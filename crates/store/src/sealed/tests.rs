use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, WriteMultipart};

use super::*;

fn key(b: u8) -> Arc<MasterKey> {
    Arc::new(MasterKey::from_bytes(&[b; 32], std::path::Path::new(&format!("key-{b}"))))
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| format!("{i:08}").into_bytes()[i % 8]).collect()
}

#[tokio::test]
async fn objects_are_sealed_at_rest_and_read_back_by_range_in_plaintext() {
    let raw: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = SealedStore::new(raw.clone(), key(1));
    let plain = data(300_000);
    let path = Path::from("t/b/data.parquet");
    store.put(&path, PutPayload::from(plain.clone())).await.unwrap();

    let stored = raw.get(&path).await.unwrap().bytes().await.unwrap();
    assert!(spoor_seal::is_sealed(&stored));
    for at in [0, 70_000, 250_000] {
        let needle = &plain[at..at + 32];
        assert!(!stored.windows(32).any(|w| w == needle), "plaintext at rest");
    }

    assert_eq!(store.head(&path).await.unwrap().size, plain.len() as u64);
    let listed: Vec<ObjectMeta> = store.list(Some(&Path::from("t"))).try_collect().await.unwrap();
    assert_eq!(listed[0].size, plain.len() as u64);
    assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap(), plain);
    for r in [0..1, 65_530..65_600, 299_990..300_000, 1000..200_000] {
        let got = store.get_range(&path, r.clone()).await.unwrap();
        assert_eq!(got, plain[r.start as usize..r.end as usize]);
    }
    let ranges = store.get_ranges(&path, &[5..10, 290_000..290_010]).await.unwrap();
    assert_eq!((&ranges[0][..], &ranges[1][..]), (&plain[5..10], &plain[290_000..290_010]));
    let suffix = store
        .get_opts(&path, GetOptions { range: Some(GetRange::Suffix(8)), ..Default::default() })
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(suffix, plain[plain.len() - 8..]);

    // Another key: refused with the key file named, never garbage.
    let other = SealedStore::new(raw.clone(), key(2));
    let err = other.get_range(&path, 0..10).await.unwrap_err().to_string();
    assert!(err.contains("key-2"), "{err}");
}

#[tokio::test]
async fn a_flipped_stored_byte_fails_the_read() {
    let raw: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = SealedStore::new(raw.clone(), key(3));
    let path = Path::from("x");
    store.put(&path, PutPayload::from(data(100_000))).await.unwrap();
    let mut stored = raw.get(&path).await.unwrap().bytes().await.unwrap().to_vec();
    stored[HEADER_LEN + 70_000] ^= 1;
    raw.put(&path, PutPayload::from(stored)).await.unwrap();
    let fresh = SealedStore::new(raw, key(3));
    assert!(fresh.get_range(&path, 0..10).await.is_ok(), "the first frame is intact");
    let err = fresh.get_range(&path, 69_000..70_100).await.unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
}

#[tokio::test]
async fn multipart_uploads_seal_as_they_stream() {
    let dir = tempfile::tempdir().unwrap();
    let raw: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let store = SealedStore::new(raw, key(4));
    let plain = data(1_000_003);
    let path = Path::from("big");
    let mut w = WriteMultipart::new_with_chunk_size(store.put_multipart(&path).await.unwrap(), 100_000);
    for chunk in plain.chunks(77_777) {
        w.write(chunk);
    }
    w.finish().await.unwrap();
    let on_disk = std::fs::read(dir.path().join("big")).unwrap();
    assert_eq!(on_disk.len() as u64, spoor_seal::frame::sealed_len(plain.len() as u64));
    assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap(), plain);
}
