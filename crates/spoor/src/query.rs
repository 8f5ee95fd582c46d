//! `spoor query 'TRACEQL'`: a search, or a TraceQL metrics query (`{ } | rate() by (…)`),
//! against a running server (`--server`), or straight against the blocks of a data dir or
//! bucket (`--config` / `--data-dir`), printed as a table or as the API's JSON.

use std::fmt::Write;

use serde_json::Value as Json;
use std::sync::Arc;

use spoor_server::Config;
use spoor_server::tempo::{self, reader::Reader};

#[derive(clap::Args)]
pub struct Args {
    /// The TraceQL query, e.g. '{ resource.service.name = "checkout" && duration > 1s }', or a
    /// metrics query, e.g. '{ } | rate() by (resource.service.name)'.
    query: String,
    #[command(flatten)]
    source: Source,
    /// Traces to return.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Spans per spanset.
    #[arg(long, default_value_t = 3)]
    spss: u32,
    /// Only the last DURATION (e.g. 15m, 2h). When neither this nor --start is given, a search
    /// covers all data and a metrics query the last hour.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    since: Option<String>,
    /// Range start and end, unix seconds.
    #[arg(long)]
    start: Option<u64>,
    #[arg(long)]
    end: Option<u64>,
    /// Metrics queries: the step between samples, a Go duration such as 30s [default: the
    /// API's, about 1/240 of the range].
    #[arg(long, conflicts_with = "instant")]
    step: Option<String>,
    /// Metrics queries: one value per series over the whole range (/api/metrics/query)
    /// instead of a series of samples.
    #[arg(long)]
    instant: bool,
    /// Metrics queries: exemplars (sample spans) to return, at most.
    #[arg(long, default_value_t = 0)]
    exemplars: u32,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let now = spoor_model::time::now_nanos() / 1_000_000_000;
    let range = match (&args.since, args.start, args.end) {
        (Some(since), _, _) => {
            let ns = spoor_server::tempo::params::go_duration(since)
                .ok_or_else(|| anyhow::anyhow!("--since {since:?} is not a duration such as 15m or 2h"))?;
            Some((now.saturating_sub(ns / 1_000_000_000), now + 1))
        }
        (None, None, None) => None,
        (None, start, end) => Some((start.unwrap_or(0), end.unwrap_or(now + 1))),
    };
    // A query that does not parse goes to search, whose error names the problem as today,
    // unless a metrics-only flag was given: then the metrics endpoint reports it (or says
    // "not a metrics query") rather than search results passing for the metrics asked for.
    let metrics = spoor_server::tempo::metrics_query::is_metrics_query(&args.query)
        || args.instant
        || args.step.is_some()
        || args.exemplars > 0;
    let kind = match (metrics, args.instant) {
        (false, _) => Kind::Search,
        (true, false) => Kind::Range,
        (true, true) => Kind::Instant,
    };
    let mut params = vec![("q".to_owned(), args.query.clone())];
    if kind == Kind::Search {
        params.push(("limit".to_owned(), args.limit.to_string()));
        params.push(("spss".to_owned(), args.spss.to_string()));
    }
    // Without a range, metrics queries get the API's default (the last hour), search all data.
    if let Some((start, end)) = range {
        params.push(("start".into(), start.to_string()));
        params.push(("end".into(), end.to_string()));
    }
    if kind != Kind::Search {
        if let Some(step) = &args.step {
            params.push(("step".into(), step.clone()));
        }
        params.push(("exemplars".into(), args.exemplars.to_string()));
    }
    let body = match &args.source.server {
        Some(server) => remote(server, kind.path(), &params, &args.source.api()?).await?,
        None => local(&args, kind, &params).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!(
            "{}",
            match kind {
                Kind::Search => table(&body),
                Kind::Range => range_table(&body),
                Kind::Instant => instant_table(&body),
            }
        );
    }
    Ok(())
}

/// Which endpoint answers the query.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Search,
    Range,
    Instant,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Search => "/api/search",
            Kind::Range => "/api/metrics/query_range",
            Kind::Instant => "/api/metrics/query",
        }
    }
}

async fn remote(server: &str, path: &str, params: &[(String, String)], api: &crate::http::Api) -> anyhow::Result<Json> {
    let query: Vec<String> =
        params.iter().map(|(k, v)| format!("{k}={}", spoor_server::http::encode_query_value(v))).collect();
    let url = format!("{}{path}?{}", server.trim_end_matches('/'), query.join("&"));
    let (status, body) = api.get(&url, Some("application/json")).await?;
    anyhow::ensure!(status.is_success(), "HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
    Ok(serde_json::from_slice(&body)?)
}

/// Where `spoor query` and `spoor trace` read: a server's HTTP API, or the blocks themselves.
#[derive(clap::Args)]
pub struct Source {
    /// Ask this server's HTTP API (e.g. http://127.0.0.1:3200) instead of reading blocks.
    #[arg(long)]
    pub server: Option<String>,
    /// YAML configuration file whose `storage` section says where blocks are.
    #[arg(long, conflicts_with = "server")]
    config: Option<std::path::PathBuf>,
    /// Data dir of a local backend [default: ./data].
    #[arg(long, conflicts_with = "server")]
    data_dir: Option<std::path::PathBuf>,
    /// Tenant (X-Scope-OrgID); `a|b` reads several.
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub access: crate::http::Access,
}

impl Source {
    /// The client for `--server`, with the tenant, token and CA given.
    pub fn api(&self) -> anyhow::Result<crate::http::Api> {
        crate::http::Api::with_access(self.tenant.as_deref(), &self.access)
    }

    /// A reader of the blocks alone (nothing live: this process only reads blocks), and the
    /// tenants to read: the flag's, else every tenant with blocks, else the single tenant.
    pub async fn blocks(&self) -> anyhow::Result<(Reader, Vec<String>)> {
        let mut overrides = Vec::new();
        if let Some(d) = &self.data_dir {
            overrides.push(("storage.data_dir", d.display().to_string()));
        }
        let config = Config::load(self.config.as_deref(), std::env::vars(), &overrides)?;
        let blocks = spoor_server::tempo::reader::open_blocks(&config, std::env::temp_dir())?;
        blocks.poll().await?;
        let tenants: Vec<String> = match &self.tenant {
            Some(t) => t.split('|').map(str::to_owned).collect(),
            None if config.tenancy.multitenancy_enabled => blocks.tenants(),
            None => vec![spoor_server::ingest::tenant::SINGLE_TENANT.to_owned()],
        };
        let head = spoor_store::Head::new(spoor_store::Limits {
            max_live_traces: 0,
            max_bytes_per_trace: 0,
            max_bytes_per_tenant: 0,
            max_bytes_total: 0,
        });
        Ok((Reader::new(Arc::new(head), Arc::new(blocks), &config, Default::default()), tenants))
    }
}

async fn local(args: &Args, kind: Kind, params: &[(String, String)]) -> anyhow::Result<Json> {
    let (reader, tenants) = args.source.blocks().await?;
    let raw: Vec<String> =
        params.iter().map(|(k, v)| format!("{k}={}", spoor_server::http::encode_query_value(v))).collect();
    let raw = raw.join("&");
    Ok(match kind {
        Kind::Search => tempo::json::search_json(&tempo::search::search(&reader, &tenants, &raw).await?),
        Kind::Range | Kind::Instant => {
            tempo::metrics_query::query(&reader, &tenants, &raw, kind == Kind::Instant).await?.json()
        }
    })
}

fn table(body: &Json) -> String {
    let mut out = String::new();
    let traces = body["traces"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "{:<32}  {:<19}  {:>10}  {:<20}  ROOT NAME",
        "TRACE ID", "START (UTC)", "DURATION", "ROOT SERVICE"
    );
    for t in &traces {
        let start: u64 = t["startTimeUnixNano"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<32}  {:<19}  {:>10}  {:<20}  {}",
            t["traceID"].as_str().unwrap_or(""),
            crate::blocks::utc(start),
            format!("{}ms", t["durationMs"].as_u64().unwrap_or(0)),
            t["rootServiceName"].as_str().unwrap_or(""),
            t["rootTraceName"].as_str().unwrap_or(""),
        );
        for set in t["spanSets"].as_array().into_iter().flatten() {
            let attrs = attributes(&set["attributes"]);
            let _ = writeln!(
                out,
                "  spanset: {} matched{}",
                set["matched"].as_u64().unwrap_or(0),
                if attrs.is_empty() { String::new() } else { format!(", {attrs}") }
            );
            for s in set["spans"].as_array().into_iter().flatten() {
                let ns: u64 = s["durationNanos"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0);
                let _ = writeln!(
                    out,
                    "    {}  {:>10}  {}  {}",
                    s["spanID"].as_str().unwrap_or(""),
                    spoor_server::tempo::params::go_duration_string(ns as i64),
                    s["name"].as_str().unwrap_or(""),
                    attributes(&s["attributes"]),
                );
            }
        }
    }
    let m = &body["metrics"];
    let _ = writeln!(
        out,
        "{} traces; inspected {} traces, {} bytes; {} of {} blocks searched",
        traces.len(),
        m["inspectedTraces"].as_u64().unwrap_or(0),
        m["inspectedBytes"].as_str().unwrap_or("0"),
        m["completedJobs"].as_u64().unwrap_or(0),
        m["totalJobs"].as_u64().unwrap_or(0),
    );
    out
}

/// `key=value key2=value2`, values as they would be written in TraceQL.
fn attributes(list: &Json) -> String {
    let mut parts = Vec::new();
    for kv in list.as_array().into_iter().flatten() {
        let v = &kv["value"];
        let shown = if let Some(s) = v["stringValue"].as_str() {
            format!("{s:?}")
        } else if let Some(i) = v["intValue"].as_str() {
            i.to_owned()
        } else if let Some(x) = v.get("doubleValue") {
            x.to_string()
        } else if let Some(b) = v["boolValue"].as_bool() {
            b.to_string()
        } else {
            v.to_string()
        };
        parts.push(format!("{}={shown}", kv["key"].as_str().unwrap_or("")));
    }
    parts.join(" ")
}

/// A metrics range result: per series its labels, then one `time  value` line per sample.
fn range_table(body: &Json) -> String {
    let mut out = String::new();
    let series = body["series"].as_array().map(Vec::as_slice).unwrap_or_default();
    for s in series {
        let _ = writeln!(out, "{}", series_name(&s["labels"]));
        let samples: Vec<(u64, String)> = s["samples"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| (x["timestampMs"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0), sample_value(&x["value"])))
            .collect();
        let width = samples.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        let stamps: Vec<String> = samples.iter().map(|(ms, _)| rfc3339_ms(*ms)).collect();
        let time_width = stamps.iter().map(String::len).max().unwrap_or(0);
        let mut day = "";
        for (stamp, (_, value)) in stamps.iter().zip(&samples) {
            // The date only when it changes: the full RFC3339 first, then the time under its
            // time part, blanks where the date was.
            let (date, time) = stamp.split_once('T').unwrap_or(("", stamp));
            let shown = if date == day { format!("{:pad$}{time}", "", pad = date.len() + 1) } else { stamp.clone() };
            day = date;
            let _ = writeln!(out, "  {shown:<time_width$}  {value:>width$}");
        }
        let exemplars = s["exemplars"].as_array().map_or(0, Vec::len);
        if exemplars > 0 {
            let _ = writeln!(out, "  {exemplars} exemplar{}", if exemplars == 1 { "" } else { "s" });
        }
    }
    let _ = writeln!(out, "{}", metrics_footer(body, series.len()));
    out
}

/// A metrics instant result: one `labels  value` line per series.
fn instant_table(body: &Json) -> String {
    let mut out = String::new();
    let series = body["series"].as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<(String, String)> =
        series.iter().map(|s| (series_name(&s["labels"]), sample_value(&s["value"]))).collect();
    let width = rows.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    for (name, value) in &rows {
        let _ = writeln!(out, "{name:<width$}  {value}");
    }
    let _ = writeln!(out, "{}", metrics_footer(body, series.len()));
    out
}

/// `{resource.service.name="cart", status=error}`, `rate` for a series named only by
/// `__name__`, `rate{…}` for both.
fn series_name(labels: &Json) -> String {
    let mut name = String::new();
    let mut rest = Vec::new();
    for kv in labels.as_array().into_iter().flatten() {
        let key = kv["key"].as_str().unwrap_or("");
        if key == "__name__"
            && let Some(n) = kv["value"]["stringValue"].as_str()
        {
            name = n.to_owned();
        } else {
            rest.push(attributes(&Json::Array(vec![kv.clone()])));
        }
    }
    if rest.is_empty() && !name.is_empty() { name } else { format!("{name}{{{}}}", rest.join(", ")) }
}

/// A sample's value as JSON has it: absent means 0 (zero is omitted), `"NaN"` and infinities
/// are strings.
fn sample_value(v: &Json) -> String {
    match v {
        Json::Null => "0".to_owned(),
        Json::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string()),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `2024-05-01T12:00:00Z`, with `.250` milliseconds only when there are some.
fn rfc3339_ms(ms: u64) -> String {
    let secs = crate::blocks::utc(ms.saturating_mul(1_000_000)).replacen(' ', "T", 1);
    if ms.is_multiple_of(1000) { format!("{secs}Z") } else { format!("{secs}.{:03}Z", ms % 1000) }
}

fn metrics_footer(body: &Json, series: usize) -> String {
    let m = &body["metrics"];
    let mut line = format!(
        "{series} series; inspected {} traces, {} bytes; {} of {} blocks searched",
        m["inspectedTraces"].as_u64().unwrap_or(0),
        m["inspectedBytes"].as_str().unwrap_or("0"),
        m["completedJobs"].as_u64().unwrap_or(0),
        m["totalJobs"].as_u64().unwrap_or(0),
    );
    if let Some(message) = body["message"].as_str() {
        let _ = write!(line, "\n{}: {message}", body["status"].as_str().unwrap_or("PARTIAL"));
    }
    line
}
