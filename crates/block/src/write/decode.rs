//! Trace decoding: one trace's encoded `ResourceSpans` fragments become its spans in row
//! order (de-duplicated, sorted by start time), each with the resource and scope it came with,
//! and the spans' nested-set numbers.

use std::collections::HashMap;
use std::collections::HashSet;

use bytes::Bytes;
use spoor_model::TraceId;
use spoor_model::otlp::ResourceSpans;

use super::view::{ResourceSpansV, SpanV};
use crate::error::{Error, Result};

/// One span of a trace being written, with the resource and scope it came with.
pub(super) struct SpanRef<'t, 'a> {
    pub rs: &'t ResourceSpansV<'a>,
    pub scope: usize,
    pub span: &'t SpanV<'a>,
}

/// A trace's spans, de-duplicated and sorted by start time.
pub(super) struct Trace<'t, 'a> {
    pub trace_id: TraceId,
    pub spans: Vec<SpanRef<'t, 'a>>,
}

/// A trace's fragments as views and the (fragment, scope, span) index of every span kept.
pub(super) struct TraceView<'a> {
    trace_id: TraceId,
    fragments: Vec<ResourceSpansV<'a>>,
    pub order: Vec<(u32, u32, u32)>,
}

/// Parses a trace's encoded fragments; strings and IDs stay in `fragments`.
pub(super) fn decode_trace(trace_id: TraceId, fragments: &[Bytes]) -> Result<TraceView<'_>> {
    let mut parsed = Vec::with_capacity(fragments.len());
    for f in fragments {
        parsed.push(ResourceSpansV::parse(f).map_err(|source| Error::Fragment { trace: trace_id, source })?);
    }
    Ok(TraceView::new(trace_id, parsed))
}

/// Views of a trace's decoded fragments (a compaction's, read back from blocks).
pub(super) fn view_trace(trace_id: TraceId, fragments: &[ResourceSpans]) -> TraceView<'_> {
    TraceView::new(trace_id, fragments.iter().map(ResourceSpansV::of).collect())
}

impl<'a> TraceView<'a> {
    fn new(trace_id: TraceId, fragments: Vec<ResourceSpansV<'a>>) -> Self {
        let mut seen = HashSet::<(&[u8], i32), ahash::RandomState>::default();
        let mut order = Vec::new();
        for (fi, rs) in fragments.iter().enumerate() {
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for (pi, span) in ss.spans.iter().enumerate() {
                    if seen.insert((span.span_id, span.kind)) {
                        order.push((fi as u32, si as u32, pi as u32));
                    }
                }
            }
        }
        drop(seen);
        // Stable: spans that start together keep their arrival order.
        order.sort_by_key(|&(f, s, p)| {
            fragments[f as usize].scope_spans[s as usize].spans[p as usize].start_time_unix_nano
        });
        TraceView { trace_id, fragments, order }
    }

    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    pub fn view(&self) -> Trace<'_, 'a> {
        let spans = self
            .order
            .iter()
            .map(|&(f, s, p)| {
                let rs = &self.fragments[f as usize];
                SpanRef { rs, scope: s as usize, span: &rs.scope_spans[s as usize].spans[p as usize] }
            })
            .collect();
        Trace { trace_id: self.trace_id, spans }
    }
}

/// Nested-set numbers of one span: DFS order within the trace, children by start time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Nested {
    pub left: i32,
    pub right: i32,
    /// The parent's `left`, 0 for a root, -1 for a span whose parent is not in the trace.
    pub parent: i32,
    /// The parent span ID cannot be derived from `parent` and is stored.
    pub explicit_parent: bool,
}

/// Numbers spans (already in start-time order) as a nested set. A span whose parent ID is not
/// in the trace is an orphan root (-1); spans only reachable through a cycle are entered at
/// the earliest of them, which becomes an orphan root too, so every span gets numbers.
pub(crate) fn nested_set(span_ids: &[&[u8]], parent_ids: &[&[u8]]) -> Vec<Nested> {
    let n = span_ids.len();
    let mut first = HashMap::<&[u8], usize, ahash::RandomState>::with_capacity_and_hasher(n, Default::default());
    for (i, id) in span_ids.iter().enumerate() {
        first.entry(id).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut has_parent = vec![false; n];
    for (i, parent) in parent_ids.iter().enumerate() {
        if parent.is_empty() {
            continue;
        }
        if let Some(&p) = first.get(parent)
            && p != i
        {
            children[p].push(i);
            has_parent[i] = true;
        }
    }
    let mut out = vec![Nested::default(); n];
    let mut visited = vec![false; n];
    let mut counter = 0i32;
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut dfs = |root: usize, out: &mut Vec<Nested>, visited: &mut Vec<bool>| {
        let orphan = !parent_ids[root].is_empty();
        counter += 1;
        out[root] = Nested { left: counter, right: 0, parent: if orphan { -1 } else { 0 }, explicit_parent: orphan };
        visited[root] = true;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            if let Some(&child) = children[node].get(next) {
                top.1 += 1;
                if !visited[child] {
                    visited[child] = true;
                    counter += 1;
                    out[child] = Nested { left: counter, right: 0, parent: out[node].left, explicit_parent: false };
                    stack.push((child, 0));
                }
            } else {
                counter += 1;
                out[node].right = counter;
                stack.pop();
            }
        }
    };
    for (i, has_parent) in has_parent.iter().enumerate() {
        if !has_parent {
            dfs(i, &mut out, &mut visited);
        }
    }
    for i in 0..n {
        if !visited[i] {
            dfs(i, &mut out, &mut visited);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(spans: &[(&[u8], &[u8])]) -> Vec<(i32, i32, i32, bool)> {
        let ids: Vec<&[u8]> = spans.iter().map(|s| s.0).collect();
        let parents: Vec<&[u8]> = spans.iter().map(|s| s.1).collect();
        nested_set(&ids, &parents).into_iter().map(|n| (n.left, n.right, n.parent, n.explicit_parent)).collect()
    }

    #[test]
    fn cycles_and_self_parents_become_orphan_roots() {
        // a is a root with child e; d names itself as parent; b and c are each other's parent,
        // so only a cycle reaches them: after all other trees, b (the earlier) is entered as an
        // orphan and c hangs below it.
        let got = numbers(&[(b"a", b""), (b"b", b"c"), (b"c", b"b"), (b"d", b"d"), (b"e", b"a")]);
        assert_eq!(got, [(1, 4, 0, false), (7, 10, -1, true), (8, 9, 7, false), (5, 6, -1, true), (2, 3, 1, false)]);
    }

    #[test]
    fn a_shared_span_id_parents_to_its_first_span() {
        // Two spans share ID x (client and server kinds); the child hangs below the first.
        let got = numbers(&[(b"x", b""), (b"x", b"r"), (b"y", b"x")]);
        assert_eq!(got, [(1, 4, 0, false), (5, 6, -1, true), (2, 3, 1, false)]);
    }
}
