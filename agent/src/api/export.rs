//! Snapshots as CSV (for spreadsheets) and JSON Lines.

use std::collections::HashMap;

use fdr_proto::v1::{self as pb, event::Detail};

use crate::{ctl, derive::accounts::user_name};

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 13] = [
    "time",
    "host",
    "container",
    "pod",
    "namespace",
    "image",
    "pid",
    "ppid",
    "user",
    "kind",
    "command_or_path",
    "port_or_address",
    "message",
];

fn target(ev: &pb::Event) -> (String, String) {
    match &ev.detail {
        Some(Detail::Exec(x)) => (x.argv.join(" "), String::new()),
        Some(Detail::File(f)) => (f.path.clone(), String::new()),
        Some(Detail::Net(n)) => {
            let addr = if n.remote_address.is_empty() {
                format!("{}:{}", n.local_address, n.local_port)
            } else {
                format!("{}:{}", n.remote_address, n.remote_port)
            };
            (
                ev.process
                    .as_ref()
                    .map(|p| p.argv.join(" "))
                    .unwrap_or_default(),
                addr,
            )
        }
        Some(Detail::Account(a)) => (a.files.join(" "), String::new()),
        Some(Detail::Binary(b)) => (b.path.clone(), String::new()),
        _ => (
            ev.process
                .as_ref()
                .map(|p| p.argv.join(" "))
                .unwrap_or_default(),
            String::new(),
        ),
    }
}

/// The snapshot's events as CSV with a header row.
pub fn csv(snap: &pb::Snapshot) -> Result<Vec<u8>, csv::Error> {
    let host = snap
        .info
        .as_ref()
        .map(|i| i.host.clone())
        .unwrap_or_default();
    let mut users: HashMap<u32, String> = HashMap::new();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_COLUMNS)?;
    for ev in &snap.events {
        let p = ev.process.clone().unwrap_or_default();
        let user = users
            .entry(p.uid)
            .or_insert_with(|| user_name(p.uid))
            .clone();
        let v = ctl::event_json(ev);
        let (what, addr) = target(ev);
        // The container as the snapshot recorded it (kept after it is gone).
        let c = ev.container.clone().unwrap_or_default();
        w.write_record([
            v["time"].as_str().unwrap_or_default(),
            &host,
            &ev.container_id,
            &c.pod_name,
            &c.pod_namespace,
            &c.image,
            &p.pid.to_string(),
            &p.ppid.to_string(),
            &user,
            v["kind"].as_str().unwrap_or_default(),
            &what,
            &addr,
            &ctl::detail_text(ev),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The snapshot as JSON Lines: one object per event.
pub fn jsonl(snap: &pb::Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in &snap.events {
        out.extend_from_slice(ctl::event_json(ev).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
