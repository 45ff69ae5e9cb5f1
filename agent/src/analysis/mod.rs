//! Stage 7, analysis: a runtime model learnt per image or service, rules,
//! detectors, and the typed incidents raised when events fall outside the
//! model.
//!
//! Takes: attributed events. Gives: learnt/audit events, incidents (and
//! their windows to freeze), model and incident writes for the store (an
//! incident write queues its OTLP export records, opened/updated and one
//! per new audit, in the same transaction when `[export.otlp]` is on).
//! Imports: the foundation and the stages before it (it writes through
//! the store's committer).

mod analyzer;
pub mod incidents;
pub mod model;
pub mod persist;
pub mod wire;

pub use analyzer::*;
