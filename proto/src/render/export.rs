//! Snapshots as CSV (for spreadsheets) and JSON Lines.

use std::{borrow::Cow, collections::HashMap};

use tonic::Status;

use crate::{
    render::{
        self, addr_text,
        escape::{escape, escape_bytes, name},
    },
    v1::{self as pb, event::Detail},
};

/// The user name of a uid not in the snapshot's own list (`users`): an
/// agent looks in its host's `/etc/passwd` (snapshots stored before they
/// carried names); a console has nothing else to ask, and writes the uid.
pub type UserLookup = Box<dyn Fn(u32) -> String + Send>;

/// The uid as a number: what a lookup that knows no names gives.
pub fn uid_only() -> UserLookup {
    Box::new(|uid| uid.to_string())
}

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

/// Arguments, each escaped (from its exact bytes when the API has them),
/// joined by spaces.
fn args_text(argv: &[String], raw: &[Vec<u8>]) -> String {
    if raw.len() == argv.len() && !raw.is_empty() {
        let args: Vec<_> = raw.iter().map(|a| escape_bytes(a)).collect();
        args.join(" ")
    } else {
        let args: Vec<_> = argv.iter().map(|a| escape(a)).collect();
        args.join(" ")
    }
}

/// The command or path, and the port or address, escaped.
pub(crate) fn target(ev: &pb::Event) -> (String, String) {
    let process_args = || {
        ev.process
            .as_ref()
            .map(|p| args_text(&p.argv, &[]))
            .unwrap_or_default()
    };
    match &ev.detail {
        Some(Detail::Exec(x)) => (args_text(&x.argv, &x.argv_raw), String::new()),
        Some(Detail::File(f)) => (name(&f.path, &f.path_raw).into_owned(), String::new()),
        Some(Detail::Net(n)) => {
            // The notation of the message (`[::]:40551`, `1.2.3.4:80`).
            let addr = if n.remote_address.is_empty() {
                addr_text(&n.local_address, n.local_port)
            } else {
                addr_text(&n.remote_address, n.remote_port)
            };
            (process_args(), escape(&addr).into_owned())
        }
        Some(Detail::Account(a)) => (args_text(&a.files, &[]), String::new()),
        Some(Detail::Binary(b)) => (escape(&b.path).into_owned(), String::new()),
        _ => (process_args(), String::new()),
    }
}

/// A cell a spreadsheet cannot take for a formula: one beginning with `=`,
/// `+`, `-`, `@`, tab or carriage return gets a `'` in front (OWASP's
/// advice against CSV injection). The text is escaped before (so a tab or
/// CR is `\t` / `\r` by then, and no control character is left); quotes
/// and separators are the CSV writer's.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// The snapshot's events as CSV with a header row: every cell escaped
/// ([`render::escape`]) and [`neutralise`]d. Users are named from the
/// snapshot's `users`, else by `lookup`.
pub fn csv(snap: &pb::Snapshot, lookup: &dyn Fn(u32) -> String) -> Result<Vec<u8>, csv::Error> {
    let host = snap
        .info
        .as_ref()
        .map(|i| escape(&i.host).into_owned())
        .unwrap_or_default();
    let mut users: HashMap<u32, String> = HashMap::new();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_COLUMNS)?;
    for ev in &snap.events {
        let p = ev.process.clone().unwrap_or_default();
        let user = users
            .entry(p.uid)
            .or_insert_with(|| {
                let name = snap
                    .users
                    .iter()
                    .find(|u| u.uid == p.uid)
                    .map(|u| u.name.clone())
                    .unwrap_or_else(|| lookup(p.uid));
                escape(&name).into_owned()
            })
            .clone();
        let v = render::event_json(ev);
        let (what, addr) = target(ev);
        // The container as the snapshot recorded it (kept after it is gone).
        let c = ev.container.clone().unwrap_or_default();
        let cells = [
            Cow::Borrowed(v["time"].as_str().unwrap_or_default()),
            Cow::Borrowed(host.as_str()),
            escape(&ev.container_id),
            escape(&c.pod_name),
            escape(&c.pod_namespace),
            escape(&c.image),
            Cow::Owned(p.pid.to_string()),
            Cow::Owned(p.ppid.to_string()),
            Cow::Borrowed(user.as_str()),
            Cow::Borrowed(v["kind"].as_str().unwrap_or_default()),
            Cow::Owned(what),
            Cow::Owned(addr),
            Cow::Owned(render::detail_text(ev)),
        ];
        w.write_record(cells.iter().map(|c| neutralise(c).into_owned()))?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The snapshot as JSON Lines: one object per event.
pub fn jsonl(snap: &pb::Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in &snap.events {
        out.extend_from_slice(render::escape::json(&render::event_json(ev)).as_bytes());
        out.push(b'\n');
    }
    out
}

/// Bytes of an export chunk.
const EXPORT_CHUNK: usize = 64 * 1024;
/// Events rendered at a time for an export.
const EXPORT_BATCH: usize = 256;

/// A snapshot's export (CSV or JSON Lines), rendered a few events at a
/// time as the client reads it: never the whole file in memory.
pub struct ExportChunks {
    /// The snapshot without its events.
    head: pb::Snapshot,
    events: std::vec::IntoIter<pb::Event>,
    csv: bool,
    /// The CSV header's length (rendered with the first batch only).
    header_len: usize,
    first: bool,
    /// Rendered, not sent yet.
    pending: Vec<u8>,
    /// Names users the snapshot does not (CSV).
    lookup: UserLookup,
    /// Format "protobuf": the encoding, cut from the front (no copying
    /// of what is left).
    encoded: Option<prost::bytes::Bytes>,
}

impl ExportChunks {
    /// `lookup` names the users the snapshot does not (CSV).
    pub fn new(mut snap: pb::Snapshot, csv: bool, lookup: UserLookup) -> Result<Self, Status> {
        let events = std::mem::take(&mut snap.events).into_iter();
        let header_len = if csv {
            self::csv(&snap, &lookup)
                .map_err(|e| Status::internal(e.to_string()))?
                .len()
        } else {
            0
        };
        Ok(ExportChunks {
            head: snap,
            events,
            csv,
            header_len,
            first: true,
            pending: Vec::new(),
            lookup,
            encoded: None,
        })
    }

    /// The snapshot's `fdr.v1.Snapshot` encoding (format "protobuf"), in
    /// chunks.
    pub fn encoded(snap: &pb::Snapshot) -> Self {
        use prost::Message;
        ExportChunks {
            head: pb::Snapshot::default(),
            events: Vec::new().into_iter(),
            csv: false,
            header_len: 0,
            first: false,
            pending: Vec::new(),
            lookup: uid_only(),
            encoded: Some(prost::bytes::Bytes::from(snap.encode_to_vec())),
        }
    }

    fn render(&mut self, batch: Vec<pb::Event>) -> Result<(), Status> {
        let part = pb::Snapshot {
            info: self.head.info.clone(),
            events: batch,
            users: self.head.users.clone(),
            ..Default::default()
        };
        if self.csv {
            let data =
                self::csv(&part, &self.lookup).map_err(|e| Status::internal(e.to_string()))?;
            let skip = if self.first { 0 } else { self.header_len };
            self.pending
                .extend_from_slice(data.get(skip..).unwrap_or_default());
        } else {
            self.pending.extend(jsonl(&part));
        }
        self.first = false;
        Ok(())
    }
}

impl Iterator for ExportChunks {
    type Item = Result<pb::ExportChunk, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(b) = &mut self.encoded {
            if b.is_empty() {
                return None;
            }
            let data = b.split_to(b.len().min(EXPORT_CHUNK)).to_vec();
            return Some(Ok(pb::ExportChunk { data }));
        }
        while self.pending.len() < EXPORT_CHUNK {
            let batch: Vec<pb::Event> = self.events.by_ref().take(EXPORT_BATCH).collect();
            if batch.is_empty() && !self.first {
                break;
            }
            if let Err(e) = self.render(batch) {
                self.events = Vec::new().into_iter();
                self.pending.clear();
                return Some(Err(e));
            }
        }
        if self.pending.is_empty() {
            return None;
        }
        let rest = if self.pending.len() > EXPORT_CHUNK {
            self.pending.split_off(EXPORT_CHUNK)
        } else {
            Vec::new()
        };
        let data = std::mem::replace(&mut self.pending, rest);
        Some(Ok(pb::ExportChunk { data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        for (cell, want) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(1)", "'@SUM(1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("/tmp/=x", "/tmp/=x"),
            ("", ""),
        ] {
            assert_eq!(neutralise(cell), want, "{cell:?}");
        }
    }

    fn file_event(path: &[u8]) -> pb::Event {
        let (text, not_utf8) = match std::str::from_utf8(path) {
            Ok(s) => (s.to_owned(), false),
            Err(_) => (escape_bytes(path).into_owned(), true),
        };
        pb::Event {
            seq: 1,
            kind: pb::EventKind::FileWrite as i32,
            process: Some(pb::Process {
                pid: 7,
                comm: "sh".into(),
                ..Default::default()
            }),
            detail: Some(Detail::File(pb::FileDetail {
                path: text,
                path_raw: if not_utf8 { path.to_vec() } else { Vec::new() },
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn addresses_are_written_as_the_message_writes_them() {
        let net = |local: &str, remote: &str, port: u32| pb::Event {
            kind: pb::EventKind::NetListen as i32,
            detail: Some(Detail::Net(pb::NetDetail {
                protocol: "tcp".into(),
                local_address: local.into(),
                local_port: 40551,
                remote_address: remote.into(),
                remote_port: port,
                ..Default::default()
            })),
            ..Default::default()
        };
        for (ev, want) in [
            (net("::", "", 0), "[::]:40551"),
            (net("0.0.0.0", "", 0), "0.0.0.0:40551"),
            (net("::1", "2001:db8::1", 443), "[2001:db8::1]:443"),
            (net("10.0.0.2", "1.2.3.4", 80), "1.2.3.4:80"),
        ] {
            let (_, addr) = target(&ev);
            assert_eq!(addr, want);
            assert!(
                render::detail_text(&ev).contains(want),
                "{}",
                render::detail_text(&ev)
            );
        }
    }

    #[test]
    fn csv_cells_are_escaped_neutralised_and_names_kept_apart() {
        let snap = pb::Snapshot {
            events: [
                &b"=1+1"[..],
                b"/tmp/a\nfake,row\r\x1b[31m",
                b"/tmp/b-\xff\xfe",
                b"/tmp/b-\xfe\xff",
                b"/tmp/b-\\xff\\xfe",
            ]
            .map(file_event)
            .to_vec(),
            ..Default::default()
        };
        let data = csv(&snap, &|u: u32| u.to_string()).unwrap();
        assert!(
            !data
                .iter()
                .any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f || b == 0xff),
            "{data:?}"
        );
        let mut rdr = csv::Reader::from_reader(data.as_slice());
        let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 5, "one row per event");
        let paths: Vec<&str> = rows.iter().map(|r| &r[10]).collect();
        assert_eq!(
            paths,
            [
                "'=1+1",
                r"/tmp/a\nfake,row\r\x1b[31m",
                r"/tmp/b-\xff\xfe",
                r"/tmp/b-\xfe\xff",
                r"/tmp/b-\\xff\\xfe"
            ]
        );
        assert_eq!(&rows[0][12], "'=1+1", "the message column too");
    }

    #[test]
    fn export_chunks_are_the_whole_export() {
        let samples = [
            file_event(b"/etc/passwd"),
            file_event(b"/tmp/x,\"y\"\n\xff"),
            pb::Event {
                kind: pb::EventKind::Exec as i32,
                process: Some(pb::Process {
                    pid: 9,
                    uid: 1000,
                    ..Default::default()
                }),
                detail: Some(Detail::Exec(pb::ExecDetail {
                    argv: vec!["sh".into(), "-c".into(), "=1+1".into()],
                    ..Default::default()
                })),
                ..Default::default()
            },
        ];
        let events: Vec<pb::Event> = samples
            .iter()
            .cycle()
            .take(3000)
            .enumerate()
            .map(|(i, e)| pb::Event {
                seq: i as u64 + 1,
                ..e.clone()
            })
            .collect();
        for n in [0, 1, EXPORT_BATCH, 3000] {
            let snap = pb::Snapshot {
                info: Some(pb::SnapshotInfo {
                    id: 1,
                    host: "h".into(),
                    ..Default::default()
                }),
                events: events[..n].to_vec(),
                ..Default::default()
            };
            for csv in [true, false] {
                let whole = if csv {
                    super::csv(&snap, &|u: u32| u.to_string()).unwrap()
                } else {
                    jsonl(&snap)
                };
                let chunks: Vec<Vec<u8>> = ExportChunks::new(snap.clone(), csv, uid_only())
                    .unwrap()
                    .map(|c| c.unwrap().data)
                    .collect();
                assert!(chunks
                    .iter()
                    .all(|c| !c.is_empty() && c.len() <= EXPORT_CHUNK));
                assert_eq!(chunks.concat(), whole, "{n} events, csv {csv}");
                if n == 3000 {
                    assert!(chunks.len() > 2);
                }
            }
        }
    }

    #[test]
    fn the_encoded_export_is_the_message_in_chunks() {
        use prost::Message;
        let snap = pb::Snapshot {
            events: (0..5000)
                .map(|i| pb::Event {
                    seq: i,
                    ..file_event(b"/var/lib/some/long/path/name.txt")
                })
                .collect(),
            ..Default::default()
        };
        let chunks: Vec<Vec<u8>> = ExportChunks::encoded(&snap)
            .map(|c| c.unwrap().data)
            .collect();
        assert!(chunks.len() > 1 && chunks.iter().all(|c| c.len() <= EXPORT_CHUNK));
        assert_eq!(chunks.concat(), snap.encode_to_vec());
    }
}
