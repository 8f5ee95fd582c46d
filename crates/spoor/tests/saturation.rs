//! Sustained overload through the real binary: clients send flat out against a head small enough
//! that blocks cannot drain as fast as data arrives. The server must keep accepting a steady
//! share (no stretch without an acceptance longer than the retry hint it gives), refuse the rest
//! early with RESOURCE_EXHAUSTED/UNAVAILABLE (gRPC) or 429/503 (HTTP) and a retry hint, and keep
//! every span it acknowledged, also across kill -9.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use prost::Message;
use spoor_agent::client::{OtlpClient, Outcome, Transport};
use spoor_model::ids::hex;
use spoor_model::synth::{Rng, build_request};

#[derive(Default)]
struct Seen {
    /// When each acknowledged request was answered, from the start.
    accepted_at: Vec<Duration>,
    acked: HashMap<String, HashSet<String>>,
    /// (transport, code, retry hint) of each refusal.
    refusals: Vec<(&'static str, i32, Option<u64>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_server_keeps_accepting_a_steady_share_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        // Live traces may take 4 MiB; blocks are cut at 1 MiB: flat out, the flusher falls behind.
        ("SPOOR__LIMITS__MAX_LIVE_BYTES", "4194304"),
        ("SPOOR__BLOCKS__MAX_BLOCK_BYTES", "1048576"),
        ("SPOOR__COMPACTION__ENABLED", "false"),
    ];
    let mut s = Server::start(&dir.path().join("data"), &env);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let start = Instant::now();
    let run_for = Duration::from_secs(12);
    let mut tasks = Vec::new();
    for c in 0..6u64 {
        let (transport, name, url) = if c < 4 {
            (Transport::Grpc, "grpc", format!("http://{}", s.grpc))
        } else {
            (Transport::Http, "http", format!("http://{}", s.http))
        };
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let client = OtlpClient::new(transport, &url, None);
            let mut rng = Rng::new(100 + c);
            while start.elapsed() < run_for {
                let (request, ids) = build_request(&mut rng, 20, spoor_model::time::now_nanos());
                match client.export(Bytes::from(request.encode_to_vec())).await.expect("transport error") {
                    Outcome::Accepted { rejected, message } => {
                        assert_eq!(rejected, 0, "{message}");
                        let mut seen = seen.lock().unwrap();
                        seen.accepted_at.push(start.elapsed());
                        for (t, span) in ids {
                            seen.acked.entry(hex(&t)).or_default().insert(hex(&span));
                        }
                    }
                    Outcome::Refused { code, message, retry_after_secs } => {
                        seen.lock().unwrap().refusals.push((name, code, retry_after_secs));
                        assert!(message.contains("live_bytes_exceeded"), "unexpected refusal {code}: {message}");
                        // An SDK honours the hint; a short cap keeps the test brief.
                        let wait = Duration::from_secs(retry_after_secs.unwrap_or(1)).min(Duration::from_secs(1));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    let spans: usize = seen.acked.values().map(HashSet::len).sum();
    let mut at = seen.accepted_at.clone();
    at.sort();
    let longest_gap = at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default().max(at[0]);
    let longest_hint = seen.refusals.iter().filter_map(|r| r.2).max().unwrap_or(0);
    println!(
        "{} requests accepted ({spans} spans), {} refused; longest stretch without an acceptance {:?}, longest hint {longest_hint} s",
        at.len(),
        seen.refusals.len(),
        longest_gap
    );
    assert!(!seen.refusals.is_empty(), "the server never saturated; the test needs smaller limits");
    for (transport, code, hint) in &seen.refusals {
        let allowed: &[i32] = if *transport == "grpc" { &[8, 14] } else { &[429, 503] };
        assert!(allowed.contains(code), "{transport} refusal with code {code}");
        assert!(hint.is_some(), "{transport} refusal {code} without a retry hint");
    }
    // Generous slack for a loaded CI machine: the point is no collapse into long silence.
    assert!(
        longest_gap <= Duration::from_secs(longest_hint + 2),
        "no acceptance for {longest_gap:?} (retry hint {longest_hint} s)"
    );
    let refused =
        metric_sum(&request("GET", &s.api_url("/metrics"), &[], "").await.text(), "spoor_requests_refused_total");
    assert!(refused > 0.0, "early refusals are counted");

    s.kill9();
    s.spawn();
    s.wait_ready();
    assert_all_present_once(&s, &seen.acked).await;
}

/// Sum of a metric's samples over all label sets.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
