//! `spoor dora`: the four DORA metrics and their levels, from a server's `/api/dora`
//! (docs/dora.md).

use anyhow::{Context, bail};
use serde_json::Value;
use spoor_server::tempo::params::go_duration_string;

#[derive(clap::Args)]
pub struct Args {
    /// The server's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:3200")]
    server: String,
    /// Only deployments and incidents in this environment (`deployment.environment.name`)
    /// [default: all].
    #[arg(long)]
    environment: Option<String>,
    /// Only this service [default: all].
    #[arg(long)]
    service: Option<String>,
    /// The window: up to now, this far back (`30d`, `2w`, `12h`).
    #[arg(long, default_value = "30d")]
    since: String,
    /// Tenant (X-Scope-OrgID).
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    access: crate::http::Access,
    /// Print the server's JSON answer as it is.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Checked here so a typo is reported before any request, in the server's own words.
    spoor_server::dora::api::since(&args.since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let mut query = vec![("since", args.since.as_str())];
    if let Some(e) = &args.environment {
        query.push(("environment", e));
    }
    if let Some(s) = &args.service {
        query.push(("service", s));
    }
    let qs: Vec<String> =
        query.iter().map(|(k, v)| format!("{k}={}", spoor_server::http::encode_query_value(v))).collect();
    let url = format!("{}/api/dora?{}", args.server.trim_end_matches('/'), qs.join("&"));
    let (status, body) = crate::http::Api::with_access(args.tenant.as_deref(), &args.access)?
        .get(&url, Some("application/json"))
        .await?;
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    let v: Value = serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))?;
    if args.json {
        println!("{v:#}");
        return Ok(());
    }
    print!("{}", render(&v, args.environment.as_deref(), args.service.as_deref(), &args.since));
    Ok(())
}

/// The figures as a small table: metric, value, details, level.
fn render(v: &Value, environment: Option<&str>, service: Option<&str>, since: &str) -> String {
    let num = |p: &str| v.pointer(p).and_then(Value::as_f64);
    let level = |k: &str| v.pointer(&format!("/levels/{k}")).and_then(Value::as_str).unwrap_or("-").to_string();
    let duration = |s: Option<f64>| s.map_or("n/a".to_string(), |s| go_duration_string((s * 1e9).round() as i64));
    let deployments = num("/deployments").unwrap_or(0.0);
    let rows = [
        (
            "deployment frequency",
            format!("{:.2} per day", num("/deployment_frequency_per_day").unwrap_or(0.0)),
            format!("{deployments} deployments, {} failed", num("/failed_deployments").unwrap_or(0.0)),
            level("deployment_frequency"),
        ),
        (
            "lead time for changes",
            format!("median {}", duration(num("/lead_time_seconds/median"))),
            format!("p90 {}", duration(num("/lead_time_seconds/p90"))),
            level("lead_time"),
        ),
        (
            "change failure rate",
            num("/change_failure_rate").map_or("n/a".to_string(), |r| format!("{:.1}%", r * 100.0)),
            String::new(),
            level("change_failure_rate"),
        ),
        (
            "time to restore",
            format!("median {}", duration(num("/time_to_restore_seconds/median"))),
            format!("{} incidents", num("/incidents").unwrap_or(0.0)),
            level("time_to_restore"),
        ),
    ];
    let mut out = format!(
        "DORA metrics, environment {}, service {}, last {since}\n",
        environment.unwrap_or("(all)"),
        service.unwrap_or("(all)")
    );
    for (name, value, detail, level) in rows {
        out.push_str(&format!("  {name:<22} {value:<22} {detail:<28} {level}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_figures_and_missing_ones() {
        let v = serde_json::json!({
            "deployments": 4, "failed_deployments": 1, "deployment_frequency_per_day": 0.3,
            "lead_time_seconds": {"median": 1200.0, "p90": 3725.5}, "change_failure_rate": 0.5,
            "time_to_restore_seconds": {"median": null}, "incidents": 0,
            "levels": {"deployment_frequency": "high", "lead_time": "elite", "change_failure_rate": "low", "time_to_restore": null}
        });
        let text = render(&v, Some("prod"), None, "30d");
        assert!(text.starts_with("DORA metrics, environment prod, service (all), last 30d\n"), "{text}");
        assert!(text.contains("0.30 per day") && text.contains("4 deployments, 1 failed"), "{text}");
        assert!(text.contains("median 20m0s") && text.contains("p90 1h2m5.5s"), "{text}");
        assert!(text.contains("50.0%") && text.contains("median n/a"), "{text}");
        assert!(text.lines().last().unwrap().ends_with(" -"), "{text}");
    }
}
