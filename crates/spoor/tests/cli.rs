//! The command line: configuration layering and start-up refusals, through the real binary.

mod common;

use std::process::Command;

use common::*;

fn spoor(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spoor")).args(args).envs(env.iter().copied()).output().unwrap()
}

#[test]
fn config_layers_file_env_and_flags() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.yaml");
    let out = spoor(
        &["config", "--config", example, "--data-dir", "/srv/spoor", "--http-listen", "127.0.0.1:9"],
        &[("SPOOR__LIMITS__MAX_LIVE_TRACES", "77"), ("SPOOR__WAL__DURABILITY", "os")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    for want in [
        "data_dir: /srv/spoor",
        "http_listen: 127.0.0.1:9",
        "max_live_traces: 77",
        "durability: os",
        "otlp_grpc_listen: 127.0.0.1:4317",
    ] {
        assert!(yaml.contains(want), "{want:?} missing from:\n{yaml}");
    }
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "server:\n  http_listen: 127.0.0.1:1\nlimits:\n  max_live_trace: 5\n").unwrap();
    let out = spoor(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_live_trace"), "{err}");
    let out = spoor(&["config"], &[("SPOOR__WAL__DURABILITY", "sometimes")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wal.durability") && err.contains("sometimes"), "{err}");
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let _first = Server::start(&data, &[]);
    let second = Server::unstarted(&data);
    let out = Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--otlp-grpc-listen", &second.grpc, "--otlp-http-listen", &second.http, "--http-listen", &second.api])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another spoor process"), "{err}");
}

fn spoor_query(args: &[&str]) -> (bool, String, String) {
    let out = spoor(&[&["query"], args].concat(), &[]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `(value of the series labelled resource.service.name=service, timestampMs)` of every
/// non-zero sample; zero samples depend on where `--since` put the grid, these do not.
fn nonzero(body: &serde_json::Value, service: &str) -> Vec<(String, f64)> {
    let series = body["series"].as_array().unwrap().iter().find(|s| {
        s["labels"][0]["key"] == "resource.service.name" && s["labels"][0]["value"]["stringValue"] == service
    });
    let samples = series.unwrap_or_else(|| panic!("no {service} series in {body}"))["samples"].as_array().unwrap();
    samples.iter().filter_map(|x| Some((x["timestampMs"].as_str().unwrap().to_owned(), x["value"].as_f64()?))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn spoor_query_answers_metrics_queries_from_a_server_and_from_blocks() {
    use serde_json::{Value, json};
    const S: u64 = 1_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let quiet = [("SPOOR__BLOCKS__MAX_BLOCK_AGE_SECS", "3600"), ("SPOOR__COMPACTION__ENABLED", "false")];
    let mut s = Server::start(dir.path(), &quiet);
    // Five minutes ago on a whole minute: two cart spans in one 1m bucket, a billing span in the next.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let base = (now - 300) / 60 * 60;
    let span = |trace: &str, id: &str, at: u64| {
        json!({ "traceId": trace, "spanId": id, "name": "op", "kind": 2,
            "startTimeUnixNano": (at * S).to_string(), "endTimeUnixNano": (at * S + 5_000_000).to_string() })
    };
    let resource = |service: &str, spans: Vec<Value>| {
        json!({ "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "spans": spans }] })
    };
    let body = json!({ "resourceSpans": [
        resource("cart", vec![span(&"a".repeat(32), "00000000000000a1", base + 10), span(&"b".repeat(32), "00000000000000b1", base + 20)]),
        resource("billing", vec![span(&"c".repeat(32), "00000000000000c1", base + 70)]),
    ]});
    let r = request("POST", &s.otlp_url("/v1/traces"), &[("content-type", "application/json")], body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let q = "{ } | count_over_time() by (resource.service.name)";
    let server = format!("http://{}", s.api);
    let range = ["--since", "1h", "--step", "1m"];
    // Buckets are right-closed and stamped with their end: base+60s holds cart's two spans.
    let (cart_at, billing_at) = (((base + 60) * 1000).to_string(), ((base + 120) * 1000).to_string());
    let (ok, out, err) = spoor_query(&[&["--server", &server, "--json", q], &range[..]].concat());
    assert!(ok, "{err}");
    let remote: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(remote["series"].as_array().unwrap().len(), 2, "{remote}");
    assert_eq!(nonzero(&remote, "cart"), [(cart_at.clone(), 2.0)]);
    assert_eq!(nonzero(&remote, "billing"), [(billing_at.clone(), 1.0)]);

    // The table: a block per series, the full time first and HH:MM:SS after, zeros as 0.
    let (ok, out, err) = spoor_query(&[&["--server", &server, q], &range[..]].concat());
    assert!(ok, "{err}");
    let hms = |t: u64| format!("{:02}:{:02}:{:02}", t % 86_400 / 3600, t % 3600 / 60, t % 60);
    let lines: Vec<&str> = out.lines().collect();
    let cart = lines.iter().position(|l| *l == "{resource.service.name=\"cart\"}").expect(&out);
    let first = lines[cart + 1].trim();
    let shape = |c: u8| if c.is_ascii_digit() { b'9' } else { c };
    assert_eq!(first.bytes().take(20).map(shape).collect::<Vec<_>>(), b"9999-99-99T99:99:99Z", "{out}");
    assert!(first.ends_with(" 0"), "{out}");
    let sample =
        |at: u64, v: &str| lines.iter().any(|l| l.trim_start().starts_with(&hms(at)) && l.ends_with(&format!(" {v}")));
    assert!(sample(base + 60, "2") && sample(base + 120, "1"), "{out}");
    assert!(lines.contains(&"{resource.service.name=\"billing\"}"), "{out}");
    assert!(out.trim_end().lines().last().unwrap().starts_with("2 series; "), "{out}");

    // Instant: one value per series over the whole hour.
    let (ok, out, err) = spoor_query(&["--server", &server, "--instant", "--since", "1h", q]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"{resource.service.name=\"cart\"}     2"), "{out}");
    assert!(lines.contains(&"{resource.service.name=\"billing\"}  1"), "{out}");
    let (ok, out, err) = spoor_query(&["--server", &server, "--instant", "--json", q]);
    assert!(ok, "{err}");
    let instant: Value = serde_json::from_str(&out).unwrap();
    let mut values: Vec<f64> =
        instant["series"].as_array().unwrap().iter().map(|s| s["value"].as_f64().unwrap()).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [1.0, 2.0], "{instant}");

    // The same answers straight from the blocks, with the server gone.
    let r = request("POST", &s.api_url("/flush"), &[], "").await;
    assert_eq!(r.status, 204, "{}", r.text());
    s.terminate();
    let data = dir.path().to_str().unwrap();
    let (ok, out, err) = spoor_query(&[&["--data-dir", data, "--json", q], &range[..]].concat());
    assert!(ok, "{err}");
    let local: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(nonzero(&local, "cart"), [(cart_at, 2.0)]);
    assert_eq!(nonzero(&local, "billing"), [(billing_at, 1.0)]);
    assert_eq!(local["metrics"]["totalJobs"], 1, "{local}");
    let (ok, out, err) = spoor_query(&[&["--data-dir", data, q], &range[..]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("{resource.service.name=\"cart\"}") && out.contains("1 of 1 blocks searched"), "{out}");
    let (ok, out, err) = spoor_query(&["--data-dir", data, "--instant", q]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "{resource.service.name=\"cart\"}     2"), "{out}");
    // A metrics-only flag on a search is refused by the metrics endpoint, not silently ignored.
    let (ok, _, err) = spoor_query(&["--data-dir", data, "--instant", "{ }"]);
    assert!(!ok && err.contains("not a metrics query"), "{err}");
}
