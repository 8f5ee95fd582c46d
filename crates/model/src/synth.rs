//! Synthetic traces of an internal developer platform (portal, catalog, CI/CD, deploys,
//! chat, labs): 10–30 spans per trace over several services, ~11 attributes per span, about
//! 5% errors, log-normal durations. Used by `spoor loadgen`, the benchmarks and tests.

use crate::otlp::*;

/// SplitMix64: fast, seedable, good enough for synthetic data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-normal with the given median and shape.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }
    pub fn nonzero(&mut self) -> u64 {
        self.next_u64().max(1)
    }
}

/// (trace ID, span ID) of a generated span.
pub type SpanRef = ([u8; 16], [u8; 8]);

const SERVICES: &[(&str, &str)] = &[
    ("portal", "frontend"),
    ("backstage", "platform"),
    ("auth", "platform"),
    ("catalog", "platform"),
    ("jenkins", "ci"),
    ("argocd", "deploy"),
    ("chat", "collab"),
    ("labs", "learning"),
];
const OPERATIONS: &[&str] = &[
    "GET /api/catalog",
    "POST /api/login",
    "SELECT entities",
    "render page",
    "build pipeline",
    "deploy-to-production",
    "sync application",
    "POST /messages",
    "start lab",
    "checkout repo",
];

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// One request's worth of traces; returns the request and (trace, span) IDs in it.
pub fn build_request(rng: &mut Rng, traces: usize, now_ns: u64) -> (ExportTraceServiceRequest, Vec<SpanRef>) {
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut ids = Vec::new();
    for _ in 0..traces {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&rng.nonzero().to_le_bytes());
        trace_id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let n = 10 + rng.below(21) as usize;
        let first_service = rng.below(SERVICES.len() as u64) as usize;
        let service_count = 3 + rng.below(4) as usize;
        let mut spans: Vec<(usize, [u8; 8], u64, u64)> = Vec::with_capacity(n); // service, id, start, end
        let root_dur = rng.lognormal(80e6, 0.8) as u64 + n as u64 * 1000;
        let start0 = now_ns - root_dur;
        for i in 0..n {
            let span_id = rng.nonzero().to_le_bytes();
            let (service, parent, start, end) = if i == 0 {
                (first_service, None, start0, start0 + root_dur)
            } else {
                let p = rng.below(i as u64) as usize;
                let (ps, _, pstart, pend) = spans[p];
                let service = if rng.below(3) == 0 {
                    (first_service + rng.below(service_count as u64) as usize) % SERVICES.len()
                } else {
                    ps
                };
                let span = pend.saturating_sub(pstart).max(2);
                let start = pstart + rng.below(span / 2);
                let dur = (rng.lognormal(span as f64 / 4.0, 0.6) as u64).clamp(1, pend - start);
                (service, Some(spans[p].1), start, start + dur)
            };
            spans.push((service, span_id, start, end));
            let error = rng.below(20) == 0;
            let op = OPERATIONS[rng.below(OPERATIONS.len() as u64) as usize];
            let kind = if parent.is_none() { 2 } else { 1 + rng.below(5) as i32 };
            let status_code = if error { 500 } else { 200 };
            let attributes = vec![
                kv("http.request.method", s(if op.starts_with("POST") { "POST" } else { "GET" })),
                kv("http.route", s(op)),
                kv("http.response.status_code", any_value::Value::IntValue(status_code)),
                kv("url.scheme", s("https")),
                kv("server.address", s(SERVICES[service].0)),
                kv("net.peer.port", any_value::Value::IntValue(8000 + rng.below(100) as i64)),
                kv("db.system", s(if op.starts_with("SELECT") { "postgresql" } else { "none" })),
                kv("user.id", s(&format!("user-{}", rng.below(5000)))),
                kv("retry.count", any_value::Value::IntValue(rng.below(3) as i64)),
                kv("sample.ratio", any_value::Value::DoubleValue(rng.unit())),
                kv("cache.hit", any_value::Value::BoolValue(rng.below(2) == 0)),
            ];
            let events = if error {
                vec![Event {
                    time_unix_nano: end,
                    name: "exception".into(),
                    attributes: vec![
                        kv("exception.type", s("TimeoutError")),
                        kv("exception.message", s("upstream timed out")),
                    ],
                    dropped_attributes_count: 0,
                }]
            } else {
                Vec::new()
            };
            by_service[service].push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                name: op.into(),
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events,
                status: error.then(|| Status { message: "upstream timed out".into(), code: 2 }),
                flags: 0x101,
                ..Default::default()
            });
            ids.push((trace_id, span_id));
        }
    }
    let resource_spans = by_service
        .into_iter()
        .enumerate()
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(i, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(SERVICES[i].0)),
                    kv("service.namespace", s(SERVICES[i].1)),
                    kv("k8s.namespace.name", s("production")),
                    kv("deployment.environment", s("prod")),
                ],
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "spoor.loadgen".into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, ids)
}
