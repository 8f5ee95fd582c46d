//! Service dependencies over a time window, from the stored spans themselves: every span whose
//! parent is in the same trace but belongs to another service is one call from the parent's
//! service to the span's (Jaeger's `dependencies`). The metrics generator's service-graph
//! series count the same kind of edges, but as counters since the process started: they
//! cannot answer "which services called which between t1 and t2", and they are lost with the
//! process. This scan can, over the head and every block overlapping the window.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use spoor_block::schema as col;
use spoor_store::blocks::Blocks;
use spoor_store::head::Head;

use crate::error::{Error, Result};
use crate::eval::columns::StrCol;
use crate::plan::Plan;
use crate::search::{self, Scan, SearchMetrics};

/// Calls per (parent service, child service).
type Counts = BTreeMap<(String, String), u64>;

/// Calls from `parent` to `child` counted in the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub parent: String,
    pub child: String,
    pub calls: u64,
}

/// The edges of one tenant among spans that start in `range` (unix ns, inclusive), sorted by
/// (parent, child).
pub async fn dependencies(
    head: &Head,
    blocks: &Blocks,
    tenant: &str,
    range: (u64, u64),
) -> Result<(Vec<Edge>, SearchMetrics)> {
    // Past the full retention tier traces were sampled or dropped: counting the rest would be
    // a silently low answer.
    let sampled = blocks.visible(tenant).iter().any(|b| {
        let m = b.meta();
        !m.tier.is_full() && m.start_unix_nano <= range.1 && m.end_unix_nano >= range.0
    });
    if sampled || !blocks.active_rollups(tenant, range).is_empty() {
        return Err(Error::Invalid(
            "this window reaches data past the full retention tier, where not every trace is kept: \
             dependencies need every span; use a shorter lookback"
                .into(),
        ));
    }
    // `{ }` reads the base columns only: IDs, start, service name.
    let query = spoor_traceql::parse("{ }").map_err(|e| Error::Internal(format!("the match-all query: {e}")))?;
    let scan = Scan { plan: Arc::new(Plan::new(&query)?), range, all_columns: false, full_tier_only: false };
    let each: Arc<dyn Fn(RecordBatch) -> Result<Counts> + Send + Sync> = Arc::new(move |batch| edges(&batch, range));
    let (found, metrics) = search::scan(head, blocks, tenant, &scan, each).await?;
    let mut all = Counts::new();
    for part in found {
        for (k, n) in part {
            *all.entry(k).or_default() += n;
        }
    }
    Ok((all.into_iter().map(|((parent, child), calls)| Edge { parent, child, calls }).collect(), metrics))
}

/// The edges of one batch. Batches hold whole traces (row groups never split one), so every
/// parent a span can have in its trace is in the same batch.
fn edges(batch: &RecordBatch, (start, end): (u64, u64)) -> Result<Counts> {
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| Error::Corrupt(format!("no column {name}")));
    let trace = column(col::TRACE_ID)?
        .as_fixed_size_binary_opt()
        .ok_or_else(|| Error::Corrupt("trace_id is not fixed-size binary".into()))?;
    let span =
        column(col::SPAN_ID)?.as_binary_opt::<i32>().ok_or_else(|| Error::Corrupt("span_id is not binary".into()))?;
    let parent = column(col::PARENT_SPAN_ID)?
        .as_binary_opt::<i32>()
        .ok_or_else(|| Error::Corrupt("parent_span_id is not binary".into()))?;
    let starts = column(col::START)?
        .as_primitive_opt::<arrow_array::types::UInt64Type>()
        .ok_or_else(|| Error::Corrupt("start_unix_nano is not u64".into()))?;
    let int = |name: &str| {
        column(name)?
            .as_primitive_opt::<arrow_array::types::Int32Type>()
            .ok_or_else(|| Error::Corrupt(format!("{name} is not i32")))
    };
    let (left, nested_parent) = (int(col::NESTED_LEFT)?, int(col::NESTED_PARENT)?);
    let service = StrCol::of(col::SERVICE_NAME, column(col::SERVICE_NAME)?)?;

    // Blocks store a parent as its nested-set number when it is in the trace, and by span ID
    // only when it is not derivable that way; both are looked up here.
    let mut by_id: HashMap<(&[u8], &[u8]), &str> = HashMap::with_capacity(batch.num_rows());
    let mut by_left: HashMap<(&[u8], i32), &str> = HashMap::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let svc = service.get(i).unwrap_or("");
        by_id.insert((trace.value(i), span.value(i)), svc);
        by_left.insert((trace.value(i), left.value(i)), svc);
    }
    let mut out = BTreeMap::new();
    for i in 0..batch.num_rows() {
        let t = starts.value(i);
        if t < start || t > end {
            continue;
        }
        let from = if parent.is_valid(i) && !parent.value(i).is_empty() {
            by_id.get(&(trace.value(i), parent.value(i)))
        } else if nested_parent.value(i) > 0 {
            by_left.get(&(trace.value(i), nested_parent.value(i)))
        } else {
            None
        };
        let child = service.get(i).unwrap_or("");
        if let Some(&from) = from
            && from != child
        {
            *out.entry((from.to_owned(), child.to_owned())).or_default() += 1;
        }
    }
    Ok(out)
}
