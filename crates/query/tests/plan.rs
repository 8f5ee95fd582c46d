//! The `Plan` interface the scanner builds on: which columns it asks for, what the prefilter
//! keeps, errors, and robustness against odd input. Results themselves are golden tests.

mod common;

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BinaryArray, ListArray, RecordBatch, StructArray};
use arrow_schema::Schema;
use spoor_query::{Error, Plan};
use spoor_traceql::ast::Static;

fn plan(query: &str) -> Plan {
    Plan::new(&spoor_traceql::parse(query).unwrap()).unwrap()
}

fn block_schema() -> Arc<Schema> {
    common::block_batch(false).schema()
}

#[test]
fn plans_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Plan>();
}

#[test]
fn columns_are_the_base_ones_plus_what_fields_read() {
    let schema = block_schema();
    let base = [
        "trace_id",
        "span_id",
        "parent_span_id",
        "nested_left",
        "nested_right",
        "nested_parent",
        "start_unix_nano",
        "duration_nano",
        "name",
        "status_code",
        "service_name",
    ];
    assert_eq!(plan("{ }").columns(&schema), base);
    // A dedicated column and the generic list, in schema order.
    let columns = plan(r#"{ span.http.method = "GET" }"#).columns(&schema);
    assert_eq!(&columns[9..], ["status_code", "span.http.method", "attrs", "service_name"]);
    // Unscoped attributes may be anywhere; selected and by() attributes are read too.
    let columns = plan(r#"{ .x = 1 } | by(resource.deployment.environment) | select(event:name)"#).columns(&schema);
    for c in ["attrs", "events", "links", "resource.deployment.environment", "resource_attrs", "scope_attrs"] {
        assert!(columns.iter().any(|x| x == c), "{c} missing from {columns:?}");
    }
    // A live batch has no dedicated span columns: nothing is asked for that is not there.
    let live = common::live_batch().schema();
    let columns = plan(r#"{ span.http.method = "GET" }"#).columns(&live);
    assert!(!columns.iter().any(|c| c == "span.http.method"));
}

#[test]
fn prefilter_columns_follow_the_condition_traces_need() {
    let schema = block_schema();
    let pre = |q: &str| plan(q).prefilter_columns(&schema);
    let cols = |c: &[&str]| Some(c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(pre("{ }"), None);
    assert_eq!(pre("count() > 2"), None);
    assert_eq!(pre("{ } !> { }"), None);
    assert_eq!(pre(r#"{ name = "x" }"#), cols(&["name"]));
    assert_eq!(pre(r#"{ span.http.method = "GET" }"#), cols(&["span.http.method", "attrs"]));
    // Trace-level intrinsics cannot be decided per row: the rest of the condition prunes.
    assert_eq!(pre(r#"{ rootName = "x" }"#), None);
    assert_eq!(pre(r#"{ rootName = "x" && kind = server }"#), cols(&["kind"]));
    assert_eq!(pre(r#"{ rootName = "x" || kind = server }"#), None);
    // `A && B` needs a span of each; `A || B` either; a negated structural operator its
    // right-hand side only.
    assert_eq!(pre(r#"{ name = "a" } && { kind = server }"#), cols(&["name"]));
    assert_eq!(pre(r#"{ name = "a" } || { kind = server }"#), cols(&["name", "kind"]));
    assert_eq!(pre(r#"{ name = "a" } !> { kind = server }"#), cols(&["kind"]));
    assert_eq!(pre(r#"{ name = "a" } > { }"#), cols(&["name"]));
    // Later filter stages narrow the spans every result holds.
    assert_eq!(pre(r#"{ name = "a" } | { kind = server }"#), cols(&["name", "kind"]));
    assert_eq!(pre(r#"{ } | by(name) | count() > 1"#), None);
}

#[test]
fn prefilter_keeps_the_rows_that_can_match() {
    for batch in [common::live_batch(), common::block_batch(false), common::block_batch(true)] {
        let p = plan(r#"{ span.http.method = "GET" && duration > 15ms }"#);
        let mask = p.prefilter(&batch).unwrap();
        let names = batch.column_by_name("span_id").unwrap().as_any().downcast_ref::<BinaryArray>().unwrap();
        let kept: Vec<u8> = (0..batch.num_rows()).filter(|&r| mask.value(r)).map(|r| names.value(r)[0]).collect();
        assert_eq!(kept, [0xa1, 0xb4]);
        // Without a condition every row is kept.
        assert_eq!(plan("{ }").prefilter(&batch).unwrap().true_count(), batch.num_rows());
    }
}

#[test]
fn dictionary_columns_really_are_dictionaries() {
    let batch = common::block_batch(true);
    let name = batch.column_by_name("name").unwrap();
    assert!(matches!(name.data_type(), arrow_schema::DataType::Dictionary(..)));
    let attrs = batch.column_by_name("attrs").unwrap().as_any().downcast_ref::<ListArray>().unwrap();
    let attrs = attrs.values().as_any().downcast_ref::<StructArray>().unwrap();
    assert!(matches!(attrs.column_by_name("key").unwrap().data_type(), arrow_schema::DataType::Dictionary(..)));
}

#[test]
fn queries_that_cannot_run_are_the_clients_fault() {
    for (query, message) in [(r#"{ .a =~ "[" }"#, "invalid regex"), ("{ parent.x = 1 }", "parent not yet supported")] {
        let err = Plan::new(&spoor_traceql::parse_unchecked(query).unwrap()).unwrap_err();
        assert!(err.is_bad_request(), "{query}: {err}");
        assert!(err.to_string().contains(message), "{query}: {err}");
    }
}

#[test]
fn hints_are_kept() {
    let p = plan(r#"{ } with(most_recent=true, sample=0.5)"#);
    assert_eq!(p.hints().len(), 2);
    assert_eq!(p.hint("most_recent"), Some(&Static::Bool(true)));
    assert_eq!(p.hint("nope"), None);
}

#[test]
fn empty_and_incomplete_batches() {
    let batch = common::live_batch();
    let p = plan(r#"{ name = "render" }"#);
    assert!(p.evaluate(&batch.slice(0, 0), 3).unwrap().is_empty());
    assert_eq!(p.prefilter(&batch.slice(0, 0)).unwrap().len(), 0);
    // A batch without a column the plan needs is an error, not a panic or a silent miss.
    let schema = batch.schema();
    let without_name: Vec<usize> = (0..schema.fields().len()).filter(|&i| schema.field(i).name() != "name").collect();
    let err = p.prefilter(&batch.project(&without_name).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    // Slices (offsets into shared buffers) evaluate like the rows they hold: T1 is rows 0..5.
    let hits = p.evaluate(&batch.slice(0, 5), 3).unwrap();
    assert_eq!(common::render(&hits), common::render(&p.evaluate(&batch, 3).unwrap()));
}

/// Replaces every `any` value of the span attributes with `bytes`.
fn with_any(batch: &RecordBatch, bytes: &[u8]) -> RecordBatch {
    let i = batch.schema().index_of("attrs").unwrap();
    let list = batch.column(i).as_any().downcast_ref::<ListArray>().unwrap();
    let attrs = list.values().as_any().downcast_ref::<StructArray>().unwrap();
    let j = attrs.fields().iter().position(|f| f.name() == "any").unwrap();
    let any = attrs.column(j).as_any().downcast_ref::<BinaryArray>().unwrap();
    let garbage: BinaryArray = (0..any.len()).map(|r| any.is_valid(r).then_some(bytes)).collect();
    let mut columns = attrs.columns().to_vec();
    columns[j] = Arc::new(garbage);
    let attrs = StructArray::new(attrs.fields().clone(), columns, attrs.nulls().cloned());
    let list = ListArray::new(
        match list.data_type() {
            arrow_schema::DataType::List(f) => f.clone(),
            _ => unreachable!(),
        },
        list.offsets().clone(),
        Arc::new(attrs),
        list.nulls().cloned(),
    );
    let mut all: Vec<ArrayRef> = batch.columns().to_vec();
    all[i] = Arc::new(list);
    RecordBatch::try_new(batch.schema(), all).unwrap()
}

#[test]
fn corrupt_array_values_are_nil() {
    let batch = common::live_batch();
    let p = plan(r#"{ span.tags = "a" || span.tags = nil } | select(span.codes)"#);
    assert_eq!(common::render(&p.evaluate(&batch, 1).unwrap()).lines().count(), 15);
    for garbage in [&[0xff, 0xff, 0xff][..], &[0x2a, 0x05, 0x0a, 0x03][..], &[][..]] {
        let broken = with_any(&batch, garbage);
        let hits = p.evaluate(&broken, 20).unwrap();
        // A's arrays became unreadable: it matches as `tags = nil` now, like every span.
        let a = &hits[0].spansets[0].spans[0];
        assert_eq!(a.attributes, [("tags".to_string(), spoor_query::Value::Str("nil".into()))]);
    }
}

#[test]
fn evaluation_is_deterministic() {
    let batch = common::block_batch(true);
    let p = plan(r#"{ } | by(resource.service.name) | select(span.tags, event:name)"#);
    let first = common::render(&p.evaluate(&batch, 5).unwrap());
    for _ in 0..3 {
        assert_eq!(common::render(&p.evaluate(&batch, 5).unwrap()), first);
    }
}
