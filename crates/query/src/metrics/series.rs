//! What a metrics query answers: labelled series of samples, with exemplars.

use std::hash::Hash;

/// A label value; typed, so int 200 and string "200" are different series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Str(String),
    Int(i64),
    Float(FloatLabel),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
}

/// A float that can be a map key: ordered and compared by `total_cmp`.
#[derive(Clone, Copy, Debug)]
pub struct FloatLabel(pub f64);

impl PartialEq for FloatLabel {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for FloatLabel {}
impl Hash for FloatLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}
impl PartialOrd for FloatLabel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for FloatLabel {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Label {
    pub(super) fn str(s: &str) -> Label {
        Label::Str(s.to_owned())
    }
    pub(super) fn float(f: f64) -> Label {
        Label::Float(FloatLabel(f))
    }
}

/// One series of the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, Label)>,
    /// One per grid timestamp; NaN where there is no sample.
    pub values: Vec<f64>,
    /// Earliest first.
    pub exemplars: Vec<Exemplar>,
}

/// A span behind a sample, for linking a graph to traces.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub start_unix_nano: u64,
    /// The span's value (seconds for durations); NaN for `rate` and `count_over_time`.
    pub value: f64,
}
