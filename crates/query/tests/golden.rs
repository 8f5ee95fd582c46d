//! Golden tests: every `tests/golden/NAME.traceql` is evaluated over the dataset of
//! `common::dataset` (described in `tests/golden/README.md`) and must render exactly as
//! `NAME.expected`. Each query runs on three batches (live traces; a block read back; the
//! block with string columns as dictionaries) and two ways (one evaluation over the whole
//! batch; the scanner's two phases, prefilter then candidate traces with `columns()` only).
//!
//! Lines of a `.traceql` file starting with `#` are comments, except `# spss: N` (spans per
//! spanset, default 20). `SPOOR_BLESS=1` rewrites the `.expected` files; check them by hand.

mod common;

use arrow_array::RecordBatch;
use spoor_query::Plan;

fn run(query: &str, spss: usize, batch: &RecordBatch, two_phase: bool) -> String {
    let plan = match spoor_traceql::parse(query).map_err(spoor_query::Error::from).and_then(|q| Plan::new(&q)) {
        Ok(plan) => plan,
        Err(e) => return format!("error: {e}\n"),
    };
    let hits = if two_phase { common::two_phase(&plan, batch, spss) } else { plan.evaluate(batch, spss).unwrap() };
    common::render(&hits)
}

#[test]
fn golden() {
    let bless = std::env::var_os("SPOOR_BLESS").is_some();
    let batches = [
        ("live", common::live_batch()),
        ("block", common::block_batch(false)),
        ("block with dictionaries", common::block_batch(true)),
    ];
    let files = common::golden_files("golden", 80);
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let spss = text
            .lines()
            .find_map(|l| l.strip_prefix("# spss:"))
            .map_or(20, |n| n.trim().parse().expect("spss is a number"));
        let query: String = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
        let expected_path = path.with_extension("expected");
        let got = run(&query, spss, &batches[0].1, false);
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        let name = path.file_stem().unwrap().to_string_lossy();
        for (batch_name, batch) in &batches {
            for two_phase in [false, true] {
                let got = run(&query, spss, batch, two_phase);
                if got != expected {
                    let how = if two_phase { "prefilter + candidates" } else { "whole batch" };
                    failures
                        .push(format!("{name} ({batch_name}, {how}): {query}\n--- expected\n{expected}--- got\n{got}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The value index may rule a row group out only if the query finds nothing in it: every
/// golden query against every row group (one trace each) of the dataset written with and
/// without dedicated columns.
#[test]
fn the_value_index_rules_out_only_row_groups_without_matches() {
    let files = common::golden_files("golden", 80);
    for dedicated in [false, true] {
        let (groups, index, keys) = common::row_groups(dedicated);
        assert_eq!(groups.len(), index.len());
        assert!(groups.len() >= 5, "one trace per row group");
        let (mut pruned, mut checked) = (0, 0);
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            let query: String = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
            let Ok(plan) = spoor_traceql::parse(&query).map_err(spoor_query::Error::from).and_then(|q| Plan::new(&q))
            else {
                continue;
            };
            for (rg, batch) in groups.iter().enumerate() {
                checked += 1;
                if plan.may_match(index.group(rg).unwrap(), &keys) {
                    continue;
                }
                pruned += 1;
                let hits = plan.evaluate(batch, 20).unwrap();
                assert!(hits.is_empty(), "{query} (row group {rg}, dedicated {dedicated}) was ruled out but matches");
            }
        }
        // The index must actually decide something, or this test proves nothing.
        assert!(pruned * 10 > checked, "ruled out {pruned} of {checked}");
    }
}
