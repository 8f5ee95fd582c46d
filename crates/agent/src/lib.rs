//! `spoor agent`: a lightweight collector that runs next to applications, and the OTLP client
//! it exports with ([`client`], also what `spoor loadgen` and the tests send with).
//!
//! ```text
//! receivers ─► the server's front door (memory, decompress, decode, tenant rate, scrub)
//!           ─► drop spans with invalid IDs (the model's check, as the server's split does)
//!           ─► persistent queue (spoor_wal::queue, group-committed fsync) ─► acknowledge
//!           ─► batch (size, timeout) ─► split by trace ID over the ring ─► OTLP export (retry, backoff)
//! ```
//!
//! The queue holds encoded `ExportTraceServiceRequest`s, so batching items of one tenant is a
//! concatenation (protobuf merges repeated fields) and only load balancing decodes them again.
//! An item leaves the queue once every part of it is delivered or refused for good; a
//! downstream outage fills the queue and then pushes back on clients (503 + Retry-After).
//! Tail sampling is not run here: it needs whole traces, which is what the trace-ID routing
//! gives each `spoor serve` behind the agents.

pub mod client;
pub mod export;
pub mod resolve;
pub mod ring;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use spoor_model::otlp::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse};
use spoor_server::auth::guard::{Auth, Surface, protect};
use spoor_server::config::agent::{ExporterConfig, ExportersConfig, Protocol, RoutingKey};
use spoor_server::config::{Config, Listener};
use spoor_server::error::{Error, StartupError};
use spoor_server::ingest::front::FrontDoor;
use spoor_server::ingest::processors::BatchConfig;
use spoor_server::ingest::receive::{self, Export, Ingest};
use spoor_server::metrics::Metrics;
use spoor_server::tls::load as load_tls;
use spoor_server::{background, http};
use spoor_wal::queue::{Item, Queue, QueueConfig, QueueError};
use tokio::sync::watch;

use export::{Exporter, Failure};
use resolve::Resolver;
use ring::Ring;
use spoor_server::metrics::names;

/// Where batches go. Built once at start.
#[allow(clippy::large_enum_variant)]
enum Route {
    Single(Arc<Exporter>),
    Balanced {
        key: RoutingKey,
        template: ExporterConfig,
        resolver: Resolver,
        exporters: Mutex<HashMap<String, Arc<Exporter>>>,
    },
}

impl Route {
    fn new(c: &ExportersConfig) -> Result<Route, StartupError> {
        let bad = |m: String| StartupError::new(format!("agent.exporters: {m}"));
        match (&c.otlp, &c.otlphttp, &c.loadbalancing) {
            (Some(e), None, None) => Ok(Route::Single(Arc::new(Exporter::new(e.clone())?))),
            (None, Some(e), None) => {
                Ok(Route::Single(Arc::new(Exporter::new(ExporterConfig { protocol: Protocol::Http, ..e.clone() })?)))
            }
            (None, None, Some(lb)) => {
                lb.resolver.validate().map_err(|e| bad(format!("loadbalancing.resolver: {e}")))?;
                Ok(Route::Balanced {
                    key: lb.routing_key,
                    template: lb.protocol.otlp.clone(),
                    resolver: Resolver::start(lb.resolver.clone())?,
                    exporters: Mutex::new(HashMap::new()),
                })
            }
            (None, None, None) => Err(bad("set one of otlp, otlphttp or loadbalancing".into())),
            _ => Err(bad("set only one of otlp, otlphttp or loadbalancing".into())),
        }
    }

    fn exporter(&self, endpoint: &str) -> Result<Arc<Exporter>, StartupError> {
        match self {
            Route::Single(e) => Ok(e.clone()),
            Route::Balanced { template, exporters, .. } => {
                let mut map = exporters.lock().unwrap();
                if let Some(e) = map.get(endpoint) {
                    return Ok(e.clone());
                }
                let e = Arc::new(Exporter::new(template.with_endpoint(endpoint))?);
                map.insert(endpoint.to_owned(), e.clone());
                Ok(e)
            }
        }
    }

    fn exporters(&self) -> Vec<(String, Arc<Exporter>)> {
        match self {
            Route::Single(e) => vec![(e.url().to_owned(), e.clone())],
            Route::Balanced { exporters, .. } => {
                exporters.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            }
        }
    }
}

pub struct Agent {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Admission, decode and scrubbing, as `spoor serve` does them.
    front: Arc<FrontDoor>,
    queue: Queue,
    route: Route,
    batch: BatchConfig,
    ready: AtomicBool,
}

/// Queue item: `[1][tenant len u16][tenant][spans u32][ExportTraceServiceRequest]`.
fn encode_item(tenant: &str, spans: u32, request: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(7 + tenant.len() + request.len());
    out.put_u8(1);
    out.put_u16_le(tenant.len() as u16);
    out.put_slice(tenant.as_bytes());
    out.put_u32_le(spans);
    out.put_slice(request);
    out.to_vec()
}

struct Decoded {
    tenant: String,
    spans: u32,
    request: Bytes,
}

fn decode_item(payload: &Bytes) -> Option<Decoded> {
    let (&version, rest) = payload.split_first()?;
    if version != 1 || rest.len() < 2 {
        return None;
    }
    let tlen = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let rest = rest.get(2..)?;
    let tenant = std::str::from_utf8(rest.get(..tlen)?).ok()?.to_owned();
    let spans = u32::from_le_bytes(rest.get(tlen..tlen + 4)?.try_into().ok()?);
    let start = 1 + 2 + tlen + 4;
    Some(Decoded { tenant, spans, request: payload.slice(start..) })
}

fn count(req: &ExportTraceServiceRequest) -> u64 {
    req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum()
}

/// Cuts a request into requests of at most `max` spans, keeping every span's resource and
/// scope and the order of spans.
fn chunk(req: ExportTraceServiceRequest, max: usize) -> Vec<ExportTraceServiceRequest> {
    let mut out = vec![ExportTraceServiceRequest::default()];
    let mut room = max;
    for rs in req.resource_spans {
        let mut rs_open = false;
        for ss in rs.scope_spans {
            let mut spans = ss.spans.into_iter().peekable();
            while spans.peek().is_some() {
                if room == 0 {
                    out.push(ExportTraceServiceRequest::default());
                    room = max;
                    rs_open = false;
                }
                let take: Vec<_> = spans.by_ref().take(room).collect();
                room -= take.len();
                let cur = out.last_mut().unwrap();
                if !rs_open {
                    cur.resource_spans.push(spoor_model::otlp::ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: rs.schema_url.clone(),
                    });
                    rs_open = true;
                }
                cur.resource_spans.last_mut().unwrap().scope_spans.push(spoor_model::otlp::ScopeSpans {
                    scope: ss.scope.clone(),
                    spans: take,
                    schema_url: ss.schema_url.clone(),
                });
            }
        }
    }
    out.retain(|r| !r.resource_spans.is_empty());
    out
}

impl Ingest for Agent {
    fn multitenancy_enabled(&self) -> bool {
        self.config.tenancy.multitenancy_enabled
    }

    fn max_request_bytes(&self) -> usize {
        self.config.ingest.max_request_bytes
    }

    fn admit_early(&self, tenant: &str) -> Result<(), Error> {
        self.front.admit_early(tenant)
    }

    async fn ingest(self: Arc<Self>, export: Export) -> Result<ExportTraceServiceResponse, Error> {
        let transport = export.transport;
        let result = self.ingest_inner(export).await;
        receive::count_request(&self.metrics, transport, &result);
        result
    }
}

impl Agent {
    pub fn new(config: Config) -> Result<Agent, StartupError> {
        if config.processors.tail_sampling().is_some() {
            return Err(StartupError::new(
                "processors.tail_sampling runs in `spoor serve` (after its WAL), not in the agent: route by trace ID \
                 (agent.exporters.loadbalancing) so every server sees whole traces, and sample there",
            ));
        }
        let metrics = Arc::new(Metrics::default());
        let front = Arc::new(FrontDoor::new(&config, metrics.clone())?);
        let q = &config.agent.queue;
        let dir = if q.directory.as_os_str().is_empty() {
            config.storage.data_dir.join("queue")
        } else {
            q.directory.clone()
        };
        // The queue holds whole requests: sealed under storage.encryption like the server's WAL.
        let seal = config.storage.encryption.load()?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| StartupError::new(format!("cannot create the agent queue dir {}: {e}", dir.display())))?;
        spoor_server::encryption::check_dir(&dir, std::slice::from_ref(&dir), seal.as_deref())?;
        let queue = Queue::open(QueueConfig {
            dir: dir.clone(),
            max_bytes: q.max_bytes,
            segment_bytes: q.segment_bytes,
            durability: q.durability,
            memory_bytes: q.memory_bytes,
            seal,
        })
        .map_err(|e| StartupError::new(format!("cannot open the agent queue in {}: {e}", dir.display())))?;
        let route = Route::new(&config.agent.exporters)?;
        let batch = config.processors.batch().cloned().unwrap_or_default();
        Ok(Agent { config, metrics, front, queue, route, batch, ready: AtomicBool::new(true) })
    }

    async fn ingest_inner(self: &Arc<Self>, export: Export) -> Result<ExportTraceServiceResponse, Error> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err(Error::unavailable("shutting down", 1));
        }
        let this = self.clone();
        let (item, rejected, spans, tenant) = tokio::task::spawn_blocking(move || this.prepare(export))
            .await
            .map_err(|e| Error::internal(format!("ingest task failed: {e}")))??;
        if spans > 0 {
            match self.queue.push(item).await {
                Ok(()) => {}
                Err(e) => {
                    let reason = if matches!(e, QueueError::Full { .. }) { "queue_full" } else { "queue_error" };
                    self.metrics.inc(
                        names::SPANS_REFUSED_TOTAL,
                        &[("tenant", &tenant), ("reason", reason)],
                        spans as f64,
                    );
                    let message = format!("{e}; the downstream is not keeping up");
                    return Err(Error::unavailable(message, self.config.limits.retry_after_secs).with_source(e));
                }
            }
            self.metrics.inc(names::SPANS_ACCEPTED_TOTAL, &[("tenant", &tenant)], spans as f64);
        }
        Ok(ExportTraceServiceResponse {
            partial_success: (rejected.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: rejected.rejected as i64,
                error_message: rejected.message,
            }),
        })
    }

    /// Everything before the queue: the front door (limits, decode, scrub), the ID check,
    /// and the queue item.
    fn prepare(&self, export: Export) -> Result<(Vec<u8>, spoor_model::Retained, usize, String), Error> {
        let mut opened = self.front.open(export, true)?;
        let tenant = std::mem::take(&mut opened.tenant);
        let checked = spoor_model::retain_valid(&mut opened.request);
        if checked.rejected > 0 {
            let labels = [("tenant", tenant.as_str()), ("reason", "invalid")];
            self.metrics.inc(names::SPANS_REFUSED_TOTAL, &labels, checked.rejected as f64);
        }
        // Most requests carry nothing to scrub: their protobuf bytes go to the queue as they came.
        let untouched = opened.scrubbed == spoor_process::Counts::default() && checked.rejected == 0;
        let spans = checked.kept as u32;
        let item = match &opened.raw {
            Some(raw) if untouched => encode_item(&tenant, spans, raw),
            _ => encode_item(&tenant, spans, &opened.request.encode_to_vec()),
        };
        Ok((item, checked, spans as usize, tenant))
    }

    /// One consumer: takes a batch off the queue, exports it, acknowledges it.
    async fn forward(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let Some(first) = self.queue.pop(&mut stop).await else { return };
            let mut batch = vec![first];
            let size = |items: &[Item]| {
                items.iter().filter_map(|i| decode_item(&i.payload)).map(|d| d.spans as usize).sum::<usize>()
            };
            let mut spans = size(&batch);
            let deadline = tokio::time::Instant::now() + self.batch.timeout;
            let max = if self.batch.send_batch_max_size > 0 { self.batch.send_batch_max_size } else { usize::MAX };
            while spans < self.batch.send_batch_size {
                match tokio::time::timeout_at(deadline, self.queue.pop(&mut stop)).await {
                    Ok(Some(item)) => {
                        let n = size(std::slice::from_ref(&item));
                        if spans + n > max {
                            self.queue.nack(item);
                            break;
                        }
                        spans += n;
                        batch.push(item);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            self.export_batch(batch, &stop).await;
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn export_batch(&self, batch: Vec<Item>, stop: &watch::Receiver<bool>) {
        // Items of one tenant concatenated: protobuf merges repeated fields.
        let mut by_tenant: BTreeMap<String, (BytesMut, u64)> = BTreeMap::new();
        for item in &batch {
            match decode_item(&item.payload) {
                Some(d) => {
                    let e = by_tenant.entry(d.tenant).or_default();
                    e.0.extend_from_slice(&d.request);
                    e.1 += d.spans as u64;
                }
                // Passed the queue's CRC, so only a different version writes these.
                None => tracing::warn!(item = ?item.id, "queue item of an unknown layout dropped"),
            }
        }
        let mut stopped = false;
        for (tenant, (body, spans)) in by_tenant {
            match self.export_tenant(&tenant, body.freeze(), spans, stop).await {
                Ok(()) => {}
                Err(Failure::Stopped) => stopped = true,
                Err(f) => {
                    let reason = match f {
                        Failure::Permanent(_) => "permanent",
                        _ => "retries_exhausted",
                    };
                    tracing::warn!(tenant, spans, error = %f, "export failed for good; spans dropped");
                    self.metrics.inc(names::AGENT_DROPPED_SPANS_TOTAL, &[("reason", reason)], spans as f64);
                }
            }
        }
        for item in batch {
            if stopped {
                // Shutdown mid-export: back in the queue (and on disk) for the next start.
                self.queue.nack(item);
            } else {
                self.queue.ack(item.id);
            }
        }
    }

    /// Exports one tenant's batch: whole, or split over the ring with every part sent at once.
    async fn export_tenant(
        &self,
        tenant: &str,
        body: Bytes,
        spans: u64,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let tenant_header = self.config.tenancy.multitenancy_enabled.then_some(tenant);
        let max = self.batch.send_batch_max_size as u64;
        let decode = |body: &Bytes| {
            ExportTraceServiceRequest::decode(body.clone())
                .map_err(|e| Failure::Permanent(format!("queued request does not decode: {e}")))
        };
        // Over send_batch_max_size: cut into requests of at most that many spans.
        let requests: Vec<(Bytes, u64)> = if max > 0 && spans > max {
            chunk(decode(&body)?, max as usize)
                .into_iter()
                .map(|r| (Bytes::from(r.encode_to_vec()), count(&r)))
                .collect()
        } else {
            vec![(body, spans)]
        };
        // Parts whose backend left the ring before taking them go round again, over the ring
        // as it is then; the first failure for good is reported once everything else is done.
        let mut requests = requests;
        let mut failure = None;
        loop {
            let parts = self.split(requests, stop).await?;
            let sends =
                parts.into_iter().map(|(endpoint, body, n)| self.send_part(endpoint, body, n, tenant_header, stop));
            let results = futures_util::future::join_all(sends).await;
            // A stop wins (the whole batch goes back).
            if results.iter().any(|r| matches!(r, Err(Failure::Stopped))) {
                return Err(Failure::Stopped);
            }
            let mut again = Vec::new();
            for r in results {
                match r {
                    Ok(None) => {}
                    Ok(Some(part)) => again.push(part),
                    Err(f) => {
                        failure.get_or_insert(f);
                    }
                }
            }
            if again.is_empty() {
                return failure.map_or(Ok(()), Err);
            }
            requests = again;
        }
    }

    /// Where each request goes: whole to the single exporter, or split over the ring (waiting,
    /// the batch safe in the queue, while the ring is empty).
    async fn split(
        &self,
        requests: Vec<(Bytes, u64)>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Vec<(String, Bytes, u64)>, Failure> {
        let mut parts: Vec<(String, Bytes, u64)> = Vec::new();
        for (body, spans) in requests {
            match &self.route {
                Route::Single(e) => parts.push((e.url().to_owned(), body, spans)),
                Route::Balanced { key, resolver, .. } => {
                    let ring = loop {
                        let ring = Ring::new(&resolver.endpoints());
                        if !ring.is_empty() {
                            break ring;
                        }
                        // No backends yet: the batch waits (it is safe in the queue) rather than drop.
                        let mut stop = stop.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = stop.wait_for(|s| *s) => return Err(Failure::Stopped),
                        }
                    };
                    let request = ExportTraceServiceRequest::decode(body)
                        .map_err(|e| Failure::Permanent(format!("queued request does not decode: {e}")))?;
                    for (endpoint, part) in ring::split(request, &ring, *key) {
                        let n = count(&part);
                        parts.push((endpoint, Bytes::from(part.encode_to_vec()), n));
                    }
                }
            }
        }
        Ok(parts)
    }

    /// Sends one part to its endpoint, retrying there as configured: no failover while the
    /// backend is in the ring, since it holds the state of the part's traces. Once the backend
    /// leaves the ring (a pod replaced, scaled away or no longer ready), that state is gone with
    /// it, so the part is handed back (`Ok(Some(part))`) to be routed again rather than retried
    /// against an address that will not come back. A part the old backend took just before is
    /// then delivered twice: at least once, as always.
    async fn send_part(
        &self,
        endpoint: String,
        body: Bytes,
        n: u64,
        tenant_header: Option<&str>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<(Bytes, u64)>, Failure> {
        let exporter = self.route.exporter(&endpoint).map_err(|e| Failure::Permanent(e.to_string()))?;
        let sent = match &self.route {
            Route::Single(_) => exporter.send(body, tenant_header, stop).await,
            Route::Balanced { resolver, .. } => {
                let mut backends = resolver.subscribe();
                tokio::select! {
                    sent = exporter.send(body.clone(), tenant_header, stop) => sent,
                    _ = left_the_ring(&mut backends, &endpoint) => {
                        tracing::info!(endpoint, spans = n, "backend left the ring before taking a part; routing it again");
                        self.metrics.inc(names::AGENT_REROUTED_SPANS_TOTAL, &[("endpoint", &endpoint)], n as f64);
                        return Ok(Some((body, n)));
                    }
                }
            }
        };
        let delivery = sent?;
        self.metrics.inc(names::AGENT_FORWARDED_SPANS_TOTAL, &[("endpoint", &endpoint)], n as f64);
        if delivery.rejected_spans > 0 {
            tracing::warn!(
                endpoint,
                rejected = delivery.rejected_spans,
                message = delivery.message,
                "downstream rejected spans"
            );
            self.metrics.inc(
                names::AGENT_DROPPED_SPANS_TOTAL,
                &[("reason", "rejected_downstream")],
                delivery.rejected_spans as f64,
            );
        }
        Ok(None)
    }

    /// The agent's own metrics: queue, exporters, resolver, and the request counters.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let q = self.queue.stats();
        m.set(names::AGENT_QUEUE_ITEMS, &[], q.items as f64);
        m.set(names::AGENT_QUEUE_BYTES, &[], q.bytes as f64);
        m.set(names::AGENT_QUEUE_DISK_BYTES, &[], q.disk_bytes as f64);
        m.set(names::AGENT_QUEUE_IN_FLIGHT, &[], q.in_flight as f64);
        m.set(names::AGENT_QUEUE_OLDEST_AGE_SECONDS, &[], q.oldest_age_seconds);
        m.set(names::AGENT_QUEUE_CORRUPT_ITEMS_TOTAL, &[], q.corrupt_total as f64);
        m.set(names::AGENT_QUEUE_FULL_TOTAL, &[], q.full_total as f64);
        for (endpoint, e) in self.route.exporters() {
            let s = e.stats().snapshot();
            let l = [("endpoint", endpoint.as_str())];
            m.set(names::AGENT_EXPORT_ATTEMPTS_TOTAL, &l, s.attempts as f64);
            m.set(names::AGENT_EXPORT_RETRIES_TOTAL, &l, s.retries as f64);
            m.set(names::AGENT_EXPORT_TIMEOUTS_TOTAL, &l, s.timeouts as f64);
            m.set(names::AGENT_EXPORT_DELIVERED_TOTAL, &l, s.delivered as f64);
            m.set(
                names::AGENT_EXPORT_FAILED_TOTAL,
                &[("endpoint", endpoint.as_str()), ("reason", "permanent")],
                s.failed_permanent as f64,
            );
            m.set(
                names::AGENT_EXPORT_FAILED_TOTAL,
                &[("endpoint", endpoint.as_str()), ("reason", "retries_exhausted")],
                s.failed_gave_up as f64,
            );
            m.set(names::AGENT_EXPORT_LATENCY_SECONDS, &l, s.last_latency_us as f64 / 1e6);
        }
        if let Route::Balanced { resolver, .. } = &self.route {
            let st = resolver.stats();
            m.set(
                names::AGENT_RESOLUTIONS_TOTAL,
                &[("outcome", "ok")],
                st.resolutions_ok.load(Ordering::Relaxed) as f64,
            );
            m.set(
                names::AGENT_RESOLUTIONS_TOTAL,
                &[("outcome", "error")],
                st.resolutions_failed.load(Ordering::Relaxed) as f64,
            );
            m.set(names::AGENT_BACKEND_UPDATES_TOTAL, &[], st.backend_updates.load(Ordering::Relaxed) as f64);
            m.set(names::AGENT_BACKENDS, &[], resolver.endpoints().len() as f64);
        }
        m.render_registry()
    }
}

/// Resolves once `endpoint` is not in the published list; never, if the resolver is gone.
async fn left_the_ring(backends: &mut watch::Receiver<Vec<String>>, endpoint: &str) {
    if backends.wait_for(|list| !list.iter().any(|e| e == endpoint)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs the agent until `shutdown` resolves: receivers, `/metrics` and `/ready` on the API
/// address, and the forwarders. On shutdown, in-flight exports go back to the queue on disk.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), StartupError> {
    // The agent's receivers take the same TLS and tokens as the server's.
    let api_tls = load_tls(config.server.tls_for(Listener::Api).0, "/metrics and /ready")?;
    let grpc_tls = load_tls(config.server.tls_for(Listener::OtlpGrpc).0, "OTLP/gRPC")?;
    let http_tls = load_tls(config.server.tls_for(Listener::OtlpHttp).0, "OTLP/HTTP")?;
    let grpc = http::bind(&config.server.otlp_grpc_listen, "OTLP/gRPC").await?;
    let otlp_http = http::bind(&config.server.otlp_http_listen, "OTLP/HTTP").await?;
    let api = http::bind(&config.server.http_listen, "/metrics and /ready").await?;
    let timeout = Duration::from_secs(config.server.shutdown_timeout_secs);
    let header_timeout = Duration::from_secs(config.server.header_read_timeout_secs);
    // Opening the queue reads it from disk: off the async threads.
    let agent = Arc::new(
        tokio::task::spawn_blocking(move || Agent::new(config))
            .await
            .map_err(|e| StartupError::new(format!("agent start-up failed: {e}")))??,
    );

    let auth = Auth::open(
        &agent.config.auth,
        agent.config.tenancy.multitenancy_enabled,
        agent.config.ingest.max_request_bytes,
        agent.metrics.clone(),
    )?;
    let mut servers = http::Servers::new(header_timeout);
    let a = agent.clone();
    let admin = axum::Router::new()
        .route("/metrics", axum::routing::get(move || async move { a.render_metrics() }))
        .route("/ready", axum::routing::get(|| async { "ready\n" }));
    let a = auth.as_ref();
    servers.serve_tls(grpc, protect(a, Surface::OtlpGrpc, receive::grpc_router(agent.clone())), grpc_tls);
    servers.serve_tls(otlp_http, protect(a, Surface::OtlpHttp, receive::http_router(agent.clone())), http_tls);
    servers.serve_tls(api, protect(a, Surface::Api, admin), api_tls);
    if let Some(a) = &auth {
        a.watch(&servers.stopping());
    }
    let mut forwarders = tokio::task::JoinSet::new();
    for _ in 0..agent.config.agent.num_consumers.max(1) {
        forwarders.spawn(agent.clone().forward(servers.stopping()));
    }
    // Beside the forwarders: memory sampling and the per-tenant overrides file, as the server does.
    let mut watchers = tokio::task::JoinSet::new();
    background::spawn_admission(&agent.front, &agent.config, &agent.metrics, Default::default(), &mut watchers);
    tracing::info!("agent ready");
    shutdown.await;
    tracing::info!("shutting down: refusing new requests, returning in-flight batches to the queue");
    agent.ready.store(false, Ordering::Relaxed);
    watchers.abort_all();
    // In-flight requests finish and forwarders put their batches back, within one timeout.
    let started = tokio::time::Instant::now();
    servers.stop(timeout).await;
    let left = timeout.saturating_sub(started.elapsed());
    let _ = tokio::time::timeout(left, async { while forwarders.join_next().await.is_some() {} }).await;
    let a = agent.clone();
    let _ = tokio::task::spawn_blocking(move || a.queue.close()).await;
    tracing::info!("queue synced; bye");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_model::otlp::{Resource, ResourceSpans, ScopeSpans, Span};

    fn req(resources: &[(&str, &[usize])]) -> ExportTraceServiceRequest {
        let mut n = 0u8;
        ExportTraceServiceRequest {
            resource_spans: resources
                .iter()
                .map(|(name, scopes)| ResourceSpans {
                    resource: Some(Resource { attributes: vec![], dropped_attributes_count: name.len() as u32 }),
                    scope_spans: scopes
                        .iter()
                        .map(|&k| ScopeSpans {
                            scope: None,
                            spans: (0..k)
                                .map(|_| {
                                    n += 1;
                                    Span { name: format!("s{n}"), ..Default::default() }
                                })
                                .collect(),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn chunks_keep_order_resources_and_the_cap() {
        // §7.6: 250 spans with send_batch_max_size 100 → 100, 100, 50.
        let r = req(&[("a", &[120, 30]), ("bb", &[100])]);
        let parts = chunk(r.clone(), 100);
        assert_eq!(parts.iter().map(count).collect::<Vec<_>>(), vec![100, 100, 50]);
        let names = |r: &ExportTraceServiceRequest| -> Vec<(u32, String)> {
            r.resource_spans
                .iter()
                .flat_map(|rs| {
                    let res = rs.resource.as_ref().unwrap().dropped_attributes_count;
                    rs.scope_spans.iter().flat_map(move |ss| ss.spans.iter().map(move |s| (res, s.name.clone())))
                })
                .collect()
        };
        let all: Vec<_> = parts.iter().flat_map(names).collect();
        assert_eq!(all, names(&r), "every span once, in order, with its resource");
        assert_eq!(chunk(req(&[("a", &[5])]), 100).len(), 1);
        assert!(chunk(req(&[("a", &[0])]), 100).is_empty());
    }

    #[test]
    fn queue_items_round_trip_and_invalid_spans_are_dropped() {
        let item = Bytes::from(encode_item("team-a", 7, b"\x0a\x00"));
        let d = decode_item(&item).unwrap();
        assert_eq!((d.tenant.as_str(), d.spans, &d.request[..]), ("team-a", 7, &b"\x0a\x00"[..]));
        assert!(decode_item(&Bytes::from_static(b"\x02abc")).is_none());
        let mut r = req(&[("a", &[3])]);
        let spans = &mut r.resource_spans[0].scope_spans[0].spans;
        spans[0].trace_id = vec![1; 16];
        spans[0].span_id = vec![1; 8];
        spans[1].trace_id = vec![1; 16];
        spans[1].span_id = vec![0; 8];
        let checked = spoor_model::retain_valid(&mut r);
        assert_eq!((checked.kept, checked.rejected), (1, 2));
    }
}
