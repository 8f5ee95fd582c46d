//! The write path of `spoor serve`: the receivers (OTLP, and Zipkin and Jaeger converted to
//! OTLP at decode) hand each request to the front door
//! (admission, decode, scrub; shared with `spoor agent`), the pipeline makes it durable in the
//! WAL and live in the head, tail sampling decides after the WAL, and the flusher turns live
//! traces into blocks and releases the WAL behind them. `pipeline.rs` is the data path on one
//! screen.

pub mod body;
pub mod flush;
pub mod foreign;
pub mod front;
pub mod limits;
pub mod pace;
pub mod pipeline;
pub mod processors;
pub mod receive;
pub mod sampling;
pub mod tenant;
pub mod wal;
