//! Metrics generated from traces, on their way out: the scrape endpoint
//! (`GET /metrics/generated`, Prometheus text or OpenMetrics with exemplars), the clock that
//! expires service-graph edges and stale series, and remote_write pushes.

pub mod remote_write;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use spoor_generate::expose::{self, Format};
use spoor_generate::{Family, Generator, Labels, remote};

use spoor_model::time::now_nanos;

use crate::config::Config;
use crate::dora::store::Store as DoraStore;
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::metrics::names;
use remote_write::{RemoteWrite, RemoteWriteConfig};

/// The generator and where its series go.
pub struct Generated {
    pub generator: Generator,
    remote_write: RemoteWrite,
    config: spoor_generate::GeneratorConfig<RemoteWriteConfig>,
    multitenancy: bool,
    metrics: Arc<Metrics>,
    /// The DORA store, whose series are pushed with the generator's.
    dora: Option<Arc<DoraStore>>,
}

impl Generated {
    /// None when the generator is off (or the process does not ingest).
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        dora: Option<Arc<DoraStore>>,
    ) -> Result<Option<Generated>, StartupError> {
        let generator = Generator::new(&config.metrics_generator)
            .map_err(|e| StartupError::new(format!("metrics_generator: {e}")).with_source(e))?;
        if !(generator.is_enabled() && config.ingest.enabled) {
            return Ok(None);
        }
        Ok(Some(Generated {
            generator,
            remote_write: RemoteWrite::new(&config.metrics_generator.remote_write)?,
            config: config.metrics_generator.clone(),
            multitenancy: config.tenancy.multitenancy_enabled,
            metrics,
            dora,
        }))
    }

    pub fn pushes(&self) -> bool {
        !self.remote_write.is_empty()
    }
}

/// Extra labels for one tenant's series: external labels, and the tenant when asked for (or,
/// for a scrape of several tenants, always, so their series stay apart).
fn extra_labels(p: &Generated, tenant: &str, for_scrape: bool) -> Labels {
    let r = &p.config.registry;
    let mut labels: Labels = r.external_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let tenant_label = match r.inject_tenant_id_as.as_str() {
        "" if for_scrape && p.multitenancy => "tenant",
        "" => "",
        name => name,
    };
    if !tenant_label.is_empty() {
        labels.push((tenant_label.to_string(), tenant.to_string()));
    }
    labels
}

/// What the scrape endpoint shows: the generator's series and the DORA store's.
#[derive(Clone)]
pub struct Scraped {
    pub generated: Option<Arc<Generated>>,
    pub dora: Option<Arc<DoraStore>>,
    pub multitenancy: bool,
}

/// `GET /metrics/generated[?tenant=ID]`: every tenant's series, or one tenant's.
pub async fn scrape(
    State(s): State<Scraped>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or(""));
    let tenants: BTreeSet<String> = match params.get("tenant") {
        Some(t) => BTreeSet::from([t.clone()]),
        None => {
            let mut all: BTreeSet<String> = s.generated.iter().flat_map(|p| p.generator.tenants()).collect();
            all.extend(s.dora.iter().flat_map(|d| d.tenants()));
            all
        }
    };
    let now_ms = (now_nanos() / 1_000_000) as i64;
    let parts: Vec<(Labels, Vec<Family>)> = tenants
        .iter()
        .map(|t| {
            let labels = match &s.generated {
                Some(p) => extra_labels(p, t, true),
                None if s.multitenancy => vec![("tenant".to_string(), t.clone())],
                None => Vec::new(),
            };
            let mut families = s.generated.as_ref().map(|p| p.generator.snapshot(t)).unwrap_or_default();
            if let Some(d) = &s.dora {
                families.extend(dora_families(d, t, now_ms));
            }
            (labels, families)
        })
        .collect();
    ([(header::CONTENT_TYPE, format.content_type())], expose::render(&parts, format)).into_response()
}

/// A tenant's DORA series, rebuilt from its events.
fn dora_families(d: &DoraStore, tenant: &str, now_ms: i64) -> Vec<Family> {
    let events = d.events(&[tenant.to_string()]);
    let refs: Vec<&spoor_generate::dora::Event> = events.iter().collect();
    spoor_generate::dora::series::families(&refs, now_ms)
}

/// Spoor's own view of the generator, per tenant: set just before `/metrics` renders.
pub fn publish(g: &Generator, m: &Metrics) {
    for tenant in g.tenants() {
        let c = g.counts(&tenant);
        let t = [("tenant", tenant.as_str())];
        m.set(names::GENERATOR_SPANS_TOTAL, &t, c.spans as f64);
        m.set(
            names::GENERATOR_SPANS_DISCARDED_TOTAL,
            &[("tenant", &tenant), ("reason", "too_old")],
            c.spans_too_old as f64,
        );
        m.set(names::GENERATOR_ACTIVE_SERIES, &t, c.active_series as f64);
        m.set(names::GENERATOR_SERIES_LIMITED_TOTAL, &t, c.series_limited as f64);
        m.set(names::GENERATOR_LABEL_VALUES_LIMITED_TOTAL, &t, c.label_values_limited as f64);
        m.set(names::GENERATOR_PENDING_EDGES, &t, c.pending_edges as f64);
        m.set(names::GENERATOR_EXPIRED_EDGES_TOTAL, &t, c.expired_edges as f64);
        m.set(names::GENERATOR_DROPPED_SPANS_TOTAL, &t, c.dropped_spans as f64);
    }
}

/// Expires service-graph halves every second (their wait is seconds long) and stale series.
pub async fn run(p: Arc<Generated>) {
    let g = &p.generator;
    loop {
        tokio::time::sleep(Duration::from_secs(1).min(p.config.collection_interval)).await;
        g.tick(now_nanos());
    }
}

/// Series per remote_write request: Prometheus's own default batch size.
const SERIES_PER_REQUEST: usize = 2000;

/// Every collection interval, each tenant's series go to every remote_write endpoint: one
/// sample per series stamped now (after a 0 for series new since the last push), and the
/// exemplars recorded since the last delivered push.
pub async fn push(p: Arc<Generated>) {
    let g = &p.generator;
    let mut exemplars_since: HashMap<String, i64> = HashMap::new();
    let mut previous_push: HashMap<String, i64> = HashMap::new();
    loop {
        tokio::time::sleep(p.config.collection_interval).await;
        let mut tenants: BTreeSet<String> = g.tenants().into_iter().collect();
        tenants.extend(p.dora.iter().flat_map(|d| d.tenants()));
        for tenant in tenants {
            let now_ms = (now_nanos() / 1_000_000) as i64;
            let mut families = g.snapshot(&tenant);
            if let Some(d) = &p.dora {
                families.extend(dora_families(d, &tenant, now_ms));
            }
            if families.is_empty() {
                continue;
            }
            let since = exemplars_since.get(&tenant).copied().unwrap_or(i64::MIN);
            let previous = previous_push.get(&tenant).copied().unwrap_or(i64::MIN);
            let req = remote::write_request(&families, &extra_labels(&p, &tenant, false), now_ms, since, previous);
            let newest = remote::newest_exemplar_ms(&req);
            let mut delivered = true;
            for part in remote::split(req, SERIES_PER_REQUEST) {
                let samples = remote::sample_count(&part);
                let body = match remote::encode(&part) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(tenant, error = %e, "cannot encode a remote_write request");
                        delivered = false;
                        continue;
                    }
                };
                let outcomes = p.remote_write.push(&tenant, body.into(), samples, &p.metrics).await;
                delivered &= outcomes.iter().all(|o| o.is_delivered());
            }
            // After a failed push, new series get their zero sample again next time.
            if delivered {
                previous_push.insert(tenant.clone(), now_ms);
                if let Some(newest) = newest {
                    exemplars_since.insert(tenant, newest);
                }
            }
        }
    }
}
