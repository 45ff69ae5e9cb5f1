//! `fdrctl incidents`: list incidents, watch them open and change, show
//! one (in [`super::incident_show`]); one table row or JSON object each.

use std::io::Write;

use fdr_proto::v1 as pb;

use super::{
    escape::escape as e,
    incident_show,
    incident_view::{audit_line, incident_json, incident_where, snapshot_text},
    quiet_pipe, severity_name, time_text, Result,
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
        /// Audits shown, and timeline events (around the first audit); a
        /// line says how many more there are.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// One JSON object instead of text (written as it is read).
        #[arg(long)]
        json: bool,
    },
    /// Incidents after --after, then each one as it opens or is updated,
    /// until interrupted: an update shows what changed (its new audits,
    /// counts, severity, snapshot).
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
            // The header once the first call succeeded, not above an error;
            // with a NODE column when the first page names nodes (a
            // console's answer).
            let mut header = !*json;
            let mut node = false;
            while left > 0 {
                let page = left.min(PAGE);
                let req = pb::ListIncidentsRequest {
                    after_serial: after,
                    limit: page as u32,
                    ..Default::default()
                };
                let resp = client.list_incidents(req).await?.into_inner();
                if std::mem::take(&mut header) {
                    node = resp.incidents.iter().any(|i| !i.node.is_empty());
                    if !quiet_pipe(writeln!(out, "{}", incident_header(node)))? {
                        return Ok(());
                    }
                }
                for i in &resp.incidents {
                    if !quiet_pipe(writeln!(out, "{}", incident_line(i, *json, node)))? {
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
        IncidentsCmd::Show {
            serial,
            limit,
            json,
        } => {
            incident_show::show(client, *serial, *limit as usize, *json, out).await?;
        }
        IncidentsCmd::Watch { after, json } => {
            let req = pb::StreamIncidentsRequest {
                after_serial: *after,
                ..Default::default()
            };
            let mut stream = client.stream_incidents(req).await?.into_inner();
            if !*json && !quiet_pipe(writeln!(out, "{}", incident_header(false)))? {
                return Ok(());
            }
            while let Some(i) = stream.message().await? {
                let text = watch_text(&i, *json);
                if !quiet_pipe(write!(out, "{text}").and_then(|_| out.flush()))? {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// One `StreamIncidents` message as `incidents watch` prints it: JSON, one
/// object per message (an update holds only what changed); or the
/// incident's row (`+` before an update's serial), then one line per audit
/// the message carries.
fn watch_text(i: &pb::Incident, json: bool) -> String {
    if json {
        return incident_line(i, true, false) + "\n";
    }
    let row = incident_row(i, false);
    let mut s = if i.update {
        format!("+{}\n", row.strip_prefix(' ').unwrap_or(&row))
    } else {
        row + "\n"
    };
    for a in &i.audits {
        s += &format!("{:>6}   {}\n", "", audit_line(a));
    }
    s
}

/// The table's header; with a NODE column after the serial when `node`.
fn incident_header(node: bool) -> String {
    let node = if node {
        format!("{:<20} ", "NODE")
    } else {
        String::new()
    };
    format!(
        "{:>6} {node}{:<8} {:<20} {:<24} {:<24} {:<24} {:>6} {:>8} SUMMARY",
        "SERIAL", "SEVERITY", "TYPE", "WHERE", "FIRST", "LAST", "AUDITS", "SNAPSHOT"
    )
}

/// Where, short: the container (pod path or id prefix), else
/// `hostname/service` or the host name alone; with `node`, the node a
/// console says it came from first ("-" when none). Escaped.
fn incident_row(i: &pb::Incident, node: bool) -> String {
    let node = if !node {
        String::new()
    } else if i.node.is_empty() {
        format!("{:<20} ", "-")
    } else {
        format!("{:<20} ", e(&i.node))
    };
    format!(
        "{:>6} {node}{:<8} {:<20} {:<24} {:<24} {:<24} {:>6} {:>8} {}",
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

fn incident_line(i: &pb::Incident, json: bool, node: bool) -> String {
    if json {
        super::escape::json(&incident_json(i))
    } else {
        incident_row(i, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::incident_view::tests::backdoor;

    #[test]
    fn table_row_of_a_host_and_of_a_pod_incident() {
        assert_eq!(
            incident_row(&backdoor(), false),
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
        let row = incident_row(&pod, false);
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
    fn a_console_list_has_a_node_column() {
        let header = incident_header(true);
        assert!(
            header.starts_with("SERIAL NODE                 SEVERITY "),
            "{header}"
        );
        let mut i = backdoor();
        i.node = "node-7\n\x1b[2J".into();
        let row = incident_row(&i, true);
        assert!(
            row.starts_with(r"     7 node-7\n\x1b[2J      critical backdoor-account "),
            "{row}"
        );
        i.node.clear();
        assert!(incident_row(&i, true).starts_with("     7 -                    critical "));
        assert_eq!(
            incident_row(&i, false),
            incident_row(&backdoor(), false),
            "no column without nodes"
        );
    }

    #[test]
    fn json_line_has_every_field_with_names() {
        let v = incident_json(&backdoor());
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["account"]["files"][1], "/etc/shadow");
        assert_eq!(v["audits"][0]["process"]["argv"][0], "useradd");
        assert_eq!(v["audits"][1]["time"], "2023-11-14T22:14:25.000Z");
        assert_eq!(v["accounts"][0]["account"], "fdrdemo");
        assert_eq!(v["update"], false);
    }

    #[test]
    fn watch_prints_an_update_with_its_new_audits_only() {
        let mut i = backdoor();
        i.update = true;
        i.audits.remove(0);
        i.audits_offset = 1;
        let text = watch_text(&i, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("+    7 critical "), "{text}");
        assert!(
            lines[1].ends_with("high     account: password of fdrdemo set"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(watch_text(&i, true).trim_end()).expect("one JSON object");
        assert_eq!(json["update"], true);
        assert_eq!(json["audits_offset"], 1);
        assert_eq!(json["audits"].as_array().map(Vec::len), Some(1));
    }
}
