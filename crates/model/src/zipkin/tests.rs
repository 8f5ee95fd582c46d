use prost::Message;

use super::*;
use crate::convert::{KIND_CLIENT, KIND_SERVER, STATUS_ERROR};

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
}

const BODY: &str = r#"[{
  "traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "parentId": "0020000000000001",
  "name": "get /api", "kind": "SERVER", "timestamp": 1700000000000001, "duration": 207000,
  "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 8080},
  "remoteEndpoint": {"serviceName": "mobile", "ipv6": "2001:db8::1", "port": 51000},
  "annotations": [{"timestamp": 1700000000000002, "value": "ws"},
                  {"timestamp": 1700000000000003, "value": "{\"retry\":{\"attempt\":2,\"ok\":true}}"}],
  "tags": {"http.method": "GET", "http.status_code": "500", "error": "boom", "otel.scope.name": "lib"},
  "shared": true
}, {
  "traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "b2fb4a1d1a96d312",
  "name": "call", "kind": "CLIENT", "timestamp": 1700000000000001, "duration": 5,
  "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 8080}
}, {
  "traceId": "463ac35c9f6413ad", "id": "c2fb4a1d1a96d312", "name": "job",
  "localEndpoint": {"serviceName": "worker"}, "tags": {"span.kind": "internal"}
}]"#;

#[test]
fn json_converts_as_the_collector_does() {
    let req = decode_json(BODY.as_bytes(), Options::default()).unwrap();
    assert_eq!(req.resource_spans.len(), 2, "spans grouped by local endpoint");
    let rs = &req.resource_spans[0];
    let res = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(attr(res, "service.name"), Some(&Value::StringValue("frontend".into())));
    assert!(matches!(attr(res, "host.ip"), Some(Value::ArrayValue(a)) if a.values.len() == 1));
    // Two scopes: one named by the tag, one without.
    assert_eq!(rs.scope_spans.len(), 2);
    assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "lib");
    let s = &rs.scope_spans[0].spans[0];
    assert_eq!(s.trace_id, unhex("0000000000000000463ac35c9f6413ad").unwrap(), "64-bit IDs widen");
    assert_eq!(s.parent_span_id, unhex("0020000000000001").unwrap());
    assert_eq!(s.kind, KIND_SERVER);
    assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_001_000);
    assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 207_000_000);
    let st = s.status.as_ref().unwrap();
    assert_eq!((st.code, st.message.as_str()), (STATUS_ERROR, "boom"));
    assert_eq!(attr(&s.attributes, "http.status_code"), Some(&Value::StringValue("500".into())));
    assert_eq!(attr(&s.attributes, "error"), None);
    assert_eq!(attr(&s.attributes, "peer.service"), Some(&Value::StringValue("mobile".into())));
    assert_eq!(attr(&s.attributes, "network.peer.address"), Some(&Value::StringValue("2001:db8::1".into())));
    assert_eq!(attr(&s.attributes, "network.peer.port"), Some(&Value::IntValue(51000)));
    assert_eq!(attr(&s.attributes, "network.local.port"), Some(&Value::IntValue(8080)));
    assert_eq!(s.events[0].name, "ws");
    assert_eq!(s.events[1].name, "retry");
    assert_eq!(attr(&s.events[1].attributes, "attempt"), Some(&Value::IntValue(2)));
    assert_eq!(attr(&s.events[1].attributes, "ok"), Some(&Value::BoolValue(true)));
    let client = &rs.scope_spans[1].spans[0];
    assert_eq!(client.kind, KIND_CLIENT);
    assert!(client.parent_span_id.is_empty());
    let job = &req.resource_spans[1].scope_spans[0].spans[0];
    assert_eq!(job.kind, crate::convert::KIND_INTERNAL, "span.kind fills a missing kind");
    assert!(job.attributes.is_empty());
}

#[test]
fn typed_tags_when_asked() {
    let req = decode_json(BODY.as_bytes(), Options { parse_string_tags: true }).unwrap();
    let s = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(attr(&s.attributes, "http.status_code"), Some(&Value::IntValue(500)));
    assert_eq!(attr(&s.attributes, "http.method"), Some(&Value::StringValue("GET".into())));
}

#[test]
fn collector_event_encoding() {
    let e = event(5, r#"cache miss|{"key":"a"}|3"#.into());
    assert_eq!((e.name.as_str(), e.dropped_attributes_count, e.time_unix_nano), ("cache miss", 3, 5000));
    assert_eq!(attr(&e.attributes, "key"), Some(&Value::StringValue("a".into())));
    assert_eq!(event(1, "a|b".into()).name, "a|b");
}

#[test]
fn bad_json_names_the_problem() {
    let e = |body: &str| decode_json(body.as_bytes(), Options::default()).unwrap_err().to_string();
    assert!(e(r#"[{"traceId":"xyz","id":"a2fb4a1d1a96d312"}]"#).contains("[0].traceId"));
    assert!(e(r#"[{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d3zz"}]"#).contains("[0].id"));
    assert!(e(r#"[{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312","kind":"NOPE"}]"#).contains("kind"));
    assert!(e(r#"[{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312","timestamp":-1}]"#).contains("timestamp"));
    assert!(e(r#"{"traceId":"x"}"#).contains("list"));
    assert!(e(&BODY[..BODY.len() / 2]).contains("Zipkin JSON"));
}

#[test]
fn proto_converts_and_garbage_is_an_error() {
    let list = ListOfSpans {
        spans: vec![ProtoSpan {
            trace_id: vec![1; 16],
            id: vec![2; 8],
            parent_id: vec![3; 8],
            kind: 1,
            name: "q".into(),
            timestamp: 1_000_000,
            duration: 3,
            local_endpoint: Some(ProtoEndpoint {
                service_name: "db-client".into(),
                ipv4: vec![10, 1, 2, 3],
                ..Default::default()
            }),
            remote_endpoint: Some(ProtoEndpoint {
                service_name: "pg".into(),
                ipv4: vec![10, 9, 9, 9],
                port: 5432,
                ..Default::default()
            }),
            annotations: vec![ProtoAnnotation { timestamp: 1_000_001, value: "sent".into() }],
            tags: [("db.system".to_string(), "postgresql".to_string())].into(),
            ..Default::default()
        }],
    };
    let body = list.encode_to_vec();
    let req = decode_proto(&body, Options::default()).unwrap();
    let rs = &req.resource_spans[0];
    let host = attr(&rs.resource.as_ref().unwrap().attributes, "host.ip");
    assert!(
        matches!(host, Some(Value::ArrayValue(a)) if a.values[0].value == Some(Value::StringValue("10.1.2.3".into())))
    );
    let s = &rs.scope_spans[0].spans[0];
    assert_eq!((s.kind, s.start_time_unix_nano, s.end_time_unix_nano), (KIND_CLIENT, 1_000_000_000, 1_000_003_000));
    assert_eq!(attr(&s.attributes, "network.peer.address"), Some(&Value::StringValue("10.9.9.9".into())));
    assert_eq!(attr(&s.attributes, "db.system"), Some(&Value::StringValue("postgresql".into())));
    assert_eq!(s.events[0].time_unix_nano, 1_000_001_000);
    for cut in 1..body.len() {
        let _ = decode_proto(&body[..cut], Options::default());
    }
    assert!(decode_proto(b"\x0a\xff\xff\xff\x0f", Options::default()).unwrap_err().to_string().contains("ListOfSpans"));
}
