//! One incident as `fdrctl` shows it in a list and in `show`: where it
//! happened, its snapshot, its JSON. Used by [`super::incidents`] and
//! [`super::incident_show`].

use fdr_proto::v1 as pb;
use serde_json::{json, Value};

use super::{
    container_json, escape::escape as e, events::container_where, severity_name, time_text,
};

pub(super) fn incident_where(i: &pb::Incident) -> String {
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

fn process_json(p: &pb::Process) -> Value {
    json!({
        "pid": p.pid, "ppid": p.ppid, "uid": p.uid, "comm": p.comm, "exe": p.exe, "argv": p.argv,
    })
}

pub(super) fn audit_json(a: &pb::Audit) -> Value {
    json!({
        "event_seq": a.event_seq, "time": time_text(a.time.as_ref()),
        "section": a.section, "rule": a.rule, "severity": severity_name(a.severity),
        "message": a.message, "item": a.item,
        "process": a.process.as_ref().map(process_json),
        "ancestry": a.ancestry.iter().map(|x| json!({
            "pid": x.pid, "uid": x.uid, "exe": x.exe, "argv": x.argv,
        })).collect::<Vec<_>>(),
    })
}

fn account_json(a: &pb::AccountDetail) -> Value {
    json!({
        "account": a.account, "user": a.user, "uid": a.uid, "files": a.files,
        "command": a.command, "interactive": a.interactive, "hostname": a.hostname,
    })
}

/// The account records an incident lists (records of an agent that kept
/// only the latest: that one).
pub(super) fn accounts(i: &pb::Incident) -> &[pb::AccountDetail] {
    if i.accounts.is_empty() {
        i.account.as_slice()
    } else {
        &i.accounts
    }
}

/// An audit's one-line text: time, severity, `section/rule: message`.
pub(super) fn audit_line(a: &pb::Audit) -> String {
    let what = [a.section.as_str(), a.rule.as_str()]
        .into_iter()
        .filter(|x| !x.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    format!(
        "{} {:<8} {}: {}",
        time_text(a.time.as_ref()),
        severity_name(a.severity),
        e(&what),
        e(&a.message)
    )
}

/// Audits kept in the incident's record (pageable), at least those seen.
pub(super) fn audits_kept(i: &pb::Incident) -> u64 {
    i.audits_kept
        .max(i.audits_offset + i.audits.len() as u64)
        .min(i.audit_count.max(i.audits.len() as u64))
}

/// The incident's JSON without its audits.
pub(super) fn incident_head_json(i: &pb::Incident) -> Value {
    json!({
        "serial": i.serial, "type": i.r#type, "severity": severity_name(i.severity),
        "scope": i.scope, "where": incident_where(i),
        "container": i.container.as_ref().map(container_json),
        "hostname": i.hostname, "service": i.service, "model": i.model,
        "first": time_text(i.first.as_ref()), "last": time_text(i.last.as_ref()),
        "audit_count": i.audit_count, "audits_kept": audits_kept(i),
        "snapshot_id": i.snapshot_id, "summary": i.summary,
        "node": i.node, "agent_instance": i.agent_instance, "agent_serial": i.agent_serial,
        "account": i.account.as_ref().map(account_json),
        "accounts": accounts(i).iter().map(account_json).collect::<Vec<_>>(),
        "account_count": i.account_count.max(accounts(i).len() as u64),
    })
}

/// One incident message as JSON: its header, and the audits it carries
/// (from `audits_offset`; in a stream update, the new ones, with
/// `"update": true`).
pub(super) fn incident_json(i: &pb::Incident) -> Value {
    let mut v = incident_head_json(i);
    v["audits"] = Value::Array(i.audits.iter().map(audit_json).collect());
    v["audits_offset"] = json!(i.audits_offset);
    v["update"] = json!(i.update);
    v
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    pub(crate) fn audit(seq: u64, at: i64, rule: &str, message: &str, argv: &[&str]) -> pb::Audit {
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
                account: "fdrdemo".into(),
            }),
            audits_kept: 2,
            account_count: 1,
            ..Default::default()
        }
    }
}
