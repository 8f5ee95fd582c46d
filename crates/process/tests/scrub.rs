//! Spoor's default scrubbing policy: each rule with hits and non-hits, idempotence, never
//! panicking, and `enabled: false`.

use proptest::prelude::*;
use spoor_model::otlp::{
    AnyValue, ArrayValue, Event, ExportTraceServiceRequest, KeyValue, KeyValueList, Link, Resource, ResourceSpans,
    ScopeSpans, Span, any_value::Value,
};
use spoor_process::Counts;
use spoor_process::scrub::{ScrubConfig, Scrubber, is_secret_key};

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}
fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }) }
}
fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: resource, dropped_attributes_count: 0 }),
            scope_spans: vec![ScopeSpans { scope: None, spans, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}
fn default() -> Scrubber {
    Scrubber::new(&ScrubConfig::default()).unwrap()
}
/// The value `key: value` ends up with under the default policy.
fn scrub(key: &str, value: &str) -> String {
    default().scrub_str(key, value).unwrap_or_else(|| value.to_owned())
}
fn sql(q: &str) -> String {
    scrub("db.statement", q)
}

#[test]
fn secret_keys_dropped() {
    for k in [
        "authorization",
        "Authorization",
        "proxy-authorization",
        "http.request.header.authorization",
        "http.request.header.proxy_authorization",
        "http.request.header.cookie",
        "http.response.header.set-cookie",
        "http.response.header.Set-Cookie",
        "HTTP_AUTHORIZATION",
        "cookie",
        "http.request.cookies",
        "db.password",
        "password",
        "user_password",
        "passwd",
        "db.pwd",
        "userPwd",
        "passphrase",
        "client_secret",
        "clientSecret",
        "app.secret",
        "aws.secret_access_key",
        "x-api-key",
        "http.request.header.x-api-key",
        "api_key",
        "apiKey",
        "APIKEY",
        "access_key",
        "aws.access_key_id",
        "private_key",
        "tls.private-key",
        "credentials",
        "gcp.credential",
        "session_id",
        "sessionId",
        "JSESSIONID",
        "PHPSESSID",
        "token",
        "access_token",
        "refreshToken",
        "oauth.id_token",
        "http.request.header.x-auth-token",
        "http.request.header.x-csrftoken",
        "github.token",
        "auth.jwt",
    ] {
        assert!(is_secret_key(k), "{k} should be dropped");
    }
}

#[test]
fn ordinary_keys_kept() {
    for k in [
        "http.request.method",
        "http.request.header.content-type",
        "http.request.header.accept",
        "http.response.status_code",
        "url.full",
        "user.id",
        "enduser.id",
        "session.id",
        "session.previous_id",
        "k8s.secret.name",
        "token_count",
        "tokens.used",
        "llm.token_count.prompt",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "token_type",
        "tokenizer",
        "auth.method",
        "key",
        "cache.key",
        "messaging.kafka.message.key",
        "db.statement",
        "process.command_line",
        "pw",
        "",
        ".",
        "token.",
    ] {
        assert!(!is_secret_key(k), "{k} should be kept");
    }
}

#[test]
fn drop_counts_and_extra_keys() {
    let cfg = ScrubConfig {
        drop_keys: vec!["user.email_hash".into()],
        drop_key_patterns: vec!["^internal\\.".into()],
        ..ScrubConfig::default()
    };
    let sc = Scrubber::new(&cfg).unwrap();
    let mut req = request(
        vec![kv("service.name", s("a")), kv("db.password", s("x"))],
        vec![Span {
            attributes: vec![
                kv("http.request.header.authorization", s("Bearer abc")),
                kv("User.Email_Hash", s("abc")),
                kv("internal.debug", s("1")),
                kv("my.internal.flag", s("1")),
                kv("http.route", s("/x")),
            ],
            ..Default::default()
        }],
    );
    let c = sc.apply(&mut req);
    assert_eq!(c, Counts { deleted: 4, ..Counts::default() });
    assert_eq!(req.resource_spans[0].resource.as_ref().unwrap().attributes, vec![kv("service.name", s("a"))]);
    assert_eq!(
        req.resource_spans[0].scope_spans[0].spans[0].attributes,
        vec![kv("my.internal.flag", s("1")), kv("http.route", s("/x"))]
    );
    assert!(
        Scrubber::new(&ScrubConfig { drop_key_patterns: vec!["(".into()], ..ScrubConfig::default() })
            .unwrap_err()
            .to_string()
            .starts_with("drop_key_patterns[0]: bad regular expression")
    );
}

#[test]
fn card_numbers() {
    for (v, want) in [
        ("4111111111111111", "****"),
        ("card 4111111111111111 ok", "card **** ok"),
        ("4111 1111 1111 1111", "****"),
        ("4111-1111-1111-1111 exp 12/27", "**** exp 12/27"),
        ("mc=5555555555554444;", "mc=****;"),
        ("amex 3782 822463 10005", "amex ****"),
        ("discover 6011111111111117", "discover ****"),
        ("mc2 2223003122003222", "mc2 ****"),
        ("diners 36227206271667", "diners ****"),
        ("two: 4111111111111111, 4012888888881881.", "two: ****, ****."),
        ("order 12 4111 1111 1111 1111", "order 12 ****"),
        ("x 4111111111111111 4012888888881881 7", "x **** **** 7"),
    ] {
        assert_eq!(scrub("note", v), want, "{v}");
    }
    for v in [
        "4111111111111112",     // Luhn fails
        "4000123456789000",     // Luhn fails
        "1712345678907",        // epoch millis: Luhn passes, but no card starts with 1
        "1712345678901234567",  // epoch nanos
        "user4111111111111111", // glued to a word
        "4111111111111111abc",
        "id_4111111111111111",
        "4111  1111 1111 1111",        // double space: not one number
        "411111111111111111111111111", // 27 digits: an ID
        "123e4567-e89b-12d3-a456-426614174000",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "411111111111111", // 15 digits starting with 4: no such Visa length
        "2023-10-11 12:13:14.123456789",
        "3.14159265358979323846",
    ] {
        assert_eq!(scrub("note", v), v, "{v}");
    }
}

#[test]
fn card_masking_off() {
    let sc = Scrubber::new(&ScrubConfig { mask_card_numbers: false, ..ScrubConfig::default() }).unwrap();
    assert_eq!(sc.scrub_str("n", "4111111111111111"), None);
}

#[test]
fn emails() {
    for (v, want) in [
        ("bob@example.com", "****@****"),
        ("contact bob.smith+tag@mail.example.co.uk please", "contact ****@**** please"),
        ("to=<a_b@x-y.io>, cc=c@d.org", "to=<****@****>, cc=****@****"),
        ("user 4111111111111111@bank.com", "user ****@****"),
    ] {
        assert_eq!(scrub("user.email", v), want, "{v}");
    }
    for v in [
        "lodash@4.17.21",
        "image@sha256:0123abcd",
        "@app.route('/')",
        "java.lang.Object@6d06d69c",
        "at sign @ alone",
        "a@b",
        "****@****",
    ] {
        assert_eq!(scrub("msg", v), v, "{v}");
    }
    let sc = Scrubber::new(&ScrubConfig { mask_emails: false, ..ScrubConfig::default() }).unwrap();
    assert_eq!(sc.scrub_str("n", "bob@example.com"), None);
}

#[test]
fn sql_literals() {
    for (q, want) in [
        ("SELECT * FROM users WHERE id = 42 AND name = 'bob'", "SELECT * FROM users WHERE id = ? AND name = ?"),
        ("SELECT a FROM t WHERE x IN (1, 2, 3)", "SELECT a FROM t WHERE x IN (?, ?, ?)"),
        ("SELECT t1.col_2 FROM t1 JOIN t2 ON t1.id = t2.id", "SELECT t1.col_2 FROM t1 JOIN t2 ON t1.id = t2.id"),
        (
            "SELECT * FROM t WHERE a = $1 AND b = ? AND c = :name AND d = :1 AND e = @p1",
            "SELECT * FROM t WHERE a = $1 AND b = ? AND c = :name AND d = :1 AND e = @p1",
        ),
        ("UPDATE t SET note = 'it''s 42' WHERE id = 7", "UPDATE t SET note = ? WHERE id = ?"),
        (
            "INSERT INTO t VALUES ('a\\'b', -3.5e10, .5, 0x1F, X'0A', E'x\\ny', N'ü')",
            "INSERT INTO t VALUES (?, -?, ?, ?, ?, ?, ?)",
        ),
        ("SELECT $$ secret body $$, $fn$ a 'b' $fn$, 1", "SELECT ?, ?, ?"),
        ("SELECT \"Col 1\", `col 2` FROM \"T3\" WHERE v = 3", "SELECT \"Col 1\", `col 2` FROM \"T3\" WHERE v = ?"),
        (
            "SELECT 1 -- comment with 'quote' and 42\nFROM t /* 7 'x' */ WHERE a=2",
            "SELECT ? -- comment with 'quote' and 42\nFROM t /* 7 'x' */ WHERE a=?",
        ),
        ("SELECT '1'::int, arr[3]", "SELECT ?::int, arr[?]"),
        ("SELECT * FROM t WHERE name = 'unterminated AND id = 4", "SELECT * FROM t WHERE name = ?"),
        ("SELECT id FROM users LIMIT 10 OFFSET 20", "SELECT id FROM users LIMIT ? OFFSET ?"),
    ] {
        assert_eq!(sql(q), want, "{q}");
    }
    // no literal → untouched (and not reallocated)
    assert_eq!(default().scrub_str("db.statement", "SELECT a FROM t WHERE b = $1"), None);
    assert_eq!(scrub("db.query.text", "SELECT 1"), "SELECT ?");
    // other keys are not SQL
    assert_eq!(scrub("db.operation", "SELECT 1"), "SELECT 1");
    let sc = Scrubber::new(&ScrubConfig { sanitize_db_statement: false, ..ScrubConfig::default() }).unwrap();
    assert_eq!(sc.scrub_str("db.statement", "SELECT 1"), None);
}

#[test]
fn url_credentials() {
    for (k, v, want) in [
        ("url.full", "https://user:pass@host/", "https://****@host/"),
        ("url.full", "https://user@host:8443/p", "https://****@host:8443/p"),
        ("db.connection_string", "postgres://admin:p@ss@db:5432/app", "postgres://****@db:5432/app"),
        (
            "http.url",
            "https://x/cb?page=2&access_token=abc&key=k1#frag",
            "https://x/cb?page=2&access_token=****&key=****#frag",
        ),
        (
            "url.full",
            "https://b.s3.amazonaws.com/o?X-Amz-Credential=AK%2F1&X-Amz-Signature=abcd&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/o?X-Amz-Credential=****&X-Amz-Signature=****&X-Amz-Expires=60",
        ),
        ("url.original", "https://a.blob/c?sv=1&sig=xyz", "https://a.blob/c?sv=1&sig=****"),
        ("exception.message", "GET https://u:p@h/x?token=t failed", "GET https://****@h/x?token=**** failed"),
        ("url.query", "q=otel&api_key=zzz&password=", "q=otel&api_key=****&password="),
        ("http.target", "/login?user=bob&password=hunter2", "/login?user=bob&password=****"),
        ("note", "see https://h/a and ftp://me:pw@files/x", "see https://h/a and ftp://****@files/x"),
    ] {
        assert_eq!(scrub(k, v), want, "{v}");
    }
    for (k, v) in [
        ("url.full", "https://host/path?page=2&sort=asc"),
        ("url.full", "https://****@host/"),
        ("url.full", "https://@host/"),
        ("server.address", "host:8080"),
        ("note", "ratio 3:1 at 12:30"),
        ("url.query", "q=token&page=2"),
        ("note", "://@"),
        ("note", "x?token=abc"), // not a URL, not a URL key
    ] {
        assert_eq!(scrub(k, v), v, "{v}");
    }
    let sc = Scrubber::new(&ScrubConfig { sanitize_url_credentials: false, ..ScrubConfig::default() }).unwrap();
    assert_eq!(sc.scrub_str("url.full", "https://u:p@h/"), None);
}

#[test]
fn rules_combine_and_count() {
    let mut sp = Span {
        attributes: vec![
            kv("db.statement", s("SELECT * FROM u WHERE email = 'bob@example.com' AND card = '4111111111111111'")),
            kv(
                "tags",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue { value: Some(s("bob@example.com")) },
                        AnyValue { value: Some(s("plain")) },
                        AnyValue { value: Some(s("4111111111111111")) },
                    ],
                }),
            ),
            kv(
                "ctx",
                Value::KvlistValue(KeyValueList { values: vec![kv("api_key", s("k")), kv("mail", s("a@b.io"))] }),
            ),
            kv("count", Value::IntValue(4111111111111111)),
        ],
        ..Default::default()
    };
    sp.events = vec![Event {
        name: "log".into(),
        attributes: vec![kv("message", s("mail bob@example.com"))],
        ..Default::default()
    }];
    sp.links = vec![Link { attributes: vec![kv("token", s("t")), kv("u", s("https://a:b@h"))], ..Default::default() }];
    let mut req = request(vec![kv("owner", s("team@example.com"))], vec![sp]);
    let c = default().apply(&mut req);
    // masked: db.statement, 2 list elements, ctx.mail, event message, link url, resource owner
    assert_eq!(c, Counts { deleted: 2, masked: 7, ..Counts::default() });
    let sp = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(sp.attributes[0], kv("db.statement", s("SELECT * FROM u WHERE email = ? AND card = ?")));
    assert_eq!(
        sp.attributes[1],
        kv(
            "tags",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue { value: Some(s("****@****")) },
                    AnyValue { value: Some(s("plain")) },
                    AnyValue { value: Some(s("****")) },
                ]
            })
        )
    );
    assert_eq!(
        sp.attributes[2],
        kv("ctx", Value::KvlistValue(KeyValueList { values: vec![kv("mail", s("****@****"))] }))
    );
    // only string values are inspected
    assert_eq!(sp.attributes[3], kv("count", Value::IntValue(4111111111111111)));
    assert_eq!(sp.events[0].attributes, vec![kv("message", s("mail ****@****"))]);
    assert_eq!(sp.links[0].attributes, vec![kv("u", s("https://****@h"))]);
    assert_eq!(req.resource_spans[0].resource.as_ref().unwrap().attributes, vec![kv("owner", s("****@****"))]);
}

fn messy() -> ExportTraceServiceRequest {
    let (mut req, _) =
        spoor_model::synth::build_request(&mut spoor_model::synth::Rng::new(7), 3, 1_700_000_000_000_000_000);
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for sp in &mut ss.spans {
                sp.attributes.extend([
                    kv("http.request.header.authorization", s("Bearer x")),
                    kv("user.email", s("Bob <bob@example.com>")),
                    kv("payment.note", s("card 4111 1111 1111 1111 charged")),
                    kv("db.statement", s("SELECT * FROM users WHERE id = 42 AND name = 'bob'")),
                    kv("url.full", s("https://u:p@api.example.com/v1?access_token=abc&page=2")),
                ]);
            }
        }
    }
    req
}

#[test]
fn idempotent() {
    let sc = default();
    let mut once = messy();
    let c1 = sc.apply(&mut once);
    assert!(c1.deleted > 0 && c1.masked > 0);
    let mut twice = once.clone();
    let c2 = sc.apply(&mut twice);
    assert_eq!(once, twice);
    assert_eq!(c2, Counts::default());
}

#[test]
fn disabled_changes_nothing() {
    let sc = Scrubber::new(&ScrubConfig { enabled: false, ..ScrubConfig::default() }).unwrap();
    let mut req = messy();
    let before = req.clone();
    assert_eq!(sc.apply(&mut req), Counts::default());
    assert_eq!(req, before);
}

#[test]
fn synthetic_traffic_is_left_alone() {
    let (mut req, _) =
        spoor_model::synth::build_request(&mut spoor_model::synth::Rng::new(1), 20, 1_700_000_000_000_000_000);
    let before = req.clone();
    assert_eq!(default().apply(&mut req), Counts::default());
    assert_eq!(req, before);
}

#[test]
fn config_yaml() {
    let cfg: ScrubConfig = serde_saphyr::from_str("mask_emails: false\ndrop_keys: [x]\n").unwrap();
    assert_eq!(cfg, ScrubConfig { mask_emails: false, drop_keys: vec!["x".into()], ..ScrubConfig::default() });
    let cfg: ScrubConfig = serde_saphyr::from_str("{}").unwrap();
    assert_eq!(cfg, ScrubConfig::default());
    assert!(cfg.enabled);
    let e = serde_saphyr::from_str::<ScrubConfig>("mask_phone: true\n").unwrap_err().to_string();
    assert!(e.contains("unknown field `mask_phone`"), "{e}");
    let json = serde_json::to_string(&ScrubConfig::default()).unwrap();
    assert!(json.contains("\"enabled\":true"), "{json}");
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ 0-9a-z@:/?&=.'\"$_*-]{0,60}",
        "(https?://[a-z:@]{0,8}/[a-z]{0,4}\\?[a-z_]{1,8}=[a-z0-9]{0,4}|[0-9]{4}[ -]?|[a-z.]{1,6}@[a-z]{1,5}\\.[a-z]{2,3}| |'|\\$\\$|[0-9.e]{1,4}){0,8}",
    ]
}

proptest! {
    #[test]
    fn never_panics_and_is_idempotent(key in prop_oneof![
        Just("db.statement".to_string()), Just("url.query".to_string()), Just("http.target".to_string()),
        Just("note".to_string()), any::<String>(),
    ], value in text()) {
        let sc = default();
        let _ = is_secret_key(&key);
        let once = sc.scrub_str(&key, &value).unwrap_or_else(|| value.clone());
        let twice = sc.scrub_str(&key, &once);
        prop_assert_eq!(twice, None, "{:?} → {:?}", value, once);
        let mut req = request(vec![kv(&key, s(&value))], vec![Span { attributes: vec![kv(&value, s(&key))], ..Default::default() }]);
        sc.apply(&mut req);
    }
}
