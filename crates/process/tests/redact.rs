//! The `redaction` processor against checklist §7.5, plus span events and links.

use spoor_model::otlp::{
    AnyValue, Event, ExportTraceServiceRequest, KeyValue, Link, Resource, ResourceSpans, ScopeSpans, Span,
    any_value::Value,
};
use spoor_process::Counts;
use spoor_process::redact::{HashFunction, Redaction, RedactionConfig, Summary};

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}
fn int(v: i64) -> Value {
    Value::IntValue(v)
}
fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }) }
}
fn request(resource: Vec<KeyValue>, span: Span) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: resource, dropped_attributes_count: 0 }),
            scope_spans: vec![ScopeSpans { scope: None, spans: vec![span], schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}
fn processor(yaml: &str) -> Redaction {
    let cfg: RedactionConfig = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    Redaction::new(&cfg).unwrap()
}
/// Redacts one span's attributes; returns them and the counts.
fn run(yaml: &str, attrs: Vec<KeyValue>) -> (Vec<KeyValue>, Counts) {
    let mut req = request(vec![], Span { attributes: attrs, ..Default::default() });
    let c = processor(yaml).apply(&mut req);
    (req.resource_spans[0].scope_spans[0].spans[0].attributes.clone(), c)
}
fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}
fn err(yaml: &str) -> String {
    match serde_saphyr::from_str::<RedactionConfig>(yaml) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

const CARD: &str = "allow_all_keys: true\nblocked_values: ['4[0-9]{12}(?:[0-9]{3})?']\nsummary: debug\n";

// 1
#[test]
fn allow_list_deletes_and_summarises() {
    let (out, c) = run("allowed_keys: [id]\nsummary: debug", vec![kv("id", int(1)), kv("name", s("x"))]);
    assert_eq!(
        out,
        vec![kv("id", int(1)), kv("redaction.redacted.keys", s("name")), kv("redaction.redacted.count", int(1))]
    );
    assert_eq!(c, Counts { deleted: 1, ..Counts::default() });
    // key lists are sorted
    let (out, _) =
        run("allowed_keys: [id]\nsummary: debug", vec![kv("zeta", s("x")), kv("id", int(1)), kv("alpha", s("y"))]);
    assert_eq!(get(&out, "redaction.redacted.keys"), Some(&s("alpha,zeta")));
    assert_eq!(get(&out, "redaction.redacted.count"), Some(&int(2)));
}

// 2
#[test]
fn empty_allow_list_fails_closed() {
    let (out, c) = run("allowed_keys: []\nallow_all_keys: false", vec![kv("a", s("1")), kv("b", int(2))]);
    assert_eq!(out, vec![]);
    assert_eq!(c.deleted, 2);
    let (out, _) = run("{}", vec![kv("a", s("1"))]);
    assert_eq!(out, vec![]);
}

// 3
#[test]
fn blocked_values_mask_only_the_match() {
    let (out, c) = run(CARD, vec![kv("note", s("card 4111111111111111 ok")), kv("other", s("nothing here"))]);
    assert_eq!(get(&out, "note"), Some(&s("card **** ok")));
    assert_eq!(get(&out, "other"), Some(&s("nothing here")));
    assert_eq!(get(&out, "redaction.masked.keys"), Some(&s("note")));
    assert_eq!(get(&out, "redaction.masked.count"), Some(&int(1)));
    assert_eq!(c, Counts { masked: 1, ..Counts::default() });
    // every match, of every pattern
    let (out, _) = run(
        "allow_all_keys: true\nblocked_values: ['4[0-9]{12}(?:[0-9]{3})?', 'secret']",
        vec![kv("n", s("4111111111111111 and 4012888888881881, secret"))],
    );
    assert_eq!(get(&out, "n"), Some(&s("**** and ****, ****")));
}

// 4
#[test]
fn hash_functions() {
    let h = |f: &str| {
        let (out, _) =
            run(&format!("{CARD}hash_function: {f}\nhmac_key: k3y\n"), vec![kv("n", s("card 4111111111111111 ok"))]);
        match get(&out, "n") {
            Some(Value::StringValue(v)) => v.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(h("sha3"), "card 6099154214406cce6105a4688ab66533d3a55d1d7dd393cbccf22b487a22d922 ok");
    assert_eq!(h("md5"), "card 5910f4ea0062a0e29afd3dccc741e3ce ok");
    assert_eq!(h("sha1"), "card 68bfb396f35af3876fc509665b3dc23a0930aab1 ok");
    assert_eq!(h("hmac-sha256"), "card 1647d69235eb3301dedcda5b17f2338d3f9d41f01727423d9d68ca9926112360 ok");
    assert_eq!(
        h("hmac-sha512"),
        "card 7332345e87646e854f28fabfe0f603e6339124838f525404c898b182160def53b6539b442c5dc168819128f264ceb7910a507b55d43590ec401f531710682294 ok"
    );
}

// 5
#[test]
fn allowed_values_win() {
    let yaml =
        "allow_all_keys: true\nblocked_values: ['mycompany.com']\nallowed_values: ['.+@mycompany.com']\nsummary: debug";
    let (out, c) = run(yaml, vec![kv("email", s("a@mycompany.com")), kv("site", s("www.mycompany.com"))]);
    assert_eq!(get(&out, "email"), Some(&s("a@mycompany.com")));
    assert_eq!(get(&out, "site"), Some(&s("www.****")));
    assert_eq!(get(&out, "redaction.allowed.keys"), Some(&s("email")));
    assert_eq!(get(&out, "redaction.allowed.count"), Some(&int(1)));
    assert_eq!(c.masked, 1);
}

// 6
#[test]
fn blocked_key_patterns_mask_whole_value() {
    let (out, c) = run(
        "allow_all_keys: true\nblocked_key_patterns: ['.*token.*']",
        vec![kv("access_token", s("abc")), kv("user", s("abc"))],
    );
    assert_eq!(out, vec![kv("access_token", s("****")), kv("user", s("abc"))]);
    assert_eq!(c.masked, 1);
    let (out, _) = run(
        "allow_all_keys: true\nblocked_key_patterns: ['token']\nhash_function: md5",
        vec![kv("access_token", s("4111111111111111"))],
    );
    assert_eq!(get(&out, "access_token"), Some(&s("5910f4ea0062a0e29afd3dccc741e3ce")));
}

// 7
#[test]
fn ignored_keys() {
    let yaml = "blocked_values: ['4[0-9]{12}(?:[0-9]{3})?']\nignored_keys: [safe]\nignored_key_patterns: ['^keep\\.']\nsummary: info";
    let (out, c) =
        run(yaml, vec![kv("safe", s("4111111111111111")), kv("keep.me", s("4111111111111111")), kv("gone", s("x"))]);
    assert_eq!(
        out,
        vec![
            kv("safe", s("4111111111111111")),
            kv("keep.me", s("4111111111111111")),
            kv("redaction.redacted.count", int(1)),
            kv("redaction.ignored.count", int(2)),
        ]
    );
    assert_eq!(c.deleted, 1);
}

// 8
#[test]
fn redact_all_types() {
    let yaml = |all: bool| format!("{CARD}redact_all_types: {all}");
    let (out, _) = run(&yaml(false), vec![kv("n", int(4111111111111111))]);
    assert_eq!(get(&out, "n"), Some(&int(4111111111111111)));
    let (out, c) = run(&yaml(true), vec![kv("n", int(4111111111111111)), kv("m", int(7))]);
    assert_eq!(get(&out, "n"), Some(&s("****")));
    assert_eq!(get(&out, "m"), Some(&int(7)));
    assert_eq!(c.masked, 1);
}

// 9
#[test]
fn summary_levels() {
    let attrs = || vec![kv("n", s("4111111111111111")), kv("o", s("fine"))];
    let (out, _) = run(&CARD.replace("debug", "info"), attrs());
    assert_eq!(out, vec![kv("n", s("****")), kv("o", s("fine")), kv("redaction.masked.count", int(1))]);
    let (out, _) = run(&CARD.replace("debug", "silent"), attrs());
    assert_eq!(out, vec![kv("n", s("****")), kv("o", s("fine"))]);
    let (out, _) = run(&CARD.replace("summary: debug\n", ""), attrs());
    assert_eq!(out, vec![kv("n", s("****")), kv("o", s("fine"))]);
    // nothing happened → nothing written
    let (out, _) = run(CARD, vec![kv("o", s("fine"))]);
    assert_eq!(out, vec![kv("o", s("fine"))]);
}

// 10 + events and links
#[test]
fn resource_events_and_links() {
    let span = Span {
        attributes: vec![kv("a", s("4111111111111111"))],
        events: vec![Event {
            name: "e".into(),
            attributes: vec![kv("b", s("x 4111111111111111"))],
            ..Default::default()
        }],
        links: vec![Link { attributes: vec![kv("c", s("4111111111111111 y"))], ..Default::default() }],
        ..Default::default()
    };
    let mut req = request(vec![kv("r", s("4111111111111111"))], span);
    let c = processor(CARD).apply(&mut req);
    assert_eq!(c.masked, 4);
    let res = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
    assert_eq!(get(res, "r"), Some(&s("****")));
    assert_eq!(get(res, "redaction.masked.keys"), Some(&s("r")));
    let sp = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(get(&sp.attributes, "a"), Some(&s("****")));
    assert_eq!(get(&sp.events[0].attributes, "b"), Some(&s("x ****")));
    assert_eq!(get(&sp.events[0].attributes, "redaction.masked.count"), Some(&int(1)));
    assert_eq!(get(&sp.links[0].attributes, "c"), Some(&s("**** y")));
    assert_eq!(get(&sp.links[0].attributes, "redaction.masked.keys"), Some(&s("c")));
}

// 11
#[test]
fn running_twice_merges() {
    let p = processor("allowed_keys: [id, n]\nblocked_values: ['4111']\nsummary: debug");
    let mut req = request(
        vec![],
        Span { attributes: vec![kv("id", int(1)), kv("b", s("x")), kv("n", s("4111"))], ..Default::default() },
    );
    p.apply(&mut req);
    let sp = &mut req.resource_spans[0].scope_spans[0].spans[0];
    sp.attributes.push(kv("a", s("y")));
    sp.attributes.push(kv("b", s("z")));
    sp.attributes.push(kv("m", s("4111")));
    let c = p.apply(&mut req);
    assert_eq!(c.deleted, 3); // a, b and m (m is not allowed)
    let out = &req.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(get(out, "redaction.redacted.keys"), Some(&s("a,b,m")));
    assert_eq!(get(out, "redaction.redacted.count"), Some(&int(4)));
    assert_eq!(get(out, "redaction.masked.keys"), Some(&s("n")));
    assert_eq!(get(out, "redaction.masked.count"), Some(&int(1)));
    // the summary attributes themselves survive the allow-list
    assert_eq!(out.iter().filter(|kv| kv.key.starts_with("redaction.")).count(), 4);
}

// 12
#[test]
fn config_errors() {
    let e = err("allow_all_keys: true\nhash_function: sha256\n");
    assert!(
        e.contains("hash_function: \"sha256\" is not supported; use one of md5, sha1, sha3, hmac-sha256, hmac-sha512"),
        "{e}"
    );
    assert!(e.contains("line 2"), "{e}");
    let e = err("blocked_values:\n  - ok\n  - '(unclosed'\n");
    assert!(e.contains("blocked_values[1]: bad regular expression"), "{e}");
    assert!(e.contains("line 3"), "{e}");
    for (yaml, want) in [
        ("hash_function: hmac-sha256", "hmac_key: is required"),
        ("summary: loud", "summary: \"loud\" is not one of debug, info, silent"),
        ("allowed_values: ['[']", "allowed_values[0]: bad regular expression"),
        ("blocked_key_patterns: ['(']", "blocked_key_patterns[0]"),
        ("ignored_key_patterns: ['(']", "ignored_key_patterns[0]"),
        ("allow_all: true", "unknown field `allow_all`"),
    ] {
        let e = err(yaml);
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

#[test]
fn collector_config_parses() {
    let cfg: RedactionConfig = serde_saphyr::from_str(
        r#"
allow_all_keys: false
allowed_keys: [description, group, id, name]
ignored_keys: [safe_attribute]
blocked_values:
  - "4[0-9]{12}(?:[0-9]{3})?"
  - "(5[1-5][0-9]{14})"
blocked_key_patterns: [".*token.*", ".*api_key.*"]
hash_function: md5
allowed_values: [".+@mycompany.com"]
summary: debug
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.hash_function, Some(HashFunction::Md5));
    assert_eq!(cfg.summary, Summary::Debug);
    assert_eq!(cfg.blocked_values.len(), 2);
    Redaction::new(&cfg).unwrap();
    let cfg: RedactionConfig = serde_saphyr::from_str("hash_function: ''\nallow_all_keys: true").unwrap();
    assert_eq!(cfg.hash_function, None);
}
