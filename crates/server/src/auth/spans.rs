//! Span-level access for read tokens (`spans:` in the tokens file): a TraceQL spanset filter
//! (`{ resource.service.name = "checkout" }`) naming the spans a token may see. A trace keeps
//! its shape: the other spans become placeholders with their IDs, times and parent links only.
//!
//! Queries cannot reach hidden spans: the guard rewrites every search and metrics query so
//! that each `{ ... }` of it also requires the token's filter (`{ (q) && (filter) }`), so a
//! hidden span never enters a spanset, is never counted, and its values are never selected or
//! grouped by. Tag names and values are collected from visible spans only. What the engine
//! reads from a trace's root span (`trace:rootName`, `trace:rootService`) could describe a
//! hidden span, so queries naming those are refused, and search results carry neither the root
//! names nor the per-service statistics.

use std::collections::HashSet;

use bytes::Bytes;
use serde_json::Value as Json;
use spoor_model::TraceId;
use spoor_model::otlp::TracesData;
use spoor_query::Plan;
use spoor_traceql::ast::{
    Attribute, BinOp, FieldExpr, Intrinsic, MetricsExpr, Pipeline, Query, Root, Span, SpansetExpr, SpansetQuery, Stage,
};

/// What a hidden root span's names read as in search results.
pub const HIDDEN: &str = "[hidden]";

/// Put in a request's extensions by the guard when the caller's token has a `spans` filter; the
/// read handlers apply it.
#[derive(Clone, Debug)]
pub struct SpanFiltering(pub std::sync::Arc<SpanFilter>);

/// A token's span filter, parsed once when the tokens file is read.
#[derive(Debug)]
pub struct SpanFilter {
    /// The condition inside the filter's braces.
    expr: FieldExpr,
    /// `{ expr }`, compiled, to tell visible spans of a trace.
    plan: Plan,
}

impl PartialEq for SpanFilter {
    fn eq(&self, other: &SpanFilter) -> bool {
        self.expr == other.expr
    }
}

impl Eq for SpanFilter {}

impl SpanFilter {
    /// Parses the `spans:` text: one spanset filter, `{ condition }`, nothing else.
    pub fn parse(text: &str) -> Result<SpanFilter, String> {
        let query = spoor_traceql::parse(text).map_err(|e| format!("spans: invalid TraceQL: {e}"))?;
        let one = match &query.root {
            Root::Spans(SpansetQuery::Pipeline(p)) if query.hints.is_empty() => match p.stages.as_slice() {
                [Stage::Spanset(SpansetExpr::Filter { expr, .. })] => Some(expr.clone()),
                _ => None,
            },
            _ => None,
        };
        let expr =
            one.ok_or("spans: must be one spanset filter, { condition }, without pipelines, operators or hints")?;
        let whole = Query {
            root: Root::Spans(SpansetQuery::Pipeline(Pipeline {
                stages: vec![Stage::Spanset(SpansetExpr::Filter { expr: expr.clone(), span: Span::default() })],
            })),
            hints: Vec::new(),
        };
        let plan = Plan::new(&whole).map_err(|e| format!("spans: {e}"))?;
        Ok(SpanFilter { expr, plan })
    }

    /// `filter && condition`, or the condition alone: the filter of a tag names or values
    /// request.
    pub fn and(&self, filter: Option<FieldExpr>) -> FieldExpr {
        match filter {
            None => self.expr.clone(),
            Some(f) => and(f, self.expr.clone()),
        }
    }

    /// Refuses a query naming what describes a trace's root span rather than the spans the
    /// token sees.
    pub fn check_query(&self, text: &str) -> Result<(), String> {
        let attrs = spoor_traceql::referenced(text).map_err(|e| format!("invalid TraceQL query: {e}"))?;
        for a in attrs {
            if let Attribute::Intrinsic(i @ (Intrinsic::TraceRootName | Intrinsic::TraceRootService)) = a {
                let name = if i == Intrinsic::TraceRootName { "trace:rootName" } else { "trace:rootService" };
                return Err(format!(
                    "the query names {name}, which may describe a span this token may not see; \
                     query the root span's own name or resource instead"
                ));
            }
        }
        Ok(())
    }

    /// The query a token with this filter runs instead of `text`: every `{ c }` becomes
    /// `{ (c) && (filter) }`. An empty query is the filter alone.
    pub fn restrict(&self, text: &str) -> Result<String, String> {
        if text.trim().is_empty() {
            return Ok(format!("{{ {} }}", self.expr));
        }
        self.check_query(text)?;
        let mut query = spoor_traceql::parse(text).map_err(|e| format!("invalid TraceQL query: {e}"))?;
        match &mut query.root {
            Root::Spans(q) => self.restrict_query(q),
            Root::Metrics(m) => self.restrict_metrics(m),
        }
        Ok(query.to_string())
    }

    fn restrict_metrics(&self, m: &mut MetricsExpr) {
        match m {
            MetricsExpr::Query(q) => self.restrict_query(&mut q.spans),
            MetricsExpr::Binary { lhs, rhs, .. } => {
                self.restrict_metrics(lhs);
                self.restrict_metrics(rhs);
            }
            MetricsExpr::Staged { expr, .. } => self.restrict_metrics(expr),
            MetricsExpr::Scalar { .. } => {}
        }
    }

    fn restrict_query(&self, q: &mut SpansetQuery) {
        match q {
            SpansetQuery::Pipeline(p) => {
                for stage in &mut p.stages {
                    if let Stage::Spanset(e) = stage {
                        self.restrict_spanset(e);
                    }
                }
            }
            SpansetQuery::Op { lhs, rhs, .. } => {
                self.restrict_query(lhs);
                self.restrict_query(rhs);
            }
        }
    }

    fn restrict_spanset(&self, e: &mut SpansetExpr) {
        match e {
            SpansetExpr::Filter { expr, .. } => {
                let inner = std::mem::replace(expr, FieldExpr::Static { value: true_static(), span: Span::default() });
                *expr = and(inner, self.expr.clone());
            }
            SpansetExpr::Op { lhs, rhs, .. } => {
                self.restrict_spanset(lhs);
                self.restrict_spanset(rhs);
            }
        }
    }

    /// The IDs of the spans of one trace (its stored fragments) that the filter lets through.
    pub fn visible(&self, id: TraceId, fragments: &[Bytes]) -> Result<HashSet<Vec<u8>>, String> {
        let batch = spoor_block::encode_batch([(id, fragments)]).map_err(|e| e.to_string())?;
        let hits = self.plan.evaluate(&batch, usize::MAX).map_err(|e| e.to_string())?;
        Ok(hits.into_iter().flat_map(|h| h.spansets).flat_map(|s| s.spans).map(|s| s.span_id).collect())
    }

    /// Turns every span not in `visible` into a placeholder (IDs, times, parent link, flags),
    /// and empties the resource and scope of groups left without a visible span.
    pub fn apply(visible: &HashSet<Vec<u8>>, trace: &mut TracesData) {
        for rs in &mut trace.resource_spans {
            let mut any_visible = false;
            for ss in &mut rs.scope_spans {
                let mut scope_visible = false;
                for span in &mut ss.spans {
                    if visible.contains(&span.span_id) {
                        scope_visible = true;
                        continue;
                    }
                    let keep = spoor_model::otlp::Span {
                        trace_id: std::mem::take(&mut span.trace_id),
                        span_id: std::mem::take(&mut span.span_id),
                        parent_span_id: std::mem::take(&mut span.parent_span_id),
                        flags: span.flags,
                        start_time_unix_nano: span.start_time_unix_nano,
                        end_time_unix_nano: span.end_time_unix_nano,
                        ..Default::default()
                    };
                    *span = keep;
                }
                if !scope_visible {
                    ss.scope = None;
                    ss.schema_url.clear();
                }
                any_visible |= scope_visible;
            }
            if !any_visible {
                rs.resource = None;
                rs.schema_url.clear();
            }
        }
    }

    /// Search results: the root's names and the per-service statistics may describe hidden
    /// spans, so they go; matched spans are visible ones already (the query was restricted).
    pub fn apply_search_json(answer: &mut Json) {
        let Some(traces) = answer.get_mut("traces").and_then(Json::as_array_mut) else { return };
        for t in traces {
            if let Some(obj) = t.as_object_mut() {
                for key in ["rootServiceName", "rootTraceName"] {
                    if obj.contains_key(key) {
                        obj.insert(key.into(), Json::String(HIDDEN.into()));
                    }
                }
                obj.remove("serviceStats");
            }
        }
    }
}

fn true_static() -> spoor_traceql::ast::Static {
    spoor_traceql::ast::Static::Bool(true)
}

fn and(lhs: FieldExpr, rhs: FieldExpr) -> FieldExpr {
    FieldExpr::Binary { op: BinOp::And, lhs: Box::new(lhs), rhs: Box::new(rhs), span: Span::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_restricted_to_the_filter() {
        let f = SpanFilter::parse(r#"{ resource.service.name = "checkout" }"#).unwrap();
        for (q, want) in [
            ("", r#"{ resource.service.name = "checkout" }"#),
            ("{ }", r#"resource.service.name = "checkout""#),
            (r#"{ span.user = "a" } >> { status = error }"#, "status = error"),
            ("{ } | rate() by (span.http.route)", "rate()"),
        ] {
            let got = f.restrict(q).unwrap();
            assert!(got.contains(want), "{q} -> {got}");
            let parsed = spoor_traceql::parse(&got).unwrap();
            // Every filter of the rewritten query carries the token's condition.
            assert_eq!(got.matches("checkout").count(), q.matches('{').count().max(1), "{got}");
            drop(parsed);
        }
        assert!(f.restrict("{ trace:rootService = \"x\" }").unwrap_err().contains("trace:rootService"));
        assert!(f.restrict("{ rootName = \"x\" }").unwrap_err().contains("trace:rootName"));
        for bad in ["{ } | count() > 1", "{ .a = 1 } && { .b = 2 }", "nope", "{ } | rate()"] {
            assert!(SpanFilter::parse(bad).is_err(), "{bad}");
        }
    }
}
