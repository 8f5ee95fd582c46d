//! One TraceQL prefilter run a fixed number of times over a synthetic block (the eval bench's
//! block: `http.request.method` dedicated, `user.id` in the generic attribute list), with
//! plain and with dictionary-encoded strings: a fixed amount of work, for instruction counts
//! that do not depend on how busy the machine is.
//!
//! ```sh
//! cargo build --release -p spoor-query --example prefilter
//! valgrind --tool=callgrind target/release/examples/prefilter '{ span.user.id = "user-42" }' 100000 20
//! callgrind_annotate --inclusive=yes callgrind.out.* | grep 'Plan::prefilter \['
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use spoor_query::Plan;

#[path = "../benches/corpus/mod.rs"]
mod corpus;
use corpus::{block, read};

fn main() {
    let mut args = std::env::args().skip(1);
    let query = args.next().unwrap_or_else(|| r#"{ span.user.id = "user-42" }"#.to_owned());
    let spans = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    let data = block(spans);
    let plan = Plan::new(&spoor_traceql::parse(&query).expect("a TraceQL query")).expect("a plan");
    for dictionaries in [false, true] {
        let full = read(&data, dictionaries);
        let schema = full.schema();
        let columns = plan.prefilter_columns(&schema).unwrap();
        let indices: Vec<usize> = columns.iter().map(|c| schema.index_of(c).unwrap()).collect();
        let batch = full.project(&indices).unwrap();
        let mut kept = 0;
        for _ in 0..runs {
            kept += std::hint::black_box(plan.prefilter(&batch).unwrap()).true_count();
        }
        let strings = if dictionaries { "dictionary" } else { "plain" };
        println!("{strings} strings: {} rows, {kept} kept over {runs} runs", batch.num_rows());
    }
}
