//! `fdrctl incidents`: list incidents, watch them open and change, show
//! one (in [`super::incident_show`]); one table row or JSON object each.

use std::io::Write;

use fdr_proto::v1 as pb;
use serde_json::{json, Value};

use super::{
    container_json, escape::escape as e, events::container_where, incident_show, quiet_pipe,
    severity_name, time_text, Result,
};
use crate::client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum IncidentsCmd {
    /// Incidents, oldest first.
    List {
        /// Only incidents with a serial above this one.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many (default: all).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// One JSON object per line instead of a table (for a SIEM).
        #[arg(long)]
        json: bool,
    },
    /// An incident: where, account record, audits, then the timeline of
    /// the snapshot frozen when it opened.
    Show {
        serial: u64,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Incidents after --after, then each one as it opens or is updated,
    /// until interrupted.
    Watch {
        /// Only incidents with a serial above this one.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Incidents per `ListIncidents` call.
const PAGE: u64 = 500;

pub async fn incidents(
    client: &mut Client,
    cmd: &IncidentsCmd,
    out: &mut impl Write,
) -> Result<()> {
    match cmd {
        IncidentsCmd::List { after, limit, json } => {
            let (mut after, mut left) = (*after, limit.map_or(u64::MAX, u64::from));
            // The header once the first call succeeded, not above an error.
            let mut header = !*json;
            while left > 0 {
                let page = left.min(PAGE);
                let req = pb::ListIncidentsRequest {
                    after_serial: after,
                    limit: page as u32,
                };
                let resp = client.list_incidents(req).await?.into_inner();
                if std::mem::take(&mut header)
                    && !quiet_pipe(writeln!(out, "{}", incident_header()))?
                {
                    return Ok(());
                }
                for i in &resp.incidents {
                    if !quiet_pipe(writeln!(out, "{}", incident_line(i, *json)))? {
                        return Ok(());
                    }
                }
                let n = resp.incidents.len() as u64;
                // Until a page comes back empty: the agent may send fewer
                // than asked for.
                if n == 0 || resp.last_serial <= after {
                    break;
                }
                (after, left) = (resp.last_serial, left - n);
            }
        }
        IncidentsCmd::Show { serial, json } => {
            incident_show::show(client, *serial, *json, out).await?;
        }
        IncidentsCmd::Watch { after, json } => {
            let req = pb::StreamIncidentsRequest {
                after_serial: *after,
            };
            let mut stream = client.stream_incidents(req).await?.into_inner();
            if !*json && !quiet_pipe(writeln!(out, "{}", incident_header()))? {
                return Ok(());
            }
            while let Some(i) = stream.message().await? {
                let line = incident_line(&i, *json);
                if !quiet_pipe(writeln!(out, "{line}").and_then(|_| out.flush()))? {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

fn incident_header() -> String {
    format!(
        "{:>6} {:<8} {:<20} {:<24} {:<24} {:<24} {:>6} {:>8} SUMMARY",
        "SERIAL", "SEVERITY", "TYPE", "WHERE", "FIRST", "LAST", "AUDITS", "SNAPSHOT"
    )
}

/// Where, short: the container (pod path or id prefix), else
/// `hostname/service` or the host name alone. Escaped.
fn incident_where(i: &pb::Incident) -> String {
    let id = i.scope.strip_prefix("container:").unwrap_or_default();
    container_where(i.container.as_ref(), id).unwrap_or_else(|| {
        let host = if i.hostname.is_empty() {
            "host"
        } else {
            &i.hostname
        };
        if i.service.is_empty() {
            e(host).into_owned()
        } else {
            e(&format!("{host}/{}", i.service)).into_owned()
        }
    })
}

pub(super) fn snapshot_text(id: u64) -> String {
    if id == 0 {
        "-".into()
    } else {
        id.to_string()
    }
}

fn incident_row(i: &pb::Incident) -> String {
    format!(
        "{:>6} {:<8} {:<20} {:<24} {:<24} {:<24} {:>6} {:>8} {}",
        i.serial,
        severity_name(i.severity),
        e(&i.r#type),
        incident_where(i),
        time_text(i.first.as_ref()),
        time_text(i.last.as_ref()),
        i.audit_count,
        snapshot_text(i.snapshot_id),
        e(&i.summary)
    )
}

fn incident_line(i: &pb::Incident, json: bool) -> String {
    if json {
        super::escape::json(&incident_json(i))
    } else {
        incident_row(i)
    }
}

fn process_json(p: &pb::Process) -> Value {
    json!({
        "pid": p.pid, "ppid": p.ppid, "uid": p.uid, "comm": p.comm, "exe": p.exe, "argv": p.argv,
    })
}

pub(super) fn incident_json(i: &pb::Incident) -> Value {
    let audits: Vec<Value> = i
        .audits
        .iter()
        .map(|a| {
            json!({
                "event_seq": a.event_seq, "time": time_text(a.time.as_ref()),
                "section": a.section, "rule": a.rule, "severity": severity_name(a.severity),
                "message": a.message, "item": a.item,
                "process": a.process.as_ref().map(process_json),
                "ancestry": a.ancestry.iter().map(|x| json!({
                    "pid": x.pid, "uid": x.uid, "exe": x.exe, "argv": x.argv,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "serial": i.serial, "type": i.r#type, "severity": severity_name(i.severity),
        "scope": i.scope, "where": incident_where(i),
        "container": i.container.as_ref().map(container_json),
        "hostname": i.hostname, "service": i.service, "model": i.model,
        "first": time_text(i.first.as_ref()), "last": time_text(i.last.as_ref()),
        "audits": audits, "audit_count": i.audit_count,
        "snapshot_id": i.snapshot_id, "summary": i.summary,
        "account": i.account.as_ref().map(|a| json!({
            "user": a.user, "uid": a.uid, "files": a.files, "command": a.command,
            "interactive": a.interactive, "hostname": a.hostname,
        })),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn audit(seq: u64, at: i64, rule: &str, message: &str, argv: &[&str]) -> pb::Audit {
        pb::Audit {
            event_seq: seq,
            time: ts(at),
            section: "account".into(),
            rule: rule.into(),
            severity: pb::Severity::High as i32,
            message: message.into(),
            item: String::new(),
            process: Some(pb::Process {
                pid: 4242,
                exe: "/usr/sbin/useradd".into(),
                argv: argv.iter().map(|a| (*a).into()).collect(),
                ..Default::default()
            }),
            ancestry: vec![
                pb::Ancestor {
                    pid: 4200,
                    uid: 0,
                    exe: "/usr/bin/bash".into(),
                    argv: vec!["-bash".into()],
                },
                pb::Ancestor {
                    pid: 1,
                    uid: 0,
                    exe: "/usr/lib/systemd/systemd".into(),
                    argv: vec!["/sbin/init".into()],
                },
            ],
        }
    }

    pub(crate) fn backdoor() -> pb::Incident {
        pb::Incident {
            serial: 7,
            r#type: "backdoor-account".into(),
            severity: pb::Severity::Critical as i32,
            scope: "host".into(),
            container: None,
            hostname: "node-1".into(),
            service: "sshd.service".into(),
            model: "service:sshd.service".into(),
            first: ts(1_700_000_000),
            last: ts(1_700_000_065),
            audits: vec![
                audit(
                    101,
                    1_700_000_000,
                    "new-account",
                    "account fdrdemo added",
                    &["useradd", "-M", "fdrdemo"],
                ),
                audit(
                    140,
                    1_700_000_065,
                    "",
                    "password of fdrdemo set",
                    &["passwd", "fdrdemo"],
                ),
            ],
            audit_count: 2,
            snapshot_id: 0,
            summary: "account fdrdemo added by root".into(),
            account: Some(pb::AccountDetail {
                r#type: "accounts-modified".into(),
                hostname: "node-1".into(),
                uid: 0,
                user: "root".into(),
                files: vec!["/etc/passwd".into(), "/etc/shadow".into()],
                command: vec!["useradd".into(), "-M".into(), "fdrdemo".into()],
                interactive: true,
                first_change: None,
            }),
        }
    }

    #[test]
    fn table_row_of_a_host_and_of_a_pod_incident() {
        assert_eq!(
            incident_row(&backdoor()),
            "     7 critical backdoor-account     node-1/sshd.service      \
             2023-11-14T22:13:20.000Z 2023-11-14T22:14:25.000Z      2        - \
             account fdrdemo added by root"
        );
        let pod = pb::Incident {
            serial: 12,
            r#type: "reverse-shell".into(),
            severity: pb::Severity::High as i32,
            scope: "container:4f0d2c8e9a1b7c6d5e".into(),
            container: Some(pb::ContainerInfo {
                id: "4f0d2c8e9a1b7c6d5e".into(),
                name: "web".into(),
                pod_name: "shop".into(),
                pod_namespace: "prod".into(),
                ..Default::default()
            }),
            snapshot_id: 3,
            audit_count: 1,
            ..backdoor()
        };
        let row = incident_row(&pod);
        assert!(
            row.starts_with("    12 high     reverse-shell        prod/shop/web  "),
            "{row}"
        );
        assert!(row.contains(" 1        3 account"), "{row}");
        let bare = pb::Incident {
            container: None,
            ..pod
        };
        assert_eq!(incident_where(&bare), "ctr:4f0d2c8e9a1b");
    }

    #[test]
    fn json_line_has_every_field_with_names() {
        let v = incident_json(&backdoor());
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["account"]["files"][1], "/etc/shadow");
        assert_eq!(v["audits"][0]["process"]["argv"][0], "useradd");
        assert_eq!(v["audits"][1]["time"], "2023-11-14T22:14:25.000Z");
    }
}
