//! What runs on series once aggregation is done: the second stage of a query (topk, bottomk,
//! filters on sample values) and arithmetic between queries and numbers.

use spoor_traceql::ast::{BinOp, CmpOp, SecondStage, Static};

use super::grid::SECOND;
use super::series::{Label, Series};
use crate::error::{Error, Result};

/// topk, bottomk and filters, left to right; a series left without samples goes.
pub(super) fn second_stage(mut series: Vec<Series>, stages: &[SecondStage]) -> Result<Vec<Series>> {
    for stage in stages {
        match stage {
            SecondStage::TopK(n) | SecondStage::BottomK(n) => {
                let top = matches!(stage, SecondStage::TopK(_));
                let n = usize::try_from(*n).unwrap_or(0);
                let len = series.first().map_or(0, |s| s.values.len());
                for t in 0..len {
                    let mut ranked: Vec<(usize, f64)> =
                        series.iter().enumerate().map(|(i, s)| (i, s.values[t])).filter(|(_, v)| !v.is_nan()).collect();
                    // Ties go to the series that sorts first by labels.
                    ranked.sort_by(|a, b| {
                        let by_value = if top { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) };
                        by_value.then_with(|| series[a.0].labels.cmp(&series[b.0].labels))
                    });
                    for &(i, _) in ranked.iter().skip(n) {
                        series[i].values[t] = f64::NAN;
                    }
                }
            }
            SecondStage::Filter(op, value) => {
                let x = match *value {
                    Static::Int(i) => i as f64,
                    Static::Float(f) => f,
                    // Durations are compared in seconds, the unit of every duration value.
                    Static::Duration(ns) => ns as f64 / SECOND as f64,
                    _ => return Err(Error::Invalid("a metrics filter compares with a number or a duration".into())),
                };
                for s in &mut series {
                    for v in &mut s.values {
                        if !v.is_nan() && !compare(*op, *v, x) {
                            *v = f64::NAN;
                        }
                    }
                }
            }
        }
        series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
    }
    Ok(series)
}

fn compare(op: CmpOp, a: f64, b: f64) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// One side of metrics arithmetic.
pub(super) enum Operand {
    Series(Vec<Series>),
    Scalar(f64, String),
}

/// Whether a series has no labels but its name: it is broadcast against labelled series.
fn unlabelled(s: &Series) -> bool {
    s.labels.iter().all(|(k, _)| k == "__name__")
}

fn name_of(s: &Series) -> String {
    match s.labels.iter().find(|(k, _)| k == "__name__") {
        Some((_, Label::Str(n))) => n.clone(),
        _ => String::new(),
    }
}

fn without_name(s: &Series) -> Vec<&(String, Label)> {
    let mut labels: Vec<&(String, Label)> = s.labels.iter().filter(|(k, _)| k != "__name__").collect();
    labels.sort();
    labels
}

/// `lhs op rhs`, bucket by bucket: series with the same labels pair up; a side that is one
/// unlabelled series (or a number) applies to every series of the other. Missing buckets and
/// division by zero give NaN, which is no sample.
pub(super) fn arithmetic(op: BinOp, lhs: Operand, rhs: Operand) -> Operand {
    let apply = |a: f64, b: f64| match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        _ if b == 0.0 => f64::NAN,
        _ => a / b,
    };
    let pointwise = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(&x, &y)| apply(x, y)).collect::<Vec<f64>>();
    let combined = |labels: Vec<(String, Label)>, values: Vec<f64>, l: &Series, r: &Series| {
        let exemplars = l.exemplars.iter().chain(&r.exemplars).cloned().collect();
        Series { labels, values, exemplars }
    };
    let renamed = |s: &Series, name: String| {
        if unlabelled(s) { vec![("__name__".to_owned(), Label::Str(name))] } else { s.labels.clone() }
    };
    let symbol = op.as_str();
    match (lhs, rhs) {
        (Operand::Scalar(a, at), Operand::Scalar(b, bt)) => {
            Operand::Scalar(apply(a, b), format!("({at} {symbol} {bt})"))
        }
        (Operand::Series(l), Operand::Scalar(b, bt)) => Operand::Series(
            l.iter()
                .map(|s| Series {
                    labels: renamed(s, format!("({} {symbol} {bt})", name_of(s))),
                    values: s.values.iter().map(|&a| apply(a, b)).collect(),
                    exemplars: s.exemplars.clone(),
                })
                .collect(),
        ),
        (Operand::Scalar(a, at), Operand::Series(r)) => Operand::Series(
            r.iter()
                .map(|s| Series {
                    labels: renamed(s, format!("({at} {symbol} {})", name_of(s))),
                    values: s.values.iter().map(|&b| apply(a, b)).collect(),
                    exemplars: s.exemplars.clone(),
                })
                .collect(),
        ),
        (Operand::Series(l), Operand::Series(r)) => {
            let single = |side: &[Series]| side.len() == 1 && unlabelled(&side[0]);
            let out = if single(&l) && single(&r) {
                let name = format!("({} {symbol} {})", name_of(&l[0]), name_of(&r[0]));
                let labels = vec![("__name__".to_owned(), Label::Str(name))];
                vec![combined(labels, pointwise(&l[0].values, &r[0].values), &l[0], &r[0])]
            } else if single(&r) {
                l.iter().map(|s| combined(s.labels.clone(), pointwise(&s.values, &r[0].values), s, &r[0])).collect()
            } else if single(&l) {
                r.iter().map(|s| combined(s.labels.clone(), pointwise(&l[0].values, &s.values), &l[0], s)).collect()
            } else {
                l.iter()
                    .filter_map(|a| {
                        let key = without_name(a);
                        let b = r.iter().find(|b| without_name(b) == key)?;
                        Some(combined(a.labels.clone(), pointwise(&a.values, &b.values), a, b))
                    })
                    .collect()
            };
            Operand::Series(out)
        }
    }
}
