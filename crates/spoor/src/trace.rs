//! `spoor trace ID`: one trace as an indented tree (each span under its parent, siblings by
//! start time) with offsets, durations, services, status and the attributes that explain a
//! span (route, statement, error), from a running server (`--server`) or straight from the
//! blocks of a data dir or bucket; `--json` prints it as OTLP/JSON instead.

use std::collections::HashMap;
use std::fmt::Write;

use prost::Message;
use spoor_model::TraceId;
use spoor_model::ids::hex;
use spoor_model::otlp::{AnyValue, KeyValue, Span, TracesData, any_value};
use spoor_server::tempo::params::go_duration_string;

#[derive(clap::Args)]
pub struct Args {
    /// The trace ID (1–32 hex characters).
    id: String,
    #[command(flatten)]
    source: crate::query::Source,
    /// Print the trace as OTLP/JSON (`{"resourceSpans": …}`) instead of a tree.
    #[arg(long)]
    json: bool,
}

/// Longest attribute value shown in the tree (a SQL statement can be pages long).
const MAX_VALUE: usize = 80;

/// The attributes worth a place on a span's line, in the order shown: what was called, how it
/// ended, and why it failed.
const KEY_ATTRIBUTES: [&str; 14] = [
    "http.request.method",
    "http.method",
    "http.route",
    "http.response.status_code",
    "http.status_code",
    "rpc.system",
    "rpc.method",
    "db.system",
    "db.query.text",
    "db.statement",
    "messaging.destination.name",
    "peer.service",
    "exception.type",
    "exception.message",
];

pub async fn run(args: Args) -> anyhow::Result<()> {
    let id = TraceId::parse_api(&args.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let trace = match &args.source.server {
        Some(server) => remote(server, &id, &args.source.api()?).await?,
        None => local(&args, &id).await?,
    };
    let Some(trace) =
        trace.filter(|t| t.resource_spans.iter().any(|rs| rs.scope_spans.iter().any(|s| !s.spans.is_empty())))
    else {
        anyhow::bail!("trace {} not found", id.to_hex());
    };
    if args.json {
        let body = serde_json::json!({
            "resourceSpans": spoor_model::json::trace_to_json(&trace, spoor_model::json::IdStyle::Hex)
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", tree(&id, &trace));
    }
    Ok(())
}

/// The trace from a server's `/api/traces/{id}` in protobuf (exact IDs and values); None on 404.
pub(crate) async fn remote(server: &str, id: &TraceId, api: &crate::http::Api) -> anyhow::Result<Option<TracesData>> {
    let url = format!("{}/api/traces/{}", server.trim_end_matches('/'), id.to_hex());
    let (status, body) = api.get(&url, Some("application/protobuf")).await?;
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    anyhow::ensure!(status.is_success(), "HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
    Ok(Some(TracesData::decode(body)?))
}

/// The trace from every block that may hold it.
async fn local(args: &Args, id: &TraceId) -> anyhow::Result<Option<TracesData>> {
    let (reader, tenants) = args.source.blocks().await?;
    let mut fragments = Vec::new();
    for t in &tenants {
        fragments.extend(reader.find_trace(t, id, None).await?);
    }
    if fragments.is_empty() {
        return Ok(None);
    }
    Ok(Some(spoor_model::trace::assemble(fragments.iter().map(|b| &b[..]))?.trace))
}

/// A span with where it came from.
struct Node<'t> {
    span: &'t Span,
    service: String,
}

/// The tree: a header line, then each root (a span without a parent, or whose parent is not
/// in the trace) and its descendants.
fn tree(id: &TraceId, trace: &TracesData) -> String {
    let mut nodes: Vec<Node> = Vec::new();
    for rs in &trace.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .map(text)
            .unwrap_or_else(|| "unknown service".to_owned());
        for ss in &rs.scope_spans {
            nodes.extend(ss.spans.iter().map(|span| Node { span, service: service.clone() }));
        }
    }
    nodes.sort_by_key(|n| (n.span.start_time_unix_nano, n.span.end_time_unix_nano));
    let index: HashMap<&[u8], usize> = nodes.iter().enumerate().map(|(i, n)| (&n.span.span_id[..], i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut roots = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match index.get(&n.span.parent_span_id[..]) {
            Some(&p) if !n.span.parent_span_id.is_empty() && p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let start = nodes.iter().map(|n| n.span.start_time_unix_nano).min().unwrap_or(0);
    let end = nodes.iter().map(|n| n.span.end_time_unix_nano).max().unwrap_or(0);
    let mut services: Vec<&str> = nodes.iter().map(|n| n.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let errors = nodes.iter().filter(|n| n.span.status.as_ref().is_some_and(|s| s.code == 2)).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {}  {}  {}  {} spans, {} services{}",
        id.to_hex(),
        crate::blocks::utc(start),
        go_duration_string(end.saturating_sub(start) as i64),
        nodes.len(),
        services.len(),
        if errors > 0 { format!(", {errors} errors") } else { String::new() }
    );
    let mut seen = vec![false; nodes.len()];
    for &r in &roots {
        let orphan = !nodes[r].span.parent_span_id.is_empty();
        print_node(&mut out, &nodes, &children, r, start, "", None, orphan, &mut seen);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn print_node(
    out: &mut String,
    nodes: &[Node],
    children: &[Vec<usize>],
    i: usize,
    trace_start: u64,
    prefix: &str,
    // None for a root; for a child, whether it is its parent's last.
    last: Option<bool>,
    orphan: bool,
    seen: &mut [bool],
) {
    // A span ID that repeats (a client bug) could make a cycle; print each span once.
    if std::mem::replace(&mut seen[i], true) {
        return;
    }
    let n = &nodes[i];
    let s = n.span;
    let branch = match last {
        None => "",
        Some(true) => "└─ ",
        Some(false) => "├─ ",
    };
    let kind = match s.kind {
        1 => " internal",
        2 => " server",
        3 => " client",
        4 => " producer",
        5 => " consumer",
        _ => "",
    };
    let status = match s.status.as_ref() {
        Some(st) if st.code == 2 && !st.message.is_empty() => format!("  ERROR {:?}", truncate(&st.message)),
        Some(st) if st.code == 2 => "  ERROR".to_owned(),
        Some(st) if st.code == 1 => "  ok".to_owned(),
        _ => String::new(),
    };
    let mut attrs: Vec<String> = KEY_ATTRIBUTES
        .iter()
        .filter_map(|k| s.attributes.iter().find(|kv| kv.key == *k))
        .map(|kv| format!("{}={}", kv.key, shown(kv)))
        .collect();
    // Recorded exceptions say why a span failed even when its attributes do not.
    for e in s.events.iter().filter(|e| e.name == "exception") {
        for kv in e.attributes.iter().filter(|kv| kv.key == "exception.type" || kv.key == "exception.message") {
            attrs.push(format!("{}={}", kv.key, shown(kv)));
        }
    }
    let _ = writeln!(
        out,
        "{prefix}{branch}{}  {}  [{}{kind}]  +{}  {}{status}{}{}",
        s.name,
        hex(&s.span_id),
        n.service,
        go_duration_string(s.start_time_unix_nano.saturating_sub(trace_start) as i64),
        go_duration_string(s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as i64),
        if attrs.is_empty() { String::new() } else { format!("  {}", attrs.join(" ")) },
        if orphan { format!("  (parent {} not in trace)", hex(&s.parent_span_id)) } else { String::new() },
    );
    let child_prefix = match last {
        None => prefix.to_owned(),
        Some(true) => format!("{prefix}   "),
        Some(false) => format!("{prefix}│  "),
    };
    let kids = &children[i];
    for (k, &c) in kids.iter().enumerate() {
        print_node(out, nodes, children, c, trace_start, &child_prefix, Some(k + 1 == kids.len()), false, seen);
    }
}

fn shown(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => format!("{:?}", truncate(s)),
        _ => truncate(&kv.value.as_ref().map(text).unwrap_or_default()),
    }
}

/// At most [`MAX_VALUE`] characters, on one line.
fn truncate(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_VALUE) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(f)) => f.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        _ => spoor_model::json::any_value_json(v).to_string(),
    }
}
