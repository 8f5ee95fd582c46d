//! The service graph: a CLIENT (or PRODUCER) span and the SERVER (or CONSUMER) span whose
//! parent it is make one request on the edge client → server. Halves wait in a bounded store
//! keyed by (trace ID, client span ID) until the other half arrives or `wait` runs out; an
//! expired half with a named peer becomes an edge to (or from) a virtual node.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use spoor_model::otlp::{KeyValue, Span};

use crate::config::ServiceGraphConfig;
use crate::family::{Family, Kind};
use crate::labels;
use crate::observation::Observation;
use crate::registry::{Budget, Hist, Kinds, SeriesMap, counters, histograms, push_key};
use crate::spanmetrics::{duration_secs, id, multiplier};

pub const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
pub const REQUEST_FAILED_TOTAL: &str = "traces_service_graph_request_failed_total";
pub const SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";
pub const CLIENT_SECONDS: &str = "traces_service_graph_request_client_seconds";
pub const MESSAGING_SECONDS: &str = "traces_service_graph_request_messaging_system_seconds";
pub const UNPAIRED_TOTAL: &str = "traces_service_graph_unpaired_spans_total";
pub const DROPPED_TOTAL: &str = "traces_service_graph_dropped_spans_total";

const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;
const SPAN_KIND_PRODUCER: i32 = 4;
const SPAN_KIND_CONSUMER: i32 = 5;

pub(crate) struct ServiceGraph {
    wait_ns: u64,
    max_items: usize,
    bounds: Arc<[f64]>,
    dimensions: Vec<String>,
    prefix: bool,
    virtual_node_label: bool,
    messaging_latency: bool,
    peer_attributes: Vec<String>,
    database_attributes: Vec<String>,
    multiplier_key: String,
    label_names: Vec<String>,
    kinds: Kinds,
}

/// One side of a request, as its span told it.
#[derive(Debug, Default)]
struct Side {
    service: String,
    seconds: f64,
    /// Client: end time; server: start time (for messaging latency).
    time_ns: u64,
    dims: Vec<String>,
    /// The first peer attribute present (names the other side if it never shows up).
    peer: Option<String>,
    root: bool,
    failed: bool,
    weight: f64,
}

#[derive(Debug, Default)]
struct Half {
    client: Option<Side>,
    server: Option<Side>,
    messaging: bool,
    expires_ns: u64,
}

type Key = ([u8; 16], [u8; 8]);

/// Pending halves and the order they expire in.
#[derive(Default)]
pub(crate) struct Store {
    pending: HashMap<Key, Half, ahash::RandomState>,
    /// Insertion order; entries of halves completed meanwhile are skipped when popped.
    order: VecDeque<(Key, u64)>,
}

impl Store {
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

pub(crate) struct EdgeSeries {
    total: f64,
    failed: f64,
    server: Hist,
    client: Hist,
    messaging: Option<Hist>,
}

/// Per-tenant service-graph state.
pub(crate) struct Graph {
    pub store: Store,
    pub edges: SeriesMap<EdgeSeries>,
    unpaired: [SeriesMap<f64>; 2],
    dropped: [SeriesMap<f64>; 2],
    /// Halves that expired with no peer to name (Tempo's `expired_edges`).
    pub expired: u64,
    /// Spans refused because the store was full.
    pub dropped_spans: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Virtual {
    No,
    Client,
    Server,
}

impl ServiceGraph {
    pub fn new(cfg: &ServiceGraphConfig, kinds: Kinds) -> ServiceGraph {
        let mut names: Vec<String> = ["client", "server", "connection_type"].map(String::from).to_vec();
        if cfg.enable_virtual_node_label {
            names.push("virtual_node".into());
        }
        let dims = labels::dimension_labels(cfg.dimensions.iter().map(String::as_str), &[]);
        if cfg.enable_client_server_prefix {
            for d in &dims {
                names.push(format!("client_{d}"));
                names.push(format!("server_{d}"));
            }
        } else {
            let taken = ["client", "server", "connection_type", "virtual_node"];
            names.extend(dims.iter().map(|d| if taken.contains(&d.as_str()) { format!("__{d}") } else { d.clone() }));
        }
        ServiceGraph {
            wait_ns: cfg.wait.as_nanos().min(u64::MAX as u128) as u64,
            max_items: cfg.max_items,
            bounds: cfg.histogram_buckets.clone().into(),
            dimensions: cfg.dimensions.clone(),
            prefix: cfg.enable_client_server_prefix,
            virtual_node_label: cfg.enable_virtual_node_label,
            messaging_latency: cfg.enable_messaging_system_latency_histogram,
            peer_attributes: cfg.peer_attributes.clone(),
            database_attributes: cfg.database_name_attributes.clone(),
            multiplier_key: cfg.span_multiplier_key.clone(),
            label_names: names,
            kinds,
        }
    }

    pub fn graph(&self, max_cardinality_per_label: usize) -> Graph {
        let hist = self.bounds.len() + 3 + usize::from(self.kinds.native);
        let cost = 2 + 2 * hist + if self.messaging_latency { hist } else { 0 };
        let side = |n: &str| SeriesMap::new(vec![n.to_string()], 1);
        Graph {
            store: Store::default(),
            edges: SeriesMap::new(self.label_names.clone(), cost).with_cardinality(max_cardinality_per_label),
            unpaired: [side("client"), side("server")],
            dropped: [side("client"), side("server")],
            expired: 0,
            dropped_spans: 0,
        }
    }

    fn side(&self, span: &Span, resource: &[KeyValue], service: &str) -> Side {
        let dims = self
            .dimensions
            .iter()
            .map(|d| {
                labels::text_value(&span.attributes, d).or_else(|| labels::text_value(resource, d)).unwrap_or_default()
            })
            .collect();
        Side {
            service: service.to_string(),
            seconds: duration_secs(span),
            time_ns: 0,
            dims,
            peer: self.peer_attributes.iter().find_map(|a| labels::text_value(&span.attributes, a)),
            root: span.parent_span_id.iter().all(|b| *b == 0),
            failed: span.status.as_ref().is_some_and(|s| s.code == 2),
            weight: multiplier(&span.attributes, &self.multiplier_key),
        }
    }

    /// Feeds one span.
    pub fn observe(&self, g: &mut Graph, budget: &mut Budget, key: &mut String, o: &Observation) {
        // Spans of a resource without a service name belong to no node.
        let Some(service) = o.service else { return };
        let (resource, span, now_ns, now_ms) = (o.resource, o.span, o.now_ns, o.now_ms());
        let (is_client, messaging) = match span.kind {
            SPAN_KIND_CLIENT => (true, false),
            SPAN_KIND_PRODUCER => (true, true),
            SPAN_KIND_SERVER => (false, false),
            SPAN_KIND_CONSUMER => (false, true),
            _ => return,
        };
        let mut side = self.side(span, resource, service);
        if is_client {
            side.time_ns = span.end_time_unix_nano;
            if !messaging && let Some(db) = self.database(span, resource) {
                // A database is never instrumented: the call is the whole edge.
                let mut server = Side { service: db, seconds: side.seconds, ..Side::default() };
                server.dims = side.dims.clone();
                self.emit(g, budget, key, &side, &server, "database", Virtual::No, now_ms);
                return;
            }
        } else {
            side.time_ns = span.start_time_unix_nano;
            if side.root {
                // Nothing can pair with a root span: it was called by an uninstrumented user.
                let client = Side { service: side.peer.clone().unwrap_or_else(|| "user".into()), ..Side::default() };
                self.emit(g, budget, key, &client, &side, "virtual_node", Virtual::Client, now_ms);
                return;
            }
        }
        let k: Key = (id(&span.trace_id), id(if is_client { &span.span_id } else { &span.parent_span_id }));
        if !g.store.pending.contains_key(&k) {
            if g.store.pending.len() >= self.max_items {
                g.dropped_spans += 1;
                key.clear();
                push_key(key, service);
                *g.dropped[usize::from(!is_client)].entry(key, budget, now_ms, || 0.0) += 1.0;
                return;
            }
            let expires_ns = now_ns.saturating_add(self.wait_ns);
            g.store.order.push_back((k, expires_ns));
            g.store.pending.insert(k, Half { expires_ns, ..Half::default() });
        }
        let half = g.store.pending.get_mut(&k).expect("present");
        half.messaging |= messaging;
        let slot = if is_client { &mut half.client } else { &mut half.server };
        *slot = Some(side);
        if half.client.is_some() && half.server.is_some() {
            let h = g.store.pending.remove(&k).expect("present");
            let (c, s) = (h.client.as_ref().expect("client"), h.server.as_ref().expect("server"));
            let kind = if h.messaging { "messaging_system" } else { "" };
            self.emit(g, budget, key, c, s, kind, Virtual::No, now_ms);
        }
        self.compact(&mut g.store);
    }

    /// The database name of a CLIENT span that calls one, and what to call the server node:
    /// the peer's own name if the span gives one, else the database's.
    fn database(&self, span: &Span, resource: &[KeyValue]) -> Option<String> {
        let attrs = &span.attributes;
        let db = self
            .database_attributes
            .iter()
            .find_map(|a| labels::text_value(attrs, a).or_else(|| labels::text_value(resource, a)))?;
        let peer = labels::text_value(attrs, "peer.service")
            .or_else(|| labels::text_value(attrs, "server.address"))
            .or_else(|| {
                labels::text_value(attrs, "network.peer.address").map(|a| {
                    match labels::text_value(attrs, "network.peer.port") {
                        Some(p) => format!("{a}:{p}"),
                        None => a,
                    }
                })
            });
        Some(peer.unwrap_or(db))
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        g: &mut Graph,
        budget: &mut Budget,
        key: &mut String,
        client: &Side,
        server: &Side,
        connection_type: &str,
        virt: Virtual,
        now_ms: i64,
    ) {
        key.clear();
        push_key(key, &client.service);
        push_key(key, &server.service);
        push_key(key, connection_type);
        if self.virtual_node_label {
            push_key(key, ["", "client", "server"][virt as usize]);
        }
        for i in 0..self.dimensions.len() {
            let (c, s) = (client.dims.get(i).map_or("", String::as_str), server.dims.get(i).map_or("", String::as_str));
            if self.prefix {
                push_key(key, c);
                push_key(key, s);
            } else {
                push_key(key, if c.is_empty() { s } else { c });
            }
        }
        let weight = match virt {
            Virtual::Client => server.weight,
            _ => client.weight,
        };
        let (bounds, messaging, kinds) = (&self.bounds, self.messaging_latency, self.kinds);
        let e = g.edges.entry(key, budget, now_ms, || EdgeSeries {
            total: 0.0,
            failed: 0.0,
            server: Hist::new(bounds, false, kinds),
            client: Hist::new(bounds, false, kinds),
            messaging: messaging.then(|| Hist::new(bounds, false, kinds)),
        });
        e.total += weight;
        if client.failed || server.failed {
            e.failed += weight;
        }
        // A virtual side has no span, so no latency of its own.
        if virt != Virtual::Server {
            e.server.observe(bounds, server.seconds, weight, None);
        }
        if virt != Virtual::Client {
            e.client.observe(bounds, client.seconds, weight, None);
        }
        if let Some(m) = &mut e.messaging
            && connection_type == "messaging_system"
            && server.time_ns > client.time_ns
        {
            m.observe(bounds, (server.time_ns - client.time_ns) as f64 / 1e9, weight, None);
        }
    }

    /// Expires halves whose wait is over: a client half that names its peer becomes an edge
    /// to a virtual node; anything else is counted as unpaired.
    pub fn expire(&self, g: &mut Graph, budget: &mut Budget, key: &mut String, now_ns: u64) {
        let now_ms = (now_ns / 1_000_000) as i64;
        while let Some(&(k, expires_ns)) = g.store.order.front() {
            if expires_ns > now_ns {
                break;
            }
            g.store.order.pop_front();
            let Some(h) = g.store.pending.get(&k) else { continue };
            if h.expires_ns != expires_ns {
                continue;
            }
            let h = g.store.pending.remove(&k).expect("present");
            match (&h.client, &h.server) {
                (Some(c), None) if c.peer.is_some() => {
                    let server = Side { service: c.peer.clone().unwrap_or_default(), ..Side::default() };
                    self.emit(g, budget, key, c, &server, "virtual_node", Virtual::Server, now_ms);
                }
                (Some(c), None) => {
                    g.expired += 1;
                    key.clear();
                    push_key(key, &c.service);
                    *g.unpaired[0].entry(key, budget, now_ms, || 0.0) += 1.0;
                }
                (None, Some(s)) => {
                    g.expired += 1;
                    key.clear();
                    push_key(key, &s.service);
                    *g.unpaired[1].entry(key, budget, now_ms, || 0.0) += 1.0;
                }
                _ => {}
            }
        }
    }

    /// Keeps the expiry queue from growing past a few times the store: entries of completed
    /// halves are dropped.
    fn compact(&self, store: &mut Store) {
        if store.order.len() > 4 * self.max_items.max(1024) {
            let pending = &store.pending;
            store.order.retain(|(k, exp)| pending.get(k).is_some_and(|h| h.expires_ns == *exp));
        }
    }

    pub fn remove_stale(&self, g: &mut Graph, before_ms: i64, budget: &mut Budget) {
        g.edges.remove_stale(before_ms, budget);
        for m in g.unpaired.iter_mut().chain(g.dropped.iter_mut()) {
            m.remove_stale(before_ms, budget);
        }
    }

    pub fn families(&self, g: &Graph, out: &mut Vec<Family>) {
        let edges = &g.edges;
        out.push(Family {
            name: REQUEST_TOTAL.into(),
            kind: Kind::Counter,
            help: "Requests between two services (or a service and a database or virtual node).",
            series: counters(edges, |e| e.total),
        });
        out.push(Family {
            name: REQUEST_FAILED_TOTAL.into(),
            kind: Kind::Counter,
            help: "Requests between two nodes where either side failed.",
            series: counters(edges, |e| e.failed),
        });
        out.push(Family {
            name: SERVER_SECONDS.into(),
            kind: Kind::Histogram,
            help: "Request durations as the server side measured them, in seconds.",
            series: histograms(edges, &self.bounds, "", |e| Some(&e.server)),
        });
        out.push(Family {
            name: CLIENT_SECONDS.into(),
            kind: Kind::Histogram,
            help: "Request durations as the client side measured them, in seconds.",
            series: histograms(edges, &self.bounds, "", |e| Some(&e.client)),
        });
        if self.messaging_latency {
            out.push(Family {
                name: MESSAGING_SECONDS.into(),
                kind: Kind::Histogram,
                help: "Time between the producer's end and the consumer's start, in seconds.",
                series: histograms(edges, &self.bounds, "", |e| e.messaging.as_ref()),
            });
        }
        let side_counters = |maps: &[SeriesMap<f64>; 2]| maps.iter().flat_map(|m| counters(m, |v| *v)).collect();
        out.push(Family {
            name: UNPAIRED_TOTAL.into(),
            kind: Kind::Counter,
            help: "Spans whose other half never arrived within the wait, by the side's service.",
            series: side_counters(&g.unpaired),
        });
        out.push(Family {
            name: DROPPED_TOTAL.into(),
            kind: Kind::Counter,
            help: "Spans dropped because the pending-edge store was full, by the side's service.",
            series: side_counters(&g.dropped),
        });
    }
}
