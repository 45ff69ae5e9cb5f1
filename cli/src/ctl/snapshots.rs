//! `fdrctl snapshot`: create, list, show and export snapshots; fetching a
//! snapshot's pages (also for `fdrctl incidents show`).

use std::io::Write;

use fdr_proto::v1::{self as pb, EventKind};
use serde_json::{json, Value};

use super::{
    addr_text, escape::escape as e, events::print_events, parse_kind, quiet_pipe, shell_words,
    time_text, CtlError, Result, ScopeArgs,
};
use crate::client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SnapshotCmd {
    /// Freeze the window around now of a scope (before now, and what follows).
    Create {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Why (kept with the snapshot).
        #[arg(long, default_value = "on demand")]
        reason: String,
    },
    /// Stored and open snapshots.
    List {
        #[arg(long)]
        json: bool,
        /// Snapshots asked for per call (0: as many as the agent sends).
        #[arg(long, default_value_t = 0, hide = true)]
        page_size: u32,
    },
    /// A snapshot: summary, gaps, processes, listening sockets and events.
    Show {
        id: u64,
        /// Only these kinds.
        #[arg(long, value_parser = parse_kind)]
        kind: Vec<EventKind>,
        /// Only events mentioning this text.
        #[arg(long)]
        grep: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Export a snapshot: its events as CSV or JSON Lines, or the whole
    /// snapshot as its `fdr.v1.Snapshot` protobuf encoding (binary: to a
    /// file or a pipe, never a terminal).
    Export {
        id: u64,
        #[arg(long, value_parser = ["csv", "jsonl", "protobuf"], default_value = "csv")]
        format: String,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
    /// Check snapshots against the agent's seals: each one's data against
    /// its hash, the signatures, and the hash chain (nothing deleted,
    /// replaced or re-signed). Exits 3 when anything does not verify.
    Verify(super::verify::VerifyArgs),
}

pub(super) fn info_row(i: &pb::SnapshotInfo) -> String {
    format!(
        "{:>5}  {:<24} {:<28} {:>7} {:>6.1}%  {:<6} {:<16} {}",
        i.id,
        time_text(i.at.as_ref()),
        e(&i.scope),
        i.event_count,
        i.completeness * 100.0,
        if i.open { "open" } else { "closed" },
        match i.sha256.get(..16) {
            Some(s) => e(s).into_owned(),
            None => "-".into(),
        },
        e(&i.reason)
    )
}

pub(super) fn info_json(i: &pb::SnapshotInfo) -> Value {
    let mut v = json!({
        "id": i.id, "scope": i.scope, "reason": i.reason, "host": i.host,
        "at": time_text(i.at.as_ref()),
        "window_start": time_text(i.window_start.as_ref()),
        "window_end": time_text(i.window_end.as_ref()),
        "open": i.open, "event_count": i.event_count, "completeness": i.completeness,
        "bytes": i.bytes, "incidents": i.incidents,
    });
    // The hash of its canonical encoding, and the agent's seal of it.
    if !i.sha256.is_empty() {
        v["sha256"] = json!(i.sha256);
    }
    if let Some(s) = &i.seal {
        v["seal"] = seal_json(s);
    }
    // A console's: where the snapshot came from, and what its check found.
    if !i.agent_instance.is_empty() {
        v["node"] = json!(i.node);
        v["agent_instance"] = json!(i.agent_instance);
        v["agent_snapshot_id"] = json!(i.agent_snapshot_id);
        v["verification"] = json!(i.verification);
    }
    v
}

fn seal_json(s: &pb::SnapshotSeal) -> Value {
    use fdr_proto::integrity::hex;
    let mut v = json!({
        "sha256": s.sha256, "prev_id": s.prev_id, "prev_sha256": s.prev_sha256,
        "sealed_at": time_text(s.sealed_at.as_ref()),
        "public_key": hex(&s.public_key), "signature": hex(&s.signature),
    });
    if s.evicted_at.is_some() {
        v["evicted_at"] = json!(time_text(s.evicted_at.as_ref()));
    }
    v
}

/// The seal's line under a snapshot's summary.
pub(super) fn seal_line(i: &pb::SnapshotInfo) -> Option<String> {
    if i.sha256.is_empty() && i.seal.is_none() {
        return None;
    }
    let mut line = format!("sha256 {}", e(&i.sha256));
    if let Some(s) = &i.seal {
        line += &format!(
            ", sealed {} by key {}",
            time_text(s.sealed_at.as_ref()),
            fdr_proto::integrity::key_name(&s.public_key)
        );
        if s.prev_id != 0 {
            line += &format!(" after snapshot {}", s.prev_id);
        }
    }
    if !i.verification.is_empty() {
        line += &format!("; console check: {}", e(&i.verification));
    }
    Some(line)
}

/// Everything `GetSnapshot` returned for a request, all pages.
#[derive(Debug, Default)]
pub(super) struct SnapshotPages {
    pub info: Option<pb::SnapshotInfo>,
    pub gaps: Vec<pb::Gap>,
    pub processes: Vec<pb::Process>,
    pub listening: Vec<pb::ListeningSocket>,
    pub events: Vec<pb::Event>,
}

/// Fetches a snapshot page after page. The status is returned as is, so
/// that callers can tell an open or evicted snapshot from a failure.
pub(super) async fn fetch_snapshot(
    client: &mut Client,
    mut req: pb::GetSnapshotRequest,
) -> Result<SnapshotPages, tonic::Status> {
    let mut pages = SnapshotPages::default();
    loop {
        let mut stream = client.get_snapshot(req.clone()).await?.into_inner();
        let mut next = None;
        while let Some(msg) = stream.message().await? {
            if let Some(c) = pages.add(msg) {
                next = Some(c);
            }
        }
        match next {
            Some(c) => req.cursor = c,
            None => return Ok(pages),
        }
    }
}

impl SnapshotPages {
    /// Keeps one `GetSnapshot` message; the next page's cursor when it is one.
    pub(super) fn add(&mut self, msg: pb::GetSnapshotResponse) -> Option<String> {
        use pb::get_snapshot_response::Item as G;
        match msg.item {
            Some(G::Event(e)) => self.events.push(e),
            Some(G::NextCursor(c)) => return Some(c),
            Some(G::Info(i)) if self.info.is_none() => self.info = Some(i),
            Some(G::Gap(g)) => self.gaps.push(g),
            Some(G::Process(p)) => self.processes.push(p),
            Some(G::Listening(l)) => self.listening.push(l),
            _ => {}
        }
        None
    }
}

/// `snapshot show`: the header lines, then the events.
pub(super) fn write_show(out: &mut impl Write, snap: &SnapshotPages, json: bool) -> Result<()> {
    for h in snapshot_header(snap, json) {
        if !quiet_pipe(writeln!(out, "{h}"))? {
            return Ok(());
        }
    }
    print_events(out, snap.events.iter(), json)?;
    Ok(())
}

/// The lines above a snapshot's events: its summary, then (in text only)
/// gaps, processes and listening sockets.
fn snapshot_header(s: &SnapshotPages, json: bool) -> Vec<String> {
    let info = s.info.iter();
    if json {
        return info.map(|i| super::escape::json(&info_json(i))).collect();
    }
    let gaps = s.gaps.iter().map(gap_line);
    let processes = s.processes.iter().map(|p| {
        format!(
            "process {:>7} ppid {:>7} uid {:>5} {} {}",
            p.pid,
            p.ppid,
            p.uid,
            e(&p.exe),
            shell_words(&p.argv)
        )
    });
    let listening = s.listening.iter().map(|l| {
        let text = format!("{} {}", l.protocol, addr_text(&l.address, l.port));
        format!("listening {}", e(&text))
    });
    let seal = s.info.iter().filter_map(seal_line);
    info.map(info_row)
        .chain(seal)
        .chain(gaps)
        .chain(processes)
        .chain(listening)
        .collect()
}

pub async fn snapshot(client: &mut Client, cmd: &SnapshotCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        SnapshotCmd::Create { scope, reason } => {
            let info = client
                .create_snapshot(pb::CreateSnapshotRequest {
                    scope: scope.key(),
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            quiet_pipe(writeln!(
                out,
                "snapshot {} of {}: {} events before, window open until {}",
                info.id,
                e(&info.scope),
                info.event_count,
                time_text(info.window_end.as_ref())
            ))?;
        }
        SnapshotCmd::List { json, page_size } => {
            if !*json
                && !quiet_pipe(writeln!(
                    out,
                    "{:>5}  {:<24} {:<28} {:>7} {:>7}  {:<6} {:<16} REASON",
                    "ID", "AT", "SCOPE", "EVENTS", "COMPLETE", "STATE", "SHA256"
                ))?
            {
                return Ok(());
            }
            // Page by page, each written as it comes.
            let mut req = pb::ListSnapshotsRequest {
                limit: *page_size,
                ..Default::default()
            };
            loop {
                let page = client.list_snapshots(req.clone()).await?.into_inner();
                for i in &page.snapshots {
                    let line = if *json {
                        super::escape::json(&info_json(i))
                    } else {
                        info_row(i)
                    };
                    if !quiet_pipe(writeln!(out, "{line}"))? {
                        return Ok(());
                    }
                }
                if page.next_cursor.is_empty() {
                    break;
                }
                req.cursor = page.next_cursor;
            }
        }
        SnapshotCmd::Show {
            id,
            kind,
            grep,
            json,
        } => {
            let req = pb::GetSnapshotRequest {
                id: *id,
                kinds: kind.iter().map(|&k| k as i32).collect(),
                text: grep.clone().unwrap_or_default(),
                limit: 1000,
                ..Default::default()
            };
            let snap = fetch_snapshot(client, req).await?;
            write_show(out, &snap, *json)?;
        }
        SnapshotCmd::Verify(args) => {
            super::verify::verify(client, None, args, out).await?;
        }
        SnapshotCmd::Export { id, format, output } => {
            if format == "protobuf"
                && output.is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stdout())
            {
                return Err(CtlError::Usage(
                    "--format protobuf is binary: give --output FILE or redirect standard output"
                        .into(),
                ));
            }
            let mut stream = client
                .export_snapshot(pb::ExportSnapshotRequest {
                    id: *id,
                    format: format.clone(),
                })
                .await?
                .into_inner();
            let mut data = Vec::new();
            while let Some(chunk) = stream.message().await? {
                data.extend_from_slice(&chunk.data);
            }
            match output {
                Some(path) => std::fs::write(path, &data).map_err(|source| CtlError::File {
                    path: path.clone(),
                    source,
                })?,
                None => {
                    quiet_pipe(out.write_all(&data))?;
                }
            }
        }
    }
    Ok(())
}

/// `gap FROM .. TO: N [KIND] events lost[, host-wide] (cause)`.
pub fn gap_line(g: &pb::Gap) -> String {
    let kind = if g.kind == 0 {
        String::new()
    } else {
        format!(" {}", super::kind_name(g.kind))
    };
    format!(
        "gap {} .. {}: {}{kind} events lost{} ({})",
        time_text(g.from.as_ref()),
        time_text(g.to.as_ref()),
        g.lost,
        if g.host_wide {
            ", counted host-wide (at most this many here)"
        } else {
            ""
        },
        e(&g.cause)
    )
}
