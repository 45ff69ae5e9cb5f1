//! `fdrctl query`: the history of every scope, or of one, by time range,
//! from the live buffers.

use std::io::Write;

use fdr_proto::v1::{self as pb, EventKind};

use super::{events::print_events, parse_kind, Result};
use crate::client::Client;

/// Where to search: every scope unless narrowed.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(required = false, multiple = false)]
pub struct QueryScope {
    /// Only this container, by id.
    #[arg(long)]
    pub container: Option<String>,
    /// Only the host.
    #[arg(long)]
    pub host: bool,
}

impl QueryScope {
    /// The API's scope key: empty for every scope.
    fn key(&self) -> String {
        match (&self.container, self.host) {
            (Some(id), _) => format!("container:{id}"),
            (None, true) => "host".into(),
            (None, false) => String::new(),
        }
    }
}

/// Events of every scope (each row names its container, pod or the host),
/// merged in time order; `--container` or `--host` narrows it to one.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub scope: QueryScope,
    /// How far back, e.g. 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
    #[arg(long, value_parser = parse_kind)]
    pub kind: Vec<EventKind>,
    #[arg(long)]
    pub grep: Option<String>,
    /// Asking a console: the node whose agent answers (by default the
    /// agent holding the container, or every agent).
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn query(client: &mut Client, args: &QueryArgs, out: &mut impl Write) -> Result<()> {
    let now = std::time::SystemTime::now();
    let from = now - args.since;
    let ts = |t: std::time::SystemTime| {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        prost_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    };
    // Each page printed as it comes: memory is one page, whatever the
    // query returns.
    let mut cursor = String::new();
    let mut first = true;
    loop {
        let resp = client
            .query_events(pb::QueryEventsRequest {
                scope: args.scope.key(),
                from: Some(ts(from)),
                to: None,
                kinds: args.kind.iter().map(|&k| k as i32).collect(),
                text: args.grep.clone().unwrap_or_default(),
                cursor: cursor.clone(),
                limit: 5000,
                node: args.node.clone().unwrap_or_default(),
            })
            .await?
            .into_inner();
        let printed = if std::mem::take(&mut first) {
            print_events(out, resp.events.iter(), args.json)?
        } else {
            print_rows(out, &resp.events, args.json)?
        };
        if !printed || resp.next_cursor.is_empty() {
            break;
        }
        cursor = resp.next_cursor;
    }
    Ok(())
}

/// Events of a later page: rows (no header again) or JSON lines. False
/// when the reader went away.
fn print_rows(out: &mut impl Write, events: &[pb::Event], json: bool) -> Result<bool> {
    for ev in events {
        let line = if json {
            super::escape::json(&super::event_json(ev))
        } else {
            super::table_row(ev)
        };
        if !super::quiet_pipe(writeln!(out, "{line}"))? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        q: QueryArgs,
    }

    #[test]
    fn no_scope_is_every_scope_and_the_flags_narrow_it() {
        let key = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("query").chain(args.iter().copied()))
                .map(|c| c.q.scope.key())
        };
        assert_eq!(key(&[]).unwrap(), "");
        assert_eq!(key(&["--host"]).unwrap(), "host");
        assert_eq!(key(&["--container", "4f0d"]).unwrap(), "container:4f0d");
        assert!(key(&["--host", "--container", "4f0d"]).is_err());
    }
}
