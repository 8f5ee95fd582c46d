//! TraceQL metrics (`{ } | rate() by (resource.service.name)`): time series over a range of
//! steps, from the live traces and the blocks of a tenant (tempo-compat §1.8, §2.11).
//!
//! Every span that survives a metrics query's spanset pipeline is counted once, by its start
//! time, into the right-closed step bucket `(t - step, t]` stamped `t`. The head and each
//! block (each row group, even) are scanned independently into a `Partial` aggregate, and
//! partials merge: counts and sums add, minima and maxima combine, log2 histograms add. Only
//! the merged whole is turned into series, then second-stage operations (topk, bottomk,
//! filters) and arithmetic between queries run on the series.
//!
//! Decisions on Tempo's quirks (see docs/traceql.md): missing and non-numeric values are
//! ignored by every `*_over_time` function, so a bucket with a value keeps it (Q8, fixed);
//! every duration-typed value is in seconds, not only `duration` (Q9, fixed).
//!
//! The parts: `grid` (sample times and step buckets), `series` (the answer's types),
//! `compile` (the query as leaves and the arithmetic between them), `partial` (per-step
//! aggregates that merge), `second_stage` (topk, bottomk, filters and arithmetic on series).
//! This file drives them: a scan per leaf, partials merged, the whole finished into series.

mod compile;
mod grid;
mod partial;
mod second_stage;
mod series;

// The public API stays at `spoor_query::metrics::*`, whichever part defines it.
pub use compile::MAX_EXEMPLARS;
pub use grid::{Grid, MAX_INTERVALS, default_step, min_step};
pub use partial::MAX_SERIES;
pub use series::{Exemplar, FloatLabel, Label, Series};

use std::sync::Arc;

use arrow_array::RecordBatch;
use spoor_store::blocks::Blocks;
use spoor_store::head::Head;
use spoor_traceql::ast::Query;

use crate::error::{Error, Result};
use crate::search::{self, Scan, SearchMetrics};
use compile::{Compiled, Leaf, Node};
use partial::Partial;
use second_stage::{Operand, arithmetic, second_stage};

pub struct MetricsRequest {
    /// A checked query whose root is a metrics query.
    pub query: Query,
    pub grid: Grid,
    /// Exemplars asked for by the request (`exemplars=N`); the query's `with(exemplars=...)`
    /// hint overrides it. Capped at [`MAX_EXEMPLARS`].
    pub exemplars: usize,
}

#[derive(Debug, Default)]
pub struct MetricsResult {
    /// Sorted by labels; series without samples left out.
    pub series: Vec<Series>,
    /// Groups past [`MAX_SERIES`] were left out.
    pub truncated: bool,
    pub metrics: SearchMetrics,
}

/// Evaluates a metrics query over the head and the blocks of `tenants`.
pub async fn query_range(
    head: &Head,
    blocks: &Blocks,
    tenants: &[String],
    req: &MetricsRequest,
) -> Result<MetricsResult> {
    let compiled = Compiled::new(&req.query, req.exemplars)?;
    let grid = req.grid;
    let mut metrics = SearchMetrics::default();
    let mut partials = Vec::new();
    for leaf in &compiled.leaves {
        let mut partial = Partial::default();
        let scan = Scan {
            plan: leaf.plan.clone(),
            range: grid.span_range(),
            all_columns: leaf.compare.is_some(),
            full_tier_only: true,
        };
        let each: Arc<dyn Fn(RecordBatch) -> Result<Partial> + Send + Sync> = {
            let leaf = leaf.clone();
            Arc::new(move |batch| Partial::of(&leaf, &grid, &batch))
        };
        for tenant in tenants {
            partial.merge(from_rollups(blocks, tenant, leaf, &grid, &mut metrics).await?);
            let (found, m) = search::scan(head, blocks, tenant, &scan, each.clone()).await?;
            found.into_iter().for_each(|p| partial.merge(p));
            metrics += &m;
        }
        partials.push(partial);
    }
    let truncated = partials.iter().any(|p| p.truncated);
    Ok(MetricsResult { series: finish(&compiled, partials, &grid)?, truncated, metrics })
}

/// What the rollups of `tenant` contribute over the grid: where tiered retention dropped or
/// sampled traces, only rollups hold every span, so sampled blocks are never counted (the scan
/// leaves them out) and a query rollups cannot answer there is refused rather than answered
/// from part of the data.
async fn from_rollups(
    blocks: &Blocks,
    tenant: &str,
    leaf: &Leaf,
    grid: &Grid,
    metrics: &mut SearchMetrics,
) -> Result<Partial> {
    let range = grid.span_range();
    let rollups = blocks.active_rollups(tenant, range);
    let sampled = blocks.visible(tenant).iter().any(|b| {
        let m = b.meta();
        !m.tier.is_full() && m.start_unix_nano <= range.1 && m.end_unix_nano >= range.0
    });
    if rollups.is_empty() && !sampled {
        return Ok(Partial::default());
    }
    let labels = leaf.rollup.as_ref().map_err(|why| {
        Error::Invalid(format!(
            "this range reaches data past the full retention tier, where only rollups hold every span, \
             and {why}"
        ))
    })?;
    if !grid.step().is_multiple_of(spoor_block::rollup::MINUTE_NS) {
        return Err(Error::Invalid(
            "this range reaches data past the full retention tier, counted per minute: the step must be a \
             multiple of 1m"
                .into(),
        ));
    }
    let mut partial = Partial::default();
    for meta in &rollups {
        let rows = blocks.read_rollup(meta).await?;
        metrics.inspected_bytes += meta.data_bytes;
        partial.merge(Partial::of_rollups(leaf, labels, grid, &rows));
    }
    Ok(partial)
}

/// The same over in-memory batches, each aggregated on its own and merged as blocks are.
pub fn evaluate_batches(query: &Query, grid: &Grid, exemplars: usize, batches: &[RecordBatch]) -> Result<Vec<Series>> {
    let compiled = Compiled::new(query, exemplars)?;
    let mut partials = Vec::new();
    for leaf in &compiled.leaves {
        let mut partial = Partial::default();
        for batch in batches {
            partial.merge(Partial::of(leaf, grid, batch)?);
        }
        partials.push(partial);
    }
    finish(&compiled, partials, grid)
}

/// The merged partials (one per leaf, in order) as the answer: each leaf's series, combined
/// by the query's arithmetic, sorted by labels, without series that have no sample.
fn finish(compiled: &Compiled, partials: Vec<Partial>, grid: &Grid) -> Result<Vec<Series>> {
    let mut partials: Vec<Option<Partial>> = partials.into_iter().map(Some).collect();
    let mut series = match operand(compiled, &compiled.root, &mut partials, grid)? {
        Operand::Series(s) => s,
        Operand::Scalar(..) => return Err(Error::Invalid("a metrics query needs a metrics function".into())),
    };
    series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(series)
}

fn operand(compiled: &Compiled, node: &Node, partials: &mut [Option<Partial>], grid: &Grid) -> Result<Operand> {
    Ok(match node {
        Node::Leaf(i) => {
            let partial = partials.get_mut(*i).and_then(Option::take).unwrap_or_default();
            Operand::Series(leaf_series(&compiled.leaves[*i], partial, grid)?)
        }
        Node::Scalar(v, text) => Operand::Scalar(*v, text.clone()),
        Node::Binary(op, lhs, rhs) => {
            let lhs = operand(compiled, lhs, partials, grid)?;
            let rhs = operand(compiled, rhs, partials, grid)?;
            arithmetic(*op, lhs, rhs)
        }
        Node::Staged(inner, stages) => match operand(compiled, inner, partials, grid)? {
            Operand::Series(series) => Operand::Series(second_stage(series, stages)?),
            Operand::Scalar(..) => return Err(Error::Invalid("topk, bottomk and filters need series".into())),
        },
    })
}

/// One leaf's merged aggregate as series, after its second stage (`compare()`'s counts of
/// attribute values are returned as they are).
fn leaf_series(leaf: &Leaf, partial: Partial, grid: &Grid) -> Result<Vec<Series>> {
    match &leaf.compare {
        Some(compare) => Ok(partial.compare_series(compare.top)),
        None => second_stage(partial.series(leaf, grid), &leaf.second),
    }
}
