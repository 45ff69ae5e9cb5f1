//! Events as JSON objects: `fdrctl events --json`, the JSON Lines export.
//! Texts are as the agent sent them (JSON escapes them); `*_utf8: false`
//! says a name was not UTF-8 and its text is escaped (see
//! [`super::escape`]).

use serde_json::{json, Value};

use super::{kind_name, severity_name, time_text};
use crate::v1::{self as pb, event::Detail};

/// One event, every field a user relies on, as a JSON object.
pub fn event_json(ev: &pb::Event) -> Value {
    let p = ev.process.clone().unwrap_or_default();
    let detail = match &ev.detail {
        Some(Detail::Fork(f)) => json!({ "parent_pid": f.parent_pid, "parent_tid": f.parent_tid }),
        Some(Detail::Exec(x)) => json!({
            "filename": x.filename, "exe": x.exe, "exe_incomplete": x.exe_incomplete, "argv": x.argv, "argv_truncated": x.argv_truncated,
            "argv_unreadable": x.argv_unreadable, "filename_truncated": x.filename_truncated,
            "old_tid": x.old_tid, "stdin_socket": x.stdin_socket,
            // false: the name was not UTF-8 and its text is escaped
            // (`\xNN` per byte that is not, `\\` per backslash).
            "filename_utf8": x.filename_raw.is_empty(), "exe_utf8": x.exe_raw.is_empty(),
            "argv_utf8": x.argv_raw.is_empty(),
        }),
        Some(Detail::Exit(x)) => json!({
            "code": x.code, "signal": x.signal, "core_dumped": x.core_dumped, "raw_status": x.raw_status,
        }),
        Some(Detail::File(f)) => json!({
            "path": f.path, "path2": f.path2, "incomplete": f.incomplete, "flags": f.flags,
            "mode": f.mode, "new_mode": f.new_mode, "old_mode": f.old_mode, "uid": f.uid,
            "gid": f.gid, "size": f.size, "dev": f.dev, "ino": f.ino, "syscall": f.syscall,
            "path_utf8": f.path_raw.is_empty(), "path2_utf8": f.path2_raw.is_empty(),
        }),
        Some(Detail::Net(n)) => json!({
            "protocol": n.protocol, "local_address": n.local_address, "local_port": n.local_port,
            "remote_address": n.remote_address, "remote_port": n.remote_port,
            "backlog": n.backlog, "ret": n.ret, "error": n.error,
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
            "comm_utf8": p.comm_raw.is_empty(),
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
    fn json_has_typed_fields() {
        let v = event_json(&exec_event());
        assert_eq!(v["kind"], "exec");
        assert_eq!(v["process"]["pid"], 42);
        assert_eq!(v["detail"]["argv"][2], "exit 7");
        assert_eq!(v["detail"]["argv_utf8"], true);
        assert_eq!(v["time"], "2023-11-14T22:13:20.005Z");
        assert_eq!(v["service"], "sshd.service");
        assert_eq!(v["container"], Value::Null);
    }

    #[test]
    fn names_that_are_not_utf8_say_so() {
        let ev = pb::Event {
            kind: pb::EventKind::FileWrite as i32,
            detail: Some(Detail::File(pb::FileDetail {
                path: r"/tmp/b-\xff\xfe".into(),
                path_raw: b"/tmp/b-\xff\xfe".to_vec(),
                ..Default::default()
            })),
            ..exec_event()
        };
        let v = event_json(&ev);
        assert_eq!(v["kind"], "write");
        assert_eq!(v["detail"]["path"], r"/tmp/b-\xff\xfe");
        assert_eq!(v["detail"]["path_utf8"], false);
    }
}
