//! A lease in the object store, so that of several processes sharing a bucket only one does a
//! job at a time (compaction: two compactors must never merge the same blocks). No consensus of
//! our own: each renewal or takeover *creates* the next epoch's object with create-if-absent
//! (`PutMode::Create`: S3's `If-None-Match`, an exclusive link on a filesystem), so of two
//! processes racing for an epoch exactly one wins. The holder of the newest epoch owns the job
//! until its `expires`; after that anyone may create the next epoch.
//!
//! Objects: `.cluster/lease/<name>/<epoch, 20 digits>.json` with `{holder, expires_unix_nano}`;
//! four path parts, so the blocklist and its cleanup never mistake them for blocks.

use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use spoor_model::time::now_nanos;

use crate::error::Result;

#[derive(Serialize, Deserialize)]
struct Body {
    holder: String,
    expires_unix_nano: u64,
}

pub struct Lease {
    dir: Path,
    holder: String,
    ttl: Duration,
    /// Until when this process's last renewal holds (unix ns; 0: not held).
    mine_until: std::sync::atomic::AtomicU64,
}

/// What [`Lease::hold`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// This process holds the lease for `ttl` from now.
    Yes,
    /// Another holder's lease runs until then (unix ns).
    No { holder: String, until_unix_nano: u64 },
}

impl Lease {
    /// `holder` names this process uniquely (and stably across its own renewals).
    pub fn new(name: &str, holder: String, ttl: Duration) -> Lease {
        Lease {
            dir: Path::from(".cluster").join("lease").join(name),
            holder,
            ttl,
            mine_until: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Renews the lease when this process holds it, takes it when it is free or expired.
    pub async fn hold(&self, store: &dyn ObjectStore) -> Result<Held> {
        use std::sync::atomic::Ordering;
        // Renewed only past half its term: a renewal is a write.
        if self.mine_until.load(Ordering::Relaxed) > now_nanos() + self.ttl.as_nanos() as u64 / 2 {
            return Ok(Held::Yes);
        }
        self.mine_until.store(0, Ordering::Relaxed);
        let mut epochs: Vec<u64> = Vec::new();
        let mut listing = store.list(Some(&self.dir));
        while let Some(o) = listing.try_next().await? {
            if let Some(e) = o.location.filename().and_then(|f| f.strip_suffix(".json")).and_then(|e| e.parse().ok()) {
                epochs.push(e);
            }
        }
        epochs.sort_unstable();
        let now = now_nanos();
        let latest = epochs.last().copied().unwrap_or(0);
        if latest > 0 {
            let bytes = store.get(&self.path(latest)).await?.bytes().await?;
            // An unreadable lease object is treated as expired: it cannot name a holder.
            if let Ok(b) = serde_json::from_slice::<Body>(&bytes)
                && b.holder != self.holder
                && b.expires_unix_nano > now
            {
                return Ok(Held::No { holder: b.holder, until_unix_nano: b.expires_unix_nano });
            }
        }
        let body = Body { holder: self.holder.clone(), expires_unix_nano: now + self.ttl.as_nanos() as u64 };
        let payload = PutPayload::from(serde_json::to_vec(&body).expect("lease serializes"));
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match store.put_opts(&self.path(latest + 1), payload, opts).await {
            Ok(_) => {}
            // Someone else created this epoch first: they hold it now.
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => {
                return Ok(Held::No { holder: "another process".into(), until_unix_nano: now });
            }
            Err(e) => return Err(e.into()),
        }
        // Older epochs are history; keep the one before in case a reader listed just now.
        for e in epochs.iter().filter(|e| **e + 1 < latest + 1) {
            let _ = store.delete(&self.path(*e)).await;
        }
        self.mine_until.store(body.expires_unix_nano, Ordering::Relaxed);
        Ok(Held::Yes)
    }

    fn path(&self, epoch: u64) -> Path {
        self.dir.clone().join(format!("{epoch:020}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;

    #[tokio::test]
    async fn one_holder_at_a_time_and_takeover_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let a = Lease::new("compactor", "a".into(), Duration::from_millis(400));
        let b = Lease::new("compactor", "b".into(), Duration::from_millis(400));
        assert_eq!(a.hold(&store).await.unwrap(), Held::Yes);
        assert!(matches!(b.hold(&store).await.unwrap(), Held::No { holder, .. } if holder == "a"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(a.hold(&store).await.unwrap(), Held::Yes, "the holder renews past half its term");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(matches!(b.hold(&store).await.unwrap(), Held::No { .. }), "renewed, so still held");
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(b.hold(&store).await.unwrap(), Held::Yes, "an expired lease is taken over");
        assert!(matches!(a.hold(&store).await.unwrap(), Held::No { .. }));
    }

    #[tokio::test]
    async fn racing_takers_get_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                Lease::new("c", format!("p{i}"), Duration::from_secs(60)).hold(store.as_ref()).await.unwrap()
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += (t.await.unwrap() == Held::Yes) as usize;
        }
        assert_eq!(won, 1);
    }
}
