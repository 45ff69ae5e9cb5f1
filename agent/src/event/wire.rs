//! Domain → `fdr.v1` messages. The only place that knows both.

use fdr_proto::v1 as pb;

use crate::{
    event::container::{Change, ContainerLookup, ContainerMeta},
    event::scope::Scope,
    event::{
        AccountDetail, Creds, Detail, Event, EventKind, ExitStatus, FileDetail, NetDetail, NotUtf8,
        Severity,
    },
    util::text::lossless_bytes,
};

/// Kernel and API kind numbers are the same by design.
pub fn kind_to_pb(kind: EventKind) -> pb::EventKind {
    pb::EventKind::try_from(kind as i32).unwrap_or(pb::EventKind::Unspecified)
}

/// `None` for `UNSPECIFIED` and numbers this build does not know.
pub fn kind_from_pb(raw: i32) -> Option<EventKind> {
    u16::try_from(raw).ok().and_then(EventKind::from_raw)
}

/// Wall-clock ns of a timestamp (0 when absent or before the epoch).
pub fn ns_of(ts: Option<&prost_types::Timestamp>) -> u64 {
    ts.map_or(0, |t| {
        (t.seconds.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.nanos.max(0) as u64)
    })
}

pub fn timestamp(ns: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

/// What is added to an event as it leaves the agent: container metadata
/// (looked up now, so events recorded before the runtime answered are
/// enriched too) and ancestry.
#[derive(Clone, Copy)]
pub struct Enrich<'a> {
    pub containers: Option<&'a dyn ContainerLookup>,
    /// Ancestors to list; 0 for none.
    pub ancestry_depth: usize,
    /// The node name the event carries (`hostname`).
    pub node: &'a str,
}

impl Enrich<'_> {
    /// Neither metadata nor ancestry nor node name.
    pub const BARE: Enrich<'static> = Enrich {
        containers: None,
        ancestry_depth: 0,
        node: "",
    };
}

pub fn container_to_pb(m: &ContainerMeta) -> pb::ContainerInfo {
    pb::ContainerInfo {
        id: m.id.to_string(),
        name: m.name.clone(),
        image: m.image.clone(),
        image_digest: m.image_digest.clone(),
        pod_name: m.pod_name.clone(),
        pod_namespace: m.pod_namespace.clone(),
        pod_uid: m.pod_uid.clone(),
        labels: m.labels.clone().into_iter().collect(),
        runtime: m.runtime.clone(),
        sandbox: m.sandbox,
    }
}

/// The container info of a scope: the runtime's metadata when known,
/// else the id alone.
pub fn scope_container(
    scope: &Scope,
    containers: Option<&dyn ContainerLookup>,
) -> Option<pb::ContainerInfo> {
    let id = scope.container_id()?;
    Some(
        containers
            .and_then(|c| c.meta(id))
            .map(|m| container_to_pb(&m))
            .unwrap_or_else(|| pb::ContainerInfo {
                id: id.to_owned(),
                ..Default::default()
            }),
    )
}

/// The process an event is about: the kernel's task fields and the
/// program it ran.
pub fn process_to_pb(ev: &Event) -> pb::Process {
    let t = &ev.record.task;
    pb::Process {
        pid: t.pid,
        tid: t.tid,
        ppid: t.ppid,
        uid: t.uid,
        gid: t.gid,
        loginuid: t.loginuid,
        cgroup_id: t.cgroup_id,
        comm: t.comm.to_string(),
        exe: ev.exe().to_owned(),
        argv: ev.argv().to_vec(),
        has_tty: t.has_tty,
        start_ns: t.start_ns,
        comm_raw: t.comm.raw().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// An account record from its wire form (its first change's boot time is
/// not on the wire: 0).
pub fn account_from_pb(a: &pb::AccountDetail) -> AccountDetail {
    AccountDetail {
        hostname: a.hostname.clone(),
        uid: a.uid,
        user: a.user.clone(),
        files: a.files.clone(),
        command: a.command.clone(),
        interactive: a.interactive,
        first_boot_ns: 0,
    }
}

/// An account record; `first_change` in wall-clock ns when known.
pub fn account_to_pb(a: &AccountDetail, first_change: Option<u64>) -> pb::AccountDetail {
    pb::AccountDetail {
        r#type: "accounts-modified".into(),
        hostname: a.hostname.clone(),
        uid: a.uid,
        user: a.user.clone(),
        files: a.files.clone(),
        command: a.command.clone(),
        interactive: a.interactive,
        first_change: first_change.map(timestamp),
        // Named where incidents list the record (analysis::incidents).
        account: String::new(),
    }
}

pub fn severity_to_pb(s: Severity) -> pb::Severity {
    pb::Severity::try_from(s as i32).unwrap_or(pb::Severity::Unspecified)
}

pub fn event_to_pb(ev: &Event, en: &Enrich) -> pb::Event {
    let t = &ev.record.task;
    let detail = match &ev.record.detail {
        Detail::Fork { parent_tid } => pb::event::Detail::Fork(pb::ForkDetail {
            parent_pid: t.ppid,
            parent_tid: *parent_tid,
        }),
        Detail::Exec {
            filename,
            exe,
            exe_incomplete,
            exe_dev: _,
            exe_ino: _,
            argv,
            old_tid,
            argv_truncated,
            argv_unreadable,
            filename_truncated,
            stdin_socket,
            not_utf8,
        } => pb::event::Detail::Exec(pb::ExecDetail {
            filename: filename.clone(),
            argv: argv.clone(),
            argv_truncated: *argv_truncated,
            filename_truncated: *filename_truncated,
            old_tid: *old_tid,
            argv_unreadable: *argv_unreadable,
            exe: exe.clone(),
            exe_incomplete: *exe_incomplete,
            stdin_socket: *stdin_socket,
            filename_raw: raw(filename, *not_utf8, NotUtf8::FILENAME),
            exe_raw: raw(exe, *not_utf8, NotUtf8::EXE),
            argv_raw: if not_utf8.contains(NotUtf8::ARGV) {
                argv.iter().map(|a| lossless_bytes(a)).collect()
            } else {
                Vec::new()
            },
        }),
        Detail::Exit { status } => {
            let s = ExitStatus::from_wait_status(*status);
            pb::event::Detail::Exit(pb::ExitDetail {
                code: s.code,
                signal: s.signal,
                core_dumped: s.core_dumped,
                raw_status: *status,
            })
        }
        Detail::File { file, .. } => pb::event::Detail::File(file_to_pb(file)),
        Detail::Net { net, .. } => pb::event::Detail::Net(net_to_pb(net)),
        Detail::Priv(p) => pb::event::Detail::Priv(pb::PrivDetail {
            syscall: p.syscall.to_owned(),
            old: Some(creds_to_pb(&p.old)),
            new: Some(creds_to_pb(&p.new)),
        }),
        Detail::Account(a) => pb::event::Detail::Account(account_to_pb(
            a,
            Some(
                ev.time_ns
                    .saturating_sub(ev.record.boot_ns.saturating_sub(a.first_boot_ns)),
            ),
        )),
        Detail::Binary(b) => pb::event::Detail::Binary(pb::BinaryDetail {
            path: b.path.clone(),
            reason: b.reason.name().to_owned(),
            writer_pid: b.writer_pid,
            writer_exe: b.writer_exe.clone().unwrap_or_default(),
        }),
        Detail::Container(c) => {
            let (exit_code, reason) = match &c.change {
                Change::Started => (None, String::new()),
                Change::Stopped {
                    exit_code, reason, ..
                } => (*exit_code, reason.clone()),
            };
            pb::event::Detail::ContainerLifecycle(pb::ContainerLifecycleDetail {
                started: c.change == Change::Started,
                exit_code,
                reason,
                source: c.source.to_owned(),
            })
        }
        Detail::Learned(l) => pb::event::Detail::ModelLearned(pb::ModelLearnedDetail {
            model: l.model.to_string(),
            section: l.section.to_owned(),
            item: l.item.clone(),
        }),
        Detail::Audit(a) => pb::event::Detail::Audit(pb::AuditDetail {
            model: a.model.to_string(),
            section: a.section.to_owned(),
            rule: a.rule.clone(),
            severity: severity_to_pb(a.severity) as i32,
            message: a.message.clone(),
            incident: a.incident,
            trigger_seq: a.trigger_seq,
            item: a.item.clone(),
        }),
    };
    pb::Event {
        seq: ev.seq,
        time: Some(timestamp(ev.time_ns)),
        boot_ns: ev.record.boot_ns,
        cpu: ev.record.cpu,
        kind: kind_to_pb(ev.kind()) as i32,
        process: Some(process_to_pb(ev)),
        detail: Some(detail),
        scope: ev.scope.key(),
        service: ev.unit.as_deref().unwrap_or_default().to_owned(),
        hostname: en.node.to_owned(),
        container_id: ev.scope.container_id().unwrap_or_default().to_owned(),
        ancestry: ev
            .image
            .ancestors(en.ancestry_depth)
            .map(|a| pb::Ancestor {
                pid: a.pid,
                uid: a.uid,
                exe: a.exe.to_string(),
                argv: a.argv.to_vec(),
            })
            .collect(),
        container: scope_container(&ev.scope, en.containers),
    }
}

fn file_to_pb(f: &FileDetail) -> pb::FileDetail {
    pb::FileDetail {
        path: f.path.clone(),
        path2: f.path2.clone(),
        incomplete: f.incomplete,
        flags: f.flags,
        mode: f.mode,
        new_mode: f.new_mode,
        old_mode: f.old_mode,
        uid: f.uid,
        gid: f.gid,
        size: f.size,
        dev: f.dev,
        ino: f.ino,
        syscall: f.syscall.to_owned(),
        path_raw: raw(&f.path, f.not_utf8, NotUtf8::PATH),
        path2_raw: f
            .path2
            .as_deref()
            .map_or_else(Vec::new, |p| raw(p, f.not_utf8, NotUtf8::PATH2)),
    }
}

/// A name's exact bytes when it was not UTF-8 (`which` in `not_utf8`), else
/// nothing: the `*_raw` fields.
fn raw(text: &str, not_utf8: NotUtf8, which: NotUtf8) -> Vec<u8> {
    if not_utf8.contains(which) {
        lossless_bytes(text)
    } else {
        Vec::new()
    }
}

pub fn protocol_name(p: u16) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

fn net_to_pb(n: &NetDetail) -> pb::NetDetail {
    pb::NetDetail {
        protocol: protocol_name(n.protocol),
        local_address: n.local.ip().to_string(),
        local_port: u32::from(n.local.port()),
        remote_address: n.remote.map(|r| r.ip().to_string()).unwrap_or_default(),
        remote_port: n.remote.map_or(0, |r| u32::from(r.port())),
        backlog: n.backlog,
        ret: n.ret,
        error: n.error().map(String::from).unwrap_or_default(),
    }
}

fn creds_to_pb(c: &Creds) -> pb::Creds {
    pb::Creds {
        uid: c.uid,
        euid: c.euid,
        suid: c.suid,
        fsuid: c.fsuid,
        gid: c.gid,
        egid: c.egid,
        sgid: c.sgid,
        fsgid: c.fsgid,
        cap_effective: c.cap_effective,
        cap_permitted: c.cap_permitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::event;

    #[test]
    fn kinds_round_trip_and_match_kernel_numbers() {
        for k in EventKind::ALL {
            assert_eq!(kind_to_pb(k) as i32, k as i32);
            assert_eq!(kind_from_pb(kind_to_pb(k) as i32), Some(k));
            // fdrctl's names (fdr-proto) are the agent's.
            assert_eq!(kind_to_pb(k).name(), k.name());
        }
        for raw in 1..=4 {
            let s = Severity::from_raw(raw).expect("a severity");
            assert_eq!(pb::Severity::name_of(raw), s.name());
        }
        assert_eq!(kind_from_pb(0), None);
        assert_eq!(kind_from_pb(-1), None);
        assert_eq!(kind_from_pb(1 << 20), None);
    }

    #[test]
    fn exit_event_carries_decoded_status() {
        let ev = event(3, 77, Detail::Exit { status: 7 << 8 });
        let pb = event_to_pb(&ev, &Enrich::BARE);
        assert_eq!(pb.kind, pb::EventKind::Exit as i32);
        assert_eq!(pb.process.as_ref().unwrap().pid, 77);
        assert_eq!(pb.process.as_ref().unwrap().exe, "/bin/t");
        assert_eq!(pb.time.unwrap().nanos, 3000);
        match pb.detail {
            Some(pb::event::Detail::Exit(x)) => {
                assert_eq!(x.code, Some(7));
                assert_eq!(x.signal, None);
                assert_eq!(x.raw_status, 7 << 8);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_that_are_not_utf8_go_out_as_exact_bytes() {
        let (path, p1) = crate::util::text::lossless(b"/tmp/b-\xff\xfe".to_vec());
        let (path2, _) = crate::util::text::lossless(b"/tmp/ok".to_vec());
        assert!(p1);
        let file = FileDetail {
            path,
            path2: Some(path2),
            not_utf8: NotUtf8::PATH,
            ..Default::default()
        };
        let ev = event(
            1,
            2,
            Detail::File {
                kind: EventKind::FileRename,
                file: Box::new(file),
            },
        );
        match event_to_pb(&ev, &Enrich::BARE).detail {
            Some(pb::event::Detail::File(f)) => {
                assert_eq!(f.path, r"/tmp/b-\xff\xfe");
                assert_eq!(f.path_raw, b"/tmp/b-\xff\xfe");
                assert_eq!(f.path2.as_deref(), Some("/tmp/ok"));
                assert!(f.path2_raw.is_empty(), "UTF-8: no copy");
            }
            other => panic!("{other:?}"),
        }
    }
}
