//! Snapshots as stored: interned, then compressed.
//!
//! A snapshot repeats the same few strings on every event: the process's
//! executable and command line, the chain of program images it came from
//! (up to 16 ancestors, each with its own command line, on every critical
//! event), the scope, host name and container (a pod's labels included).
//! Stored as plain `fdr.v1.Snapshot` messages that was 1.2–2.8 KB per
//! event. Here, as in the buffers (where events share `Arc`'d images), each
//! string and each program image is stored once per snapshot, in a table,
//! and events refer to them by index; what the event shares with the
//! snapshot (scope, host name, container) is not repeated at all. The
//! result is then compressed with zstd, streamed as it is built, so the
//! committer never holds the uncompressed form.
//!
//! The stored value is [`MAGIC`] followed by one zstd frame of a
//! [`StoredSnapshot`]. A value without the magic is a snapshot stored by an
//! earlier version (a plain `fdr.v1.Snapshot`, which cannot begin with a
//! zero byte: field number 0 does not exist): it is read as before, and
//! ages out by retention like any other (no migration: rewriting a large
//! store at start would delay the agent for nothing the reader cannot do).
//!
//! A snapshot is decompressed whole when read. It is bounded (an open
//! snapshot holds at most `recorder.snapshot_max_bytes`, 32 MiB by default,
//! in memory), zstd decompresses at more than 1 GB/s, and every reader
//! (`GetSnapshot`'s pages, the exports) decodes the whole message anyway to
//! filter it: chunking would save a few milliseconds per page against the
//! decoding it cannot avoid, and cost the compression ratio of a shared
//! window. What a corrupt or hostile value may expand to is capped
//! ([`MAX_RAW_BYTES`]).

use std::{collections::HashMap, io::Read};

use fdr_proto::v1 as pb;
use prost::Message;

/// Begins every value stored in this format; the last byte is the format
/// version.
pub const MAGIC: [u8; 5] = [0, b'F', b'D', b'R', 2];

/// zstd level: 3 (zstd's default) compresses a 10 000-event snapshot in a
/// few milliseconds; higher levels gain little on interned data.
const LEVEL: i32 = 3;

/// The most a stored value may expand to when read (a corrupt value must
/// not take the agent's memory).
pub const MAX_RAW_BYTES: u64 = 512 << 20;

/// The stored form of a snapshot (never on the API: [`decode`] turns it
/// into an `fdr.v1.Snapshot`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredSnapshot {
    #[prost(message, optional, tag = "1")]
    pub info: Option<pb::SnapshotInfo>,
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<StoredEvent>,
    /// The ancestry of every process in the window, as in `fdr.v1.Snapshot`.
    #[prost(message, repeated, tag = "3")]
    pub processes: Vec<pb::Process>,
    #[prost(message, repeated, tag = "4")]
    pub listening: Vec<pb::ListeningSocket>,
    #[prost(message, repeated, tag = "5")]
    pub gaps: Vec<pb::Gap>,
    /// Interned strings (executables, arguments), referred to by index.
    #[prost(string, repeated, tag = "6")]
    pub strings: Vec<String>,
    /// Program images, referred to by index + 1; a parent always comes
    /// before its children.
    #[prost(message, repeated, tag = "7")]
    pub images: Vec<StoredImage>,
    /// The window's user names, as in `fdr.v1.Snapshot`.
    #[prost(message, repeated, tag = "8")]
    pub users: Vec<pb::UserName>,
}

/// One event: its message without what the tables and the snapshot hold.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    /// Without `process.exe`, `process.argv` and `ancestry` when `image` is
    /// set; without scope, container id and host name when `shared`;
    /// without a container when it is the snapshot's (an event read without
    /// one takes the snapshot's).
    #[prost(message, optional, tag = "1")]
    pub event: Option<pb::Event>,
    /// The process's image (index + 1 in `images`; 0: none, the event
    /// holds its own).
    #[prost(uint32, tag = "2")]
    pub image: u32,
    /// Ancestors listed: that many images up the image's parent chain.
    #[prost(uint32, tag = "3")]
    pub depth: u32,
    /// Scope, container id and host name are the snapshot's.
    #[prost(bool, tag = "4")]
    pub shared: bool,
}

/// One program image of one process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredImage {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    /// Index in `strings`.
    #[prost(uint32, tag = "3")]
    pub exe: u32,
    /// Indices in `strings`.
    #[prost(uint32, repeated, tag = "4")]
    pub argv: Vec<u32>,
    /// The image it came from (index + 1, below its own; 0: none).
    #[prost(uint32, tag = "5")]
    pub parent: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("decompressing: {0}")]
    Zstd(std::io::Error),
    #[error("it expands to more than {MAX_RAW_BYTES} bytes")]
    TooLarge,
    #[error("decoding: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{0} refers to a table entry that does not exist")]
    Dangling(&'static str),
}

/// A snapshot encoded as stored, with its summary.
#[derive(Debug, Default)]
pub struct Encoded {
    pub info: pb::SnapshotInfo,
    /// The stored value ([`MAGIC`], then zstd).
    pub bytes: Vec<u8>,
    pub events: usize,
    /// Bytes before compression.
    pub raw_bytes: usize,
}

impl From<&pb::Snapshot> for Encoded {
    fn from(snap: &pb::Snapshot) -> Self {
        let info = snap.info.clone().unwrap_or_default();
        let mut w = Writer::new(&info);
        for e in &snap.events {
            w.push_event(e.clone(), 0, 0);
        }
        for p in &snap.processes {
            w.push_process(p);
        }
        for l in &snap.listening {
            w.push_listening(l);
        }
        for g in &snap.gaps {
            w.push_gap(g);
        }
        for u in &snap.users {
            w.push_user(u);
        }
        w.finish(info)
    }
}

/// Builds a stored snapshot event by event, compressing as it goes, so
/// that no large snapshot is ever held as messages or uncompressed.
pub struct Writer {
    z: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    /// Why compression stopped (see [`Writer::finish`]).
    failed: Option<std::io::Error>,
    scratch: Vec<u8>,
    strings: HashMap<Box<str>, u32>,
    image_count: u32,
    events: usize,
    raw: usize,
    scope: String,
    host: String,
    container_id: String,
    container: Option<pb::ContainerInfo>,
}

impl Writer {
    /// A snapshot whose events share `info`'s scope, host and container.
    pub fn new(info: &pb::SnapshotInfo) -> Self {
        let mut out = Vec::with_capacity(64 << 10);
        out.extend_from_slice(&MAGIC);
        let (z, failed) = match zstd::stream::write::Encoder::new(out, LEVEL) {
            Ok(z) => (Some(z), None),
            Err(e) => (None, Some(e)),
        };
        Writer {
            z,
            failed,
            scratch: Vec::with_capacity(4096),
            strings: HashMap::new(),
            image_count: 0,
            events: 0,
            raw: 0,
            scope: info.scope.clone(),
            host: info.host.clone(),
            container_id: info
                .scope
                .strip_prefix("container:")
                .unwrap_or_default()
                .to_owned(),
            container: info.container.clone(),
        }
    }

    fn emit(&mut self) {
        use std::io::Write;
        self.raw += self.scratch.len();
        if let Some(z) = self.z.as_mut() {
            if let Err(e) = z.write_all(&self.scratch) {
                self.z = None;
                self.failed = Some(e);
            }
        }
        self.scratch.clear();
    }

    /// The index of `s` in the string table.
    pub fn string(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.insert(s.into(), i);
        prost::encoding::encode_key(
            6,
            prost::encoding::WireType::LengthDelimited,
            &mut self.scratch,
        );
        prost::encoding::encode_varint(s.len() as u64, &mut self.scratch);
        self.scratch.extend_from_slice(s.as_bytes());
        self.emit();
        i
    }

    /// Adds a program image; `parent` is a value this returned before (or
    /// 0). Returns its reference (index + 1).
    pub fn image(&mut self, pid: u32, uid: u32, exe: &str, argv: &[String], parent: u32) -> u32 {
        let exe = self.string(exe);
        let argv = argv.iter().map(|a| self.string(a)).collect();
        let img = StoredImage {
            pid,
            uid,
            exe,
            argv,
            parent: parent.min(self.image_count),
        };
        prost::encoding::message::encode(7, &img, &mut self.scratch);
        self.emit();
        self.image_count += 1;
        self.image_count
    }

    /// Adds an event. With `image` (a value [`Writer::image`] returned),
    /// the event's process executable and command line are the image's and
    /// its ancestry is `depth` images up the image's parent chain: both are
    /// dropped from the message. An event whose scope, container id and
    /// host name are the snapshot's is stored without them; an event
    /// without a container, or with the snapshot's, is read with the
    /// snapshot's (every event of a snapshot is of its scope).
    pub fn push_event(&mut self, mut ev: pb::Event, image: u32, depth: u32) {
        let image = if image > self.image_count { 0 } else { image };
        if image != 0 {
            if let Some(p) = ev.process.as_mut() {
                p.exe.clear();
                p.argv.clear();
            }
            ev.ancestry.clear();
        }
        let shared = ev.scope == self.scope
            && ev.hostname == self.host
            && ev.container_id == self.container_id;
        if shared {
            ev.scope.clear();
            ev.hostname.clear();
            ev.container_id.clear();
        }
        if ev.container == self.container {
            ev.container = None;
        }
        let stored = StoredEvent {
            event: Some(ev),
            image,
            depth: if image == 0 { 0 } else { depth },
            shared,
        };
        prost::encoding::message::encode(2, &stored, &mut self.scratch);
        self.emit();
        self.events += 1;
    }

    pub fn push_process(&mut self, p: &pb::Process) {
        prost::encoding::message::encode(3, p, &mut self.scratch);
        self.emit();
    }

    pub fn push_listening(&mut self, l: &pb::ListeningSocket) {
        prost::encoding::message::encode(4, l, &mut self.scratch);
        self.emit();
    }

    pub fn push_gap(&mut self, g: &pb::Gap) {
        prost::encoding::message::encode(5, g, &mut self.scratch);
        self.emit();
    }

    /// Adds the name of one of the window's users (see
    /// `fdr.v1.Snapshot.users`).
    pub fn push_user(&mut self, u: &pb::UserName) {
        prost::encoding::message::encode(8, u, &mut self.scratch);
        self.emit();
    }

    /// Adds the summary and ends the compressed stream. Should
    /// compression have failed (zstd out of memory), the snapshot is
    /// stored as an empty one (in the earlier, uncompressed form) whose gap
    /// says so, so that an incident pointing at it finds why.
    pub fn finish(mut self, info: pb::SnapshotInfo) -> Encoded {
        prost::encoding::message::encode(1, &info, &mut self.scratch);
        self.emit();
        let done = match self.z.take() {
            Some(z) => z.finish(),
            None => Err(self
                .failed
                .take()
                .unwrap_or_else(|| std::io::Error::other("no encoder"))),
        };
        let bytes = done.unwrap_or_else(|err| {
            tracing::error!(%err, id = info.id, "compressing a snapshot failed: stored empty");
            pb::Snapshot {
                info: Some(pb::SnapshotInfo {
                    event_count: 0,
                    completeness: 0.0,
                    ..info.clone()
                }),
                gaps: vec![pb::Gap {
                    from: info.window_start,
                    to: info.window_end,
                    lost: self.events as u64,
                    cause: format!("the snapshot could not be compressed: {err}"),
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_to_vec()
        });
        Encoded {
            info,
            bytes,
            events: self.events,
            raw_bytes: self.raw,
        }
    }
}

/// Reads a stored value, in this format or the earlier one.
pub fn decode(bytes: &[u8]) -> Result<pb::Snapshot, FormatError> {
    let Some(body) = bytes.strip_prefix(&MAGIC[..]) else {
        return Ok(pb::Snapshot::decode(bytes)?);
    };
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .map_err(FormatError::Zstd)?
        .take(MAX_RAW_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(FormatError::Zstd)?;
    if raw.len() as u64 > MAX_RAW_BYTES {
        return Err(FormatError::TooLarge);
    }
    let stored = StoredSnapshot::decode(raw.as_slice())?;
    drop(raw);
    expand(stored)
}

/// The `fdr.v1.Snapshot` a stored one stands for.
fn expand(mut s: StoredSnapshot) -> Result<pb::Snapshot, FormatError> {
    let stored_events = std::mem::take(&mut s.events);
    let x = Expander::new(&s)?;
    let mut events = Vec::with_capacity(stored_events.len());
    for se in stored_events {
        events.push(x.event(se)?);
    }
    Ok(pb::Snapshot {
        info: Some(s.info.unwrap_or_default()),
        events,
        processes: s.processes,
        listening: s.listening,
        gaps: s.gaps,
        users: s.users,
    })
}

/// Turns stored events back into `fdr.v1` events: images resolved once
/// each, the snapshot's shared fields put back.
struct Expander<'a> {
    info: &'a pb::SnapshotInfo,
    /// (pid, uid, exe, argv, parent).
    images: Vec<(u32, u32, &'a String, Vec<String>, u32)>,
    container_id: String,
}

static NO_INFO: std::sync::LazyLock<pb::SnapshotInfo> = std::sync::LazyLock::new(Default::default);

impl<'a> Expander<'a> {
    fn new(s: &'a StoredSnapshot) -> Result<Self, FormatError> {
        let info = s.info.as_ref().unwrap_or(&NO_INFO);
        let string = |i: u32| -> Result<&String, FormatError> {
            s.strings
                .get(i as usize)
                .ok_or(FormatError::Dangling("an image"))
        };
        let mut images: Vec<(u32, u32, &String, Vec<String>, u32)> =
            Vec::with_capacity(s.images.len());
        for (n, img) in s.images.iter().enumerate() {
            let argv = img
                .argv
                .iter()
                .map(|&a| string(a).cloned())
                .collect::<Result<Vec<_>, _>>()?;
            // A parent is always written before its children: anything
            // else is corrupt, and would loop.
            let parent = if img.parent as usize <= n {
                img.parent
            } else {
                0
            };
            images.push((img.pid, img.uid, string(img.exe)?, argv, parent));
        }
        let container_id = info
            .scope
            .strip_prefix("container:")
            .unwrap_or_default()
            .to_owned();
        Ok(Expander {
            info,
            images,
            container_id,
        })
    }

    fn event(&self, se: StoredEvent) -> Result<pb::Event, FormatError> {
        let info = self.info;
        let mut ev = se.event.unwrap_or_default();
        if se.image != 0 {
            let Some(img) = self.images.get(se.image as usize - 1) else {
                return Err(FormatError::Dangling("an event's image"));
            };
            let p = ev.process.get_or_insert_with(Default::default);
            p.exe = img.2.clone();
            p.argv = img.3.clone();
            let mut next = img.4;
            let mut left = se.depth;
            while next != 0 && left > 0 {
                let a = &self.images[next as usize - 1];
                ev.ancestry.push(pb::Ancestor {
                    pid: a.0,
                    uid: a.1,
                    exe: a.2.clone(),
                    argv: a.3.clone(),
                });
                next = a.4;
                left -= 1;
            }
        }
        if se.shared {
            ev.scope = info.scope.clone();
            ev.hostname = info.host.clone();
            ev.container_id = self.container_id.clone();
        }
        if ev.container.is_none() {
            ev.container = info.container.clone();
        }
        Ok(ev)
    }
}

/// The SHA-256 (hex) of a stored snapshot's canonical encoding (see
/// `fdr_proto::integrity`): the same bytes as [`decode`] then
/// `integrity::canonical_bytes`, hashed one event at a time (the
/// committer never holds the decoded snapshot).
pub fn canonical_sha256(bytes: &[u8]) -> Result<String, FormatError> {
    use sha2::Digest;
    let Some(body) = bytes.strip_prefix(&MAGIC[..]) else {
        return Ok(fdr_proto::integrity::snapshot_sha256(
            &pb::Snapshot::decode(bytes)?,
        ));
    };
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .map_err(FormatError::Zstd)?
        .take(MAX_RAW_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(FormatError::Zstd)?;
    if raw.len() as u64 > MAX_RAW_BYTES {
        return Err(FormatError::TooLarge);
    }
    let mut s = StoredSnapshot::decode(raw.as_slice())?;
    drop(raw);
    if let Some(info) = s.info.as_mut() {
        info.sha256.clear();
        info.seal = None;
        info.verification.clear();
    }
    let stored_events = std::mem::take(&mut s.events);
    let x = Expander::new(&s)?;
    let mut h = sha2::Sha256::new();
    let mut buf = Vec::with_capacity(4096);
    // Field by field in tag order, as prost encodes `fdr.v1.Snapshot`.
    prost::encoding::message::encode(1, s.info.as_ref().unwrap_or(&NO_INFO), &mut buf);
    h.update(&buf);
    for se in stored_events {
        buf.clear();
        prost::encoding::message::encode(2, &x.event(se)?, &mut buf);
        h.update(&buf);
    }
    for p in &s.processes {
        buf.clear();
        prost::encoding::message::encode(3, p, &mut buf);
        h.update(&buf);
    }
    for l in &s.listening {
        buf.clear();
        prost::encoding::message::encode(4, l, &mut buf);
        h.update(&buf);
    }
    for g in &s.gaps {
        buf.clear();
        prost::encoding::message::encode(5, g, &mut buf);
        h.update(&buf);
    }
    for u in &s.users {
        buf.clear();
        prost::encoding::message::encode(6, u, &mut buf);
        h.update(&buf);
    }
    Ok(fdr_proto::integrity::hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, scope: &str, container: Option<pb::ContainerInfo>) -> pb::Event {
        pb::Event {
            seq,
            kind: pb::EventKind::Exec as i32,
            scope: scope.into(),
            container_id: scope.strip_prefix("container:").unwrap_or("").into(),
            hostname: "node-1".into(),
            container,
            process: Some(pb::Process {
                pid: 7,
                comm: "sh".into(),
                exe: "/bin/sh".into(),
                argv: vec!["sh".into(), "-c".into(), "id".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_it_was_written_and_the_old_form_still_reads() {
        let container = pb::ContainerInfo {
            id: "abc".into(),
            pod_name: "web".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        let info = pb::SnapshotInfo {
            id: 3,
            scope: "container:abc".into(),
            host: "node-1".into(),
            container: Some(container.clone()),
            ..Default::default()
        };
        let mut w = Writer::new(&info);
        let init = w.image(1, 0, "/sbin/init", &["init".into()], 0);
        let sh = w.image(
            7,
            0,
            "/bin/sh",
            &["sh".into(), "-c".into(), "id".into()],
            init,
        );
        let mut want = Vec::new();
        for seq in 1..=5 {
            let mut e = ev(seq, "container:abc", Some(container.clone()));
            w.push_event(e.clone(), sh, if seq % 2 == 0 { 16 } else { 0 });
            if seq % 2 == 0 {
                e.ancestry = vec![pb::Ancestor {
                    pid: 1,
                    uid: 0,
                    exe: "/sbin/init".into(),
                    argv: vec!["init".into()],
                }];
            }
            want.push(e);
        }
        // Another scope's event, no image: stored as it is.
        let other = ev(
            6,
            "host",
            Some(pb::ContainerInfo {
                id: "other".into(),
                ..Default::default()
            }),
        );
        w.push_event(other.clone(), 0, 0);
        want.push(other);
        let gap = pb::Gap {
            lost: 4,
            cause: "x".into(),
            ..Default::default()
        };
        w.push_gap(&gap);
        let users = vec![
            pb::UserName {
                uid: 0,
                name: "root".into(),
            },
            pb::UserName {
                uid: 1000,
                name: "alice".into(),
            },
        ];
        for u in &users {
            w.push_user(u);
        }
        let enc = w.finish(info.clone());
        assert!(enc.bytes.starts_with(&MAGIC));
        assert_eq!(enc.events, 6);
        let got = decode(&enc.bytes).unwrap();
        assert_eq!(got.info, Some(info.clone()));
        assert_eq!(got.events, want);
        assert_eq!(got.gaps, vec![gap]);
        assert_eq!(got.users, users);

        let old = pb::Snapshot {
            info: Some(info),
            events: want,
            ..Default::default()
        };
        assert_eq!(decode(&old.encode_to_vec()).unwrap(), old);
        assert_eq!(decode(&Encoded::from(&old).bytes).unwrap(), old);
        let named = pb::Snapshot { users, ..old };
        assert_eq!(decode(&Encoded::from(&named).bytes).unwrap(), named);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(b"not zstd at all");
        assert!(decode(&bad).is_err());
        // A well-formed frame whose tables point nowhere.
        let stored = StoredSnapshot {
            events: vec![StoredEvent {
                image: 9,
                ..Default::default()
            }],
            images: vec![StoredImage {
                exe: 99,
                parent: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut v = MAGIC.to_vec();
        v.extend(zstd::bulk::compress(&stored.encode_to_vec(), 1).unwrap());
        assert!(matches!(decode(&v), Err(FormatError::Dangling(_))));
    }
}
