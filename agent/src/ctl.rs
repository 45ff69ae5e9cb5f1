//! `fdrctl` subcommands: requests, and rendering as a table or JSON lines.

use std::io::{self, Write};

use anyhow::{Context, Result};
use fdr_proto::v1::{self as pb, event::Detail, stream_events_response::Item};
use serde_json::{json, Value};

use crate::{api::convert::kind_to_pb, client::Client, event::EventKind};

#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Keep streaming new events after the buffered ones.
    #[arg(short, long)]
    pub follow: bool,
    /// Only these kinds (repeatable): fork, exec, exit, write, rename, unlink,
    /// chmod, chown, link, truncate, sensitive-read, listen, bind, connect,
    /// accept, priv-change, account, binary, container-start,
    /// container-stop, model-learned, audit.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Vec<EventKind>,
    /// Only events of this process id (repeatable).
    #[arg(long)]
    pub pid: Vec<u32>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show each event's ancestry (the programs it came from).
    #[arg(long)]
    pub ancestry: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    EventKind::from_name(s).ok_or_else(|| {
        let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown kind {s:?}; one of {}", names.join(", "))
    })
}

/// A write error from a closed pipe (`fdrctl events | head`) ends quietly.
fn quiet_pipe(res: io::Result<()>) -> Result<bool> {
    match res {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing output"),
    }
}

pub async fn events(client: &mut Client, args: &EventsArgs, out: &mut impl Write) -> Result<()> {
    let req = pb::StreamEventsRequest {
        kinds: args.kind.iter().map(|&k| kind_to_pb(k) as i32).collect(),
        pids: args.pid.clone(),
        buffered: true,
        follow: args.follow,
        ancestry: args.ancestry,
    };
    let mut stream = client.stream_events(req).await?.into_inner();
    if !args.json && !quiet_pipe(writeln!(out, "{}", table_header()))? {
        return Ok(());
    }
    while let Some(msg) = stream.message().await? {
        let line = match msg.item {
            Some(Item::Event(ev)) if args.json => event_json(&ev).to_string(),
            Some(Item::Event(ev)) if args.ancestry => {
                let mut row = table_row(&ev);
                row.push_str(&ancestry_text(&ev));
                row
            }
            Some(Item::Event(ev)) => table_row(&ev),
            Some(Item::Lost(l)) if args.json => json!({ "lost": l.count }).to_string(),
            Some(Item::Lost(l)) => {
                format!("-- {} events lost: this client was too slow --", l.count)
            }
            None => continue,
        };
        if !quiet_pipe(writeln!(out, "{line}").and_then(|_| out.flush()))? {
            return Ok(());
        }
    }
    Ok(())
}

pub async fn stats(client: &mut Client, args: &StatsArgs, out: &mut impl Write) -> Result<()> {
    let s = client.get_stats(pb::GetStatsRequest {}).await?.into_inner();
    let text = if args.json {
        stats_json(&s).to_string() + "\n"
    } else {
        stats_table(&s)
    };
    quiet_pipe(out.write_all(text.as_bytes()))?;
    Ok(())
}

/// The kind's name as `--kind` takes it (`exec`, `sensitive-read`, …).
fn kind_name(raw: i32) -> String {
    u16::try_from(raw)
        .ok()
        .and_then(EventKind::from_raw)
        .map_or_else(|| raw.to_string(), |k| k.name().to_owned())
}

fn time_text(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".into() };
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            ts.seconds.max(0) as u64,
            ts.nanos.clamp(0, 999_999_999) as u32,
        );
    humantime::format_rfc3339_millis(t).to_string()
}

/// A readable one-line description of the event's detail.
pub fn detail_text(ev: &pb::Event) -> String {
    match &ev.detail {
        Some(Detail::Fork(f)) => format!("parent {}", f.parent_pid),
        Some(Detail::Exec(x)) => {
            let mut s = format!("{} {}", x.filename, shell_words(&x.argv));
            if x.argv_truncated {
                s.push_str(" [truncated]");
            }
            s
        }
        Some(Detail::Exit(x)) => match (x.code, x.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(sig)) => format!(
                "killed by signal {sig}{}",
                if x.core_dumped { " (core dumped)" } else { "" }
            ),
            _ => format!("status {}", x.raw_status),
        },
        Some(Detail::File(f)) => file_text(ev.kind, f),
        Some(Detail::Net(n)) => {
            let local = format!(
                "{} {}",
                n.protocol,
                addr_text(&n.local_address, n.local_port)
            );
            if n.remote_address.is_empty() {
                local
            } else {
                format!("{local} -> {}", addr_text(&n.remote_address, n.remote_port))
            }
        }
        Some(Detail::Priv(p)) => {
            let (o, n) = (p.old.unwrap_or_default(), p.new.unwrap_or_default());
            format!(
                "{}: uid {}/{}/{} -> {}/{}/{}, gid {}/{}/{} -> {}/{}/{}, caps {:#x} -> {:#x}",
                p.syscall,
                o.uid,
                o.euid,
                o.suid,
                n.uid,
                n.euid,
                n.suid,
                o.gid,
                o.egid,
                o.sgid,
                n.gid,
                n.egid,
                n.sgid,
                o.cap_effective,
                n.cap_effective
            )
        }
        Some(Detail::Account(a)) => format!(
            "{} by {} ({}){}: {} [{}]",
            a.r#type,
            a.user,
            a.uid,
            if a.interactive { ", interactive" } else { "" },
            a.files.join(", "),
            shell_words(&a.command)
        ),
        Some(Detail::ContainerLifecycle(c)) => {
            let what = ev
                .container
                .as_ref()
                .map_or(String::new(), |m| format!(" {} ({})", m.name, m.image));
            if c.started {
                format!("container started{what} [{}]", c.source)
            } else {
                format!(
                    "container stopped{what}: {}{} [{}]",
                    c.reason,
                    c.exit_code
                        .map_or(String::new(), |x| format!(", exit code {x}")),
                    c.source
                )
            }
        }
        Some(Detail::ModelLearned(l)) => {
            format!("added to model {}: {} {}", l.model, l.section, l.item)
        }
        Some(Detail::Audit(a)) => format!(
            "[{}] {}{}",
            severity_name(a.severity),
            a.message,
            if a.incident > 0 {
                format!(" (incident #{})", a.incident)
            } else {
                String::new()
            }
        ),
        Some(Detail::Binary(b)) => format!(
            "{} {} (written by pid {})",
            b.reason,
            b.path,
            b.writer_pid.map_or("?".into(), |p| p.to_string())
        ),
        None => String::new(),
    }
}

fn addr_text(ip: &str, port: u32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn file_text(kind: i32, f: &pb::FileDetail) -> String {
    let path2 = f.path2.as_deref().unwrap_or("?");
    let mut s = match pb::EventKind::try_from(kind) {
        Ok(pb::EventKind::FileRename) => format!("{} -> {path2}", f.path),
        Ok(pb::EventKind::FileLink) if f.flags & 1 != 0 => {
            format!("{path2} -> {} (symlink)", f.path)
        }
        Ok(pb::EventKind::FileLink) => format!("{path2} = {}", f.path),
        Ok(pb::EventKind::FileChmod) => match f.old_mode {
            Some(old) => format!(
                "{} mode {:o} -> {:o}",
                f.path,
                old & 0o7777,
                f.new_mode.unwrap_or(0)
            ),
            None => format!("{} mode {:o}", f.path, f.new_mode.unwrap_or(0)),
        },
        Ok(pb::EventKind::FileChown) => format!(
            "{} owner {}:{}",
            f.path,
            f.uid.map_or("-".into(), |u| u.to_string()),
            f.gid.map_or("-".into(), |g| g.to_string())
        ),
        Ok(pb::EventKind::FileTruncate) => format!("{} to {} bytes", f.path, f.size.unwrap_or(0)),
        _ => f.path.clone(),
    };
    if f.incomplete {
        s.push_str(" [path incomplete]");
    }
    s
}

/// Arguments quoted where a shell would need it, so the line reads back.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn table_header() -> String {
    format!(
        "{:<24} {:<14} {:<20} {:>7} {:>7} {:>6} {:<16} DETAIL",
        "TIME", "KIND", "WHERE", "PID", "PPID", "UID", "COMM"
    )
}

/// Where an event happened, short: a container id prefix, a service, or host.
/// The ancestry under an event's table row, one indented line per image.
pub fn ancestry_text(ev: &pb::Event) -> String {
    ev.ancestry
        .iter()
        .map(|a| format!("\n    <- {:>7} {}", a.pid, shell_words(&a.argv)))
        .collect()
}

fn where_text(ev: &pb::Event) -> String {
    let named = ev.container.as_ref().filter(|c| !c.pod_name.is_empty());
    if let Some(c) = named {
        format!("{}/{}/{}", c.pod_namespace, c.pod_name, c.name)
    } else if !ev.container_id.is_empty() {
        format!(
            "ctr:{}",
            ev.container_id.chars().take(12).collect::<String>()
        )
    } else if !ev.service.is_empty() {
        ev.service.clone()
    } else {
        "host".into()
    }
}

pub fn table_row(ev: &pb::Event) -> String {
    let p = ev.process.clone().unwrap_or_default();
    format!(
        "{:<24} {:<14} {:<20} {:>7} {:>7} {:>6} {:<16} {}",
        time_text(ev.time.as_ref()),
        kind_name(ev.kind),
        where_text(ev),
        p.pid,
        p.ppid,
        p.uid,
        p.comm,
        detail_text(ev)
    )
}

pub fn event_json(ev: &pb::Event) -> Value {
    let p = ev.process.clone().unwrap_or_default();
    let detail = match &ev.detail {
        Some(Detail::Fork(f)) => json!({ "parent_pid": f.parent_pid, "parent_tid": f.parent_tid }),
        Some(Detail::Exec(x)) => json!({
            "filename": x.filename, "exe": x.exe, "exe_incomplete": x.exe_incomplete, "argv": x.argv, "argv_truncated": x.argv_truncated,
            "argv_unreadable": x.argv_unreadable, "filename_truncated": x.filename_truncated,
            "old_tid": x.old_tid,
        }),
        Some(Detail::Exit(x)) => json!({
            "code": x.code, "signal": x.signal, "core_dumped": x.core_dumped, "raw_status": x.raw_status,
        }),
        Some(Detail::File(f)) => json!({
            "path": f.path, "path2": f.path2, "incomplete": f.incomplete, "flags": f.flags,
            "mode": f.mode, "new_mode": f.new_mode, "old_mode": f.old_mode, "uid": f.uid,
            "gid": f.gid, "size": f.size, "dev": f.dev, "ino": f.ino, "syscall": f.syscall,
        }),
        Some(Detail::Net(n)) => json!({
            "protocol": n.protocol, "local_address": n.local_address, "local_port": n.local_port,
            "remote_address": n.remote_address, "remote_port": n.remote_port,
            "backlog": n.backlog, "ret": n.ret,
        }),
        Some(Detail::Priv(p)) => {
            let c = |c: &Option<pb::Creds>| {
                let c = c.unwrap_or_default();
                json!({
                    "uid": c.uid, "euid": c.euid, "suid": c.suid, "fsuid": c.fsuid,
                    "gid": c.gid, "egid": c.egid, "sgid": c.sgid, "fsgid": c.fsgid,
                    "cap_effective": c.cap_effective, "cap_permitted": c.cap_permitted,
                })
            };
            json!({ "syscall": p.syscall, "old": c(&p.old), "new": c(&p.new) })
        }
        Some(Detail::Account(a)) => json!({
            "type": a.r#type, "hostname": a.hostname, "uid": a.uid, "user": a.user,
            "files": a.files, "command": a.command, "interactive": a.interactive,
            "first_change": time_text(a.first_change.as_ref()),
        }),
        Some(Detail::Binary(b)) => json!({
            "path": b.path, "reason": b.reason, "writer_pid": b.writer_pid, "writer_exe": b.writer_exe,
        }),
        Some(Detail::ContainerLifecycle(c)) => json!({
            "started": c.started, "exit_code": c.exit_code, "reason": c.reason, "source": c.source,
        }),
        Some(Detail::ModelLearned(l)) => json!({
            "model": l.model, "section": l.section, "item": l.item,
        }),
        Some(Detail::Audit(a)) => json!({
            "model": a.model, "section": a.section, "rule": a.rule,
            "severity": severity_name(a.severity), "message": a.message, "item": a.item,
            "incident": a.incident, "trigger_seq": a.trigger_seq,
        }),
        None => Value::Null,
    };
    json!({
        "seq": ev.seq,
        "time": time_text(ev.time.as_ref()),
        "boot_ns": ev.boot_ns,
        "cpu": ev.cpu,
        "kind": kind_name(ev.kind),
        "process": {
            "pid": p.pid, "tid": p.tid, "ppid": p.ppid, "uid": p.uid, "gid": p.gid,
            "loginuid": p.loginuid, "cgroup_id": p.cgroup_id, "comm": p.comm, "exe": p.exe,
            "argv": p.argv, "has_tty": p.has_tty, "start_ns": p.start_ns,
        },
        "detail": detail,
        "scope": ev.scope,
        "container_id": ev.container_id,
        "service": ev.service,
        "hostname": ev.hostname,
        "container": ev.container.as_ref().map(container_json),
        "ancestry": ev.ancestry.iter().map(|a| json!({
            "pid": a.pid, "uid": a.uid, "exe": a.exe, "argv": a.argv,
        })).collect::<Vec<_>>(),
    })
}

pub fn container_json(c: &pb::ContainerInfo) -> Value {
    json!({
        "id": c.id, "name": c.name, "image": c.image, "image_digest": c.image_digest,
        "pod_name": c.pod_name, "pod_namespace": c.pod_namespace, "pod_uid": c.pod_uid,
        "labels": c.labels, "runtime": c.runtime,
    })
}

pub fn severity_name(raw: i32) -> &'static str {
    crate::event::Severity::from_raw(raw).map_or("?", crate::event::Severity::name)
}

fn stats_json(s: &pb::Stats) -> Value {
    let b = s.buffers.unwrap_or_default();
    json!({
        "kinds": s.kinds.iter().map(|k| json!({
            "kind": k.name, "seen": k.seen, "kernel_drops": k.kernel_drops,
        })).collect::<Vec<_>>(),
        "decode_errors": s.decode_errors,
        "buffers": {
            "events": b.events, "bytes": b.bytes, "capacity_bytes": b.capacity_bytes, "evicted": b.evicted,
        },
        "stream_drops": s.stream_drops,
        "subscribers": s.subscribers,
        "processes_tracked": s.processes_tracked,
        "processes": s.processes.map(|p| json!({ "live": p.live, "exited": p.exited, "pruned": p.pruned })),
        "containers": s.containers.as_ref().map(|c| json!({
            "runtime": c.runtime, "running": c.running, "tombstones": c.tombstones,
            "with_metadata": c.with_metadata,
        })),
        "started": time_text(s.started.as_ref()),
        "ring_buffer_bytes": s.ring_buffer_bytes,
        "scopes": s.scopes.iter().map(|sc| {
            let b = sc.buffer.unwrap_or_default();
            json!({ "scope": sc.scope, "events": b.events, "bytes": b.bytes, "evicted": b.evicted })
        }).collect::<Vec<_>>(),
    })
}

fn stats_table(s: &pb::Stats) -> String {
    let mut t = format!("{:<8} {:>12} {:>12}\n", "KIND", "SEEN", "KERNEL_DROPS");
    for k in &s.kinds {
        t += &format!("{:<8} {:>12} {:>12}\n", k.name, k.seen, k.kernel_drops);
    }
    let b = s.buffers.unwrap_or_default();
    let per_event = b.bytes.checked_div(b.events).unwrap_or(0);
    t += &format!(
        "\nbuffers            {} events, {} / {} bytes ({} bytes/event), {} evicted\n",
        b.events, b.bytes, b.capacity_bytes, per_event, b.evicted
    );
    for sc in &s.scopes {
        let b = sc.buffer.unwrap_or_default();
        t += &format!(
            "  {:<30} {} events, {} bytes, {} evicted\n",
            sc.scope, b.events, b.bytes, b.evicted
        );
    }
    t += &format!("decode errors      {}\n", s.decode_errors);
    t += &format!(
        "stream drops       {} ({} subscribers now)\n",
        s.stream_drops, s.subscribers
    );
    let p = s.processes.unwrap_or_default();
    t += &format!(
        "processes          {} live, {} exited (kept for grace), {} pruned\n",
        p.live, p.exited, p.pruned
    );
    let c = s.containers.clone().unwrap_or_default();
    t += &format!(
        "containers         {} running, {} tombstones, {} with metadata; runtime: {}\n",
        c.running,
        c.tombstones,
        c.with_metadata,
        if c.runtime.is_empty() {
            "none"
        } else {
            &c.runtime
        }
    );
    t += &format!("ring buffer        {} bytes\n", s.ring_buffer_bytes);
    t += &format!("agent started      {}\n", time_text(s.started.as_ref()));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_event() -> pb::Event {
        pb::Event {
            seq: 9,
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
            boot_ns: 1,
            cpu: 0,
            kind: pb::EventKind::Exec as i32,
            process: Some(pb::Process {
                pid: 42,
                ppid: 1,
                uid: 0,
                comm: "sh".into(),
                ..Default::default()
            }),
            detail: Some(Detail::Exec(pb::ExecDetail {
                filename: "/bin/sh".into(),
                argv: vec!["sh".into(), "-c".into(), "exit 7".into()],
                ..Default::default()
            })),
            scope: "host".into(),
            container_id: String::new(),
            service: "sshd.service".into(),
            hostname: "node-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn table_row_shows_time_kind_pid_and_quoted_command() {
        let row = table_row(&exec_event());
        assert!(row.starts_with("2023-11-14T22:13:20.005Z exec"), "{row}");
        assert!(row.contains(" sshd.service "), "{row}");
        assert!(row.contains(" 42 "), "{row}");
        assert!(row.ends_with("/bin/sh sh -c 'exit 7'"), "{row}");
    }

    #[test]
    fn json_line_has_typed_fields() {
        let v = event_json(&exec_event());
        assert_eq!(v["kind"], "exec");
        assert_eq!(v["process"]["pid"], 42);
        assert_eq!(v["detail"]["argv"][2], "exit 7");
        assert_eq!(v["time"], "2023-11-14T22:13:20.005Z");
    }

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
    /// Export a snapshot's events.
    Export {
        id: u64,
        #[arg(long, value_parser = ["csv", "jsonl"], default_value = "csv")]
        format: String,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
}

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

fn info_row(i: &pb::SnapshotInfo) -> String {
    format!(
        "{:>5}  {:<24} {:<28} {:>7} {:>6.1}%  {:<6} {}",
        i.id,
        time_text(i.at.as_ref()),
        i.scope,
        i.event_count,
        i.completeness * 100.0,
        if i.open { "open" } else { "closed" },
        i.reason
    )
}

fn info_json(i: &pb::SnapshotInfo) -> Value {
    json!({
        "id": i.id, "scope": i.scope, "reason": i.reason, "host": i.host,
        "at": time_text(i.at.as_ref()),
        "window_start": time_text(i.window_start.as_ref()),
        "window_end": time_text(i.window_end.as_ref()),
        "open": i.open, "event_count": i.event_count, "completeness": i.completeness,
        "bytes": i.bytes,
    })
}

fn print_events<'a>(
    out: &mut impl Write,
    events: impl Iterator<Item = &'a pb::Event>,
    json: bool,
) -> Result<bool> {
    if !json && !quiet_pipe(writeln!(out, "{}", table_header()))? {
        return Ok(false);
    }
    for ev in events {
        let line = if json {
            event_json(ev).to_string()
        } else {
            table_row(ev)
        };
        if !quiet_pipe(writeln!(out, "{line}"))? {
            return Ok(false);
        }
    }
    Ok(true)
}

pub async fn snapshot(client: &mut Client, cmd: &SnapshotCmd, out: &mut impl Write) -> Result<()> {
    use pb::get_snapshot_response::Item as G;
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
                info.scope,
                info.event_count,
                time_text(info.window_end.as_ref())
            ))?;
        }
        SnapshotCmd::List { json } => {
            let list = client
                .list_snapshots(pb::ListSnapshotsRequest {})
                .await?
                .into_inner();
            if *json {
                for i in &list.snapshots {
                    quiet_pipe(writeln!(out, "{}", info_json(i)))?;
                }
            } else {
                quiet_pipe(writeln!(
                    out,
                    "{:>5}  {:<24} {:<28} {:>7} {:>7}  {:<6} REASON",
                    "ID", "AT", "SCOPE", "EVENTS", "COMPLETE", "STATE"
                ))?;
                for i in &list.snapshots {
                    quiet_pipe(writeln!(out, "{}", info_row(i)))?;
                }
            }
        }
        SnapshotCmd::Show {
            id,
            kind,
            grep,
            json,
        } => {
            let mut cursor = String::new();
            let mut events = Vec::new();
            let mut header = Vec::new();
            loop {
                let req = pb::GetSnapshotRequest {
                    id: *id,
                    kinds: kind.iter().map(|&k| kind_to_pb(k) as i32).collect(),
                    text: grep.clone().unwrap_or_default(),
                    cursor: cursor.clone(),
                    limit: 1000,
                    ..Default::default()
                };
                let mut stream = client.get_snapshot(req).await?.into_inner();
                let mut next = None;
                while let Some(msg) = stream.message().await? {
                    match msg.item {
                        Some(G::Event(e)) => events.push(e),
                        Some(G::NextCursor(c)) => next = Some(c),
                        Some(G::Info(i)) if cursor.is_empty() => header.push(if *json {
                            info_json(&i).to_string()
                        } else {
                            info_row(&i)
                        }),
                        Some(G::Gap(g)) if !*json => header.push(format!(
                            "gap {} .. {}: {} events lost ({})",
                            time_text(g.from.as_ref()),
                            time_text(g.to.as_ref()),
                            g.lost,
                            g.cause
                        )),
                        Some(G::Process(p)) if !*json => header.push(format!(
                            "process {:>7} ppid {:>7} uid {:>5} {} {}",
                            p.pid,
                            p.ppid,
                            p.uid,
                            p.exe,
                            shell_words(&p.argv)
                        )),
                        Some(G::Listening(l)) if !*json => header.push(format!(
                            "listening {} {}",
                            l.protocol,
                            addr_text(&l.address, l.port)
                        )),
                        _ => {}
                    }
                }
                match next {
                    Some(c) => cursor = c,
                    None => break,
                }
            }
            for h in header {
                if !quiet_pipe(writeln!(out, "{h}"))? {
                    return Ok(());
                }
            }
            print_events(out, events.iter(), *json)?;
        }
        SnapshotCmd::Export { id, format, output } => {
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
                Some(path) => std::fs::write(path, &data)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => {
                    quiet_pipe(out.write_all(&data))?;
                }
            }
        }
    }
    Ok(())
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
                kinds: args.kind.iter().map(|&k| kind_to_pb(k) as i32).collect(),
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
