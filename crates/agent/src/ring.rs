//! The consistent hash ring of the load-balancing exporter (collector.md §6): every balancer
//! with the same backend set routes a trace to the same backend, and a backend-set change
//! moves only about 1/N of the routes.
//!
//! The ring has 36000 positions. Each endpoint claims 100 of them, the i-th being
//! CRC32-IEEE(endpoint bytes followed by the byte `i`) mod 36000; a position already claimed by
//! an endpoint earlier in sorted order is skipped. A key's owner is the first claimed position
//! at or after CRC32-IEEE(key) mod 36000, wrapping around to the lowest one.

use spoor_model::otlp::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span, any_value};
use spoor_server::config::agent::RoutingKey;

/// Positions on the ring.
pub const RING_SIZE: u32 = 36_000;
/// Points each endpoint claims.
pub const POINTS_PER_ENDPOINT: usize = 100;

/// A consistent hash ring over a set of endpoints (`host:port` strings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Sorted, without duplicates.
    endpoints: Vec<String>,
    /// (position, index into `endpoints`), sorted by position; positions are unique.
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// Builds the ring. The endpoints are sorted and de-duplicated first, so the order they are
    /// listed in does not matter.
    pub fn new(endpoints: &[String]) -> Ring {
        let mut endpoints = endpoints.to_vec();
        endpoints.sort();
        endpoints.dedup();
        let mut taken = vec![false; RING_SIZE as usize];
        let mut points = Vec::with_capacity(endpoints.len() * POINTS_PER_ENDPOINT);
        for (index, endpoint) in endpoints.iter().enumerate() {
            for position in endpoint_positions(endpoint) {
                if !std::mem::replace(&mut taken[position as usize], true) {
                    points.push((position, index));
                }
            }
        }
        points.sort_unstable();
        Ring { endpoints, points }
    }

    /// The endpoints, sorted.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoint that owns `key` (a trace ID's bytes, or a service name's); `None` when the
    /// ring has no endpoints.
    pub fn owner(&self, key: &[u8]) -> Option<&str> {
        self.owner_index(key).map(|i| self.endpoints[i].as_str())
    }

    fn owner_index(&self, key: &[u8]) -> Option<usize> {
        let first = self.points.first()?;
        let position = key_position(key);
        let at = self.points.partition_point(|&(p, _)| p < position);
        Some(self.points.get(at).unwrap_or(first).1)
    }
}

/// Where a key falls on the ring.
pub fn key_position(key: &[u8]) -> u32 {
    crc32fast::hash(key) % RING_SIZE
}

/// The positions an endpoint asks for, in order (before collisions are resolved).
pub fn endpoint_positions(endpoint: &str) -> impl Iterator<Item = u32> + '_ {
    (0..POINTS_PER_ENDPOINT).map(move |i| {
        let mut h = crc32fast::Hasher::new();
        h.update(endpoint.as_bytes());
        h.update(&[i as u8]);
        h.finalize() % RING_SIZE
    })
}

/// Splits a request into one request per owning endpoint, in the ring's endpoint order.
///
/// A trace (or, with [`RoutingKey::Service`], a resource's service) lands entirely on one
/// endpoint. Resources and scopes are copied into every part that has spans of them; span
/// order within a scope is kept. Spans with invalid trace IDs are routed by whatever bytes they
/// have (never dropped); resources without `service.name` are routed by the empty name.
/// Resources and scopes without spans are not forwarded.
///
/// An empty ring yields no parts: check [`Ring::is_empty`] first and keep the request queued.
pub fn split(req: ExportTraceServiceRequest, ring: &Ring, key: RoutingKey) -> Vec<(String, ExportTraceServiceRequest)> {
    if ring.is_empty() {
        return Vec::new();
    }
    let n = ring.endpoints.len();
    let mut parts: Vec<Vec<ResourceSpans>> = vec![Vec::new(); n];
    for rs in req.resource_spans {
        match key {
            RoutingKey::Service => {
                if rs.scope_spans.iter().all(|s| s.spans.is_empty()) {
                    continue;
                }
                let owner = ring.owner_index(service_name(&rs).as_bytes()).expect("ring is not empty");
                parts[owner].push(rs);
            }
            RoutingKey::TraceId => split_resource(rs, ring, &mut parts),
        }
    }
    ring.endpoints
        .iter()
        .zip(parts)
        .filter(|(_, resource_spans)| !resource_spans.is_empty())
        .map(|(endpoint, resource_spans)| (endpoint.clone(), ExportTraceServiceRequest { resource_spans }))
        .collect()
}

/// Distributes one resource's spans by trace ID, appending to `parts`.
fn split_resource(rs: ResourceSpans, ring: &Ring, parts: &mut [Vec<ResourceSpans>]) {
    let ResourceSpans { resource, scope_spans, schema_url } = rs;
    // The scopes of this resource per endpoint; a resource is copied only where it has spans.
    let mut scopes: Vec<Vec<ScopeSpans>> = vec![Vec::new(); parts.len()];
    for ss in scope_spans {
        let ScopeSpans { scope, spans, schema_url } = ss;
        let owners: Vec<usize> =
            spans.iter().map(|s| ring.owner_index(&s.trace_id).expect("ring is not empty")).collect();
        let Some(&first) = owners.first() else { continue };
        if owners.iter().all(|&o| o == first) {
            scopes[first].push(ScopeSpans { scope, spans, schema_url });
            continue;
        }
        let mut buckets: Vec<Vec<Span>> = vec![Vec::new(); parts.len()];
        for (span, owner) in spans.into_iter().zip(owners) {
            buckets[owner].push(span);
        }
        for (owner, spans) in buckets.into_iter().enumerate().filter(|(_, b)| !b.is_empty()) {
            scopes[owner].push(ScopeSpans { scope: scope.clone(), spans, schema_url: schema_url.clone() });
        }
    }
    for (owner, scope_spans) in scopes.into_iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        parts[owner].push(ResourceSpans { resource: resource.clone(), scope_spans, schema_url: schema_url.clone() });
    }
}

/// The resource's `service.name` string, or "" when it has none.
fn service_name(rs: &ResourceSpans) -> &str {
    rs.resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use spoor_model::otlp::{AnyValue, InstrumentationScope, KeyValue, Resource};

    use super::*;

    fn eps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Deterministic pseudo-random trace IDs (xorshift64*).
    fn random_ids(n: usize, mut seed: u64) -> Vec<[u8; 16]> {
        let mut next = move || {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        (0..n)
            .map(|_| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&next().to_le_bytes());
                id[8..].copy_from_slice(&next().to_le_bytes());
                id
            })
            .collect()
    }

    #[test]
    fn spec_vectors() {
        let a = hex("0102030405060708090a0b0c0d0e0f10");
        assert_eq!(crc32fast::hash(&a), 156008689);
        assert_eq!(key_position(&a), 20689);
        let b = hex("5b8efff798038103d269b633813fc60c");
        assert_eq!(crc32fast::hash(&b), 3625139896);
        assert_eq!(key_position(&b), 11896);
        let first: Vec<u32> = endpoint_positions("backend-1:4317").take(3).collect();
        assert_eq!(first, [29341, 20683, 26737]);
        // The owner is the first point at or after the key.
        let ring = Ring::new(&eps(&["backend-1:4317"]));
        assert_eq!(ring.owner(&a), Some("backend-1:4317"));
        assert!(ring.points.iter().all(|&(p, _)| endpoint_positions("backend-1:4317").any(|q| q == p)));
    }

    #[test]
    fn owner_is_first_point_at_or_after_key_wrapping() {
        let ring = Ring::new(&eps(&["a:4317", "b:4317", "c:4317"]));
        for id in random_ids(2000, 7) {
            let pos = key_position(&id);
            let expected = ring.points.iter().find(|&&(p, _)| p >= pos).unwrap_or(&ring.points[0]).1;
            assert_eq!(ring.owner(&id), Some(ring.endpoints[expected].as_str()));
        }
        assert_eq!(Ring::new(&[]).owner(b"x"), None);
    }

    #[test]
    fn collisions_go_to_the_earlier_endpoint() {
        let names: Vec<String> = (0..50).map(|i| format!("10.0.{i}.1:4317")).collect();
        let ring = Ring::new(&names);
        let mut claimed = HashMap::new();
        for (i, e) in ring.endpoints.iter().enumerate() {
            for p in endpoint_positions(e) {
                claimed.entry(p).or_insert(i);
            }
        }
        assert_eq!(ring.points.len(), claimed.len());
        for &(p, i) in &ring.points {
            assert_eq!(claimed[&p], i);
        }
        assert!(ring.points.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn same_owner_regardless_of_listed_order_and_duplicates() {
        let a = Ring::new(&eps(&["b2:4317", "b0:4317", "b3:4317", "b1:4317"]));
        let b = Ring::new(&eps(&["b0:4317", "b1:4317", "b1:4317", "b2:4317", "b3:4317", "b0:4317"]));
        assert_eq!(a, b);
        assert_eq!(a.endpoints(), eps(&["b0:4317", "b1:4317", "b2:4317", "b3:4317"]));
        for id in random_ids(5000, 1) {
            assert_eq!(a.owner(&id), b.owner(&id));
        }
    }

    #[test]
    fn adding_a_fifth_backend_moves_about_a_fifth() {
        let four = eps(&["backend-1:4317", "backend-2:4317", "backend-3:4317", "backend-4:4317"]);
        let mut five = four.clone();
        five.push("backend-5:4317".into());
        let (r4, r5) = (Ring::new(&four), Ring::new(&five));
        let ids = random_ids(100_000, 42);
        let moved = ids.iter().filter(|id| r4.owner(&id[..]) != r5.owner(&id[..])).count();
        let share = moved as f64 / ids.len() as f64;
        assert!((0.15..=0.25).contains(&share), "moved {share}");
        // Only to the new backend.
        for id in &ids {
            if r4.owner(id) != r5.owner(id) {
                assert_eq!(r5.owner(id), Some("backend-5:4317"));
            }
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_ids() {
        let four = eps(&["backend-1:4317", "backend-2:4317", "backend-3:4317", "backend-4:4317"]);
        let three = eps(&["backend-1:4317", "backend-2:4317", "backend-4:4317"]);
        let (r4, r3) = (Ring::new(&four), Ring::new(&three));
        for id in random_ids(100_000, 9) {
            let before = r4.owner(&id).unwrap();
            if before != "backend-3:4317" {
                assert_eq!(r3.owner(&id), Some(before));
            }
        }
    }

    #[test]
    fn share_per_backend_is_about_even() {
        let ring = Ring::new(&eps(&["backend-1:4317", "backend-2:4317", "backend-3:4317", "backend-4:4317"]));
        let ids = random_ids(100_000, 3);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &ids {
            *counts.entry(ring.owner(id).unwrap()).or_default() += 1;
        }
        assert_eq!(counts.len(), 4);
        for (e, c) in counts {
            let share = c as f64 / ids.len() as f64;
            assert!((0.20..=0.30).contains(&share), "{e}: {share}");
        }
    }

    fn span(trace: u8, n: u8) -> Span {
        Span { trace_id: vec![trace; 16], span_id: vec![n; 8], name: format!("s{trace}-{n}"), ..Default::default() }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
            }],
            dropped_attributes_count: 0,
        })
    }

    fn scope(name: &str) -> Option<InstrumentationScope> {
        Some(InstrumentationScope { name: name.into(), ..Default::default() })
    }

    /// Two resources, three scopes, 8 traces interleaved, plus an invalid trace ID.
    fn request() -> ExportTraceServiceRequest {
        let mut spans_a = Vec::new();
        let mut spans_b = Vec::new();
        for n in 0..5 {
            for t in 1..=8 {
                spans_a.push(span(t, n));
                spans_b.push(span(t + 8 * (n % 2), n + 10));
            }
        }
        spans_b.push(Span { trace_id: vec![], name: "no-trace-id".into(), ..Default::default() });
        spans_b.push(Span { trace_id: vec![0; 16], name: "zero-trace-id".into(), ..Default::default() });
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: resource("frontend"),
                    scope_spans: vec![
                        ScopeSpans { scope: scope("http"), spans: spans_a, schema_url: "s1".into() },
                        ScopeSpans { scope: scope("empty"), spans: vec![], schema_url: String::new() },
                    ],
                    schema_url: "r1".into(),
                },
                ResourceSpans {
                    resource: resource("backend"),
                    scope_spans: vec![
                        ScopeSpans { scope: scope("db"), spans: spans_b, schema_url: "s2".into() },
                        ScopeSpans { scope: scope("one"), spans: vec![span(3, 99)], schema_url: String::new() },
                    ],
                    schema_url: "r2".into(),
                },
            ],
        }
    }

    /// (resource, scope, span) triples in request order.
    fn flatten(req: &ExportTraceServiceRequest) -> Vec<(String, String, Span)> {
        let mut out = Vec::new();
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let r = format!("{}|{:?}", rs.schema_url, rs.resource);
                    let sc = format!("{}|{:?}", ss.schema_url, ss.scope);
                    out.push((r, sc, s.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn split_keeps_traces_whole_and_preserves_resources() {
        let ring = Ring::new(&eps(&["a:4317", "b:4317", "c:4317", "d:4317"]));
        let req = request();
        let all = flatten(&req);
        let parts = split(req.clone(), &ring, RoutingKey::TraceId);
        assert!(parts.len() > 1, "the test data should fan out");
        let endpoints: Vec<&String> = parts.iter().map(|(e, _)| e).collect();
        assert!(endpoints.windows(2).all(|w| w[0] < w[1]), "one part per endpoint, sorted");
        let mut where_trace: HashMap<Vec<u8>, &str> = HashMap::new();
        let mut total = 0;
        for (endpoint, part) in &parts {
            for rs in &part.resource_spans {
                assert!(!rs.scope_spans.is_empty());
                for ss in &rs.scope_spans {
                    assert!(!ss.spans.is_empty());
                    for s in &ss.spans {
                        assert_eq!(ring.owner(&s.trace_id), Some(endpoint.as_str()));
                        let prev = where_trace.insert(s.trace_id.clone(), endpoint);
                        assert!(prev.is_none() || prev == Some(endpoint.as_str()), "trace split");
                    }
                }
            }
            // Each part is the original, filtered to its traces: same resources, scopes, order.
            let mine: Vec<_> =
                all.iter().filter(|(_, _, s)| ring.owner(&s.trace_id) == Some(endpoint.as_str())).cloned().collect();
            assert_eq!(flatten(part), mine);
            total += mine.len();
        }
        assert_eq!(total, all.len(), "no span dropped");
        assert!(where_trace.contains_key(&vec![]) && where_trace.contains_key(&vec![0; 16]));
    }

    #[test]
    fn split_on_one_endpoint_is_the_request_minus_empty_scopes() {
        let ring = Ring::new(&eps(&["only:4317"]));
        let parts = split(request(), &ring, RoutingKey::TraceId);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, "only:4317");
        assert_eq!(flatten(&parts[0].1), flatten(&request()));
        assert_eq!(parts[0].1.resource_spans[0].scope_spans.len(), 1, "the empty scope is not forwarded");
        assert!(split(request(), &Ring::new(&[]), RoutingKey::TraceId).is_empty());
        assert!(split(ExportTraceServiceRequest::default(), &ring, RoutingKey::TraceId).is_empty());
    }

    #[test]
    fn routing_key_service_sends_a_service_to_one_backend() {
        let ring = Ring::new(&eps(&["a:4317", "b:4317", "c:4317", "d:4317"]));
        let services: Vec<String> = (0..40).map(|i| format!("svc-{i}")).collect();
        let mut req = ExportTraceServiceRequest::default();
        for (i, svc) in services.iter().enumerate() {
            let spans = (0..10).map(|t| span(t * 13 + i as u8, t)).collect();
            req.resource_spans.push(ResourceSpans {
                resource: resource(svc),
                scope_spans: vec![ScopeSpans { scope: scope("x"), spans, schema_url: String::new() }],
                schema_url: String::new(),
            });
        }
        req.resource_spans.push(ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans { scope: None, spans: vec![span(1, 1)], schema_url: String::new() }],
            schema_url: String::new(),
        });
        let parts = split(req.clone(), &ring, RoutingKey::Service);
        assert!(parts.len() > 1);
        let mut seen = 0;
        for (endpoint, part) in &parts {
            for rs in &part.resource_spans {
                assert_eq!(ring.owner(service_name(rs).as_bytes()), Some(endpoint.as_str()));
                seen += 1;
            }
        }
        assert_eq!(seen, req.resource_spans.len(), "whole resources move, none dropped");
        // The same service goes to the same backend whatever its trace IDs are.
        let again = split(req, &Ring::new(&eps(&["d:4317", "c:4317", "b:4317", "a:4317"])), RoutingKey::Service);
        assert_eq!(again, parts);
    }

    #[test]
    fn routing_key_serde_uses_collector_spelling() {
        assert_eq!(serde_json::from_str::<RoutingKey>("\"traceID\"").unwrap(), RoutingKey::TraceId);
        assert_eq!(serde_json::from_str::<RoutingKey>("\"service\"").unwrap(), RoutingKey::Service);
        assert_eq!(serde_json::to_string(&RoutingKey::TraceId).unwrap(), "\"traceID\"");
        assert!(serde_json::from_str::<RoutingKey>("\"traceid\"").is_err());
    }
}
