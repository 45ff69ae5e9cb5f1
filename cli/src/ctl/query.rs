//! `fdrctl query`: the history of a scope by time range, from the live
//! buffers.

use std::io::Write;

use fdr_proto::v1::{self as pb, EventKind};

use super::{events::print_events, parse_kind, Result, ScopeArgs};
use crate::client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// How far back, e.g. 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
    #[arg(long, value_parser = parse_kind)]
    pub kind: Vec<EventKind>,
    #[arg(long)]
    pub grep: Option<String>,
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
