//! The exporter against scripted OTLP servers: retries, throttle hints, permanent errors,
//! deadlines, shutdown; and its configuration as the collector writes it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use http_body_util::BodyExt;
use prost::Message;
use spoor_model::otlp::{
    ExportTracePartialSuccess, ExportTraceServiceResponse, ProtoAny, ProtoDuration, RetryInfo, RpcStatus,
};

use spoor_server::config::agent::{ClientTlsConfig, ExportCompression, ExporterConfig, Protocol};
use spoor_server::retry::RetryConfig;

use super::*;

// ---- pure parts ----

fn refused(code: i32, retry_after_secs: Option<u64>) -> Result<Outcome, Error> {
    Ok(Outcome::Refused { code, message: "m".into(), retry_after_secs })
}

#[test]
fn classify_grpc() {
    let g = |o| classify(&o, Transport::Grpc);
    for code in [1, 4, 10, 11, 14, 15] {
        assert_eq!(g(refused(code, None)), Verdict::Retry { after: None }, "code {code}");
    }
    assert_eq!(g(refused(14, Some(2))), Verdict::Retry { after: Some(Duration::from_secs(2)) });
    assert_eq!(g(refused(8, Some(1))), Verdict::Retry { after: Some(Duration::from_secs(1)) });
    assert!(matches!(g(refused(8, None)), Verdict::Permanent(m) if m.contains("RESOURCE_EXHAUSTED")));
    for code in [2, 3, 5, 6, 7, 9, 12, 13, 16, 99] {
        assert!(matches!(g(refused(code, Some(1))), Verdict::Permanent(_)), "code {code}");
    }
    assert_eq!(g(Ok(Outcome::Accepted { rejected: 2, message: "x".into() })), Verdict::Delivered { rejected: 2 });
    assert_eq!(g(Err(Error::transport("refused"))), Verdict::Retry { after: None });
    assert!(matches!(g(Err(Error::internal("zstd"))), Verdict::Permanent(_)));
}

#[test]
fn classify_http() {
    let h = |o| classify(&o, Transport::Http);
    assert_eq!(h(refused(429, Some(3))), Verdict::Retry { after: Some(Duration::from_secs(3)) });
    assert_eq!(h(refused(503, Some(1))), Verdict::Retry { after: Some(Duration::from_secs(1)) });
    assert_eq!(h(refused(503, None)), Verdict::Retry { after: None });
    // Retry-After counts only on the throttling statuses.
    assert_eq!(h(refused(502, Some(9))), Verdict::Retry { after: None });
    assert_eq!(h(refused(504, None)), Verdict::Retry { after: None });
    for code in [400, 401, 403, 404, 413, 415, 500, 501] {
        assert!(matches!(h(refused(code, Some(1))), Verdict::Permanent(m) if m.starts_with(&format!("HTTP {code}"))));
    }
    assert_eq!(h(Ok(Outcome::Accepted { rejected: 0, message: String::new() })), Verdict::Delivered { rejected: 0 });
}

#[test]
fn config_collector_shape_and_defaults() {
    let yaml = "endpoint: backend-1:4317\nprotocol: http\ncompression: zstd\ntimeout: 2s\n\
                headers: {authorization: Bearer x}\n\
                retry_on_failure: {initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 0}\n";
    let c: ExporterConfig = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(c.protocol, Protocol::Http);
    assert_eq!(c.compression, ExportCompression::Zstd);
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert_eq!(c.headers["authorization"], "Bearer x");
    assert_eq!(c.retry_on_failure.initial_interval, Duration::from_millis(200));
    assert_eq!(c.retry_on_failure.max_elapsed_time, Duration::ZERO);
    assert_eq!(c.retry_on_failure.multiplier, 1.5);
    assert!(c.retry_on_failure.enabled);
    c.validate().unwrap();
    let d: ExporterConfig = serde_saphyr::from_str("endpoint: x:1\n").unwrap();
    assert_eq!(d, ExporterConfig { endpoint: "x:1".into(), ..ExporterConfig::default() });
    assert_eq!(d.compression, ExportCompression::Gzip);
    assert_eq!(d.retry_on_failure.initial_interval, Duration::from_secs(5));
    assert_eq!(d.retry_on_failure.max_elapsed_time, Duration::from_secs(300));
    // Round trip.
    let back: ExporterConfig = serde_saphyr::from_str(&serde_saphyr::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    assert!(serde_saphyr::from_str::<ExporterConfig>("endpont: x\n").is_err());
    assert!(serde_saphyr::from_str::<ExporterConfig>("compression: brotli\n").is_err());
}

#[test]
fn config_validation() {
    let ok = ExporterConfig { endpoint: "h:1".into(), ..ExporterConfig::default() };
    ok.validate().unwrap();
    let retry = |r: RetryConfig| ExporterConfig { retry_on_failure: r, ..ok.clone() }.validate();
    let d = RetryConfig::default();
    assert!(retry(RetryConfig { max_elapsed_time: Duration::from_secs(10), ..d.clone() }).is_err());
    assert!(retry(RetryConfig { max_elapsed_time: Duration::from_secs(2), ..d.clone() }).is_err());
    assert!(retry(RetryConfig { max_elapsed_time: Duration::ZERO, ..d.clone() }).is_ok());
    assert!(retry(RetryConfig { max_elapsed_time: Duration::from_secs(30), ..d.clone() }).is_ok());
    assert!(retry(RetryConfig { randomization_factor: 1.5, ..d.clone() }).is_err());
    assert!(retry(RetryConfig { multiplier: 0.0, ..d.clone() }).is_err());
    assert!(retry(RetryConfig { initial_interval: Duration::ZERO, ..d.clone() }).is_err());
    assert!(retry(RetryConfig { enabled: false, initial_interval: Duration::ZERO, ..d.clone() }).is_ok());
    let ep = |e: &str| ok.with_endpoint(e).base_url();
    assert_eq!(ep("h:1").unwrap(), "http://h:1");
    assert_eq!(ep("h").unwrap(), "http://h:4317");
    assert_eq!(
        ExporterConfig { protocol: Protocol::Http, ..ok.with_endpoint("h") }.base_url().unwrap(),
        "http://h:4318"
    );
    assert_eq!(ep("[::1]:4317").unwrap(), "http://[::1]:4317");
    assert_eq!(ep("[::1]").unwrap(), "http://[::1]:4317");
    assert_eq!(ep("http://h:4318/").unwrap(), "http://h:4318");
    assert_eq!(ep("https://h:4318").unwrap(), "https://h:4318");
    // Any tls key makes a bare host:port TLS, and contradicts an http:// endpoint.
    let tls =
        ExporterConfig { tls: ClientTlsConfig { insecure_skip_verify: true, ..Default::default() }, ..ok.clone() };
    assert_eq!(tls.with_endpoint("h:1").base_url().unwrap(), "https://h:1");
    assert!(tls.with_endpoint("http://h:1").base_url().unwrap_err().contains("plaintext but tls is set"));
    let half = ClientTlsConfig { cert_file: "c.pem".into(), ..Default::default() };
    assert!(ExporterConfig { tls: half, ..ok.clone() }.validate().unwrap_err().contains("go together"));
    assert!(ep("").is_err());
    assert!(ep("h:1/v1/traces").is_err());
    assert!(ExporterConfig { timeout: Duration::ZERO, ..ok.clone() }.validate().is_err());
    let bad_header = ExporterConfig { headers: [("bad name".into(), "v".into())].into(), ..ok.clone() };
    assert!(bad_header.validate().is_err());
    assert!(Exporter::new(bad_header).is_err());
}

// ---- against scripted servers ----

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    delay: Duration,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// gRPC OK: send the status in trailers after the body.
    grpc_ok: bool,
}

impl Reply {
    fn http(status: u16) -> Reply {
        Reply { delay: Duration::ZERO, status, headers: vec![], body: vec![], grpc_ok: false }
    }
    fn http_ok(rejected: i64) -> Reply {
        let resp = ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: format!("{rejected} spans had invalid span IDs"),
            }),
        };
        Reply { body: resp.encode_to_vec(), ..Reply::http(200) }.header("content-type", "application/x-protobuf")
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
    fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
    fn grpc_ok() -> Reply {
        Reply { grpc_ok: true, ..Reply::http(200) }
    }
    /// A trailers-only gRPC error, as `receive::grpc_error` answers.
    fn grpc_error(code: i32, retry_secs: Option<i64>) -> Reply {
        let mut r = Reply::http(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", "scripted%20error");
        if let Some(seconds) = retry_secs {
            let info = RetryInfo { retry_delay: Some(ProtoDuration { seconds, nanos: 0 }) };
            let status = RpcStatus {
                code,
                message: "scripted error".into(),
                details: vec![ProtoAny {
                    type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                    value: info.encode_to_vec(),
                }],
            };
            let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec());
            r = r.header("grpc-status-details-bin", b64);
        }
        r
    }
}

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    headers: hyper::HeaderMap,
    body_len: usize,
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    last: Mutex<Option<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

impl Script {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn gaps(&self) -> Vec<Duration> {
        self.seen().windows(2).map(|w| w[1].at - w[0].at).collect()
    }
}

async fn answer(State(script): State<Arc<Script>>, req: Request) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body_len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    script.seen.lock().unwrap().push(Seen { at, headers: parts.headers, body_len });
    // The last reply repeats once the script runs out.
    let reply = {
        let mut q = script.replies.lock().unwrap();
        let mut last = script.last.lock().unwrap();
        match q.pop_front() {
            Some(r) => {
                *last = Some(r.clone());
                r
            }
            None => last.clone().expect("empty script"),
        }
    };
    tokio::time::sleep(reply.delay).await;
    let mut b = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        b = b.header(*k, v);
    }
    if reply.grpc_ok {
        let mut frame = vec![0u8, 0, 0, 0, 0];
        frame.extend(ExportTraceServiceResponse::default().encode_to_vec());
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = futures_util::stream::iter([
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(frame))),
            Ok(http_body::Frame::trailers(trailers)),
        ]);
        return b
            .header("content-type", "application/grpc")
            .body(Body::new(http_body_util::StreamBody::new(frames)))
            .unwrap();
    }
    b.body(Body::from(reply.body)).unwrap()
}

/// Serves `replies` in order on 127.0.0.1; returns `host:port`.
async fn serve(replies: Vec<Reply>) -> (String, Arc<Script>) {
    let script = Arc::new(Script { replies: Mutex::new(replies.into()), ..Script::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().fallback(answer).with_state(script.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, script)
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        enabled: true,
        initial_interval: Duration::from_millis(20),
        multiplier: 1.5,
        randomization_factor: 0.0,
        max_interval: Duration::from_millis(100),
        max_elapsed_time: Duration::from_secs(10),
    }
}

fn exporter(endpoint: &str, protocol: Protocol, retry: RetryConfig) -> Exporter {
    Exporter::new(ExporterConfig {
        endpoint: endpoint.into(),
        protocol,
        compression: ExportCompression::None,
        timeout: Duration::from_secs(2),
        headers: BTreeMap::new(),
        retry_on_failure: retry,
        tls: Default::default(),
    })
    .unwrap()
}

fn no_stop() -> watch::Receiver<bool> {
    // The sender is dropped: never stops.
    watch::channel(false).1
}

fn body() -> Bytes {
    Bytes::from_static(b"")
}

#[tokio::test]
async fn http_429_retry_after_3_is_honoured() {
    let (addr, script) = serve(vec![Reply::http(429).header("retry-after", "3"), Reply::http_ok(0)]).await;
    let e = exporter(&addr, Protocol::Http, fast_retry());
    let d = e.send(body(), None, &no_stop()).await.unwrap();
    assert_eq!(d, Delivery { rejected_spans: 0, message: String::new(), attempts: 2 });
    let gap = script.gaps()[0];
    assert!(gap >= Duration::from_secs(3) && gap < Duration::from_millis(4500), "{gap:?}");
    let s = e.stats().snapshot();
    assert_eq!((s.attempts, s.retries, s.delivered), (2, 1, 1));
}

#[tokio::test]
async fn http_503_backs_off_with_growing_delays_capped_by_max_interval() {
    let retry = RetryConfig {
        initial_interval: Duration::from_millis(50),
        multiplier: 3.0,
        max_interval: Duration::from_millis(200),
        ..fast_retry()
    };
    let mut replies = vec![Reply::http(503); 5];
    replies.push(Reply::http_ok(0));
    let (addr, script) = serve(replies).await;
    let e = exporter(&addr, Protocol::Http, retry);
    let d = e.send(body(), None, &no_stop()).await.unwrap();
    assert_eq!(d.attempts, 6);
    let gaps = script.gaps();
    // 50, 150, 200 (450 uncapped), 200 (1350 uncapped), 200.
    let want = [50, 150, 200, 200, 200].map(Duration::from_millis);
    for (g, w) in gaps.iter().zip(want) {
        assert!(*g >= w && *g < w + Duration::from_millis(240), "{gaps:?}");
    }
    assert_eq!(e.stats().snapshot().retries, 5);
}

#[tokio::test]
async fn jittered_delays_stay_in_their_band() {
    let retry = RetryConfig {
        initial_interval: Duration::from_millis(100),
        multiplier: 1.0,
        randomization_factor: 0.5,
        max_interval: Duration::from_millis(1000),
        ..fast_retry()
    };
    let mut replies = vec![Reply::http(502); 4];
    replies.push(Reply::http_ok(0));
    let (addr, script) = serve(replies).await;
    exporter(&addr, Protocol::Http, retry).send(body(), None, &no_stop()).await.unwrap();
    for g in script.gaps() {
        assert!(g >= Duration::from_millis(50) && g < Duration::from_millis(150 + 150), "{g:?}");
    }
}

#[tokio::test]
async fn http_400_is_not_retried() {
    let (addr, script) = serve(vec![Reply::http(400)]).await;
    let e = exporter(&addr, Protocol::Http, fast_retry());
    let err = e.send(body(), None, &no_stop()).await.unwrap_err();
    assert!(matches!(&err, Failure::Permanent(m) if m.starts_with("HTTP 400")), "{err:?}");
    assert_eq!(script.seen().len(), 1);
    let s = e.stats().snapshot();
    assert_eq!((s.attempts, s.retries, s.failed_permanent), (1, 0, 1));
}

#[tokio::test]
async fn partial_success_is_delivered_not_retried() {
    let (addr, script) = serve(vec![Reply::http_ok(2), Reply::http(500)]).await;
    let e = exporter(&addr, Protocol::Http, fast_retry());
    let d = e.send(body(), None, &no_stop()).await.unwrap();
    assert_eq!(d.rejected_spans, 2);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.message, "2 spans had invalid span IDs");
    assert_eq!(script.seen().len(), 1);
    assert_eq!(e.stats().snapshot().rejected_spans, 2);
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    // A date 2 s ahead (whole seconds, so 1–2 s from now).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let date = imf_fixdate(now + 2);
    assert_eq!(spoor_model::time::parse_http_date(&date), Some(now + 2));
    let (addr, script) = serve(vec![Reply::http(503).header("retry-after", date), Reply::http_ok(0)]).await;
    let d = exporter(&addr, Protocol::Http, fast_retry()).send(body(), None, &no_stop()).await.unwrap();
    assert_eq!(d.attempts, 2);
    let gap = script.gaps()[0];
    assert!(gap >= Duration::from_secs(1) && gap < Duration::from_millis(3500), "{gap:?}");
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for seconds since the epoch.
fn imf_fixdate(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let (year, month, day) = spoor_model::time::civil_from_days(days);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!("{weekday}, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT", months[month as usize - 1])
}

#[tokio::test]
async fn grpc_resource_exhausted_needs_retry_info() {
    let (addr, script) = serve(vec![Reply::grpc_error(8, None)]).await;
    let err = exporter(&addr, Protocol::Grpc, fast_retry()).send(body(), None, &no_stop()).await.unwrap_err();
    assert!(matches!(&err, Failure::Permanent(m) if m.contains("RESOURCE_EXHAUSTED") && m.contains("scripted error")));
    assert_eq!(script.seen().len(), 1);

    let (addr, script) = serve(vec![Reply::grpc_error(8, Some(1)), Reply::grpc_ok()]).await;
    let d = exporter(&addr, Protocol::Grpc, fast_retry()).send(body(), None, &no_stop()).await.unwrap();
    assert_eq!(d.attempts, 2);
    let gap = script.gaps()[0];
    assert!(gap >= Duration::from_secs(1) && gap < Duration::from_millis(2500), "{gap:?}");
}

#[tokio::test]
async fn grpc_unavailable_is_retried_invalid_argument_is_not() {
    let (addr, script) = serve(vec![Reply::grpc_error(14, None), Reply::grpc_error(14, None), Reply::grpc_ok()]).await;
    let e = exporter(&addr, Protocol::Grpc, fast_retry());
    let d = e.send(body(), None, &no_stop()).await.unwrap();
    assert_eq!(d.attempts, 3);
    assert_eq!(script.seen().len(), 3);

    let (addr, script) = serve(vec![Reply::grpc_error(3, None), Reply::grpc_ok()]).await;
    let err = exporter(&addr, Protocol::Grpc, fast_retry()).send(body(), None, &no_stop()).await.unwrap_err();
    assert!(matches!(&err, Failure::Permanent(m) if m.contains("INVALID_ARGUMENT")), "{err:?}");
    assert_eq!(script.seen().len(), 1);
}

#[tokio::test]
async fn connection_refused_is_retried_then_given_up() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let retry = RetryConfig {
        initial_interval: Duration::from_millis(50),
        max_interval: Duration::from_millis(100),
        max_elapsed_time: Duration::from_millis(400),
        ..fast_retry()
    };
    let e = exporter(&addr, Protocol::Grpc, retry);
    let t = Instant::now();
    let err = e.send(body(), None, &no_stop()).await.unwrap_err();
    let Failure::GaveUp { attempts, elapsed, last } = &err else { panic!("{err:?}") };
    assert!(*attempts >= 4, "{err:?}");
    assert!(*elapsed <= Duration::from_millis(400) && t.elapsed() < Duration::from_secs(2), "{err:?}");
    assert!(last.contains("transport error"), "{last}");
    let s = e.stats().snapshot();
    assert_eq!((s.failed_gave_up, s.retries, s.attempts), (1, *attempts as u64 - 1, *attempts as u64));
}

#[tokio::test]
async fn connection_refused_then_server_comes_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let script = Arc::new(Script { replies: Mutex::new(vec![Reply::http_ok(0)].into()), ..Script::default() });
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        let _ = tx.send(script);
        axum::serve(listener, app).await
    });
    let e = exporter(&addr.to_string(), Protocol::Http, fast_retry());
    let d = e.send(body(), None, &no_stop()).await.unwrap();
    assert!(d.attempts >= 2, "{d:?}");
    assert_eq!(rx.await.unwrap().seen().len(), 1);
}

#[tokio::test]
async fn an_attempt_past_timeout_is_cut_off_and_retried() {
    let (addr, script) = serve(vec![Reply::http_ok(0).delayed(Duration::from_secs(5)), Reply::http_ok(0)]).await;
    let e = Exporter::new(ExporterConfig {
        timeout: Duration::from_millis(300),
        ..exporter(&addr, Protocol::Http, fast_retry()).config().clone()
    })
    .unwrap();
    let t = Instant::now();
    let d = e.send(body(), None, &no_stop()).await.unwrap();
    assert_eq!(d.attempts, 2);
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(script.seen().len(), 2);
    assert_eq!(e.stats().snapshot().timeouts, 1);
}

#[tokio::test]
async fn max_elapsed_time_gives_up() {
    let (addr, script) = serve(vec![Reply::http(503)]).await;
    let retry = RetryConfig {
        initial_interval: Duration::from_millis(50),
        max_interval: Duration::from_millis(100),
        max_elapsed_time: Duration::from_millis(400),
        ..fast_retry()
    };
    let e = exporter(&addr, Protocol::Http, retry);
    let t = Instant::now();
    let err = e.send(body(), None, &no_stop()).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
    let Failure::GaveUp { attempts, last, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*attempts as usize, script.seen().len());
    assert!(*attempts >= 4, "{err:?}");
    assert!(last.starts_with("HTTP 503"), "{last}");
    assert_eq!(e.stats().snapshot().failed_gave_up, 1);
    // A server hint past the deadline: give up at once rather than wait for nothing.
    let (addr, script) = serve(vec![Reply::http(429).header("retry-after", "60")]).await;
    let t = Instant::now();
    let err = exporter(&addr, Protocol::Http, fast_retry()).send(body(), None, &no_stop()).await.unwrap_err();
    assert!(matches!(err, Failure::GaveUp { attempts: 1, .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(script.seen().len(), 1);
}

#[tokio::test]
async fn retry_disabled_gives_up_after_one_attempt() {
    let (addr, script) = serve(vec![Reply::http(503)]).await;
    let retry = RetryConfig { enabled: false, ..fast_retry() };
    let err = exporter(&addr, Protocol::Http, retry).send(body(), None, &no_stop()).await.unwrap_err();
    assert!(matches!(err, Failure::GaveUp { attempts: 1, .. }), "{err:?}");
    assert_eq!(script.seen().len(), 1);
}

#[tokio::test]
async fn stop_ends_a_send_during_backoff_and_during_an_attempt() {
    let slow = RetryConfig {
        initial_interval: Duration::from_secs(20),
        max_interval: Duration::from_secs(30),
        max_elapsed_time: Duration::ZERO,
        ..fast_retry()
    };
    // During backoff.
    let (addr, _script) = serve(vec![Reply::http(503)]).await;
    let e = exporter(&addr, Protocol::Http, slow.clone());
    let (tx, rx) = watch::channel(false);
    let flip = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(true).unwrap();
        tx
    });
    let t = Instant::now();
    assert_eq!(e.send(body(), None, &rx).await, Err(Failure::Stopped));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(e.stats().snapshot().stopped, 1);
    // Already stopped: nothing sent.
    let tx = flip.await.unwrap();
    assert_eq!(e.send(body(), None, &rx).await, Err(Failure::Stopped));
    assert_eq!(e.stats().snapshot().attempts, 1);
    drop(tx);
    // During a slow attempt.
    let (addr, _script) = serve(vec![Reply::http_ok(0).delayed(Duration::from_secs(10))]).await;
    let e = exporter(&addr, Protocol::Http, slow);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tx.send(true);
    });
    let t = Instant::now();
    assert_eq!(e.send(body(), None, &rx).await, Err(Failure::Stopped));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn tenant_headers_and_compression_go_out() {
    for protocol in [Protocol::Http, Protocol::Grpc] {
        let ok = if protocol == Protocol::Http { Reply::http_ok(0) } else { Reply::grpc_ok() };
        let (addr, script) = serve(vec![ok]).await;
        let e = Exporter::new(ExporterConfig {
            endpoint: format!("http://{addr}"),
            protocol,
            compression: ExportCompression::Gzip,
            headers: [("x-scope-orgid".to_string(), "default".to_string()), ("x-extra".into(), "1".into())].into(),
            ..ExporterConfig::default()
        })
        .unwrap();
        let payload = Bytes::from(vec![b'a'; 10_000]);
        e.send(payload.clone(), Some("team-a"), &no_stop()).await.unwrap();
        e.send(payload, None, &no_stop()).await.unwrap();
        let seen = script.seen();
        let h = &seen[0].headers;
        assert_eq!(h.get_all("x-scope-orgid").iter().collect::<Vec<_>>(), ["team-a"]);
        assert_eq!(h["x-extra"], "1");
        let enc = if protocol == Protocol::Http { "content-encoding" } else { "grpc-encoding" };
        assert_eq!(h[enc], "gzip");
        assert!(seen[0].body_len < 1000, "compressed: {}", seen[0].body_len);
        assert_eq!(seen[1].headers["x-scope-orgid"], "default", "the configured header without a tenant");
    }
}
