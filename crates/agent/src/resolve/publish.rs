//! What every polling resolver shares: one answer at a time goes onto the watch channel the
//! forwarders read, unless it failed or is empty, which keeps the last good list (a blip in
//! DNS or the API server must not empty the ring and park every batch).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Counters for self metrics (`otelcol_loadbalancer_num_resolutions{success}`,
/// `..._num_backend_updates`).
#[derive(Debug, Default)]
pub struct ResolverStats {
    pub resolutions_ok: AtomicU64,
    pub resolutions_failed: AtomicU64,
    /// Times the published list changed.
    pub backend_updates: AtomicU64,
}

/// One resolver's state: the channel it publishes on and its counters.
pub(crate) struct Publisher {
    pub tx: watch::Sender<Vec<String>>,
    pub stats: Arc<ResolverStats>,
}

impl Publisher {
    /// Publishes `answer` (sorted, without duplicates) when it is non-empty and differs from
    /// the current list; a failure or an empty answer is counted and the list kept. `source`
    /// names what was asked, for the log.
    pub fn publish(&self, source: &str, answer: Result<Vec<String>, String>) {
        match answer {
            Ok(list) if !list.is_empty() => {
                self.stats.resolutions_ok.fetch_add(1, Ordering::Relaxed);
                let changed = self.tx.send_if_modified(|current| {
                    if *current == list {
                        return false;
                    }
                    *current = list.clone();
                    true
                });
                if changed {
                    self.stats.backend_updates.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(source, backends = ?list, "load-balancing backends changed");
                }
            }
            other => {
                self.stats.resolutions_failed.fetch_add(1, Ordering::Relaxed);
                let error = other.err().unwrap_or_else(|| "no addresses".into());
                tracing::warn!(source, %error, kept = ?*self.tx.borrow(), "resolution failed; keeping the last good backends");
            }
        }
    }
}
