//! Events for unit tests.

use std::sync::Arc;

use fdr_proto::v1 as pb;

use crate::event::{Detail, Event, EventKind, NetDetail, Record, Task};

/// An event of `pid` at `seq` (time `seq` µs), in the host scope.
pub(crate) fn event(seq: u64, pid: u32, detail: Detail) -> Event {
    Event {
        seq,
        time_ns: seq * 1000,
        record: Record {
            boot_ns: seq,
            cpu: 0,
            task: Task {
                pid,
                tid: pid,
                ppid: 1,
                uid: 0,
                gid: 0,
                loginuid: None,
                cgroup_id: 1,
                start_ns: 0,
                comm: "t".into(),
                has_tty: false,
            },
            detail,
        },
        image: crate::event::lineage::Image::root(
            pid,
            0,
            Arc::from("/bin/t"),
            Arc::from(vec!["t".to_string()]),
        ),
        scope: crate::event::scope::Scope::Host,
        unit: None,
    }
}

/// An exec of `exe` with `argv`, `filename` the path given to `execve`.
pub(crate) fn exec_detail(filename: &str, exe: &str, argv: &[&str]) -> Detail {
    Detail::Exec {
        filename: filename.into(),
        exe: exe.into(),
        exe_incomplete: false,
        exe_dev: 0,
        exe_ino: 0,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        old_tid: 0,
        argv_truncated: false,
        argv_unreadable: false,
        filename_truncated: false,
        stdin_socket: false,
        not_utf8: crate::event::NotUtf8::NONE,
    }
}

/// A TCP listen on port 8080.
pub(crate) fn listen_detail() -> Detail {
    Detail::Net {
        kind: EventKind::NetListen,
        net: NetDetail {
            protocol: 6,
            local: "0.0.0.0:8080".parse().expect("literal address"),
            remote: None,
            backlog: 128,
            ret: 0,
        },
    }
}

/// A stored snapshot `id` of about `payload` bytes (its reason: random
/// letters, which compression cannot shrink much).
pub(crate) fn snap(id: u64, payload: usize) -> pb::Snapshot {
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let reason = (0..payload)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    pb::Snapshot {
        info: Some(pb::SnapshotInfo {
            id,
            reason,
            ..Default::default()
        }),
        ..Default::default()
    }
}
