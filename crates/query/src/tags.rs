//! Tag names and values for autocomplete.
//!
//! Names come from `meta.keys` of the blocks in range (written with each block, so no data is
//! read) and from the head; with a filter, from the attribute lists of the spans that pass it.
//! Values are a search: `{ filter && attr != nil } | select(attr)` over the newest traces,
//! collecting the selected attribute's distinct values, so they follow exactly the evaluator's
//! notion of where an attribute lives.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, BooleanArray, ListArray, RecordBatch};
use spoor_block::schema as col;
use spoor_store::blocks::Blocks;
use spoor_store::head::Head;
use spoor_traceql::ast::{
    Attribute, BinOp, FieldExpr, Intrinsic, Pipeline, Query, Root, Span, SpansetExpr, SpansetQuery, Stage, Static,
};

use crate::error::Result;
use crate::hit::Value;
use crate::plan::Plan;
use crate::search::{SearchRequest, search};

/// Attribute scopes of the tag-name endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameScope {
    Resource,
    Span,
    Intrinsic,
    Event,
    Link,
    Instrumentation,
}

impl NameScope {
    pub fn as_str(self) -> &'static str {
        match self {
            NameScope::Resource => "resource",
            NameScope::Span => "span",
            NameScope::Intrinsic => "intrinsic",
            NameScope::Event => "event",
            NameScope::Link => "link",
            NameScope::Instrumentation => "instrumentation",
        }
    }
}

pub struct TagQuery {
    /// Unix ns, inclusive.
    pub range: Option<(u64, u64)>,
    /// Only spans passing this filter (the inside of a `{ }`) count.
    pub filter: Option<FieldExpr>,
    /// Names per scope / values returned at most.
    pub limit: usize,
    /// Values: stop once their text adds up to this many bytes.
    pub max_bytes: usize,
}

/// Traces a tag-values search looks at, newest first: enough for the values people pick from,
/// bounded so autocomplete stays fast on any amount of data.
const VALUE_TRACES: usize = 5_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TagNames {
    pub span: BTreeSet<String>,
    pub resource: BTreeSet<String>,
    pub event: BTreeSet<String>,
    pub link: BTreeSet<String>,
    pub instrumentation: BTreeSet<String>,
}

impl TagNames {
    pub fn merge(&mut self, other: TagNames) {
        self.span.extend(other.span);
        self.resource.extend(other.resource);
        self.event.extend(other.event);
        self.link.extend(other.link);
        self.instrumentation.extend(other.instrumentation);
    }

    /// The names of one scope (intrinsics are a fixed list the API layer knows).
    pub fn scope(&self, scope: NameScope) -> &BTreeSet<String> {
        static EMPTY: BTreeSet<String> = BTreeSet::new();
        match scope {
            NameScope::Span => &self.span,
            NameScope::Resource => &self.resource,
            NameScope::Event => &self.event,
            NameScope::Link => &self.link,
            NameScope::Instrumentation => &self.instrumentation,
            NameScope::Intrinsic => &EMPTY,
        }
    }
}

/// `{ expr }` as a query.
fn filter_query(expr: FieldExpr, select: Option<Attribute>) -> Query {
    let span = Span::default();
    let mut stages = vec![Stage::Spanset(SpansetExpr::Filter { expr, span })];
    if let Some(attr) = select {
        stages.push(Stage::Select { attrs: vec![attr], span });
    }
    Query { root: Root::Spans(SpansetQuery::Pipeline(Pipeline { stages })), hints: Vec::new() }
}

pub async fn names(head: &Head, blocks: &Blocks, tenant: &str, q: &TagQuery) -> Result<TagNames> {
    let mut out = TagNames::default();
    let filter = match &q.filter {
        Some(expr) => Some(Plan::new(&filter_query(expr.clone(), None))?),
        None => None,
    };
    let traces = head.snapshot(tenant);
    if !traces.is_empty() {
        let batch = spoor_block::encode_batch(traces.iter().map(|(id, f)| (*id, &f[..])))?;
        let mask = match &filter {
            Some(plan) if plan.prefilter_columns(batch.schema().as_ref()).is_some() => Some(plan.prefilter(&batch)?),
            _ => None,
        };
        batch_names(&batch, mask.as_ref(), &mut out);
    }
    for reader in blocks.visible(tenant) {
        let m = reader.meta();
        if q.range.is_some_and(|(start, end)| m.start_unix_nano > end || m.end_unix_nano < start) {
            continue;
        }
        let prefilter = match &filter {
            Some(plan) => plan.prefilter_columns(reader.schema().await?.as_ref()),
            None => None,
        };
        let (Some(plan), Some(mut columns)) = (&filter, prefilter) else {
            // No filter: the block's key catalog says it all.
            let k = &m.keys;
            out.span.extend(k.span.iter().cloned());
            out.resource.extend(k.resource.iter().cloned());
            out.event.extend(k.event.iter().cloned());
            out.link.extend(k.link.iter().cloned());
            out.instrumentation.extend(k.instrumentation.iter().cloned());
            continue;
        };
        let schema = reader.schema().await?;
        for name in [col::ATTRS, col::RESOURCE_ATTRS, col::EVENTS, col::LINKS, col::SCOPE_ATTRS] {
            columns.push(name.to_owned());
        }
        columns.extend(schema.fields().iter().map(|f| f.name()).filter(|n| is_dedicated(n)).cloned());
        columns.sort();
        columns.dedup();
        let row_groups = reader.footer().await?.num_row_groups();
        for rg in 0..row_groups {
            let batch = reader.read_row_group(rg, &columns, None).await?;
            let mask = plan.prefilter(&batch)?;
            if mask.true_count() > 0 {
                batch_names(&batch, Some(&mask), &mut out);
            }
        }
    }
    Ok(out)
}

fn is_dedicated(column: &str) -> bool {
    column.starts_with("span.") || column.starts_with("resource.")
}

/// Keys of the rows of `batch` (all, or those set in `mask`).
fn batch_names(batch: &RecordBatch, mask: Option<&BooleanArray>, out: &mut TagNames) {
    let keep = |row: usize| mask.is_none_or(|m| m.is_valid(row) && m.value(row));
    // Dedicated columns: the key is present on a kept row where the column has a value.
    for field in batch.schema().fields() {
        let name = field.name();
        let Some(array) = batch.column_by_name(name) else { continue };
        let (set, key) = if let Some(key) = name.strip_prefix("span.") {
            (&mut out.span, key)
        } else if let Some(key) = name.strip_prefix("resource.") {
            (&mut out.resource, key)
        } else if name == col::SERVICE_NAME {
            (&mut out.resource, "service.name")
        } else {
            continue;
        };
        if (0..array.len()).any(|r| keep(r) && array.is_valid(r)) {
            set.insert(key.to_owned());
        }
    }
    let list = |name: &str| batch.column_by_name(name).and_then(|c| c.as_list_opt::<i32>());
    if let Some(l) = list(col::ATTRS) {
        list_keys(l, &keep, &mut out.span);
    }
    if let Some(l) = list(col::RESOURCE_ATTRS) {
        list_keys(l, &keep, &mut out.resource);
    }
    if let Some(l) = list(col::SCOPE_ATTRS) {
        list_keys(l, &keep, &mut out.instrumentation);
    }
    if let Some(l) = list(col::EVENTS) {
        nested_keys(l, &keep, &mut out.event);
    }
    if let Some(l) = list(col::LINKS) {
        nested_keys(l, &keep, &mut out.link);
    }
}

/// Events and links: a list of structs per row, each with its own attribute list.
fn nested_keys(list: &ListArray, keep: &dyn Fn(usize) -> bool, set: &mut BTreeSet<String>) {
    let Some(items) = list.values().as_struct_opt() else { return };
    let Some(attrs) = items.column_by_name(col::ATTRS).and_then(|c| c.as_list_opt::<i32>()) else { return };
    let offsets = list.value_offsets();
    for row in 0..list.len() {
        if keep(row) && list.is_valid(row) {
            for item in offsets[row] as usize..offsets[row + 1] as usize {
                list_keys_row(attrs, item, set);
            }
        }
    }
}

fn list_keys(list: &ListArray, keep: &dyn Fn(usize) -> bool, set: &mut BTreeSet<String>) {
    for row in 0..list.len() {
        if keep(row) && list.is_valid(row) {
            list_keys_row(list, row, set);
        }
    }
}

fn list_keys_row(list: &ListArray, row: usize, set: &mut BTreeSet<String>) {
    let Some(items) = list.values().as_struct_opt() else { return };
    let Some(keys) = items.column_by_name(col::KEY).and_then(|c| c.as_string_opt::<i32>()) else { return };
    let offsets = list.value_offsets();
    for i in offsets[row] as usize..offsets[row + 1] as usize {
        let key = keys.value(i);
        if !set.contains(key) {
            set.insert(key.to_owned());
        }
    }
}

/// Distinct values of `attr` on the newest spans that have it (and pass the filter).
pub async fn values(head: &Head, blocks: &Blocks, tenant: &str, attr: &Attribute, q: &TagQuery) -> Result<Vec<Value>> {
    let span = Span::default();
    let present = FieldExpr::Binary {
        op: BinOp::Ne,
        lhs: Box::new(FieldExpr::Attr { attr: attr.clone(), span }),
        rhs: Box::new(FieldExpr::Static { value: Static::Nil, span }),
        span,
    };
    let expr = match &q.filter {
        Some(filter) => {
            FieldExpr::Binary { op: BinOp::And, lhs: Box::new(filter.clone()), rhs: Box::new(present), span }
        }
        None => present,
    };
    let query = filter_query(expr, Some(attr.clone()));
    let req = SearchRequest {
        plan: Arc::new(Plan::new(&query)?),
        limit: VALUE_TRACES,
        spss: usize::MAX,
        range: q.range,
        min_duration: None,
        max_duration: None,
    };
    let key = match attr {
        Attribute::Intrinsic(i) => i.as_str().to_owned(),
        Attribute::Attr { name, .. } => name.clone(),
    };
    let found = search(head, blocks, tenant, &req).await?;
    let mut out: Vec<Value> = Vec::new();
    let mut bytes = 0;
    for trace in &found.traces {
        // Results carry these in their own fields rather than as span attributes.
        let own: Option<Value> = match attr {
            Attribute::Intrinsic(Intrinsic::TraceRootName) => trace.root_name.clone().map(Value::Str),
            Attribute::Intrinsic(Intrinsic::TraceRootService) => trace.root_service.clone().map(Value::Str),
            _ => None,
        };
        let spans = trace.spansets.iter().flat_map(|set| &set.spans);
        let values: Vec<Value> = match (attr, own) {
            (_, Some(v)) => vec![v],
            (Attribute::Intrinsic(Intrinsic::Name), _) => spans.map(|s| Value::Str(s.name.clone())).collect(),
            _ => spans.flat_map(|s| &s.attributes).filter(|(k, _)| *k == key).flat_map(|(_, v)| elements(v)).collect(),
        };
        for v in values {
            if matches!(v, Value::Nil | Value::Any(_)) || out.contains(&v) {
                continue;
            }
            bytes += value_bytes(&v);
            if out.len() >= q.limit || bytes > q.max_bytes {
                return Ok(out);
            }
            out.push(v);
        }
    }
    Ok(out)
}

/// A value as tag values: an array's scalar elements each (typed as they are), else itself.
fn elements(v: &Value) -> Vec<Value> {
    use spoor_model::otlp::{AnyValue, any_value::Value as V};
    let Value::Any(bytes) = v else { return vec![v.clone()] };
    let Ok(AnyValue { value: Some(V::ArrayValue(array)) }) = <AnyValue as prost::Message>::decode(&bytes[..]) else {
        return Vec::new();
    };
    array
        .values
        .into_iter()
        .filter_map(|e| match e.value? {
            V::StringValue(s) => Some(Value::Str(s)),
            V::BoolValue(b) => Some(Value::Bool(b)),
            V::IntValue(i) => Some(Value::Int(i)),
            V::DoubleValue(f) => Some(Value::Float(f)),
            _ => None,
        })
        .collect()
}

fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len(),
        _ => 8,
    }
}
