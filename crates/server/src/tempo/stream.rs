//! Tempo's streaming gRPC API (`tempopb.StreamingQuerier`) on the API port: Grafana's Tempo
//! data source uses it for search, tag names and values, and TraceQL metrics once buildinfo
//! says Tempo 2.2 or later. Each RPC runs the HTTP route's own code on the query string its
//! request stands for and sends that route's JSON answer as the message Tempo's protobuf
//! defines, so the two APIs answer alike by construction. Search sends the answer so far after
//! the live traces and after each wave of blocks, then the whole answer.
//!
//! Auth and tenancy are the HTTP routes' (the guard gives these paths the read role; a token
//! with a `mask` or a `spans` filter is refused them, as every route that does not apply
//! those, hence the `None` span filter below).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use prost::Message;
use serde_json::Value as Json;
use spoor_model::otlp::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::ingest::receive::grpc_error;
use crate::tempo::json::search_json;
use crate::tempo::reader::Reader;
use crate::tempo::{metrics_query, search, tags};

/// The service's path prefix; the method follows it.
pub const SERVICE: &str = "/tempopb.StreamingQuerier/";

const METHODS: [&str; 7] = [
    "Search",
    "SearchTags",
    "SearchTagsV2",
    "SearchTagValues",
    "SearchTagValuesV2",
    "MetricsQueryRange",
    "MetricsQueryInstant",
];

type Frame = http_body::Frame<Bytes>;

/// Refusals known before the RPC runs are trailers-only responses; once it runs, messages are
/// sent as they come and the status ends the stream in the trailers.
pub async fn handler(
    State(r): State<Arc<Reader>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = (|| {
        let bytes = message(&headers, &body)?;
        let tenants = r.tenants(&headers)?;
        if !METHODS.contains(&method.as_str()) {
            return Err(Error::unsupported(format!("tempopb.StreamingQuerier has no method {method:?}")));
        }
        Ok((bytes, tenants))
    })();
    let (bytes, tenants) = match started {
        Ok(x) => x,
        Err(e) => return grpc_error(&e),
    };
    let (tx, rx) = mpsc::channel::<Frame>(8);
    tokio::spawn(async move {
        let mut trailers = HeaderMap::new();
        match run(&r, &method, &headers, &tenants, &bytes, &tx).await {
            Ok(()) => trailers.insert("grpc-status", HeaderValue::from(0)),
            Err(e) => {
                if let Ok(m) = HeaderValue::from_str(&crate::http::percent_encode(&e.to_string())) {
                    trailers.insert("grpc-message", m);
                }
                trailers.insert("grpc-status", HeaderValue::from(e.grpc_code()))
            }
        };
        let _ = tx.send(Frame::trailers(trailers)).await;
    });
    let frames =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (Ok::<_, Infallible>(f), rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(Body::new(http_body_util::StreamBody::new(frames)))
        .unwrap_or_default()
}

/// The request's one message, unframed.
fn message(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Error> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return Err(Error::unsupported_media_type(format!("content-type {content_type:?} is not application/grpc")));
    }
    if body.len() < 5 {
        return Err(Error::bad_request("gRPC message frame shorter than its 5-byte header"));
    }
    if body[0] != 0 {
        return Err(Error::unsupported("compressed gRPC requests are not supported by the streaming API"));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() - 5 != len {
        return Err(Error::bad_request(format!("gRPC frame says {len} bytes, body holds {}", body.len() - 5)));
    }
    Ok(body[5..].to_vec())
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, Error> {
    M::decode(bytes).map_err(|e| Error::bad_request(format!("invalid request message: {e}")))
}

/// One message, framed.
fn frame(m: &impl Message) -> Frame {
    let m = m.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + m.len());
    framed.push(0);
    framed.extend_from_slice(&(m.len() as u32).to_be_bytes());
    framed.extend_from_slice(&m);
    Frame::data(Bytes::from(framed))
}

/// Runs one RPC, sending its messages on `tx`.
async fn run(
    r: &Reader,
    method: &str,
    headers: &HeaderMap,
    tenants: &[String],
    bytes: &[u8],
    tx: &mpsc::Sender<Frame>,
) -> Result<(), Error> {
    let answer = match method {
        "Search" => {
            let req: SearchRequest = decode(bytes)?;
            let raw = search_query(&req);
            let partial = tx.clone();
            let mut progress = move |found| {
                // A slow client misses intermediate answers, never the last one.
                let _ = partial.try_send(frame(&SearchResponse::of(&search_json(&found))));
            };
            let found = search::search_progressively(r, tenants, &raw, Some(&mut progress)).await?;
            frame(&SearchResponse::of(&search_json(&found)))
        }
        "SearchTags" | "SearchTagsV2" => {
            let req: SearchTagsRequest = decode(bytes)?;
            let raw = query_string(&[
                ("scope", req.scope.clone()),
                ("q", req.query.clone()),
                ("start", nonzero(req.start)),
                ("end", nonzero(req.end)),
                ("limit", nonzero(req.max_tags_per_scope)),
            ]);
            if method == "SearchTagsV2" {
                frame(&SearchTagsV2Response::of(&tags::names(r, headers, &raw, 2, None).await?))
            } else {
                frame(&SearchTagsResponse::of(&tags::names(r, headers, &raw, 1, None).await?))
            }
        }
        "SearchTagValues" | "SearchTagValuesV2" => {
            let req: SearchTagValuesRequest = decode(bytes)?;
            let raw = query_string(&[
                ("q", req.query.clone()),
                ("start", nonzero(req.start)),
                ("end", nonzero(req.end)),
                ("limit", nonzero(req.max_tag_values)),
            ]);
            if method == "SearchTagValuesV2" {
                frame(&SearchTagValuesV2Response::of(&tags::values(r, headers, &req.tag_name, &raw, 2, None).await?))
            } else {
                frame(&SearchTagValuesResponse::of(&tags::values(r, headers, &req.tag_name, &raw, 1, None).await?))
            }
        }
        "MetricsQueryRange" => {
            let req: QueryRangeRequest = decode(bytes)?;
            let raw = query_string(&[
                ("q", req.query.clone()),
                ("start", nonzero(req.start)),
                ("end", nonzero(req.end)),
                ("step", if req.step == 0 { String::new() } else { format!("{}ns", req.step) }),
                ("exemplars", nonzero(req.exemplars)),
            ]);
            frame(&QueryRangeResponse::of(&metrics_query::query(r, tenants, &raw, false).await?.json()))
        }
        _ => {
            let req: QueryInstantRequest = decode(bytes)?;
            let raw =
                query_string(&[("q", req.query.clone()), ("start", nonzero(req.start)), ("end", nonzero(req.end))]);
            frame(&QueryInstantResponse::of(&metrics_query::query(r, tenants, &raw, true).await?.json()))
        }
    };
    // A client that went away is no error of the query's.
    let _ = tx.send(answer).await;
    Ok(())
}

fn nonzero(n: impl Into<u64>) -> String {
    match n.into() {
        0 => String::new(),
        n => n.to_string(),
    }
}

/// `k=v&...` for the non-empty values, percent-encoded.
fn query_string(params: &[(&str, String)]) -> String {
    params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", crate::http::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A search request as `/api/search`'s query string: TraceQL, or the legacy tags.
fn search_query(req: &SearchRequest) -> String {
    let mut tags: Vec<(&String, &String)> = req.tags.iter().collect();
    tags.sort();
    let logfmt: Vec<String> =
        tags.iter().map(|(k, v)| format!("{k}={}", serde_json::Value::String((*v).clone()))).collect();
    let ms = |v: u32| if v == 0 { String::new() } else { format!("{v}ms") };
    query_string(&[
        ("q", req.query.clone()),
        ("tags", logfmt.join(" ")),
        ("minDuration", ms(req.min_duration_ms)),
        ("maxDuration", ms(req.max_duration_ms)),
        ("limit", nonzero(req.limit)),
        ("start", nonzero(req.start)),
        ("end", nonzero(req.end)),
        ("spss", nonzero(req.spans_per_span_set)),
    ])
}

// ---- from the HTTP answers' JSON (protobuf's JSON mapping) to the messages ----

fn s(v: &Json) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A number that protobuf JSON writes as a number or (64-bit) as a string.
fn n(v: &Json) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

fn f(v: &Json) -> f64 {
    match v {
        Json::String(s) if s == "NaN" => f64::NAN,
        Json::String(s) => s.parse().unwrap_or(0.0),
        v => v.as_f64().unwrap_or(0.0),
    }
}

fn list(v: &Json) -> impl Iterator<Item = &Json> {
    v.as_array().map(|a| a.as_slice()).unwrap_or_default().iter()
}

fn strings(v: &Json) -> Vec<String> {
    list(v).map(s).collect()
}

fn any_value(v: &Json) -> AnyValue {
    use any_value::Value as V;
    let value = if let Some(x) = v.get("stringValue") {
        Some(V::StringValue(s(x)))
    } else if let Some(x) = v.get("boolValue") {
        Some(V::BoolValue(x.as_bool().unwrap_or(false)))
    } else if let Some(x) = v.get("intValue") {
        Some(V::IntValue(x.as_i64().or_else(|| x.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)))
    } else if let Some(x) = v.get("doubleValue") {
        Some(V::DoubleValue(f(x)))
    } else if let Some(x) = v.get("arrayValue") {
        Some(V::ArrayValue(ArrayValue { values: list(&x["values"]).map(any_value).collect() }))
    } else {
        v.get("kvlistValue").map(|x| V::KvlistValue(KeyValueList { values: key_values(&x["values"]) }))
    };
    AnyValue { value }
}

fn key_values(v: &Json) -> Vec<KeyValue> {
    list(v).map(|kv| KeyValue { key: s(&kv["key"]), value: Some(any_value(&kv["value"])) }).collect()
}

fn search_metrics(m: &Json) -> Option<SearchMetrics> {
    Some(SearchMetrics {
        inspected_traces: n(&m["inspectedTraces"]) as u32,
        inspected_bytes: n(&m["inspectedBytes"]),
        total_blocks: n(&m["totalBlocks"]) as u32,
        completed_jobs: n(&m["completedJobs"]) as u32,
        total_jobs: n(&m["totalJobs"]) as u32,
        total_block_bytes: n(&m["totalBlockBytes"]),
        inspected_spans: n(&m["inspectedSpans"]),
    })
}

fn partial_status(j: &Json) -> (i32, String) {
    (i32::from(j["status"].as_str() == Some("PARTIAL")), s(&j["message"]))
}

// ---- the messages (tempopb, field numbers as Tempo's protobuf defines them) ----

#[derive(Clone, PartialEq, Message)]
pub struct SearchRequest {
    #[prost(map = "string, string", tag = "1")]
    pub tags: HashMap<String, String>,
    #[prost(uint32, tag = "2")]
    pub min_duration_ms: u32,
    #[prost(uint32, tag = "3")]
    pub max_duration_ms: u32,
    #[prost(uint32, tag = "4")]
    pub limit: u32,
    #[prost(uint32, tag = "5")]
    pub start: u32,
    #[prost(uint32, tag = "6")]
    pub end: u32,
    #[prost(string, tag = "8")]
    pub query: String,
    #[prost(uint32, tag = "9")]
    pub spans_per_span_set: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchResponse {
    #[prost(message, repeated, tag = "1")]
    pub traces: Vec<TraceSearchMetadata>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
}

impl SearchResponse {
    fn of(j: &Json) -> SearchResponse {
        let traces = list(&j["traces"])
            .map(|t| TraceSearchMetadata {
                trace_id: s(&t["traceID"]),
                root_service_name: s(&t["rootServiceName"]),
                root_trace_name: s(&t["rootTraceName"]),
                start_time_unix_nano: n(&t["startTimeUnixNano"]),
                duration_ms: n(&t["durationMs"]) as u32,
                span_set: t.get("spanSet").map(span_set),
                span_sets: list(&t["spanSets"]).map(span_set).collect(),
                service_stats: t["serviceStats"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                let stats = ServiceStats {
                                    span_count: n(&v["spanCount"]) as u32,
                                    error_count: n(&v["errorCount"]) as u32,
                                };
                                (k.clone(), stats)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        SearchResponse { traces, metrics: search_metrics(&j["metrics"]) }
    }
}

fn span_set(j: &Json) -> SpanSet {
    SpanSet {
        spans: list(&j["spans"])
            .map(|sp| Span {
                span_id: s(&sp["spanID"]),
                name: s(&sp["name"]),
                start_time_unix_nano: n(&sp["startTimeUnixNano"]),
                duration_nanos: n(&sp["durationNanos"]),
                attributes: key_values(&sp["attributes"]),
            })
            .collect(),
        matched: n(&j["matched"]) as u32,
        attributes: key_values(&j["attributes"]),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct TraceSearchMetadata {
    #[prost(string, tag = "1")]
    pub trace_id: String,
    #[prost(string, tag = "2")]
    pub root_service_name: String,
    #[prost(string, tag = "3")]
    pub root_trace_name: String,
    #[prost(uint64, tag = "4")]
    pub start_time_unix_nano: u64,
    #[prost(uint32, tag = "5")]
    pub duration_ms: u32,
    #[prost(message, optional, tag = "6")]
    pub span_set: Option<SpanSet>,
    #[prost(message, repeated, tag = "7")]
    pub span_sets: Vec<SpanSet>,
    #[prost(map = "string, message", tag = "8")]
    pub service_stats: HashMap<String, ServiceStats>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ServiceStats {
    #[prost(uint32, tag = "1")]
    pub span_count: u32,
    #[prost(uint32, tag = "2")]
    pub error_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct SpanSet {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    #[prost(uint32, tag = "2")]
    pub matched: u32,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(string, tag = "1")]
    pub span_id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(uint64, tag = "3")]
    pub start_time_unix_nano: u64,
    #[prost(uint64, tag = "4")]
    pub duration_nanos: u64,
    #[prost(message, repeated, tag = "5")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchMetrics {
    #[prost(uint32, tag = "1")]
    pub inspected_traces: u32,
    #[prost(uint64, tag = "2")]
    pub inspected_bytes: u64,
    #[prost(uint32, tag = "3")]
    pub total_blocks: u32,
    #[prost(uint32, tag = "4")]
    pub completed_jobs: u32,
    #[prost(uint32, tag = "5")]
    pub total_jobs: u32,
    #[prost(uint64, tag = "6")]
    pub total_block_bytes: u64,
    #[prost(uint64, tag = "7")]
    pub inspected_spans: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchTagsRequest {
    #[prost(string, tag = "1")]
    pub scope: String,
    #[prost(string, tag = "2")]
    pub query: String,
    #[prost(uint32, tag = "3")]
    pub start: u32,
    #[prost(uint32, tag = "4")]
    pub end: u32,
    #[prost(uint32, tag = "5")]
    pub max_tags_per_scope: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchTagsResponse {
    #[prost(string, repeated, tag = "1")]
    pub tag_names: Vec<String>,
}

impl SearchTagsResponse {
    fn of(j: &Json) -> SearchTagsResponse {
        SearchTagsResponse { tag_names: strings(&j["tagNames"]) }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchTagsV2Response {
    #[prost(message, repeated, tag = "1")]
    pub scopes: Vec<SearchTagsV2Scope>,
}

impl SearchTagsV2Response {
    fn of(j: &Json) -> SearchTagsV2Response {
        let scopes =
            list(&j["scopes"]).map(|sc| SearchTagsV2Scope { name: s(&sc["name"]), tags: strings(&sc["tags"]) });
        SearchTagsV2Response { scopes: scopes.collect() }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchTagsV2Scope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, repeated, tag = "2")]
    pub tags: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchTagValuesRequest {
    #[prost(string, tag = "1")]
    pub tag_name: String,
    #[prost(string, tag = "2")]
    pub query: String,
    #[prost(uint32, tag = "4")]
    pub start: u32,
    #[prost(uint32, tag = "5")]
    pub end: u32,
    #[prost(uint32, tag = "6")]
    pub max_tag_values: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchTagValuesResponse {
    #[prost(string, repeated, tag = "1")]
    pub tag_values: Vec<String>,
}

impl SearchTagValuesResponse {
    fn of(j: &Json) -> SearchTagValuesResponse {
        SearchTagValuesResponse { tag_values: strings(&j["tagValues"]) }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct TagValue {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct SearchTagValuesV2Response {
    #[prost(message, repeated, tag = "1")]
    pub tag_values: Vec<TagValue>,
}

impl SearchTagValuesV2Response {
    fn of(j: &Json) -> SearchTagValuesV2Response {
        let values = list(&j["tagValues"]).map(|v| TagValue { r#type: s(&v["type"]), value: s(&v["value"]) });
        SearchTagValuesV2Response { tag_values: values.collect() }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryRangeRequest {
    #[prost(string, tag = "1")]
    pub query: String,
    #[prost(uint64, tag = "2")]
    pub start: u64,
    #[prost(uint64, tag = "3")]
    pub end: u64,
    #[prost(uint64, tag = "4")]
    pub step: u64,
    #[prost(uint32, tag = "16")]
    pub exemplars: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryRangeResponse {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<TimeSeries>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
    /// `PartialStatus`: 0 complete, 1 partial.
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

impl QueryRangeResponse {
    fn of(j: &Json) -> QueryRangeResponse {
        let series = list(&j["series"]).map(|se| TimeSeries {
            labels: key_values(&se["labels"]),
            samples: list(&se["samples"])
                .map(|x| Sample { value: f(&x["value"]), timestamp_ms: n(&x["timestampMs"]) as i64 })
                .collect(),
            exemplars: list(&se["exemplars"])
                .map(|x| Exemplar {
                    labels: key_values(&x["labels"]),
                    value: f(&x["value"]),
                    timestamp_ms: n(&x["timestampMs"]) as i64,
                })
                .collect(),
        });
        let (status, message) = partial_status(j);
        QueryRangeResponse { series: series.collect(), metrics: search_metrics(&j["metrics"]), status, message }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp_ms: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp_ms: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryInstantRequest {
    #[prost(string, tag = "1")]
    pub query: String,
    #[prost(uint64, tag = "2")]
    pub start: u64,
    #[prost(uint64, tag = "3")]
    pub end: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryInstantResponse {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<InstantSeries>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

impl QueryInstantResponse {
    fn of(j: &Json) -> QueryInstantResponse {
        let series =
            list(&j["series"]).map(|se| InstantSeries { labels: key_values(&se["labels"]), value: f(&se["value"]) });
        let (status, message) = partial_status(j);
        QueryInstantResponse { series: series.collect(), metrics: search_metrics(&j["metrics"]), status, message }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct InstantSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    #[prost(double, tag = "2")]
    pub value: f64,
}
