//! A fixed amount of the ingest path's per-span work in the model crate (protobuf decode, then
//! validate and split by trace), for instruction counts that do not depend on a noisy machine:
//!   cargo build --release -p spoor-model --example ingest_split
//!   valgrind --tool=callgrind target/release/examples/ingest_split
//! The input is 20 requests of loadgen's traces, 50 traces (~1,000 spans) each, decoded and split
//! 20 times over (~400K spans).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use prost::Message;
use spoor_model::otlp::ExportTraceServiceRequest;
use spoor_model::split_request;
use spoor_model::synth::{Rng, build_request};

fn main() {
    let mut rng = Rng::new(42);
    let bodies: Vec<Vec<u8>> =
        (0..20).map(|_| build_request(&mut rng, 50, 1_700_000_000_000_000_000).0.encode_to_vec()).collect();
    let (mut spans, mut fragments) = (0, 0);
    for _ in 0..20 {
        for body in &bodies {
            let request = ExportTraceServiceRequest::decode(&body[..]).expect("valid request");
            let split = split_request(&request);
            spans += split.accepted_spans;
            fragments += split.fragments.len();
        }
    }
    println!("{spans} spans in {fragments} fragments");
}
