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
    let mut cursor = String::new();
    let mut events = Vec::new();
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
        events.extend(resp.events);
        if resp.next_cursor.is_empty() {
            break;
        }
        cursor = resp.next_cursor;
    }
    print_events(out, events.iter(), args.json)?;
    Ok(())
}
