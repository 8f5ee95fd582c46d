//! Golden tests of metrics queries: every `tests/metrics_golden/NAME.traceql` is evaluated over
//! the dataset of `common::dataset` (see `tests/golden/README.md`) and must render exactly as
//! `NAME.expected`. Each query runs on the live batch, on the block read back (with and without
//! dictionaries), and on the live batch split into one batch per trace, whose partial
//! aggregates merge as blocks' do.
//!
//! Directives in `#` lines (times in ms from the dataset's epoch):
//! - `# range: START END STEP` (default `0 60 10`);
//! - `# instant: START END` for an instant query;
//! - `# exemplars: N` exemplars asked for by the request.
//!
//! Output: one block per series, labels with their types (`"s"` string, `1` int, `1.0` float,
//! `1s` duration), then the samples as `+offset=value` and the exemplars.
//! `SPOOR_BLESS=1 cargo test -p spoor-query --test metrics_golden` rewrites the expected files;
//! review every change against the spec.

mod common;

use arrow_array::{FixedSizeBinaryArray, RecordBatch, UInt32Array};
use spoor_query::metrics::{Grid, Label, Series, evaluate_batches};

const MS: u64 = 1_000_000;

struct Case {
    query: String,
    grid: Grid,
    exemplars: usize,
}

fn case(text: &str) -> Case {
    let mut grid = Grid::range(common::T0, common::T0 + 60 * MS, 10 * MS).unwrap();
    let mut exemplars = 0;
    let nums = |rest: &str| -> Vec<u64> { rest.split_whitespace().map(|n| n.parse().unwrap()).collect() };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# range:") {
            let n = nums(rest);
            grid = Grid::range(common::T0 + n[0] * MS, common::T0 + n[1] * MS, n[2] * MS).unwrap();
        } else if let Some(rest) = line.strip_prefix("# instant:") {
            let n = nums(rest);
            grid = Grid::instant(common::T0 + n[0] * MS, common::T0 + n[1] * MS).unwrap();
        } else if let Some(rest) = line.strip_prefix("# exemplars:") {
            exemplars = rest.trim().parse().unwrap();
        }
    }
    let query = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    Case { query, grid, exemplars }
}

fn label(l: &Label) -> String {
    match l {
        Label::Str(s) => format!("{s:?}"),
        Label::Int(i) => i.to_string(),
        Label::Float(f) => format!("{:?}", f.0),
        Label::Bool(b) => b.to_string(),
        Label::Duration(d) => common::duration(*d),
    }
}

fn offset(ns: u64) -> String {
    format!("+{}", common::duration(ns.wrapping_sub(common::T0) as i64))
}

fn render(series: &[Series], grid: &Grid) -> String {
    let mut out = String::new();
    for s in series {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={}", label(v))).collect();
        out += &format!("{{{}}}\n ", labels.join(", "));
        for (t, v) in grid.timestamps().into_iter().zip(&s.values) {
            if !v.is_nan() {
                out += &format!(" {}={v}", offset(t));
            }
        }
        out += "\n";
        for e in &s.exemplars {
            out += &format!(
                "  exemplar trace={} span={} start={} value={}\n",
                spoor_model::ids::hex(&e.trace_id),
                spoor_model::ids::hex(&e.span_id),
                offset(e.start_unix_nano),
                e.value
            );
        }
    }
    if out.is_empty() { "no series\n".into() } else { out }
}

fn run(c: &Case, batches: &[RecordBatch]) -> String {
    let query = match spoor_traceql::parse(&c.query) {
        Ok(q) => q,
        Err(e) => return format!("error: {}\n", spoor_query::Error::from(e)),
    };
    match evaluate_batches(&query, &c.grid, c.exemplars, batches) {
        Ok(series) => render(&series, &c.grid),
        Err(e) => format!("error: {e}\n"),
    }
}

/// One batch per trace (rows of a trace are consecutive).
fn per_trace(batch: &RecordBatch) -> Vec<RecordBatch> {
    let ids = batch.column_by_name("trace_id").unwrap();
    let ids = ids.as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    for row in 1..=batch.num_rows() {
        if row == batch.num_rows() || ids.value(row) != ids.value(start) {
            let indices = UInt32Array::from_iter_values(start as u32..row as u32);
            out.push(arrow_select::take::take_record_batch(batch, &indices).unwrap());
            start = row;
        }
    }
    out
}

#[test]
fn metrics_golden() {
    let bless = std::env::var_os("SPOOR_BLESS").is_some();
    let live = common::live_batch();
    let variants = [
        ("live", vec![live.clone()]),
        ("block", vec![common::block_batch(false)]),
        ("block with dictionaries", vec![common::block_batch(true)]),
        ("one batch per trace", per_trace(&live)),
    ];
    let files = common::golden_files("metrics_golden", 25);
    let mut failures = Vec::new();
    for path in &files {
        let c = case(&std::fs::read_to_string(path).unwrap());
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, run(&c, &variants[0].1)).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        let name = path.file_stem().unwrap().to_string_lossy();
        for (variant, batches) in &variants {
            let got = run(&c, batches);
            if got != expected {
                failures.push(format!("{name} ({variant}): {}\n--- expected\n{expected}--- got\n{got}", c.query));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
