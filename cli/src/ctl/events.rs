//! `fdrctl events`, and the rendering of events every command shares: a
//! table row (with its ancestry) or a JSON object.

use std::io::Write;

use fdr_proto::v1::{self as pb, stream_events_response::Item, EventKind};
use serde_json::json;

use super::{
    detail_text,
    escape::{escape, json as json_line, name},
    event_json, kind_name, parse_kind, quiet_pipe, shell_words, time_text, Result,
};
use crate::client::Client;

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

pub async fn events(client: &mut Client, args: &EventsArgs, out: &mut impl Write) -> Result<()> {
    let req = pb::StreamEventsRequest {
        kinds: args.kind.iter().map(|&k| k as i32).collect(),
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
            Some(Item::Event(ev)) if args.json => json_line(&event_json(&ev)),
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

/// Events as a table (with its header) or JSON lines; `Ok(false)` when the
/// reader went away.
pub(super) fn print_events<'a>(
    out: &mut impl Write,
    events: impl Iterator<Item = &'a pb::Event>,
    json: bool,
) -> Result<bool> {
    if !json && !quiet_pipe(writeln!(out, "{}", table_header()))? {
        return Ok(false);
    }
    for ev in events {
        let line = if json {
            json_line(&event_json(ev))
        } else {
            table_row(ev)
        };
        if !quiet_pipe(writeln!(out, "{line}"))? {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn table_header() -> String {
    format!(
        "{:<24} {:<14} {:<20} {:>7} {:>7} {:>6} {:<16} DETAIL",
        "TIME", "KIND", "WHERE", "PID", "PPID", "UID", "COMM"
    )
}

/// The ancestry under an event's table row, one indented line per image.
pub fn ancestry_text(ev: &pb::Event) -> String {
    ev.ancestry
        .iter()
        .map(|a| format!("\n    <- {:>7} {}", a.pid, shell_words(&a.argv)))
        .collect()
}

/// A container, short: `namespace/pod/container` when it is a pod's, else
/// `ctr:` and the id's first 12 characters; `None` without either. Escaped.
pub(super) fn container_where(c: Option<&pb::ContainerInfo>, id: &str) -> Option<String> {
    if let Some(c) = c.filter(|c| !c.pod_name.is_empty()) {
        let text = format!("{}/{}/{}", c.pod_namespace, c.pod_name, c.name);
        return Some(escape(&text).into_owned());
    }
    let id = if id.is_empty() {
        c.map_or("", |c| &c.id)
    } else {
        id
    };
    (!id.is_empty()).then(|| {
        let short: String = id.chars().take(12).collect();
        format!("ctr:{}", escape(&short))
    })
}

/// Where an event happened, short: a container, a service, or host. Escaped.
fn where_text(ev: &pb::Event) -> String {
    container_where(ev.container.as_ref(), &ev.container_id).unwrap_or_else(|| {
        if ev.service.is_empty() {
            "host".into()
        } else {
            escape(&ev.service).into_owned()
        }
    })
}

/// One line (every text escaped, see [`super::escape`]).
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
        name(&p.comm, &p.comm_raw),
        detail_text(ev)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdr_proto::v1::event::Detail;

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
    fn hostile_names_stay_on_one_line_escaped_and_apart() {
        let file = |path: &str, raw: &[u8]| pb::Event {
            kind: pb::EventKind::FileWrite as i32,
            process: Some(pb::Process {
                comm: "x\x1b[2J".into(),
                ..Default::default()
            }),
            detail: Some(Detail::File(pb::FileDetail {
                path: path.into(),
                path_raw: raw.to_vec(),
                ..Default::default()
            })),
            ..exec_event()
        };
        let row = table_row(&file(
            "/tmp/a\n2023-11-14T22:13:20.005Z exec fake\r\x07",
            b"",
        ));
        assert!(!row.contains(['\n', '\r', '\x07', '\x1b']), "{row:?}");
        assert!(row.contains(r"x\x1b[2J"), "{row}");
        assert!(
            row.ends_with(r"/tmp/a\n2023-11-14T22:13:20.005Z exec fake\r\x07"),
            "{row}"
        );
        let a = table_row(&file(r"/tmp/b-\xff\xfe", b"/tmp/b-\xff\xfe"));
        let b = table_row(&file(r"/tmp/b-\xfe\xff", b"/tmp/b-\xfe\xff"));
        let spelled = table_row(&file(r"/tmp/b-\xff\xfe", b""));
        assert!(a.ends_with(r" /tmp/b-\xff\xfe"), "{a}");
        assert!(b.ends_with(r" /tmp/b-\xfe\xff"), "{b}");
        assert!(spelled.ends_with(r" /tmp/b-\\xff\\xfe"), "{spelled}");
        let v = event_json(&file(r"/tmp/b-\xff\xfe", b"/tmp/b-\xff\xfe"));
        assert_eq!(v["detail"]["path"], r"/tmp/b-\xff\xfe");
        assert_eq!(v["detail"]["path_utf8"], false);
        assert_eq!(event_json(&exec_event())["detail"]["argv_utf8"], true);
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
    fn where_is_pod_then_container_id_then_service() {
        let pod = pb::ContainerInfo {
            id: "4f0d2c8e9a1b7c6d".into(),
            name: "web".into(),
            pod_name: "shop-7d9".into(),
            pod_namespace: "prod".into(),
            ..Default::default()
        };
        assert_eq!(
            container_where(Some(&pod), "").as_deref(),
            Some("prod/shop-7d9/web")
        );
        let bare = pb::ContainerInfo {
            pod_name: String::new(),
            ..pod
        };
        assert_eq!(
            container_where(Some(&bare), "").as_deref(),
            Some("ctr:4f0d2c8e9a1b")
        );
        assert_eq!(container_where(None, ""), None);
        assert_eq!(where_text(&exec_event()), "sshd.service");
    }
}
