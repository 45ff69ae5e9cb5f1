//! Stage 2, the pipeline: kernel records from the ring buffers, decoded
//! into typed [`crate::event::Record`]s, with the clocks that turn their
//! boot-time stamps into wall-clock time.
//!
//! Takes: the rings [`crate::probes`] loaded. Gives: records, merged from
//! both rings into time order ([`merge`]). Imports: the foundation and `probes`.

pub mod clock;
pub mod decode;
pub mod merge;
pub mod ring;
