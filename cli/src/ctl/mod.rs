//! `fdrctl` subcommands: requests, and rendering as a table, JSON lines or
//! (for models) YAML. One file per command family; the helpers they share
//! (errors, output, scopes) live here; the text and JSON of events, times,
//! shell quoting and kind names are `fdr_proto::render`'s, shared with the
//! agent.

use std::io;

use fdr_proto::v1::EventKind;

mod containers;
mod events;
mod identity;
mod incident_show;
mod incident_view;
mod incidents;
mod models;
mod query;
mod report;
mod snapshots;
mod stats;
mod verify;

pub use containers::{containers, ContainersArgs};
pub use events::{ancestry_text, events, table_row, EventsArgs};
pub use fdr_proto::render::{
    addr_text, container_json, detail_text, escape, escape_bytes, event_json, kind_name,
    severity_name, shell_words, time_text,
};
pub use identity::{agents, identity, AgentsArgs, IdentityArgs};
#[doc(hidden)]
pub use incident_show::render_fetched;
pub use incidents::{incidents, IncidentsCmd};
pub use models::{model, ModelCmd};
pub use query::{query, QueryArgs};
pub use report::{render_report, report, ReportArgs};
pub use snapshots::{snapshot, SnapshotCmd};
pub use stats::{stats, StatsArgs};
pub use verify::verify;

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The agent refused or failed the call.
    #[error("{message} [{code:?}]")]
    Rpc { code: tonic::Code, message: String },
    #[error("writing output")]
    Output(#[source] io::Error),
    /// A request that makes no sense as given.
    #[error("{0}")]
    Usage(String),
    /// `snapshot verify` found something that does not verify (exit 3).
    #[error("{0}")]
    Unverified(String),
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

/// `--kind`'s parser: a name of [`EventKind::ALL`].
fn parse_kind(s: &str) -> Result<EventKind, String> {
    s.parse().map_err(|e: fdr_proto::UnknownKind| e.to_string())
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
        assert_eq!(parse_kind("audit"), Ok(EventKind::Audit));
        assert!(parse_kind("nope")
            .unwrap_err()
            .contains("fork, exec, exit, write"));
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
