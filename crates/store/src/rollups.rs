//! Rollups in the object store (`<tenant>/rollups/<id>/{data.parquet, meta.json}`, the format
//! in `spoor_block::rollup`): written by the tier rewrite, listed by the same poll as blocks,
//! read by TraceQL metrics where only they hold every span (the service-graph edges beside
//! them are read by [`Blocks::read_rollup_edges`]), deleted past `aggregated`.

use std::collections::{HashMap, HashSet};

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use spoor_block::rollup::{self, EDGES_FILE, EdgeRow, ROLLUP_DIR, ROLLUP_FORMAT, RollupMeta, RollupRow};
use spoor_block::{DATA_FILE, META_FILE};
use spoor_model::time::now_nanos;

use crate::blocks::Blocks;
use crate::error::{Error, Result};
use crate::fail;

fn rollup_dir(tenant: &str, id: &str) -> Path {
    Path::from(tenant).join(ROLLUP_DIR).join(id)
}

impl Blocks {
    /// Every listed rollup of `tenant`.
    pub fn rollups(&self, tenant: &str) -> Vec<RollupMeta> {
        let list = self.rollups.read().unwrap();
        list.get(tenant).map(|r| r.values().map(|(m, _)| m.clone()).collect()).unwrap_or_default()
    }

    /// Tenants with rollups.
    pub fn rollup_tenants(&self) -> Vec<String> {
        self.rollups.read().unwrap().keys().cloned().collect()
    }

    /// Rollups that count, overlapping `[start, end]`: those none of whose covered blocks is
    /// still visible (while one is, its spans are counted from it).
    pub fn active_rollups(&self, tenant: &str, (start, end): (u64, u64)) -> Vec<RollupMeta> {
        let visible: HashSet<String> = self.visible(tenant).iter().map(|b| b.meta().block_id.clone()).collect();
        self.rollups(tenant)
            .into_iter()
            .filter(|m| m.start_unix_nano <= end && m.end_unix_nano >= start)
            .filter(|m| !m.covers.iter().any(|c| visible.contains(c)))
            .collect()
    }

    pub async fn read_rollup(&self, meta: &RollupMeta) -> Result<Vec<RollupRow>> {
        let path = rollup_dir(&meta.tenant, &meta.rollup_id).join(DATA_FILE);
        let data = self.store.get(&path).await?.bytes().await?;
        tokio::task::spawn_blocking(move || rollup::decode(data))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::from)
    }

    /// A rollup's service-graph edges.
    pub async fn read_rollup_edges(&self, meta: &RollupMeta) -> Result<Vec<EdgeRow>> {
        if meta.edge_rows == 0 {
            return Ok(Vec::new());
        }
        let path = rollup_dir(&meta.tenant, &meta.rollup_id).join(EDGES_FILE);
        let data = self.store.get(&path).await?.bytes().await?;
        tokio::task::spawn_blocking(move || rollup::decode_edges(data))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::from)
    }

    /// Writes a rollup of the spans of `covers` (edges and data, then the meta that makes it
    /// exist).
    /// Rollups of an earlier, unfinished attempt over any of these blocks go first: their
    /// blocks are still visible, so they count for nothing, and a finished attempt must not
    /// find them counting twice.
    pub(crate) async fn write_rollup(
        &self,
        tenant: &str,
        id: &str,
        covers: &[String],
        range: (u64, u64),
        rows: &[RollupRow],
        edges: &[EdgeRow],
    ) -> Result<RollupMeta> {
        for stale in self.rollups(tenant).into_iter().filter(|m| m.covers.iter().any(|c| covers.contains(c))) {
            self.delete_rollup(&stale).await?;
        }
        let dir = rollup_dir(tenant, id);
        let data = rollup::encode(rows)?;
        if !edges.is_empty() {
            let edges = rollup::encode_edges(edges)?;
            self.store.put(&dir.clone().join(EDGES_FILE), PutPayload::from(edges)).await?;
        }
        let meta = RollupMeta {
            format: ROLLUP_FORMAT.into(),
            rollup_id: id.to_owned(),
            tenant: tenant.to_owned(),
            start_unix_nano: range.0,
            end_unix_nano: range.1,
            rows: rows.len() as u64,
            spans: rows.iter().map(|r| r.spans).sum(),
            data_bytes: data.len() as u64,
            covers: covers.to_vec(),
            edge_rows: edges.len() as u64,
            created_unix_nano: now_nanos(),
        };
        self.store.put(&dir.clone().join(DATA_FILE), PutPayload::from(data)).await?;
        fail::point("tier.rollup_before_meta");
        let json = serde_json::to_vec_pretty(&meta).expect("meta serializes");
        self.store.put(&dir.join(META_FILE), PutPayload::from(json)).await?;
        let when = self.next_added();
        self.rollups.write().unwrap().entry(tenant.to_owned()).or_default().insert(id.to_owned(), (meta.clone(), when));
        Ok(meta)
    }

    /// Meta first, as for blocks.
    pub async fn delete_rollup(&self, meta: &RollupMeta) -> Result<()> {
        if let Some(r) = self.rollups.write().unwrap().get_mut(&meta.tenant) {
            r.remove(&meta.rollup_id);
        }
        let dir = rollup_dir(&meta.tenant, &meta.rollup_id);
        for file in [META_FILE, DATA_FILE, EDGES_FILE] {
            match self.store.delete(&dir.clone().join(file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes rollups whose newest span is older than `cutoff` (unix ns).
    pub async fn expire_rollups(&self, tenant: &str, cutoff: u64) -> Result<Vec<RollupMeta>> {
        let mut out = Vec::new();
        for m in self.rollups(tenant).into_iter().filter(|m| m.end_unix_nano < cutoff) {
            self.delete_rollup(&m).await?;
            out.push(m);
        }
        Ok(out)
    }

    /// Takes in a listing: reads the metas of new rollups, forgets those gone (except what this
    /// process added since the listing began).
    pub(crate) async fn refresh_rollups(&self, before: u64, listed: HashMap<String, HashSet<String>>) {
        let known: HashSet<(String, String)> = self
            .rollups
            .read()
            .unwrap()
            .iter()
            .flat_map(|(t, r)| r.keys().map(move |id| (t.clone(), id.clone())))
            .collect();
        for (tenant, ids) in &listed {
            for id in ids.iter().filter(|id| !known.contains(&(tenant.clone(), (*id).clone()))) {
                let path = rollup_dir(tenant, id).join(META_FILE);
                let meta = match self.store.get(&path).await {
                    Ok(r) => r.bytes().await.map_err(Error::from).and_then(|b| {
                        serde_json::from_slice::<RollupMeta>(&b)
                            .map_err(|source| Error::BadMeta { path: path.to_string(), source })
                    }),
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => Err(e.into()),
                };
                match meta {
                    Ok(m) => {
                        let when = self.next_added();
                        self.rollups.write().unwrap().entry(tenant.clone()).or_default().insert(id.clone(), (m, when));
                    }
                    Err(e) => tracing::warn!(tenant, rollup = id, error = %e, "cannot read rollup meta; will retry"),
                }
            }
        }
        let mut list = self.rollups.write().unwrap();
        for (tenant, r) in list.iter_mut() {
            let present = listed.get(tenant);
            r.retain(|id, (_, when)| *when > before || present.is_some_and(|p| p.contains(id)));
        }
        list.retain(|_, r| !r.is_empty());
    }
}
