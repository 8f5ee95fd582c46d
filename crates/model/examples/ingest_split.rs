//! A fixed amount of the ingest path's per-span work in the model crate (protobuf decode, then
//! validate and split by trace), for instruction counts that do not depend on a noisy machine:
//!   cargo build --release -p spoor-model --example ingest_split
//!   valgrind --tool=callgrind --toggle-collect='*reencoding*' target/release/examples/ingest_split
//!   valgrind --tool=callgrind --toggle-collect='*copying*' target/release/examples/ingest_split
//! The input is 20 requests of loadgen's traces, 50 traces (~1,000 spans) each, decoded and split
//! 20 times over (~400K spans): `reencoding` splits the decoded request (what a request that
//! scrubbing changed takes), `copying` splits the body's bytes (an untouched request).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use prost::Message;
use spoor_model::otlp::ExportTraceServiceRequest;
use spoor_model::synth::{Rng, build_request};
use spoor_model::{Split, split_encoded, split_request};

#[inline(never)]
fn reencoding(bodies: &[Vec<u8>]) -> (usize, usize) {
    run(bodies, |_, request| split_request(request))
}

#[inline(never)]
fn copying(bodies: &[Vec<u8>]) -> (usize, usize) {
    run(bodies, |body, _| split_encoded(body).expect("untouched body"))
}

fn run(bodies: &[Vec<u8>], split: impl Fn(&[u8], &ExportTraceServiceRequest) -> Split) -> (usize, usize) {
    let (mut spans, mut fragments) = (0, 0);
    for _ in 0..20 {
        for body in bodies {
            let request = ExportTraceServiceRequest::decode(&body[..]).expect("valid request");
            let split = split(body, &request);
            spans += split.accepted_spans;
            fragments += split.fragments.len();
        }
    }
    (spans, fragments)
}

fn main() {
    let mut rng = Rng::new(42);
    let bodies: Vec<Vec<u8>> =
        (0..20).map(|_| build_request(&mut rng, 50, 1_700_000_000_000_000_000).0.encode_to_vec()).collect();
    for (name, f) in [("re-encoding", reencoding as fn(&[Vec<u8>]) -> (usize, usize)), ("copying", copying)] {
        let t = std::time::Instant::now();
        let (spans, fragments) = f(&bodies);
        println!("{name}: {spans} spans in {fragments} fragments, {:.2?}", t.elapsed());
    }
}
