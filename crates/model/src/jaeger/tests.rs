use prost::Message;

use super::*;

fn kv_str(key: &str, v: &str) -> JKeyValue {
    JKeyValue { key: key.into(), v_type: V_STRING, v_str: v.into(), ..Default::default() }
}

fn kv_bool(key: &str, v: bool) -> JKeyValue {
    JKeyValue { key: key.into(), v_type: V_BOOL, v_bool: v, ..Default::default() }
}

fn request() -> PostSpansRequest {
    let trace = vec![7u8; 16];
    let span = JSpan {
        trace_id: trace.clone(),
        span_id: vec![2; 8],
        operation_name: "charge".into(),
        references: vec![
            SpanRef { trace_id: vec![9; 16], span_id: vec![9; 8], ref_type: FOLLOWS_FROM },
            SpanRef { trace_id: trace.clone(), span_id: vec![1; 8], ref_type: CHILD_OF },
        ],
        flags: 3,
        start_time: Some(Timestamp { seconds: 10, nanos: 5 }),
        duration: Some(ProtoDuration { seconds: 1, nanos: 500 }),
        tags: vec![
            kv_str("span.kind", "client"),
            kv_bool("error", true),
            kv_str("otel.scope.name", "payments"),
            kv_str("otel.scope.version", "1.2"),
            JKeyValue { key: "amount".into(), v_type: V_FLOAT64, v_float64: 9.5, ..Default::default() },
            JKeyValue { key: "blob".into(), v_type: V_BINARY, v_binary: vec![1, 2], ..Default::default() },
        ],
        logs: vec![Log { timestamp: Some(Timestamp { seconds: 11, nanos: 0 }), fields: vec![kv_str("message", "hi")] }],
        ..Default::default()
    };
    let mut other = span.clone();
    other.span_id = vec![3; 8];
    other.tags = vec![kv_str("otel.status_code", "OK")];
    other.process = Some(Process { service_name: "other".into(), tags: vec![] });
    PostSpansRequest {
        batch: Some(Batch {
            spans: vec![span, other],
            process: Some(Process { service_name: "pay".into(), tags: vec![kv_bool("debug", true)] }),
        }),
    }
}

#[test]
fn proto_batch_converts_as_the_collector_does() {
    let req = decode_post_spans(&request().encode_to_vec()).unwrap();
    assert_eq!(req.resource_spans.len(), 2, "the span with its own process has its own resource");
    let rs = &req.resource_spans[0];
    let res = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!((res[0].key.as_str(), res[1].key.as_str()), ("service.name", "debug"));
    let scope = rs.scope_spans[0].scope.as_ref().unwrap();
    assert_eq!((scope.name.as_str(), scope.version.as_str()), ("payments", "1.2"));
    let s = &rs.scope_spans[0].spans[0];
    assert_eq!(s.parent_span_id, vec![1; 8], "the same-trace CHILD_OF is the parent");
    assert_eq!(s.links.len(), 1);
    assert_eq!(s.links[0].span_id, vec![9; 8]);
    assert_eq!(s.links[0].attributes[0].value.as_ref().unwrap().value, Some(Value::StringValue("follows_from".into())));
    assert_eq!(s.kind, convert::KIND_CLIENT);
    assert_eq!(s.flags, 1);
    assert_eq!(s.status.as_ref().unwrap().code, convert::STATUS_ERROR);
    assert_eq!(s.start_time_unix_nano, 10_000_000_005);
    assert_eq!(s.end_time_unix_nano, 11_000_000_505);
    let keys: Vec<_> = s.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["amount", "blob"], "span.kind, error and the scope tags become fields");
    assert_eq!(s.attributes[1].value.as_ref().unwrap().value, Some(Value::BytesValue(vec![1, 2])));
    assert_eq!(s.events[0].name, "hi", "without an `event` field, `message` names the event");
    assert!(s.events[0].attributes.is_empty());
    assert_eq!(s.events[0].time_unix_nano, 11_000_000_000);
    let other = &req.resource_spans[1];
    assert_eq!(other.scope_spans[0].spans[0].status.as_ref().unwrap().code, convert::STATUS_OK);
}

#[test]
fn http_status_sets_error_only_where_it_is_a_failure() {
    let with = |kind: &str, code: i64| {
        let mut r = request();
        let s = &mut r.batch.as_mut().unwrap().spans[0];
        s.tags = vec![
            kv_str("span.kind", kind),
            JKeyValue { key: "http.status_code".into(), v_type: V_INT64, v_int64: code, ..Default::default() },
        ];
        let req = decode_post_spans(&r.encode_to_vec()).unwrap();
        req.resource_spans[0].scope_spans[0].spans[0].status.as_ref().map_or(0, |s| s.code)
    };
    assert_eq!(with("server", 404), 0);
    assert_eq!(with("client", 404), convert::STATUS_ERROR);
    assert_eq!(with("server", 503), convert::STATUS_ERROR);
    assert_eq!(with("server", 200), 0);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let body = request().encode_to_vec();
    for cut in 1..body.len() {
        let _ = decode_post_spans(&body[..cut]);
    }
    let e = decode_post_spans(b"\xff\xff\xff\xff").unwrap_err();
    assert!(e.to_string().contains("PostSpansRequest"), "{e}");
}
