//! The `attributes` processor against checklist §7.4, with configurations written as the
//! collector's YAML.

use spoor_model::otlp::{
    AnyValue, ArrayValue, Event, ExportTraceServiceRequest, InstrumentationScope, KeyValue, KeyValueList, Link,
    Resource, ResourceSpans, ScopeSpans, Span, any_value::Value,
};
use spoor_process::Counts;
use spoor_process::attributes::{Attributes, AttributesConfig, Context};

fn av(v: Value) -> AnyValue {
    AnyValue { value: Some(v) }
}
fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}
fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(av(v)) }
}
fn span(name: &str, attrs: Vec<KeyValue>) -> Span {
    Span { name: name.into(), kind: 2, attributes: attrs, ..Default::default() }
}
fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", s(service))], dropped_attributes_count: 0 }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "lib".into(), version: "1.2.0".into(), ..Default::default() }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
fn processor(yaml: &str) -> Attributes {
    let cfg: AttributesConfig = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    Attributes::new(&cfg).unwrap()
}
fn span_attrs(req: &ExportTraceServiceRequest) -> &[KeyValue] {
    &req.resource_spans[0].scope_spans[0].spans[0].attributes
}
/// Runs `yaml` on one span with `attrs`; returns the span's attributes and the counts.
fn run_ctx(yaml: &str, attrs: Vec<KeyValue>, ctx: &Context) -> (Vec<KeyValue>, Counts) {
    let p = processor(yaml);
    let mut req = request("svc", vec![span("op", attrs)]);
    let c = p.apply(&mut req, ctx);
    (span_attrs(&req).to_vec(), c)
}
fn run(yaml: &str, attrs: Vec<KeyValue>) -> Vec<KeyValue> {
    run_ctx(yaml, attrs, &Context::default()).0
}
fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}
fn err(yaml: &str) -> String {
    match serde_saphyr::from_str::<AttributesConfig>(yaml) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

// 1–3
#[test]
fn insert_update_upsert() {
    let insert = "actions: [{key: k, value: v, action: insert}]";
    assert_eq!(run(insert, vec![]), vec![kv("k", s("v"))]);
    assert_eq!(run(insert, vec![kv("k", s("old"))]), vec![kv("k", s("old"))]);

    let update = "actions: [{key: k, value: v, action: update}]";
    assert_eq!(run(update, vec![]), vec![]);
    assert_eq!(run(update, vec![kv("k", Value::IntValue(3))]), vec![kv("k", s("v"))]);

    let upsert = "actions: [{key: k, value: v, action: UPSERT}]";
    assert_eq!(run(upsert, vec![]), vec![kv("k", s("v"))]);
    assert_eq!(run(upsert, vec![kv("a", s("x")), kv("k", s("old"))]), vec![kv("a", s("x")), kv("k", s("v"))]);
}

#[test]
fn literal_value_types() {
    let yaml = r#"
actions:
  - {key: i, value: 7, action: insert}
  - {key: d, value: 2.5, action: insert}
  - {key: b, value: true, action: insert}
  - {key: s, value: "7", action: insert}
  - {key: l, value: [1, x], action: insert}
"#;
    let out = run(yaml, vec![]);
    assert_eq!(get(&out, "i"), Some(&Value::IntValue(7)));
    assert_eq!(get(&out, "d"), Some(&Value::DoubleValue(2.5)));
    assert_eq!(get(&out, "b"), Some(&Value::BoolValue(true)));
    assert_eq!(get(&out, "s"), Some(&s("7")));
    assert_eq!(
        get(&out, "l"),
        Some(&Value::ArrayValue(ArrayValue { values: vec![av(Value::IntValue(1)), av(s("x"))] }))
    );
}

// 4
#[test]
fn from_attribute_and_default() {
    let yaml = "actions: [{key: k, from_attribute: src, action: insert}]";
    assert_eq!(run(yaml, vec![]), vec![]);
    assert_eq!(
        run(yaml, vec![kv("src", Value::IntValue(5))]),
        vec![kv("src", Value::IntValue(5)), kv("k", Value::IntValue(5))]
    );
    let yaml = "actions: [{key: k, from_attribute: src, default_value: d, action: upsert}]";
    assert_eq!(run(yaml, vec![]), vec![kv("k", s("d"))]);
}

// 5
#[test]
fn from_context() {
    let md = vec![
        ("x-tenant".to_string(), "a".to_string()),
        ("other".to_string(), "z".to_string()),
        ("x-tenant".to_string(), "b".to_string()),
    ];
    let ctx = Context { metadata: &md, client_address: Some("10.0.0.7") };
    let (out, c) = run_ctx("actions: [{key: tenant, from_context: metadata.x-tenant, action: insert}]", vec![], &ctx);
    assert_eq!(out, vec![kv("tenant", s("a;b"))]);
    assert_eq!(c.set, 1);
    // header names are case-insensitive; a bare key falls back to metadata
    let (out, _) = run_ctx("actions: [{key: t, from_context: X-Tenant, action: insert}]", vec![], &ctx);
    assert_eq!(out, vec![kv("t", s("a;b"))]);
    let (out, _) = run_ctx("actions: [{key: ip, from_context: client.address, action: insert}]", vec![], &ctx);
    assert_eq!(out, vec![kv("ip", s("10.0.0.7"))]);
    // missing → no-op, or the default
    let (out, _) = run_ctx("actions: [{key: t, from_context: metadata.nope, action: insert}]", vec![], &ctx);
    assert_eq!(out, vec![]);
    let (out, _) =
        run_ctx("actions: [{key: t, from_context: auth.sub, default_value: anon, action: insert}]", vec![], &ctx);
    assert_eq!(out, vec![kv("t", s("anon"))]);
}

// 6
#[test]
fn delete_key_and_pattern() {
    let attrs = vec![kv("secret_a", s("1")), kv("secret_b", s("2")), kv("public", s("3"))];
    let (out, c) = run_ctx("actions: [{pattern: ^secret_, action: delete}]", attrs.clone(), &Context::default());
    assert_eq!(out, vec![kv("public", s("3"))]);
    assert_eq!(c.deleted, 2);
    // unanchored: `cret` matches inside the key
    assert_eq!(run("actions: [{pattern: cret, action: delete}]", attrs.clone()), vec![kv("public", s("3"))]);
    assert_eq!(run("actions: [{key: public, pattern: _a$, action: delete}]", attrs), vec![kv("secret_b", s("2"))]);
}

// 7, 8
#[test]
fn hash_vectors() {
    let h = |v: Value| {
        let out = run("actions: [{key: k, action: hash}]", vec![kv("k", v)]);
        match get(&out, "k") {
            Some(Value::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        h(s("SELECT * FROM users WHERE id = 42")),
        "df1c2efcce85314d73c96c160fe8dd5be24c2c8a7f94915d8c82eec0b36d32fe"
    );
    assert_eq!(h(s("foo")), "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae");
    assert_eq!(h(Value::IntValue(24)), "cbb032642036ec7043fa4529f06c9c9d8b12fa70ea6799a19ca8321a808d86fa");
    assert_eq!(h(Value::BoolValue(true)), "4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a");
    assert_eq!(h(Value::DoubleValue(2.4)), "df3022be03461368aa299f2f30d440fd3ca45c9b62af40733f10296a53d42859");
    assert_eq!(h(Value::BytesValue(vec![1, 2, 3])), "");
    assert_eq!(h(Value::ArrayValue(ArrayValue::default())), "");
    assert_eq!(h(Value::KvlistValue(KeyValueList::default())), "");
    // absent key: nothing
    let (out, c) = run_ctx("actions: [{key: k, action: hash}]", vec![kv("x", s("1"))], &Context::default());
    assert_eq!(out, vec![kv("x", s("1"))]);
    assert_eq!(c, Counts::default());
    // the db.statement example, by key, counted as hashed
    let (out, c) = run_ctx(
        "actions: [{key: db.statement, action: hash}]",
        vec![kv("db.statement", s("SELECT * FROM users WHERE id = 42"))],
        &Context::default(),
    );
    assert_eq!(get(&out, "db.statement"), Some(&s("df1c2efcce85314d73c96c160fe8dd5be24c2c8a7f94915d8c82eec0b36d32fe")));
    assert_eq!(c.hashed, 1);
    // by pattern
    let out = run("actions: [{pattern: ^user\\., action: hash}]", vec![kv("user.a", s("foo")), kv("x", s("foo"))]);
    assert_eq!(get(&out, "user.a"), Some(&s("2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")));
    assert_eq!(get(&out, "x"), Some(&s("foo")));
}

// 9
#[test]
fn extract() {
    let yaml = r#"
actions:
  - key: http.url
    pattern: ^.*/users/(?P<user_id>\d+)/orders/(?P<order_id>\d+)$
    action: extract
"#;
    let (out, c) = run_ctx(yaml, vec![kv("http.url", s("http://x/users/123/orders/9"))], &Context::default());
    assert_eq!(get(&out, "http.url"), Some(&s("http://x/users/123/orders/9")));
    assert_eq!(get(&out, "user_id"), Some(&s("123")));
    assert_eq!(get(&out, "order_id"), Some(&s("9")));
    assert_eq!(c.set, 2);
    // no match → nothing
    assert_eq!(run(yaml, vec![kv("http.url", s("http://x/health"))]), vec![kv("http.url", s("http://x/health"))]);
    // unanchored first match; overwrites an existing attribute; non-strings ignored
    let yaml = "actions: [{key: m, pattern: 'id=(?P<id>\\d+)', action: extract}]";
    let out = run(yaml, vec![kv("m", s("a id=1 b id=2")), kv("id", s("old"))]);
    assert_eq!(get(&out, "id"), Some(&s("1")));
    assert_eq!(run(yaml, vec![kv("m", Value::IntValue(1))]), vec![kv("m", Value::IntValue(1))]);
}

// 10
#[test]
fn convert_table() {
    let conv = |to: &str, v: Value| {
        let out = run(&format!("actions: [{{key: k, converted_type: {to}, action: convert}}]"), vec![kv("k", v)]);
        get(&out, "k").cloned().unwrap()
    };
    assert_eq!(conv("int", s("123")), Value::IntValue(123));
    assert_eq!(conv("int", s("-7")), Value::IntValue(-7));
    assert_eq!(conv("int", s("12.5")), s("12.5"));
    assert_eq!(conv("int", Value::DoubleValue(12.9)), Value::IntValue(12));
    assert_eq!(conv("int", Value::DoubleValue(-12.9)), Value::IntValue(-12));
    assert_eq!(conv("int", Value::BoolValue(true)), Value::IntValue(1));
    assert_eq!(conv("int", Value::BoolValue(false)), Value::IntValue(0));
    assert_eq!(conv("double", Value::IntValue(5)), Value::DoubleValue(5.0));
    assert_eq!(conv("double", s("abc")), s("abc"));
    assert_eq!(conv("double", s("2.5")), Value::DoubleValue(2.5));
    assert_eq!(conv("double", Value::BoolValue(true)), Value::DoubleValue(1.0));
    assert_eq!(conv("string", Value::IntValue(7)), s("7"));
    assert_eq!(conv("string", Value::DoubleValue(2.5)), s("2.5"));
    assert_eq!(conv("string", Value::BoolValue(false)), s("false"));
    assert_eq!(
        conv("string", Value::KvlistValue(KeyValueList { values: vec![kv("b", Value::IntValue(1)), kv("a", s("x"))] })),
        s(r#"{"a":"x","b":1}"#)
    );
    assert_eq!(
        conv("string", Value::ArrayValue(ArrayValue { values: vec![av(Value::IntValue(1)), av(s("x"))] })),
        s(r#"[1,"x"]"#)
    );
    // other combinations unchanged
    assert_eq!(conv("int", Value::BytesValue(vec![1])), Value::BytesValue(vec![1]));
}

// 11
#[test]
fn actions_run_in_order() {
    let out = run("actions: [{key: a, value: 1, action: upsert}, {key: a, action: hash}]", vec![]);
    let want = spoor_process::attributes::sha256_value(Some(&av(Value::IntValue(1))));
    assert_eq!(want.len(), 64);
    assert_eq!(get(&out, "a"), Some(&s(&want)));
    // = SHA-256 of 01 00 00 00 00 00 00 00
    assert_eq!(want, "7c9fa136d4413fa6173637e883b6998d32e1d675f88cddff9dcbcf331820f4b8");
}

// 12
#[test]
fn include_services_strict() {
    let p =
        processor("actions: [{key: k, value: v, action: insert}]\ninclude: {match_type: strict, services: [svc-a]}");
    let mut a = request("svc-a", vec![span("op", vec![])]);
    let mut b = request("svc-b", vec![span("op", vec![])]);
    let b0 = b.clone();
    p.apply(&mut a, &Context::default());
    p.apply(&mut b, &Context::default());
    assert_eq!(span_attrs(&a), &[kv("k", s("v"))]);
    assert_eq!(b, b0);
}

// 13
#[test]
fn include_then_exclude() {
    let p = processor(
        r#"
actions: [{key: k, value: v, action: insert}]
include: {match_type: strict, span_names: [login]}
exclude: {match_type: strict, attributes: [{key: internal}]}
"#,
    );
    let mut req = request(
        "svc",
        vec![span("login", vec![kv("internal", Value::BoolValue(true))]), span("login", vec![]), span("other", vec![])],
    );
    p.apply(&mut req, &Context::default());
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans[0].attributes, vec![kv("internal", Value::BoolValue(true))]);
    assert_eq!(spans[1].attributes, vec![kv("k", s("v"))]);
    assert_eq!(spans[2].attributes, vec![]);
}

#[test]
fn filter_fields() {
    let yes = |filter: &str, req: &ExportTraceServiceRequest| {
        let p = processor(&format!("actions: [{{key: k, value: v, action: insert}}]\ninclude: {filter}"));
        let mut r = req.clone();
        p.apply(&mut r, &Context::default());
        get(span_attrs(&r), "k").is_some()
    };
    let req = request("checkout-svc", vec![span("GET /cart", vec![kv("http.status_code", Value::IntValue(503))])]);
    // regexp is unanchored (substring), as upstream
    assert!(yes("{match_type: regexp, services: [checkout]}", &req));
    assert!(!yes("{match_type: regexp, services: ['^checkout$']}", &req));
    assert!(!yes("{match_type: strict, services: [checkout]}", &req));
    assert!(yes("{match_type: regexp, span_names: ['^GET ']}", &req));
    assert!(yes("{match_type: strict, span_kinds: [SPAN_KIND_SERVER]}", &req));
    assert!(yes("{match_type: strict, span_kinds: [server]}", &req));
    assert!(!yes("{match_type: strict, span_kinds: [SPAN_KIND_CLIENT]}", &req));
    assert!(yes("{match_type: regexp, span_kinds: [SERVER]}", &req));
    assert!(yes("{match_type: strict, attributes: [{key: http.status_code, value: 503}]}", &req));
    assert!(!yes("{match_type: strict, attributes: [{key: http.status_code, value: '503'}]}", &req));
    assert!(yes("{match_type: regexp, attributes: [{key: http.status_code, value: '^5'}]}", &req));
    assert!(!yes("{match_type: strict, attributes: [{key: http.status_code}, {key: missing}]}", &req));
    assert!(yes("{match_type: strict, resources: [{key: service.name, value: checkout-svc}]}", &req));
    assert!(yes("{match_type: strict, libraries: [{name: lib}]}", &req));
    assert!(yes("{match_type: strict, libraries: [{name: other}, {name: lib, version: 1.2.0}]}", &req));
    assert!(!yes("{match_type: strict, libraries: [{name: lib, version: '2.0'}]}", &req));
    // all fields must match
    assert!(!yes("{match_type: strict, services: [checkout-svc], span_names: [nope]}", &req));
    // the regexp cache settings are tolerated
    assert!(yes("{match_type: regexp, regexp: {cacheenabled: true, cachemaxnumentries: 10}, services: [out]}", &req));
}

#[test]
fn apply_to_targets() {
    let mut sp = span("op", vec![kv("x", s("1"))]);
    sp.events = vec![Event { name: "e".into(), attributes: vec![kv("x", s("1"))], ..Default::default() }];
    sp.links = vec![Link { attributes: vec![kv("x", s("1"))], ..Default::default() }];
    let req0 = request("svc", vec![sp]);
    let run_on = |targets: &str| {
        let p = processor(&format!(
            "actions: [{{key: x, action: delete}}, {{key: y, value: 1, action: insert}}]\n{targets}"
        ));
        let mut r = req0.clone();
        let c = p.apply(&mut r, &Context::default());
        (r, c)
    };
    // default: spans only
    let (r, c) = run_on("");
    let sp = &r.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(sp.attributes, vec![kv("y", Value::IntValue(1))]);
    assert_eq!(sp.events[0].attributes, vec![kv("x", s("1"))]);
    assert_eq!(c, Counts { deleted: 1, set: 1, ..Counts::default() });

    let (r, c) = run_on("apply_to: [resource, event, link]");
    let sp = &r.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(sp.attributes, vec![kv("x", s("1"))]);
    assert_eq!(sp.events[0].attributes, vec![kv("y", Value::IntValue(1))]);
    assert_eq!(sp.links[0].attributes, vec![kv("y", Value::IntValue(1))]);
    let res = &r.resource_spans[0].resource.as_ref().unwrap().attributes;
    assert_eq!(get(res, "y"), Some(&Value::IntValue(1)));
    assert_eq!(c.set, 3);
}

// 14
#[test]
fn config_errors_carry_line_and_key() {
    let yaml = "# tenant policy\nactions:\n  - key: a\n    value: 1\n    action: insert\n  - key: http.url\n    action: extract\n";
    let e = err(yaml);
    assert!(e.contains("actions[1]: extract requires a pattern"), "{e}");
    assert!(e.contains("line 6"), "{e}");

    let e = err("actions:\n  - {key: a, action: insert}\n");
    assert!(e.contains("actions[0]: insert requires one of value, from_attribute or from_context"), "{e}");
    assert!(e.contains("line 2"), "{e}");

    let e =
        err("actions:\n  - {key: a, action: insert, value: 1}\n  - {key: a, action: convert, converted_type: bool}\n");
    assert!(e.contains("actions[1]: convert: converted_type \"bool\" is not one of int, double, string"), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn config_errors() {
    for (yaml, want) in [
        ("actions: [{key: a, action: update}]", "actions[0]: update requires one of value"),
        ("actions: [{key: a, action: upsert, value: 1, from_attribute: b}]", "only one of value"),
        ("actions: [{value: 1, action: upsert}]", "actions[0]: upsert requires a key"),
        ("actions: [{key: a, pattern: '(\\d+)', action: extract}]", "has no named group"),
        ("actions: [{key: a, pattern: '(?P<x>\\d+)-(\\d+)', action: extract}]", "has an unnamed group"),
        ("actions: [{key: a, action: convert}]", "requires converted_type"),
        ("actions: [{key: a, action: rename}]", "actions[0]: unknown action \"rename\""),
        ("actions: [{pattern: '(', action: delete}]", "actions[0]: bad regular expression"),
        ("actions: [{action: hash}]", "actions[0]: hash requires a key or a pattern"),
        ("actions: [{key: a, value: 1, action: delete}]", "delete does not take `value`"),
        ("include: {match_type: strict}", "include: names no field to match"),
        ("exclude: {match_type: regexp, services: ['(']}", "exclude.services[0]: bad regular expression"),
        ("include: {services: [a]}", "include.match_type: is required"),
        ("include: {match_type: fuzzy, services: [a]}", "include.match_type: \"fuzzy\" is not one of"),
        ("include: {match_type: strict, span_kinds: [sideways]}", "include.span_kinds[0]: unknown span kind"),
        ("apply_to: []", "apply_to: must name at least one"),
        ("apply_to: [scope]", "unknown variant"),
        ("actions: [{key: a, value: 1, action: insert, bogus: 2}]", "unknown field `bogus`"),
        ("processors: []", "unknown field `processors`"),
    ] {
        let e = err(yaml);
        assert!(e.contains(want), "{yaml}: {e}");
    }
    // in-code configurations are checked by `new`
    let cfg = AttributesConfig {
        actions: vec![spoor_process::attributes::ActionConfig {
            key: Some("a".into()),
            action: "extract".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(Attributes::new(&cfg).unwrap_err().to_string(), "actions[0]: extract requires a pattern");
}

#[test]
fn collector_example_parses() {
    let yaml = r#"
actions:
  - key: environment
    value: production
    action: insert
  - key: db.table
    from_attribute: db.name
    action: upsert
  - key: tenant
    from_context: metadata.x-tenant-id
    default_value: unknown
    action: insert
  - key: account_password
    action: delete
  - key: account_email
    action: hash
  - key: http.status_code
    converted_type: string
    action: convert
include:
  match_type: regexp
  regexp:
    cacheenabled: true
    cachemaxnumentries: 100
  services: ["auth.*"]
  span_names: ["login.*"]
  span_kinds: ["SPAN_KIND_SERVER"]
  attributes:
    - key: env
      value: "prod.*"
  resources:
    - key: host.name
  libraries:
    - name: "io.opentelemetry.*"
      version: "1\\..*"
exclude:
  match_type: strict
  services: [auth-test]
"#;
    let cfg: AttributesConfig = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.actions.len(), 6);
    Attributes::new(&cfg).unwrap();
}

#[test]
fn shareable() {
    fn ok<T: Clone + std::fmt::Debug + Send + Sync>() {}
    ok::<Attributes>();
    ok::<spoor_process::redact::Redaction>();
    ok::<spoor_process::scrub::Scrubber>();
}
