//! `fdrctl` subcommands: requests, and rendering as a table, JSON lines or
//! (for models) YAML. One file per command family; the helpers they share
//! (errors, output, times, shell quoting, kind names, scopes) live here.

use std::io;

use crate::event::EventKind;

mod containers;
mod detail;
pub mod escape;
mod events;
mod incident_show;
mod incidents;
mod models;
mod query;
mod snapshots;
mod stats;

pub use containers::{containers, ContainersArgs};
pub use detail::detail_text;
pub use escape::{escape, escape_bytes};
pub use events::{
    ancestry_text, container_json, event_json, events, severity_name, table_row, EventsArgs,
};
pub use incidents::{incidents, IncidentsCmd};
pub use models::{model, ModelCmd};
pub use query::{query, QueryArgs};
#[doc(hidden)]
pub use snapshots::render_fetched;
pub use snapshots::{snapshot, SnapshotCmd};
pub use stats::{stats, StatsArgs};

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The agent refused or failed the call.
    #[error("{message} [{code:?}]")]
    Rpc { code: tonic::Code, message: String },
    #[error("writing output")]
    Output(#[source] io::Error),
    #[error("writing {}", path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<tonic::Status> for CtlError {
    /// The status's message (or its code's description when it has none)
    /// and its causes (for transport errors), without its metadata.
    fn from(s: tonic::Status) -> Self {
        let mut message = if s.message().is_empty() {
            s.code().description().to_owned()
        } else {
            s.message().to_owned()
        };
        let mut cause = std::error::Error::source(&s);
        while let Some(e) = cause {
            message.push_str(&format!(": {e}"));
            cause = e.source();
        }
        // Escaped: the agent may quote what it was sent (a name, a key).
        let message = escape::escape(&message).into_owned();
        CtlError::Rpc {
            code: s.code(),
            message,
        }
    }
}

pub type Result<T, E = CtlError> = std::result::Result<T, E>;

/// A write error from a closed pipe (`fdrctl events | head`) ends quietly:
/// `Ok(false)` tells the caller to stop writing.
fn quiet_pipe(res: io::Result<()>) -> Result<bool> {
    match res {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CtlError::Output(e)),
    }
}

/// RFC 3339 with milliseconds, UTC; `-` when there is no time.
fn time_text(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".into() };
    // RFC 3339 ends with year 9999 (a later time, from a corrupt record,
    // failed to format: a panic); such a time is shown as epoch seconds.
    const YEAR_10000: i64 = 253_402_300_800;
    if ts.seconds >= YEAR_10000 {
        return format!("@{}", ts.seconds);
    }
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            ts.seconds.max(0) as u64,
            ts.nanos.clamp(0, 999_999_999) as u32,
        );
    humantime::format_rfc3339_millis(t).to_string()
}

/// Arguments quoted where a shell would need it, so the line reads back
/// (and escaped: see [`escape::shell_word`]).
fn shell_words(argv: &[String]) -> String {
    escape::shell_words_raw(argv, &[])
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    EventKind::from_name(s).ok_or_else(|| {
        let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown kind {s:?}; one of {}", names.join(", "))
    })
}

/// The kind's name as `--kind` takes it (`exec`, `sensitive-read`, …).
pub(crate) fn kind_name(raw: i32) -> String {
    u16::try_from(raw)
        .ok()
        .and_then(EventKind::from_raw)
        .map_or_else(|| raw.to_string(), |k| k.name().to_owned())
}

/// Which scope a command is about.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// A container, by id.
    #[arg(long)]
    pub container: Option<String>,
    /// The host.
    #[arg(long)]
    pub host: bool,
}

impl ScopeArgs {
    fn key(&self) -> String {
        match &self.container {
            Some(id) => format!("container:{id}"),
            None => "host".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_parse() {
        assert_eq!(parse_kind("exec"), Ok(EventKind::Exec));
        assert_eq!(parse_kind("sensitive-read"), Ok(EventKind::SensitiveRead));
        assert_eq!(kind_name(EventKind::AccountChange as i32), "account");
        assert_eq!(kind_name(999), "999");
        assert!(parse_kind("nope")
            .unwrap_err()
            .contains("fork, exec, exit, write"));
    }

    #[test]
    fn times_past_year_9999_are_text_not_a_panic() {
        // Found by fuzzing a stored snapshot (fuzz/corpus/snapshot/year-10000).
        let t = |seconds, nanos| time_text(Some(&prost_types::Timestamp { seconds, nanos }));
        assert_eq!(t(253_402_300_799, 999_999_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(t(253_402_300_800, 0), "@253402300800");
        assert_eq!(t(i64::MAX, i32::MAX), format!("@{}", i64::MAX));
        assert_eq!(t(i64::MIN, -1), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        let argv = ["sh", "-c", "echo it's", ""].map(String::from);
        assert_eq!(shell_words(&argv), r"sh -c 'echo it'\''s' ''");
    }

    #[test]
    fn status_becomes_message_and_code() {
        let e = CtlError::from(tonic::Status::not_found("no incident #5"));
        assert_eq!(e.to_string(), "no incident #5 [NotFound]");
        let e = CtlError::from(tonic::Status::not_found("no model \"a\nb\x1b[2J\""));
        assert_eq!(e.to_string(), r#"no model "a\nb\x1b[2J" [NotFound]"#);
        let e = CtlError::from(tonic::Status::unimplemented(""));
        assert_eq!(
            e.to_string(),
            "Operation is not implemented or not supported [Unimplemented]"
        );
    }
}
