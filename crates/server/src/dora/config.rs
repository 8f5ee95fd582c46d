//! The `dora:` section of the configuration (docs/configuration.md, docs/dora.md).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DoraConfig {
    /// Extract deployments and incidents at ingest and serve `/api/dora` (ingesting processes only).
    pub enabled: bool,
    /// Events whose time is older than this many days are dropped (at start-up and hourly).
    pub retention_days: u64,
    /// Events kept per tenant; more are refused (`spoor_dora_events_refused_total`), the spans
    /// themselves still ingested.
    pub max_events_per_tenant: usize,
    /// `GET /api/dora/deployments` computes change-failure hints (two TraceQL metrics windows
    /// each) for at most this many of the newest deployments it lists; 0 turns hints off.
    pub max_hinted_deployments: usize,
}

impl Default for DoraConfig {
    fn default() -> Self {
        DoraConfig { enabled: true, retention_days: 400, max_events_per_tenant: 100_000, max_hinted_deployments: 50 }
    }
}
