//! Bounded series storage: one map per label-set shape, a per-tenant series budget shared by
//! all of them, overflow folding, staleness, and histograms with exemplars.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::family::{Exemplar, Histogram, Labels, NativeHistogram, Series, Value};

/// Separates label values inside a series key (a NUL inside a value is replaced, so the key
/// alone identifies the values and they need not be stored twice).
pub(crate) const SEP: char = '\0';

/// Appends one label value and its separator to a series key.
pub(crate) fn push_key(key: &mut String, value: &str) {
    if value.contains(SEP) {
        key.push_str(&value.replace(SEP, "\u{fffd}"));
    } else {
        key.push_str(value);
    }
    key.push(SEP);
}

/// The tenant's series budget, counted the way Prometheus counts series.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// 0: unlimited.
    pub max: usize,
    pub used: usize,
    /// Observations folded into an overflow series because the budget was spent.
    pub limited: u64,
}

impl Budget {
    fn take(&mut self, cost: usize) -> bool {
        if self.max > 0 && self.used + cost > self.max {
            return false;
        }
        self.used += cost;
        true
    }
}

pub(crate) struct Entry<T> {
    pub created_ms: i64,
    pub updated_ms: i64,
    pub data: T,
}

/// The value a label takes once it has `max_cardinality_per_label` others (Tempo's).
pub const CARDINALITY_OVERFLOW: &str = "__cardinality_overflow__";

/// Distinct values per label position, each capped: a new value past the cap is replaced by
/// [`CARDINALITY_OVERFLOW`], so one runaway label (a span name with an ID in it) cannot use
/// the whole series budget.
struct Cardinality {
    limit: usize,
    seen: Vec<HashSet<Box<str>>>,
    /// Observations whose labels were capped.
    limited: u64,
}

impl Cardinality {
    /// The key with over-limit values replaced, or None when every value is allowed.
    fn cap(&mut self, key: &str) -> Option<String> {
        let mut out = String::new();
        let mut changed = false;
        for (i, v) in key.split_terminator(SEP).enumerate() {
            if i >= self.seen.len() {
                self.seen.push(HashSet::new());
            }
            let seen = &mut self.seen[i];
            let v = if seen.contains(v) || v.is_empty() {
                v
            } else if seen.len() < self.limit {
                seen.insert(v.into());
                v
            } else {
                changed = true;
                CARDINALITY_OVERFLOW
            };
            out.push_str(v);
            out.push(SEP);
        }
        if changed {
            self.limited += 1;
        }
        changed.then_some(out)
    }

    /// Forgets values no series holds any more.
    fn rebuild<'a>(&mut self, keys: impl Iterator<Item = &'a str>) {
        self.seen.iter_mut().for_each(HashSet::clear);
        for key in keys {
            for (i, v) in key.split_terminator(SEP).enumerate() {
                if let Some(seen) = self.seen.get_mut(i)
                    && !v.is_empty()
                    && v != CARDINALITY_OVERFLOW
                {
                    seen.insert(v.into());
                }
            }
        }
    }
}

/// Series of one shape (one set of label names), keyed by their joined label values.
pub(crate) struct SeriesMap<T> {
    pub names: Arc<[String]>,
    /// Prometheus series per entry (a histogram counts its buckets, `_sum` and `_count`).
    pub cost: usize,
    /// Keyed by the label values joined; ahash, as SipHash was a visible share of every span.
    map: HashMap<Box<str>, Entry<T>, ahash::RandomState>,
    /// Where observations go once the budget is spent: `metric_overflow="true"`.
    overflow: Option<Entry<T>>,
    cardinality: Option<Cardinality>,
}

impl<T> SeriesMap<T> {
    pub fn new(names: Vec<String>, cost: usize) -> SeriesMap<T> {
        SeriesMap { names: names.into(), cost, map: HashMap::default(), overflow: None, cardinality: None }
    }

    /// Caps every label at `limit` distinct values (0: no cap).
    pub fn with_cardinality(mut self, limit: usize) -> SeriesMap<T> {
        self.cardinality = (limit > 0).then(|| Cardinality { limit, seen: Vec::new(), limited: 0 });
        self
    }

    /// Observations whose labels were capped.
    pub fn cardinality_limited(&self) -> u64 {
        self.cardinality.as_ref().map_or(0, |c| c.limited)
    }

    pub fn len(&self) -> usize {
        self.map.len() + usize::from(self.overflow.is_some())
    }

    /// The series for `key`, created with `make` while the budget allows, else the overflow
    /// series (which is outside the budget: one per shape).
    pub fn entry(&mut self, key: &str, budget: &mut Budget, now_ms: i64, make: impl FnOnce() -> T) -> &mut T {
        // Only a new series can bring a new label value.
        let capped = match &mut self.cardinality {
            Some(c) if !self.map.contains_key(key) => c.cap(key),
            _ => None,
        };
        let key = capped.as_deref().unwrap_or(key);
        // Two lookups on the rare miss keep the common hit free of allocation.
        let e = if self.map.contains_key(key) {
            self.map.get_mut(key).expect("present")
        } else if budget.take(self.cost) {
            self.map.entry(key.into()).or_insert_with(|| Entry { created_ms: now_ms, updated_ms: now_ms, data: make() })
        } else {
            budget.limited += 1;
            self.overflow.get_or_insert_with(|| Entry { created_ms: now_ms, updated_ms: now_ms, data: make() })
        };
        e.updated_ms = now_ms;
        &mut e.data
    }

    /// Drops series last updated before `before_ms`, returning their budget.
    pub fn remove_stale(&mut self, before_ms: i64, budget: &mut Budget) {
        let cost = self.cost;
        let before = self.map.len();
        self.map.retain(|_, e| {
            let keep = e.updated_ms >= before_ms;
            if !keep {
                budget.used -= cost;
            }
            keep
        });
        if let Some(c) = &mut self.cardinality
            && self.map.len() < before
        {
            c.rebuild(self.map.keys().map(|k| &**k));
        }
        if self.overflow.as_ref().is_some_and(|e| e.updated_ms < before_ms) {
            self.overflow = None;
        }
    }

    /// Every series as labels (empty values left out, as Prometheus treats them) and data.
    pub fn each(&self, mut f: impl FnMut(Labels, &Entry<T>)) {
        for (key, e) in &self.map {
            let labels = self
                .names
                .iter()
                .zip(key.split(SEP))
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, v)| (n.clone(), v.to_string()))
                .collect();
            f(sorted(labels), e);
        }
        if let Some(e) = &self.overflow {
            f(vec![("metric_overflow".into(), "true".into())], e);
        }
    }
}

pub(crate) fn sorted(mut labels: Labels) -> Labels {
    labels.sort();
    labels
}

/// Builds counter series from one field of each entry.
pub(crate) fn counters<T>(map: &SeriesMap<T>, get: impl Fn(&T) -> f64) -> Vec<Series> {
    let mut out = Vec::with_capacity(map.len());
    map.each(|labels, e| {
        let value = Value::Counter(get(&e.data));
        out.push(Series { labels, value, updated_ms: e.updated_ms, created_ms: e.created_ms })
    });
    out
}

/// An exemplar as stored: the span behind one observation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Ex {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub value: f64,
    pub timestamp_ms: i64,
}

/// A classic histogram's running state.
#[derive(Clone, Debug)]
pub(crate) struct Hist {
    counts: Box<[f64]>,
    sum: f64,
    count: f64,
    /// The latest exemplar per bucket; empty when exemplars are off.
    exemplars: Box<[Option<Ex>]>,
    classic: bool,
    native: Option<Native>,
}

/// Which histograms a series keeps (Tempo's `generate_native_histograms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kinds {
    pub classic: bool,
    pub native: bool,
}

/// Native histogram state: sparse exponential buckets, coarsened when there are too many.
#[derive(Clone, Debug)]
struct Native {
    schema: i32,
    zero_count: f64,
    buckets: std::collections::BTreeMap<i32, f64>,
}

/// The finest schema used: buckets grow by 2^(1/8), about 9 % apart.
const NATIVE_SCHEMA: i32 = 3;
/// Past this many buckets the schema halves its resolution (Prometheus clients' default).
const NATIVE_MAX_BUCKETS: usize = 160;
/// Values at or below this go to the zero bucket (Prometheus clients' default, 2^-128).
pub(crate) const NATIVE_ZERO_THRESHOLD: f64 = 2.938735877055719e-39;

impl Native {
    fn observe(&mut self, value: f64, weight: f64) {
        if value <= NATIVE_ZERO_THRESHOLD {
            self.zero_count += weight;
            return;
        }
        // Bucket i holds (base^(i-1), base^i]: i = ceil(log2(v) * 2^schema).
        let index = (value.log2() * 2f64.powi(self.schema)).ceil();
        let index = index.clamp(i32::MIN as f64, i32::MAX as f64) as i32;
        *self.buckets.entry(index).or_insert(0.0) += weight;
        while self.buckets.len() > NATIVE_MAX_BUCKETS && self.schema > -4 {
            // Each bucket of the coarser schema is two of the finer one: ceil(i / 2).
            self.schema -= 1;
            let old = std::mem::take(&mut self.buckets);
            for (i, c) in old {
                *self.buckets.entry((i + 1).div_euclid(2)).or_insert(0.0) += c;
            }
        }
    }
}

impl Hist {
    pub fn new(bounds: &[f64], exemplars: bool, kinds: Kinds) -> Hist {
        let n = bounds.len() + 1;
        Hist {
            counts: vec![0.0; n].into(),
            sum: 0.0,
            count: 0.0,
            exemplars: if exemplars { vec![None; n].into() } else { Box::default() },
            classic: kinds.classic,
            native: kinds.native.then(|| Native {
                schema: NATIVE_SCHEMA,
                zero_count: 0.0,
                buckets: Default::default(),
            }),
        }
    }

    /// Counts `value` (seconds) with `weight`; a bucket's bound is inclusive (`le`).
    pub fn observe(&mut self, bounds: &[f64], value: f64, weight: f64, exemplar: Option<Ex>) {
        let i = bounds.partition_point(|b| *b < value);
        self.counts[i] += weight;
        self.sum += value * weight;
        self.count += weight;
        if let Some(n) = &mut self.native {
            n.observe(value, weight);
        }
        if let (Some(slot), Some(ex)) = (self.exemplars.get_mut(i), exemplar) {
            *slot = Some(ex);
        }
    }

    pub fn to_value(&self, bounds: &Arc<[f64]>, trace_label: &str) -> Histogram {
        Histogram {
            bounds: bounds.clone(),
            counts: self.counts.to_vec(),
            sum: self.sum,
            count: self.count,
            exemplars: if self.exemplars.is_empty() {
                vec![None; self.counts.len()]
            } else {
                self.exemplars.iter().map(|e| e.map(|e| exemplar(&e, trace_label))).collect()
            },
            classic: self.classic,
            native: self.native.as_ref().map(|n| NativeHistogram {
                schema: n.schema,
                zero_threshold: NATIVE_ZERO_THRESHOLD,
                zero_count: n.zero_count,
                buckets: n.buckets.iter().map(|(i, c)| (*i, *c)).collect(),
            }),
        }
    }
}

fn exemplar(e: &Ex, trace_label: &str) -> Exemplar {
    Exemplar {
        labels: vec![
            (trace_label.to_string(), spoor_model::ids::hex(&e.trace_id)),
            ("spanID".into(), spoor_model::ids::hex(&e.span_id)),
        ],
        value: e.value,
        timestamp_ms: e.timestamp_ms,
    }
}

/// Builds histogram series from one histogram of each entry.
pub(crate) fn histograms<T>(
    map: &SeriesMap<T>,
    bounds: &Arc<[f64]>,
    trace_label: &str,
    get: impl Fn(&T) -> Option<&Hist>,
) -> Vec<Series> {
    let mut out = Vec::with_capacity(map.len());
    map.each(|labels, e| {
        if let Some(h) = get(&e.data) {
            let value = Value::Histogram(h.to_value(bounds, trace_label));
            out.push(Series { labels, value, updated_ms: e.updated_ms, created_ms: e.created_ms });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_inclusive() {
        let bounds = [0.1, 0.2];
        let mut h = Hist::new(&bounds, false, Kinds { classic: true, native: true });
        for v in [0.05, 0.1, 0.15, 0.2, 5.0] {
            h.observe(&bounds, v, 1.0, None);
        }
        let v = h.to_value(&Arc::from(&bounds[..]), "traceID");
        assert_eq!(v.counts, [2.0, 2.0, 1.0]);
        assert_eq!(v.count, 5.0);
        assert!((v.sum - 5.5).abs() < 1e-9);
        // Native, schema 3: 0.1 is in (2^(-27/8), 2^(-26/8)], i.e. bucket -26.
        let n = v.native.unwrap();
        assert_eq!(n.schema, 3);
        assert_eq!(n.buckets.iter().map(|b| b.1).sum::<f64>(), 5.0);
        assert!(n.buckets.contains(&(-26, 1.0)), "{:?}", n.buckets);
    }

    #[test]
    fn native_buckets_coarsen_past_the_limit() {
        let mut h = Hist::new(&[], false, Kinds { classic: false, native: true });
        // 1 µs to 1000 s, 1000 values spread log-uniformly: about 240 schema-3 buckets.
        let v = |k: usize| 10f64.powf(-6.0 + 9.0 * k as f64 / 1000.0);
        for k in 0..1000 {
            h.observe(&[], v(k), 1.0, None);
        }
        h.observe(&[], 0.0, 1.0, None);
        let n = h.to_value(&Arc::from(&[][..]), "traceID").native.unwrap();
        assert!(n.schema < 3 && n.buckets.len() <= 160, "schema {} with {} buckets", n.schema, n.buckets.len());
        assert_eq!(n.buckets.iter().map(|b| b.1).sum::<f64>(), 1000.0);
        assert_eq!(n.zero_count, 1.0);
        // Every value still lies in its bucket: (base^(i-1), base^i].
        let base = 2f64.powf(2f64.powi(-n.schema));
        let (lo, hi) = (base.powi(n.buckets[0].0 - 1), base.powi(n.buckets.last().unwrap().0));
        assert!(lo < v(0) && hi >= v(999), "{lo} {hi}");
    }

    #[test]
    fn label_values_past_the_cap_become_one_overflow_value() {
        let mut budget = Budget::default();
        let mut m: SeriesMap<f64> = SeriesMap::new(vec!["service".into(), "span_name".into()], 1).with_cardinality(2);
        for (i, key) in ["a\0/1\0", "a\0/2\0", "a\0/3\0", "b\0/4\0", "a\0/1\0"].iter().enumerate() {
            *m.entry(key, &mut budget, i as i64, || 0.0) += 1.0;
        }
        let mut seen = Vec::new();
        m.each(|labels, e| seen.push((labels.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(" "), e.data)));
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let o = CARDINALITY_OVERFLOW;
        assert_eq!(
            seen,
            [("a /1".into(), 2.0), ("a /2".into(), 1.0), (format!("a {o}"), 1.0), (format!("b {o}"), 1.0)]
        );
        assert_eq!(m.cardinality_limited(), 2, "/3 and /4");
        // Once /1 and /2 go stale, new values fit again.
        m.remove_stale(4, &mut budget);
        *m.entry("a\0/5\0", &mut budget, 5, || 0.0) += 1.0;
        let mut names = Vec::new();
        m.each(|labels, _| names.push(labels[1].1.clone()));
        assert!(names.contains(&"/5".to_string()), "{names:?}");
    }

    #[test]
    fn budget_folds_new_series_into_overflow_and_stale_series_return_it() {
        let mut budget = Budget { max: 4, ..Budget::default() };
        let mut m: SeriesMap<f64> = SeriesMap::new(vec!["service".into()], 2);
        *m.entry("a\0", &mut budget, 0, || 0.0) += 1.0;
        *m.entry("b\0", &mut budget, 0, || 0.0) += 1.0;
        *m.entry("c\0", &mut budget, 5, || 0.0) += 1.0;
        *m.entry("a\0", &mut budget, 5, || 0.0) += 1.0;
        assert_eq!((budget.used, budget.limited), (4, 1));
        let mut seen = Vec::new();
        m.each(|labels, e| seen.push((labels, e.data)));
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            [
                (vec![("metric_overflow".to_string(), "true".to_string())], 1.0),
                (vec![("service".to_string(), "a".to_string())], 2.0),
                (vec![("service".to_string(), "b".to_string())], 1.0),
            ]
        );
        m.remove_stale(1, &mut budget);
        assert_eq!(budget.used, 2, "b went stale");
        *m.entry("c\0", &mut budget, 6, || 0.0) += 1.0;
        assert_eq!((budget.used, m.len()), (4, 3), "c now fits: a, c and the overflow series");
    }
}
