//! fdr's OTLP logs export, shared by the agent and the console: incidents
//! (opened, updated), their audits and, opt-in, raw events, as
//! OpenTelemetry LogRecords over OTLP/gRPC, through a durable outbox kept in
//! the caller's own redb database.
//!
//! - [`config`]: the `[export.otlp]` section.
//! - [`outbox`]: the outbox: records queued in the caller's transaction,
//!   record serials and idempotency keys, the byte bound and its shedding
//!   order (raw events first, then a counted gap record).
//! - [`otlp`]: a record as a LogRecord (semantic-convention attributes).
//! - [`sender`]: the task that sends, retries and acknowledges.
//! - [`records`]: what an incident write queues (opened/updated, audits).
//! - [`raw`]: the raw events' kind filter and rate limit.

pub mod config;
pub mod otlp;
pub mod outbox;
pub mod raw;
pub mod records;
pub mod sender;

pub use config::{OtlpConfig, RawEventsConfig};
pub use otlp::Source;
pub use outbox::{Metrics, Outbox, OutboxError};
pub use records::incident_records;
pub use sender::{spawn, Access, SenderError};
