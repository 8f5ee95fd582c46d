//! Encryption at rest (envelope encryption).
//!
//! An operator keeps one 256-bit *master key* in a file ([`MasterKey`]). Every sealed file (a
//! WAL or queue segment, a block's data, filter and meta) starts with a [`Header`] holding its
//! own random *data key*, wrapped by the master key; the content after it is sealed with
//! AES-256-GCM under the data key, either as fixed-size [`frame`]s (files read by range) or as
//! independent [`record`]s (logs). Rotating the master key rewrites the wrapped data keys in
//! the headers and nothing else ([`rotate`]).
//!
//! Every sealed byte is authenticated: a flipped bit, a swapped frame or a file cut short is an
//! error, never wrong data.

pub mod error;
pub mod frame;
pub mod header;
pub mod key;
pub mod record;
pub mod rotate;

pub use error::{Error, Kind, Result};
pub use frame::{FRAME, FrameWriter, Frames, SealedFile};
pub use header::{HEADER_LEN, Header, Layout, is_sealed};
pub use key::{DataKey, MasterKey};
pub use record::{RECORD_OVERHEAD, log_start, open_record, seal_record};
