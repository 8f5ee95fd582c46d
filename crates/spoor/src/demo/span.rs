//! A flow as a tree of calls that lays itself out in time. Flows say what calls what and how
//! long each service works; the layout derives every start and end from that, so a parent
//! always spans its children, a client span covers its server span plus the network, and a
//! fault (a slow query, a timeout) moves everything after it, as it would in a real system.

use spoor_model::otlp::{AnyValue, Event, KeyValue, Link, Span, Status, any_value};
use spoor_model::synth::Rng;

pub const MS: u64 = 1_000_000;

/// OTLP's span kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub service: &'static str,
    pub name: String,
    pub kind: Kind,
    pub attrs: Vec<KeyValue>,
    /// The span's own work, half before its children and half after them.
    pub work: u64,
    /// Pause before this node, after the previous sibling (or the parent's first half of work).
    pub gap: u64,
    pub children: Vec<Node>,
    /// Status error with this message.
    pub error: Option<String>,
    /// An `exception` event: (type, message), where the error starts.
    pub exception: Option<(String, String)>,
    /// Ends this long after its start whatever its children do (a caller that gave up).
    pub fixed: Option<u64>,
    /// Starts this long after its parent ends and does not hold the parent open (a message
    /// consumed later).
    pub detached: Option<u64>,
    pub links: Vec<([u8; 16], [u8; 8])>,
}

impl Node {
    pub fn new(service: &'static str, kind: Kind, name: impl Into<String>) -> Node {
        Node {
            service,
            name: name.into(),
            kind,
            attrs: Vec::new(),
            work: 0,
            gap: 0,
            children: Vec::new(),
            error: None,
            exception: None,
            fixed: None,
            detached: None,
            links: Vec::new(),
        }
    }

    pub fn s(mut self, key: &str, value: impl Into<String>) -> Node {
        self.set(key, any_value::Value::StringValue(value.into()));
        self
    }

    pub fn i(mut self, key: &str, value: i64) -> Node {
        self.set(key, any_value::Value::IntValue(value));
        self
    }

    pub fn work(mut self, ns: u64) -> Node {
        self.work = ns;
        self
    }

    pub fn gap(mut self, ns: u64) -> Node {
        self.gap = ns;
        self
    }

    pub fn child(mut self, child: Node) -> Node {
        self.children.push(child);
        self
    }

    pub fn children(mut self, children: impl IntoIterator<Item = Node>) -> Node {
        self.children.extend(children);
        self
    }

    /// Sets (or replaces) an attribute.
    pub fn set(&mut self, key: &str, value: any_value::Value) {
        let value = Some(AnyValue { value: Some(value) });
        match self.attrs.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = value,
            None => self.attrs.push(KeyValue { key: key.into(), value }),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn is_http(&self) -> bool {
        self.attrs.iter().any(|kv| kv.key == "http.request.method")
    }

    pub fn is_grpc(&self) -> bool {
        self.get("rpc.system") == Some("grpc")
    }
}

/// A call from one service to another over HTTP: the caller's CLIENT span around the callee's
/// SERVER span (`server` is the callee's own tree), with the network's latency on both sides.
pub fn http(rng: &mut Rng, from: &'static str, method: &str, host: &str, route: &str, server: Node) -> Node {
    let server = server
        .s("http.request.method", method)
        .s("http.route", route)
        .s("url.scheme", "http")
        .i("http.response.status_code", 200)
        .gap(net(rng));
    let mut server = server;
    server.name = format!("{method} {route}");
    Node::new(from, Kind::Client, method.to_string())
        .s("http.request.method", method)
        .s("server.address", host)
        .i("server.port", 8080)
        .s("peer.service", server.service)
        // The template, not a made-up URL: the path's parameters are not part of the flow.
        .s("url.template", route)
        .i("http.response.status_code", 200)
        .work(net(rng))
        .child(server)
}

/// A gRPC call: CLIENT and SERVER spans named `service/method` as gRPC instrumentations name them.
pub fn grpc(rng: &mut Rng, from: &'static str, rpc_service: &str, method: &str, host: &str, server: Node) -> Node {
    let name = format!("{rpc_service}/{method}");
    let server = server
        .s("rpc.system", "grpc")
        .s("rpc.service", rpc_service)
        .s("rpc.method", method)
        .i("rpc.grpc.status_code", 0)
        .gap(net(rng));
    let mut server = server;
    server.name = name.clone();
    Node::new(from, Kind::Client, name)
        .s("rpc.system", "grpc")
        .s("rpc.service", rpc_service)
        .s("rpc.method", method)
        .i("rpc.grpc.status_code", 0)
        .s("server.address", host)
        .i("server.port", 9090)
        .s("peer.service", server.service)
        .work(net(rng))
        .child(server)
}

/// A PostgreSQL query as the client library reports it (the database itself is not traced).
pub fn postgres(rng: &mut Rng, from: &'static str, db: &str, table: &str, statement: &str) -> Node {
    let operation = statement.split_whitespace().next().unwrap_or("QUERY").to_uppercase();
    Node::new(from, Kind::Client, format!("{operation} {db}.{table}"))
        .s("db.system", "postgresql")
        .s("db.namespace", db)
        .s("db.collection.name", table)
        .s("db.operation.name", operation)
        .s("db.query.text", statement)
        .s("server.address", "postgresql.platform.svc")
        .i("server.port", 5432)
        .work(ms(rng, 3.0))
}

/// One network hop: about a millisecond.
pub fn net(rng: &mut Rng) -> u64 {
    (rng.lognormal(0.6, 0.4) * MS as f64) as u64 + 50_000
}

/// Work of about `median` milliseconds, log-normal jitter.
pub fn ms(rng: &mut Rng, median: f64) -> u64 {
    (rng.lognormal(median, 0.35) * MS as f64) as u64 + 10_000
}

/// The laid-out spans of one trace, each with its service.
pub struct Laid {
    pub trace_id: [u8; 16],
    pub spans: Vec<(&'static str, Span)>,
}

pub fn new_trace_id(rng: &mut Rng) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&rng.nonzero().to_be_bytes());
    id[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    id
}

/// Lays `root` out so that the trace's last span ends at `end_ns`.
pub fn lay_out(rng: &mut Rng, root: &Node, end_ns: u64) -> Laid {
    let trace_id = new_trace_id(rng);
    let mut spans = Vec::new();
    place(rng, root, trace_id, None, 0, &mut spans);
    let last = spans.iter().map(|(_, s): &(&str, Span)| s.end_time_unix_nano).max().unwrap_or(0);
    let shift = end_ns.saturating_sub(last);
    for (_, s) in &mut spans {
        s.start_time_unix_nano += shift;
        s.end_time_unix_nano += shift;
        for e in &mut s.events {
            e.time_unix_nano += shift;
        }
    }
    Laid { trace_id, spans }
}

/// Places `node` at `start` (relative nanoseconds) and its subtree after it; answers its end.
fn place(
    rng: &mut Rng,
    node: &Node,
    trace_id: [u8; 16],
    parent: Option<[u8; 8]>,
    start: u64,
    out: &mut Vec<(&'static str, Span)>,
) -> u64 {
    let span_id = rng.nonzero().to_be_bytes();
    let at = out.len();
    out.push((node.service, Span::default()));
    let mut t = start + node.work / 2;
    let mut later = Vec::new();
    for c in &node.children {
        if c.detached.is_some() {
            later.push(c);
            continue;
        }
        t = place(rng, c, trace_id, Some(span_id), t + c.gap, out);
    }
    let end = match node.fixed {
        Some(d) => start + d,
        None => t + node.work - node.work / 2,
    };
    for c in later {
        place(rng, c, trace_id, Some(span_id), end + c.detached.unwrap_or(0), out);
    }
    let events = node
        .exception
        .iter()
        .map(|(kind, message)| Event {
            time_unix_nano: end,
            name: "exception".into(),
            attributes: vec![kv("exception.type", kind), kv("exception.message", message)],
            dropped_attributes_count: 0,
        })
        .collect();
    out[at].1 = Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: node.name.clone(),
        kind: node.kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: node.attrs.clone(),
        events,
        links: node
            .links
            .iter()
            .map(|(t, s)| Link { trace_id: t.to_vec(), span_id: s.to_vec(), flags: 0x101, ..Default::default() })
            .collect(),
        status: node.error.as_ref().map(|m| Status { message: m.clone(), code: 2 }),
        flags: 0x101,
        ..Default::default()
    };
    end
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_span_their_children_and_detached_ones_start_after() {
        let mut rng = Rng::new(3);
        let consumer = Node::new("b", Kind::Consumer, "process").work(5 * MS);
        let mut consumer = consumer;
        consumer.detached = Some(2 * MS);
        let root = Node::new("a", Kind::Server, "GET /")
            .work(4 * MS)
            .child(http(&mut rng, "a", "GET", "b", "/x", Node::new("b", Kind::Server, "GET /x").work(10 * MS)))
            .child(Node::new("a", Kind::Producer, "publish").work(MS).child(consumer));
        let laid = lay_out(&mut rng, &root, 1_000_000 * MS);
        let spans: Vec<&Span> = laid.spans.iter().map(|(_, s)| s).collect();
        assert_eq!(spans.len(), 5);
        assert_eq!(spans.iter().map(|s| s.end_time_unix_nano).max(), Some(1_000_000 * MS));
        let by_id = |id: &[u8]| spans.iter().find(|s| s.span_id == id).unwrap();
        for s in &spans[1..] {
            let p = by_id(&s.parent_span_id);
            assert_eq!(s.trace_id, p.trace_id);
            if s.kind == Kind::Consumer as i32 {
                assert!(s.start_time_unix_nano >= p.end_time_unix_nano + 2 * MS);
            } else {
                assert!(
                    s.start_time_unix_nano >= p.start_time_unix_nano && s.end_time_unix_nano <= p.end_time_unix_nano
                );
            }
        }
        // CLIENT → SERVER across services.
        let server = spans.iter().find(|s| s.name == "GET /x").unwrap();
        assert_eq!(by_id(&server.parent_span_id).kind, Kind::Client as i32);
        assert_eq!(laid.spans.iter().find(|(_, s)| s.name == "GET /x").unwrap().0, "b");
    }
}
