//! The key catalog: which attribute keys a block holds (for `BlockMeta::keys`, so tag-name
//! queries need no data), and which scalar attributes deserve dedicated columns when the writer
//! chooses them from the data (`DedicatedPolicy::FromData`).

use std::collections::{HashMap, HashSet};

use super::decode::TraceView;
use super::view::{Kv, SpanV, Val};
use crate::meta::AttributeKeys;
use crate::schema::{AttrKind, AttrScope, Dedicated};

/// Distinct attribute keys per scope as rows are written (for `BlockMeta::keys`).
#[derive(Default)]
pub(super) struct KeyCatalog {
    scopes: [HashSet<String, ahash::RandomState>; 5],
    truncated: bool,
    /// The resource and scope attributes seen last in the current trace (by address: the
    /// trace's decoded fragments stay put until `new_trace`): the spans of one resource come
    /// together, and looking their shared keys up again per span cost ~5% of encoding.
    last_resource: usize,
    last_scope: usize,
}

impl KeyCatalog {
    const SPAN: usize = 0;
    const RESOURCE: usize = 1;
    const EVENT: usize = 2;
    const LINK: usize = 3;
    const INSTRUMENTATION: usize = 4;

    fn add(&mut self, scope: usize, attrs: &[Kv<'_>]) {
        let set = &mut self.scopes[scope];
        for kv in attrs {
            // Look up by &str first: allocating only for new keys keeps this cheap.
            if !set.contains(kv.key) {
                if set.len() >= AttributeKeys::MAX_PER_SCOPE {
                    self.truncated = true;
                    continue;
                }
                set.insert(kv.key.to_owned());
            }
        }
    }

    /// Addresses of the previous trace's fragments mean nothing once it is dropped.
    pub fn new_trace(&mut self) {
        self.last_resource = 0;
        self.last_scope = 0;
    }

    /// `previous`: the span before in the trace; spans of one kind repeat their key list.
    pub fn span(&mut self, span: &SpanV<'_>, previous: Option<&SpanV<'_>>, resource: &[Kv<'_>], scope: &[Kv<'_>]) {
        let same_keys =
            |p: &SpanV<'_>| p.attributes.iter().map(|kv| kv.key).eq(span.attributes.iter().map(|kv| kv.key));
        if !previous.is_some_and(same_keys) {
            self.add(Self::SPAN, &span.attributes);
        }
        if std::mem::replace(&mut self.last_resource, resource.as_ptr() as usize) != resource.as_ptr() as usize {
            self.add(Self::RESOURCE, resource);
        }
        if std::mem::replace(&mut self.last_scope, scope.as_ptr() as usize) != scope.as_ptr() as usize {
            self.add(Self::INSTRUMENTATION, scope);
        }
        for e in &span.events {
            self.add(Self::EVENT, &e.attributes);
        }
        for l in &span.links {
            self.add(Self::LINK, &l.attributes);
        }
    }

    pub fn finish(&self) -> AttributeKeys {
        let sorted = |i: usize| {
            let mut v: Vec<String> = self.scopes[i].iter().cloned().collect();
            v.sort();
            v
        };
        AttributeKeys {
            span: sorted(Self::SPAN),
            resource: sorted(Self::RESOURCE),
            event: sorted(Self::EVENT),
            link: sorted(Self::LINK),
            instrumentation: sorted(Self::INSTRUMENTATION),
            truncated: self.truncated,
            generic_span: None,
            generic_resource: None,
        }
    }
}

/// Per-key counts of scalar string/int attributes, to choose dedicated columns from data.
#[derive(Default)]
pub(super) struct KeyStats {
    pub spans: u64,
    counts: HashMap<(AttrScope, AttrKind), HashMap<String, u64, ahash::RandomState>>,
}

impl KeyStats {
    pub fn count(&mut self, trace: &TraceView<'_>) {
        let view = trace.view();
        self.spans += view.spans.len() as u64;
        let mut seen = HashSet::<_, ahash::RandomState>::default();
        for s in &view.spans {
            seen.clear();
            for (scope, attrs) in [(AttrScope::Span, &s.span.attributes[..]), (AttrScope::Resource, &s.rs.resource[..])]
            {
                for kv in attrs {
                    let Some(kind) = scalar_kind(kv) else { continue };
                    if kv.key.is_empty() || kv.key.len() > 128 || !seen.insert((scope, kv.key, kind)) {
                        continue;
                    }
                    // Look up by &str first: allocating only for new keys keeps this cheap.
                    match self.counts.get_mut(&(scope, kind)).and_then(|m| m.get_mut(kv.key)) {
                        Some(n) => *n += 1,
                        None => {
                            self.counts.entry((scope, kind)).or_default().insert(kv.key.to_owned(), 1);
                        }
                    }
                }
            }
        }
    }

    pub fn choose(&self, min_share: f64, max_span: usize, max_resource: usize) -> Vec<Dedicated> {
        let service = Dedicated::new(AttrScope::Resource, "service.name", AttrKind::String);
        let threshold = (min_share * self.spans as f64).max(1.0);
        // Per (scope, key) the more frequent kind; a key is dedicated with one kind only.
        let mut best = HashMap::<(AttrScope, &str), (u64, AttrKind)>::new();
        let counts =
            self.counts.iter().flat_map(|((scope, kind), m)| m.iter().map(move |(key, n)| (scope, key, kind, n)));
        for (scope, key, kind, &n) in counts {
            let e = best.entry((*scope, key.as_str())).or_insert((n, *kind));
            if n > e.0 || (n == e.0 && *kind == AttrKind::String) {
                *e = (n, *kind);
            }
        }
        let mut candidates: Vec<(u64, AttrScope, &str, AttrKind)> = best
            .into_iter()
            .filter(|((scope, key), (n, _))| {
                *n as f64 >= threshold && !(*scope == AttrScope::Resource && *key == "service.name")
            })
            .map(|((scope, key), (n, kind))| (n, scope, key, kind))
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(b.2)));
        let mut out = vec![service];
        for (scope, max) in [(AttrScope::Span, max_span), (AttrScope::Resource, max_resource)] {
            out.extend(
                candidates
                    .iter()
                    .filter(|c| c.1 == scope)
                    .take(max)
                    .map(|&(_, scope, key, kind)| Dedicated::new(scope, key, kind)),
            );
        }
        out
    }
}

fn scalar_kind(kv: &Kv<'_>) -> Option<AttrKind> {
    match kv.value {
        Val::Str(_) => Some(AttrKind::String),
        Val::Int(_) => Some(AttrKind::Int),
        _ => None,
    }
}
