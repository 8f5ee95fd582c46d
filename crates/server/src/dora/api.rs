//! `GET /api/dora` (the four figures and their levels, or one object per service with
//! `by=service`) and `GET /api/dora/deployments` (the deployments behind them, for a timeline,
//! with change-failure hints). Parameters: `environment`, `service`, `start` and `end` (unix
//! seconds, or any form `/api/search` takes; default: the 30 days before now) or `since`
//! (`30d`, `12h`), `by`, and for the listing `limit` (the newest N, 1000 by default) and
//! `hints`. Errors are plain text, as the rest of the API's.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use spoor_generate::dora::Event;
use spoor_generate::dora::figures::{self, Filter};

use crate::dora::hints;
use crate::dora::store::Store;
use crate::error::Error;
use crate::tempo::params::{Params, SECOND, go_duration, text_error, timestamp};
use crate::tempo::reader::Reader;

const DEFAULT_SINCE: u64 = 30 * 86_400 * SECOND;
/// Deployments `/api/dora/deployments` lists without `limit` (the newest ones).
const DEFAULT_LIMIT: usize = 1000;

/// What the handlers read: the store (None where this process keeps none) and the spans.
pub struct Api {
    pub store: Option<Arc<Store>>,
    pub reader: Arc<Reader>,
    pub max_hinted_deployments: usize,
}

pub fn router(api: Api) -> axum::Router {
    axum::Router::new()
        .route("/api/dora", get(summary))
        .route("/api/dora/deployments", get(deployments))
        .with_state(Arc::new(api))
}

async fn summary(State(a): State<Arc<Api>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    match summary_json(&a, &headers, raw.as_deref().unwrap_or("")) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => text_error(e),
    }
}

async fn deployments(State(a): State<Arc<Api>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    match deployments_json(&a, &headers, raw.as_deref().unwrap_or("")).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => text_error(e),
    }
}

fn summary_json(a: &Api, headers: &HeaderMap, raw: &str) -> Result<serde_json::Value, Error> {
    let params = Params::parse(raw);
    let filter = filter(&params, spoor_model::time::now_nanos())?;
    let by_service = match params.get("by").filter(|v| !v.is_empty()) {
        None => false,
        Some("service") => true,
        Some(other) => return Err(Error::bad_request(format!("invalid by: {other:?} (only by=service)"))),
    };
    let events = events(a, headers)?;
    let refs: Vec<&Event> = events.iter().collect();
    if by_service {
        let services: Vec<_> = figures::services(&refs, &filter)
            .into_iter()
            .map(|s| figures::compute(&refs, &Filter { service: Some(s), ..filter.clone() }))
            .collect();
        return Ok(json!({ "services": services }));
    }
    serde_json::to_value(figures::compute(&refs, &filter)).map_err(|e| Error::internal(e.to_string()))
}

async fn deployments_json(a: &Api, headers: &HeaderMap, raw: &str) -> Result<serde_json::Value, Error> {
    let params = Params::parse(raw);
    let now = spoor_model::time::now_nanos();
    let filter = filter(&params, now)?;
    let with_hints = match params.get("hints") {
        None | Some("" | "true" | "1") => true,
        Some("false" | "0") => false,
        Some(other) => return Err(Error::bad_request(format!("invalid hints: {other:?} (true or false)"))),
    };
    let limit = params.uint("limit")?.map_or(DEFAULT_LIMIT, |l| l as usize);
    if limit == 0 {
        return Err(Error::bad_request("invalid limit: 0 (at least 1)"));
    }
    let tenants = a.reader.tenants(headers)?;
    let events = events(a, headers)?;
    let refs: Vec<&Event> = events.iter().collect();
    let mut rows = figures::deployments(&refs, &filter);
    // The newest ones: a timeline shows the recent end first.
    rows.drain(..rows.len().saturating_sub(limit));
    let hinted = if with_hints { a.max_hinted_deployments } else { 0 };
    let mut out = Vec::with_capacity(rows.len());
    let first_hinted = rows.len().saturating_sub(hinted);
    for (i, row) in rows.into_iter().enumerate() {
        let mut v = serde_json::to_value(&row).map_err(|e| Error::internal(e.to_string()))?;
        if i >= first_hinted && !row.service.is_empty() {
            let h = hints::hints(&a.reader, &tenants, &row.service, row.end_ns, now).await?;
            v["hints"] = serde_json::to_value(h).map_err(|e| Error::internal(e.to_string()))?;
        }
        out.push(v);
    }
    let incidents = figures::incidents(&refs, &filter);
    Ok(json!({ "deployments": out, "incidents": incidents }))
}

fn events(a: &Api, headers: &HeaderMap) -> Result<Vec<Event>, Error> {
    let tenants = a.reader.tenants(headers)?;
    let store = a.store.as_ref().ok_or_else(|| {
        Error::unavailable("DORA metrics are kept by the ingesting process with dora.enabled; this one keeps none", 0)
    })?;
    Ok(store.events(&tenants))
}

/// The filter from the query string; `now` (unix ns) is the default end.
fn filter(p: &Params, now: u64) -> Result<Filter, Error> {
    let given = |name: &str| p.get(name).filter(|v| !v.trim().is_empty());
    let end = given("end").map(|v| timestamp("end", v)).transpose()?.unwrap_or(now);
    let start = match given("start") {
        Some(v) => timestamp("start", v)?,
        None => end.saturating_sub(given("since").map(since).transpose()?.unwrap_or(DEFAULT_SINCE)),
    };
    if end <= start {
        return Err(Error::bad_request("end must be greater than start"));
    }
    Ok(Filter {
        environment: given("environment").map(str::to_owned),
        service: given("service").map(str::to_owned),
        start_ns: start,
        end_ns: end,
    })
}

/// `since`: a Go duration (`12h`), or whole days or weeks (`30d`, `2w`).
pub fn since(v: &str) -> Result<u64, Error> {
    let bad = || Error::bad_request(format!("invalid since: {v:?} is not a duration such as 30d or 12h"));
    if let Some(d) = go_duration(v) {
        return Ok(d);
    }
    let unit = match v.chars().last() {
        Some('d') => 86_400,
        Some('w') => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = v[..v.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(unit * SECOND).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        filter(&Params::parse(q), 100 * 86_400 * SECOND).unwrap_err().to_string()
    }

    #[test]
    fn parameters() {
        let now = 100 * 86_400 * SECOND;
        let f = filter(&Params::parse("environment=production&service="), now).unwrap();
        assert_eq!(
            (f.environment.as_deref(), f.service, f.start_ns, f.end_ns),
            (Some("production"), None, 70 * 86_400 * SECOND, now)
        );
        let f = filter(&Params::parse("start=10&end=20"), now).unwrap();
        assert_eq!((f.start_ns, f.end_ns), (10 * SECOND, 20 * SECOND));
        let f = filter(&Params::parse("since=2w"), now).unwrap();
        assert_eq!(f.start_ns, 86 * 86_400 * SECOND);
        assert_eq!(err("start=20&end=10"), "end must be greater than start");
        assert!(err("start=soon").contains("invalid start"));
        assert!(err("since=3x").contains("invalid since"));
    }
}
