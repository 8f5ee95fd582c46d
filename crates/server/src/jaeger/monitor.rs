//! The Monitor tab: `metrics/{calls,errors,latencies,minstep}` (RED metrics per service, and
//! per operation with `groupByOperation`), as Jaeger's `MetricFamily` JSON. They are TraceQL
//! metrics over the stored spans of the window asked for, not the metrics generator's live
//! series: those are counters since the process started and cannot answer an arbitrary
//! `endTs`/`lookback`. The two agree unless tail sampling dropped spans (the generator counts
//! spans before sampling; stored spans are what was kept).
//!
//! Like Prometheus' `rate(x[ratePer])`, calls and errors at each step are the spans that
//! started in the `ratePer` before it, per second; latencies are the quantile of the spans of
//! each step (their histograms are not kept across steps), in milliseconds.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use spoor_query::metrics::{self, Grid, Label, MetricsRequest, Series};

use crate::error::{Error, Kind};
use crate::jaeger::envelope::{failure, success};
use crate::jaeger::query::{literal, millis, span_kind};
use crate::tempo::params::{Params, SECOND, query_error};
use crate::tempo::reader::Reader;

/// Jaeger's defaults: an hour back from now, 5 s steps, rates over 10 minutes.
const LOOKBACK: u64 = 3600 * SECOND;
const STEP: u64 = 5 * SECOND;
const RATE_PER: u64 = 600 * SECOND;
/// The smallest step worth asking for, in ms (`metrics/minstep`).
const MIN_STEP_MS: u64 = 1000;

pub async fn handler(
    State(r): State<Arc<Reader>>,
    headers: HeaderMap,
    Path(metric): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = Instant::now();
    let params = Params::parse(raw.as_deref().unwrap_or(""));
    let result = match metric.as_str() {
        "minstep" => Ok(json!(MIN_STEP_MS)),
        "calls" | "errors" | "latencies" => {
            async {
                let tenants = r.tenants(&headers)?;
                let req = Request::parse(&params, &metric, &r)?;
                req.run(&r, &tenants, &metric).await
            }
            .await
        }
        other => {
            Err(Error::new(Kind::NotFound, format!("no metric {other:?}: use latencies, calls, errors or minstep")))
        }
    };
    r.count_query("jaeger_metrics", started, &result);
    match result {
        Ok(data) if metric == "minstep" => success(data, 0),
        Ok(family) => axum::Json(family).into_response(),
        Err(e) => failure(e),
    }
}

/// One series: its labels as (name, value), and its points as (unix ns, value).
type LabelledPoints = (Vec<(String, String)>, Vec<(u64, f64)>);

struct Request {
    services: Vec<String>,
    kinds: Vec<&'static str>,
    by_operation: bool,
    start: u64,
    end: u64,
    step: u64,
    rate_per: u64,
    quantile: f64,
}

impl Request {
    fn parse(params: &Params, metric: &str, r: &Reader) -> Result<Request, Error> {
        let all = |name: &'static str| {
            params.0.iter().filter(move |(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
        };
        let services: Vec<String> = all("service").map(str::to_owned).collect();
        if services.is_empty() {
            return Err(Error::bad_request("please provide at least one service name (service)"));
        }
        let mut kinds = all("spanKind").map(span_kind).collect::<Result<Vec<_>, _>>()?;
        if kinds.is_empty() {
            kinds.push("server");
        }
        let by_operation = match params.get("groupByOperation").unwrap_or("") {
            "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            other => return Err(Error::bad_request(format!("invalid groupByOperation: {other:?} is not a boolean"))),
        };
        let end = millis(params, "endTs")?.unwrap_or_else(spoor_model::time::now_nanos);
        let lookback = millis(params, "lookback")?.unwrap_or(LOOKBACK);
        let step = millis(params, "step")?.unwrap_or(STEP);
        let rate_per = millis(params, "ratePer")?.unwrap_or(RATE_PER);
        for (name, v) in [("lookback", lookback), ("step", step), ("ratePer", rate_per)] {
            if v == 0 {
                return Err(Error::bad_request(format!("invalid {name}: must be positive")));
            }
        }
        let max = r.search.max_metrics_duration_hours.saturating_mul(3600 * SECOND);
        if max > 0 && lookback.saturating_add(rate_per) > max {
            return Err(Error::bad_request(format!(
                "lookback plus ratePer exceed max_metrics_duration_hours ({}h)",
                r.search.max_metrics_duration_hours
            )));
        }
        if (lookback + rate_per) / step > metrics::MAX_INTERVALS {
            return Err(Error::bad_request(format!(
                "invalid step: more than {} steps in lookback plus ratePer",
                metrics::MAX_INTERVALS
            )));
        }
        let quantile = if metric == "latencies" {
            let v = params.get("quantile").unwrap_or("");
            match v.parse::<f64>() {
                Ok(q) if q > 0.0 && q <= 1.0 => q,
                _ => return Err(Error::bad_request(format!("invalid quantile: {v:?} is not a number in (0, 1]"))),
            }
        } else {
            0.0
        };
        Ok(Request {
            services,
            kinds,
            by_operation,
            start: end.saturating_sub(lookback),
            end,
            step,
            rate_per,
            quantile,
        })
    }

    fn filter(&self, errors_only: bool) -> String {
        let services: Vec<String> =
            self.services.iter().map(|s| format!("resource.service.name = {}", literal(s))).collect();
        let kinds: Vec<String> = self.kinds.iter().map(|k| format!("kind = {k}")).collect();
        let error = if errors_only { " && status = error" } else { "" };
        format!("{{ ({}) && ({}){error} }}", services.join(" || "), kinds.join(" || "))
    }

    fn by(&self) -> &'static str {
        if self.by_operation { "by (resource.service.name, name)" } else { "by (resource.service.name)" }
    }

    async fn series(&self, r: &Reader, tenants: &[String], text: &str, grid: Grid) -> Result<Vec<Series>, Error> {
        let query = spoor_traceql::parse(text).map_err(|e| Error::internal(format!("{text}: {e}")))?;
        let req = MetricsRequest { query, grid, exemplars: 0 };
        Ok(metrics::query_range(&r.head, &r.blocks, tenants, &req).await.map_err(query_error)?.series)
    }

    async fn run(&self, r: &Reader, tenants: &[String], metric: &str) -> Result<Json, Error> {
        let (name, help, points): (&str, &str, Vec<LabelledPoints>) = match metric {
            "latencies" => {
                let grid = Grid::range(self.start, self.end, self.step).map_err(query_error)?;
                let text =
                    format!("{} | quantile_over_time(duration, {}) {}", self.filter(false), self.quantile, self.by());
                let times = grid.timestamps();
                let series = self.series(r, tenants, &text, grid).await?;
                // A step without spans has a quantile of 0, not none: the counts tell them apart.
                let counts = format!("{} | count_over_time() {}", self.filter(false), self.by());
                let counts = self.series(r, tenants, &counts, grid).await?;
                let out = series
                    .iter()
                    .map(|s| {
                        let n = counts.iter().find(|c| c.labels == s.labels[..s.labels.len().saturating_sub(1)]);
                        let points = times
                            .iter()
                            .zip(&s.values)
                            .enumerate()
                            .filter(|(i, (t, v))| {
                                **t >= self.start
                                    && !v.is_nan()
                                    && n.is_some_and(|n| n.values.get(*i).is_some_and(|c| *c > 0.0))
                            })
                            .map(|(_, (t, v))| (*t, v * 1000.0))
                            .collect();
                        (self.labels(s), points)
                    })
                    .collect();
                ("service_latencies", "quantile of span durations in milliseconds, by service", out)
            }
            _ => {
                let grid =
                    Grid::range(self.start.saturating_sub(self.rate_per), self.end, self.step).map_err(query_error)?;
                let times = grid.timestamps();
                let count = |errors| format!("{} | count_over_time() {}", self.filter(errors), self.by());
                let calls = self.series(r, tenants, &count(false), grid).await?;
                let errors =
                    if metric == "errors" { Some(self.series(r, tenants, &count(true), grid).await?) } else { None };
                let window = self.rate_per.div_ceil(self.step).max(1) as usize;
                let window_secs = (window as u64 * self.step) as f64 / SECOND as f64;
                let mut out = Vec::new();
                for s in &calls {
                    let labels = self.labels(s);
                    let sums = window_sums(&s.values, window);
                    let err_sums = errors.as_ref().map(|e| {
                        e.iter()
                            .find(|x| x.labels == s.labels)
                            .map(|x| window_sums(&x.values, window))
                            .unwrap_or_default()
                    });
                    let mut points = Vec::new();
                    for (i, t) in times.iter().enumerate().filter(|(_, t)| **t >= self.start) {
                        match &err_sums {
                            None => points.push((*t, sums[i] / window_secs)),
                            Some(errs) if sums[i] > 0.0 => {
                                points.push((*t, errs.get(i).copied().unwrap_or(0.0) / sums[i]))
                            }
                            Some(_) => {}
                        }
                    }
                    out.push((labels, points));
                }
                if metric == "errors" {
                    ("service_error_rate", "fraction of spans with an error status, by service", out)
                } else {
                    ("service_call_rate", "calls per second, by service", out)
                }
            }
        };
        let (name, help) = if self.by_operation {
            (name.replacen("service", "service_operation", 1), format!("{help} and operation"))
        } else {
            (name.to_owned(), help.to_owned())
        };
        let metrics: Vec<Json> = points
            .into_iter()
            .map(|(labels, points)| {
                json!({
                    "labels": labels.into_iter().map(|(n, v)| json!({ "name": n, "value": v })).collect::<Vec<_>>(),
                    "metricPoints": points.into_iter().map(|(t, v)| json!({
                        "gaugeValue": { "doubleValue": spoor_model::json::double_json(v) },
                        "timestamp": spoor_model::time::format_rfc3339(t),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(json!({ "name": name, "type": "GAUGE", "help": help, "metrics": metrics }))
    }

    /// `service_name` and, by operation, `operation`: Jaeger's label names.
    fn labels(&self, s: &Series) -> Vec<(String, String)> {
        let text = |l: &Label| match l {
            Label::Str(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let mut out = Vec::new();
        if let Some((_, l)) = s.labels.first() {
            out.push(("service_name".to_owned(), text(l)));
        }
        if self.by_operation
            && let Some((_, l)) = s.labels.get(1)
        {
            out.push(("operation".to_owned(), text(l)));
        }
        out
    }
}

/// For each step, the sum of the `window` steps ending with it (missing samples count 0).
fn window_sums(values: &[f64], window: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let mut sum = 0.0;
    for i in 0..values.len() {
        if !values[i].is_nan() {
            sum += values[i];
        }
        if i >= window {
            let old = values[i - window];
            if !old.is_nan() {
                sum -= old;
            }
        }
        out.push(sum);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_sums() {
        let v = [1.0, f64::NAN, 2.0, 3.0, f64::NAN];
        assert_eq!(window_sums(&v, 2), vec![1.0, 1.0, 2.0, 5.0, 3.0]);
        assert_eq!(window_sums(&v, 1), vec![1.0, 0.0, 2.0, 3.0, 0.0]);
    }
}
