//! Domain → `fdr.v1` messages. The only place that knows both.

use fdr_proto::v1 as pb;

use crate::{
    buffer::BufferStats,
    event::{Detail, Event, EventKind, ExitStatus},
};

pub fn kind_to_pb(kind: EventKind) -> pb::EventKind {
    match kind {
        EventKind::Fork => pb::EventKind::Fork,
        EventKind::Exec => pb::EventKind::Exec,
        EventKind::Exit => pb::EventKind::Exit,
    }
}

/// `None` for `UNSPECIFIED` and numbers this build does not know.
pub fn kind_from_pb(raw: i32) -> Option<EventKind> {
    u16::try_from(raw).ok().and_then(EventKind::from_raw)
}

pub fn timestamp(ns: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

pub fn event_to_pb(ev: &Event) -> pb::Event {
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
            argv,
            old_tid,
            argv_truncated,
            argv_unreadable,
            filename_truncated,
        } => pb::event::Detail::Exec(pb::ExecDetail {
            filename: filename.clone(),
            argv: argv.clone(),
            argv_truncated: *argv_truncated,
            filename_truncated: *filename_truncated,
            old_tid: *old_tid,
            argv_unreadable: *argv_unreadable,
            exe: exe.clone(),
            exe_incomplete: *exe_incomplete,
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
    };
    pb::Event {
        seq: ev.seq,
        time: Some(timestamp(ev.time_ns)),
        boot_ns: ev.record.boot_ns,
        cpu: ev.record.cpu,
        kind: kind_to_pb(ev.kind()) as i32,
        process: Some(pb::Process {
            pid: t.pid,
            tid: t.tid,
            ppid: t.ppid,
            uid: t.uid,
            gid: t.gid,
            loginuid: t.loginuid,
            cgroup_id: t.cgroup_id,
            comm: t.comm.clone(),
            exe: ev.exe.to_string(),
            argv: ev.argv.to_vec(),
            has_tty: t.has_tty,
            start_ns: t.start_ns,
        }),
        detail: Some(detail),
    }
}

pub fn buffer_stats_to_pb(s: BufferStats) -> pb::BufferStats {
    pb::BufferStats {
        events: s.events,
        bytes: s.bytes,
        capacity_bytes: s.capacity_bytes,
        evicted: s.evicted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::tests::event;

    #[test]
    fn kinds_round_trip_and_match_kernel_numbers() {
        for k in EventKind::ALL {
            assert_eq!(kind_to_pb(k) as i32, k as i32);
            assert_eq!(kind_from_pb(kind_to_pb(k) as i32), Some(k));
        }
        assert_eq!(kind_from_pb(0), None);
        assert_eq!(kind_from_pb(-1), None);
        assert_eq!(kind_from_pb(1 << 20), None);
    }

    #[test]
    fn exit_event_carries_decoded_status() {
        let ev = event(3, 77, Detail::Exit { status: 7 << 8 });
        let pb = event_to_pb(&ev);
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
}
