//! Filtering and paging events for `GetSnapshot` and `QueryEvents`.
//!
//! A query over a live buffer never converts the scope under a lock: under
//! the `buffers` lock it only picks candidate events (cheap `Arc` clones,
//! filtered on cursor, time and kind), a bounded number per hold; the text
//! is matched on the domain events outside the lock, and only the page's
//! events become protobuf. A page holds at most [`MAX_PAGE_EVENTS`] events
//! and about [`MAX_PAGE_BYTES`] encoded bytes; the cursor continues.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fdr_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use crate::event::wire::{event_to_pb, kind_from_pb, protocol_name, Enrich};
use crate::recorder::codec::Head;
use crate::{
    attribution::containers::{Change, ContainerMeta, ContainerRegistry},
    attribution::scope::Scope,
    event::{Detail, Event, EventKind, ExitStatus},
    recorder::ScopeBuffers,
    util::lock,
};

/// Events in one response at most; a `limit` of 0 or above means this.
pub const MAX_PAGE_EVENTS: usize = 10_000;
/// Encoded event bytes in one response at most (a page always holds at
/// least one event). Below tonic's default 4 MiB message limit, with room
/// for the rest of the message.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Buffer entries examined per hold of the `buffers` lock (besides
/// skipping to the cursor): each is read from its compact record.
const SCAN_PER_LOCK: usize = 1024;
/// Candidates decoded from the buffer's records per hold of the `buffers`
/// lock.
const DECODE_PER_LOCK: usize = 256;
/// Candidates taken per hold of the `buffers` lock when a text filter
/// decides outside it.
const TEXT_CHUNK: usize = 4096;
/// Events converted per hold of the `containers` lock.
const CONVERT_BATCH: usize = 256;

/// Which events a query wants, and where its page starts.
pub struct EventQuery {
    /// Kinds wanted (empty: all), as API and as domain kinds.
    kinds: Vec<i32>,
    domain_kinds: Vec<EventKind>,
    from_ns: Option<u64>,
    to_ns: Option<u64>,
    /// Lowercased.
    text: Option<String>,
    /// Only events with a larger `seq` (the cursor).
    after_seq: u64,
    /// Events per page, within [`MAX_PAGE_EVENTS`].
    limit: usize,
}

fn ts_ns(t: &prost_types::Timestamp) -> Result<u64, Status> {
    if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Status::invalid_argument(
            "timestamps must be after 1970 and normalized",
        ));
    }
    // Saturating: a time past 2554 (a corrupt stored event) overflowed.
    Ok((t.seconds as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.nanos as u64))
}

/// A page of events and the cursor of the next one, if there is more.
pub struct Page<T> {
    pub events: Vec<T>,
    pub next_cursor: Option<String>,
}

/// How a buffer query went, for the log and for tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    /// Holds of the `buffers` lock.
    pub holds: u32,
    /// The longest of them.
    pub longest_hold: Duration,
    /// Buffer entries examined (after the cursor).
    pub examined: u64,
}

impl EventQuery {
    pub fn new(
        kinds: &[i32],
        from: Option<&prost_types::Timestamp>,
        to: Option<&prost_types::Timestamp>,
        text: &str,
        cursor: &str,
        limit: u32,
    ) -> Result<Self, Status> {
        let mut domain_kinds = Vec::with_capacity(kinds.len());
        for &k in kinds {
            match kind_from_pb(k) {
                Some(d) => domain_kinds.push(d),
                None => return Err(Status::invalid_argument(format!("unknown event kind {k}"))),
            }
        }
        let from_ns = from.map(ts_ns).transpose()?;
        let to_ns = to.map(ts_ns).transpose()?;
        if let (Some(f), Some(t)) = (from_ns, to_ns) {
            if f > t {
                return Err(Status::invalid_argument(
                    "bad time range: `from` is after `to`",
                ));
            }
        }
        let after_seq = if cursor.is_empty() {
            0
        } else {
            cursor.parse().map_err(|_| {
                Status::invalid_argument(format!("bad cursor {:?}", crate::util::clip(cursor)))
            })?
        };
        Ok(EventQuery {
            kinds: kinds.to_vec(),
            domain_kinds,
            from_ns,
            to_ns,
            text: (!text.is_empty()).then(|| text.to_lowercase()),
            after_seq,
            limit: match limit as usize {
                0 => MAX_PAGE_EVENTS,
                n => n.min(MAX_PAGE_EVENTS),
            },
        })
    }

    /// Events on one page at most (the request's limit within the cap).
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn matches(&self, ev: &pb::Event) -> bool {
        if ev.seq <= self.after_seq || (!self.kinds.is_empty() && !self.kinds.contains(&ev.kind)) {
            return false;
        }
        let t = ev.time.as_ref().and_then(|t| ts_ns(t).ok()).unwrap_or(0);
        if self.from_ns.is_some_and(|f| t < f) || self.to_ns.is_some_and(|x| t > x) {
            return false;
        }
        match &self.text {
            None => true,
            Some(needle) => haystack(ev).to_lowercase().contains(needle),
        }
    }

    /// Cursor, kind and time: what may be decided under the `buffers` lock.
    fn cheap_match_head(&self, seq: u64, kind: EventKind, time_ns: u64) -> bool {
        seq > self.after_seq
            && (self.domain_kinds.is_empty() || self.domain_kinds.contains(&kind))
            && self.from_ns.is_none_or(|f| time_ns >= f)
            && self.to_ns.is_none_or(|t| time_ns <= t)
    }

    /// The text filter on a domain event (true without one); `hay` is a
    /// scratch buffer.
    fn text_match(
        &self,
        ev: &Event,
        meta: &dyn Fn(&str) -> Option<Arc<ContainerMeta>>,
        hay: &mut String,
    ) -> bool {
        let Some(needle) = &self.text else {
            return true;
        };
        hay.clear();
        write_haystack(ev, meta, hay);
        lowercase_contains(hay, needle)
    }

    /// The matching events of a stored snapshot (in order) for this page,
    /// within the page's caps, and the cursor of the next page when there
    /// is one. Takes the events it returns out of `events`.
    pub fn page_stored(&self, events: &mut [pb::Event]) -> Page<pb::Event> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for ev in events.iter_mut() {
            if !self.matches_cheap_pb(ev) {
                continue;
            }
            if let Some(needle) = &self.text {
                let mut hay = haystack(ev);
                if !lowercase_contains(&mut hay, needle) {
                    continue;
                }
            }
            let size = wire_len(ev);
            if out.len() == self.limit || (!out.is_empty() && bytes + size > MAX_PAGE_BYTES) {
                return page_with_cursor(out);
            }
            bytes += size;
            out.push(std::mem::take(ev));
        }
        Page {
            events: out,
            next_cursor: None,
        }
    }

    fn matches_cheap_pb(&self, ev: &pb::Event) -> bool {
        let t = ev.time.as_ref().and_then(|t| ts_ns(t).ok()).unwrap_or(0);
        ev.seq > self.after_seq
            && (self.kinds.is_empty() || self.kinds.contains(&ev.kind))
            && self.from_ns.is_none_or(|f| t >= f)
            && self.to_ns.is_none_or(|x| t <= x)
    }

    /// The page's events of `scope` (every scope when `None`, merged in
    /// the order they were recorded, which is time order), oldest first,
    /// from the live buffers: candidates are picked under short holds of
    /// the lock, matched and converted outside it. `containers` enriches
    /// the events (metadata and `ancestry_depth` ancestors) and is what the
    /// text search sees of a container; it is locked briefly, per batch.
    /// The cursor is the last event's `seq`, one order over all scopes, so
    /// paging works the same across them.
    pub fn page_live(
        &self,
        buffers: &Mutex<ScopeBuffers>,
        scope: Option<&Scope>,
        containers: Option<&Mutex<ContainerRegistry>>,
        ancestry_depth: usize,
        node: &str,
    ) -> (Page<pb::Event>, ScanStats) {
        let meta = |id: &str| containers.and_then(|c| lock(c).get(id));
        let (picked, more, stats) = self.select(buffers, scope, &meta);
        let mut out = Vec::with_capacity(picked.len());
        let mut bytes = 0;
        let mut cut = false;
        'convert: for batch in picked.chunks(CONVERT_BATCH) {
            let guard = containers.map(lock);
            let en = Enrich {
                containers: guard
                    .as_deref()
                    .map(|c| c as &dyn crate::event::container::ContainerLookup),
                ancestry_depth,
                node,
            };
            for ev in batch {
                let pb = event_to_pb(ev, &en);
                let size = wire_len(&pb);
                if !out.is_empty() && bytes + size > MAX_PAGE_BYTES {
                    cut = true;
                    break 'convert;
                }
                bytes += size;
                out.push(pb);
            }
        }
        drop(picked);
        let page = if more || cut {
            page_with_cursor(out)
        } else {
            Page {
                events: out,
                next_cursor: None,
            }
        };
        (page, stats)
    }

    /// Up to `limit` matching events after the cursor, and whether one
    /// more matches.
    fn select(
        &self,
        buffers: &Mutex<ScopeBuffers>,
        scope: Option<&Scope>,
        meta: &dyn Fn(&str) -> Option<Arc<ContainerMeta>>,
    ) -> (Vec<Arc<Event>>, bool, ScanStats) {
        let mut stats = ScanStats::default();
        let mut out: Vec<Arc<Event>> = Vec::new();
        let mut after = self.after_seq;
        let mut cands: Vec<Arc<Event>> = Vec::new();
        let mut hay = String::new();
        loop {
            // Without a text filter every candidate is a match: one more
            // than the page's room says whether there is more.
            let want = match self.text {
                None => self.limit + 1 - out.len(),
                Some(_) => TEXT_CHUNK,
            };
            let (last, end) = {
                let started = Instant::now();
                let b = lock(buffers);
                // Only candidates are decoded from the buffer's records.
                let keep = |h: &Head| self.cheap_match_head(h.seq, h.kind, h.time_ns);
                let (examined, last, end) = match scope {
                    Some(s) => {
                        self.pick(b.scope_scan_after(s, after, keep), after, want, &mut cands)
                    }
                    None => {
                        let keys: Vec<Scope> = b.scopes().into_iter().map(|(s, _)| s).collect();
                        self.pick(
                            merged_after(&b, &keys, after, keep),
                            after,
                            want,
                            &mut cands,
                        )
                    }
                };
                drop(b);
                let held = started.elapsed();
                stats.holds += 1;
                stats.longest_hold = stats.longest_hold.max(held);
                stats.examined += examined as u64;
                (last, end)
            };
            for ev in cands.drain(..) {
                if !self.text_match(&ev, meta, &mut hay) {
                    continue;
                }
                if out.len() == self.limit {
                    return (out, true, stats);
                }
                out.push(ev);
            }
            if end {
                return (out, false, stats);
            }
            after = last;
        }
    }

    /// Takes the candidates of one hold of the `buffers` lock from
    /// `events` (after the cursor), until `want` of them or
    /// [`SCAN_PER_LOCK`] examined: how many were examined, the last seq
    /// examined, and whether `events` ended.
    fn pick(
        &self,
        events: impl Iterator<Item = (u64, Option<Arc<Event>>)>,
        after: u64,
        want: usize,
        cands: &mut Vec<Arc<Event>>,
    ) -> (usize, u64, bool) {
        let mut examined = 0;
        let mut last = after;
        for (seq, ev) in events {
            if examined == SCAN_PER_LOCK || cands.len() == want.min(DECODE_PER_LOCK) {
                return (examined, last, false);
            }
            examined += 1;
            last = seq;
            cands.extend(ev);
        }
        (examined, last, true)
    }
}

/// The next batch of the buffered events up to `last_seq` that `pred`
/// keeps, in recording order, after `*after` (moved on): at most
/// [`SCAN_PER_LOCK`] records stepped and [`DECODE_PER_LOCK`] decoded in
/// one hold of the `buffers` lock, so that a backlog as large as the whole
/// budget is read (and decoded) a batch at a time while capture goes on.
/// `true` once the backlog is read. Records evicted between two batches are
/// not in it (the buffers' loss ledgers count them).
pub fn backlog_batch(
    buffers: &Mutex<ScopeBuffers>,
    after: &mut u64,
    last_seq: u64,
    pred: impl Fn(&Event) -> bool,
) -> (Vec<Arc<Event>>, bool) {
    let b = lock(buffers);
    let keys: Vec<Scope> = b.scopes().into_iter().map(|(s, _)| s).collect();
    let mut out = Vec::new();
    let mut stepped = 0;
    for (seq, ev) in merged_after(&b, &keys, *after, |h| h.seq <= last_seq) {
        if seq > last_seq {
            return (out, true);
        }
        *after = seq;
        stepped += 1;
        if let Some(ev) = ev.filter(|e| pred(e)) {
            out.push(ev);
        }
        if stepped == SCAN_PER_LOCK || out.len() == DECODE_PER_LOCK {
            return (out, false);
        }
    }
    (out, true)
}

/// The events of `scopes` with a `seq` above `after`, in `seq` order (the
/// order they were recorded in): each scope's buffer is in that order, so
/// their heads are merged.
fn merged_after<'a>(
    b: &'a ScopeBuffers,
    scopes: &'a [Scope],
    after: u64,
    keep: impl Fn(&Head) -> bool + Copy + 'a,
) -> impl Iterator<Item = (u64, Option<Arc<Event>>)> + 'a {
    use std::{cmp::Reverse, collections::BinaryHeap};
    let mut iters: Vec<_> = scopes
        .iter()
        .map(|s| b.scope_scan_after(s, after, keep))
        .collect();
    let mut heads: BinaryHeap<(Reverse<u64>, usize)> = BinaryHeap::new();
    let mut pending: Vec<Option<(u64, Option<Arc<Event>>)>> = Vec::with_capacity(iters.len());
    for (i, it) in iters.iter_mut().enumerate() {
        let ev = it.next();
        if let Some(ev) = &ev {
            heads.push((Reverse(ev.0), i));
        }
        pending.push(ev);
    }
    std::iter::from_fn(move || {
        let (_, i) = heads.pop()?;
        let ev = pending[i].take()?;
        if let Some(next) = iters[i].next() {
            heads.push((Reverse(next.0), i));
            pending[i] = Some(next);
        }
        Some(ev)
    })
}

/// A page cut short: the next one starts after its last event.
fn page_with_cursor(events: Vec<pb::Event>) -> Page<pb::Event> {
    let next_cursor = events.last().map(|e| e.seq.to_string());
    Page {
        events,
        next_cursor,
    }
}

/// Bytes an event takes as a repeated message field.
fn wire_len(ev: &pb::Event) -> usize {
    let n = ev.encoded_len();
    1 + prost::encoding::encoded_len_varint(n as u64) + n
}

/// One `GetSnapshot` answer: the summary; on the first page (no cursor)
/// the gaps, processes and listening sockets; then the page's events and
/// the next cursor when there is one. Takes the snapshot so that the page's
/// events are moved out, not copied.
pub fn snapshot_page(
    q: &EventQuery,
    mut snap: pb::Snapshot,
    first: bool,
) -> Vec<pb::GetSnapshotResponse> {
    use pb::get_snapshot_response::Item as G;
    let item = |i: G| pb::GetSnapshotResponse { item: Some(i) };
    let mut out = vec![item(G::Info(snap.info.take().unwrap_or_default()))];
    if first {
        out.extend(snap.gaps.drain(..).map(|g| item(G::Gap(g))));
        out.extend(snap.processes.drain(..).map(|p| item(G::Process(p))));
        out.extend(snap.listening.drain(..).map(|l| item(G::Listening(l))));
    }
    let page = q.page_stored(&mut snap.events);
    drop(snap);
    out.extend(page.events.into_iter().map(|e| item(G::Event(e))));
    if let Some(c) = page.next_cursor {
        out.push(item(G::NextCursor(c)));
    }
    out
}

pub use fdr_proto::render::{haystack, lowercase_contains};

/// [`haystack`] of the event a domain event becomes, written into `out`
/// without converting it (`meta` looks a container up, for the name and
/// image a container start or stop shows).
fn write_haystack(ev: &Event, meta: &dyn Fn(&str) -> Option<Arc<ContainerMeta>>, out: &mut String) {
    // Writing into a String cannot fail.
    let t = &ev.record.task;
    let _ = write!(out, "{} {} ", t.comm, ev.exe());
    join_into(out, ev.argv().iter().map(String::as_str), " ");
    out.push(' ');
    write_detail(ev, meta, out);
    out.push(' ');
    match &ev.scope {
        Scope::Host => out.push_str("host"),
        Scope::Container(id) => {
            let _ = write!(out, "container:{id}");
        }
    }
}

fn join_into<'a>(out: &mut String, items: impl Iterator<Item = &'a str>, sep: &str) {
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(s);
    }
}

/// A command line the way a shell would take it back (as `fdrctl` shows it).
fn shell_words_into(out: &mut String, argv: &[String]) {
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
        {
            out.push_str(a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', r"'\''"));
            out.push('\'');
        }
    }
}

fn addr_into(out: &mut String, ip: std::net::IpAddr, port: u16) {
    let _ = if ip.is_ipv6() {
        write!(out, "[{ip}]:{port}")
    } else {
        write!(out, "{ip}:{port}")
    };
}

/// `fdrctl`'s detail column of the event, from the domain event.
fn write_detail(ev: &Event, meta: &dyn Fn(&str) -> Option<Arc<ContainerMeta>>, out: &mut String) {
    let t = &ev.record.task;
    match &ev.record.detail {
        Detail::Fork { .. } => {
            let _ = write!(out, "parent {}", t.ppid);
        }
        Detail::Exec {
            filename,
            argv,
            argv_truncated,
            ..
        } => {
            out.push_str(filename);
            out.push(' ');
            shell_words_into(out, argv);
            if *argv_truncated {
                out.push_str(" [truncated]");
            }
        }
        Detail::Exit { status } => {
            let s = ExitStatus::from_wait_status(*status);
            let _ = match (s.code, s.signal) {
                (Some(c), _) => write!(out, "exit code {c}"),
                (_, Some(sig)) => write!(
                    out,
                    "killed by signal {sig}{}",
                    if s.core_dumped { " (core dumped)" } else { "" }
                ),
                _ => write!(out, "status {status}"),
            };
        }
        Detail::File { kind, file: f } => {
            let path2 = f.path2.as_deref().unwrap_or("?");
            let p = &f.path;
            let _ = match kind {
                EventKind::FileRename => write!(out, "{p} -> {path2}"),
                EventKind::FileLink if f.flags & 1 != 0 => {
                    write!(out, "{path2} -> {p} (symlink)")
                }
                EventKind::FileLink => write!(out, "{path2} = {p}"),
                EventKind::FileChmod => match f.old_mode {
                    Some(old) => write!(
                        out,
                        "{p} mode {:o} -> {:o}",
                        old & 0o7777,
                        f.new_mode.unwrap_or(0)
                    ),
                    None => write!(out, "{p} mode {:o}", f.new_mode.unwrap_or(0)),
                },
                EventKind::FileChown => {
                    let _ = write!(out, "{p} owner ");
                    let _ = match f.uid {
                        Some(u) => write!(out, "{u}"),
                        None => write!(out, "-"),
                    };
                    let _ = match f.gid {
                        Some(g) => write!(out, ":{g}"),
                        None => write!(out, ":-"),
                    };
                    Ok(())
                }
                EventKind::FileTruncate => {
                    write!(out, "{p} to {} bytes", f.size.unwrap_or(0))
                }
                _ => write!(out, "{p}"),
            };
            if f.incomplete {
                out.push_str(" [path incomplete]");
            }
        }
        Detail::Net { net: n, .. } => {
            let _ = write!(out, "{} ", protocol_name(n.protocol));
            addr_into(out, n.local.ip(), n.local.port());
            if let Some(r) = n.remote {
                out.push_str(" -> ");
                addr_into(out, r.ip(), r.port());
            }
            if let Some(e) = n.error() {
                let _ = write!(out, " ({e})");
            }
        }
        Detail::Priv(p) => {
            let (o, n) = (&p.old, &p.new);
            let _ = write!(
                out,
                "{}: uid {}/{}/{} -> {}/{}/{}, gid {}/{}/{} -> {}/{}/{}, caps {:#x} -> {:#x}",
                p.syscall,
                o.uid,
                o.euid,
                o.suid,
                n.uid,
                n.euid,
                n.suid,
                o.gid,
                o.egid,
                o.sgid,
                n.gid,
                n.egid,
                n.sgid,
                o.cap_effective,
                n.cap_effective
            );
        }
        Detail::Account(a) => {
            let _ = write!(
                out,
                "accounts-modified by {} ({}){}: ",
                a.user,
                a.uid,
                if a.interactive { ", interactive" } else { "" }
            );
            join_into(out, a.files.iter().map(String::as_str), ", ");
            out.push_str(" [");
            shell_words_into(out, &a.command);
            out.push(']');
        }
        Detail::Container(c) => {
            // As the event shows its scope's container: the runtime's
            // name and image when known, else empty.
            let what = |out: &mut String| {
                if let Some(id) = ev.scope.container_id() {
                    let m = meta(id);
                    let (name, image) = m
                        .as_deref()
                        .map_or(("", ""), |m| (m.name.as_str(), m.image.as_str()));
                    let _ = write!(out, " {name} ({image})");
                }
            };
            match &c.change {
                Change::Started => {
                    out.push_str("container started");
                    what(out);
                    let _ = write!(out, " [{}]", c.source);
                }
                Change::Stopped {
                    exit_code, reason, ..
                } => {
                    out.push_str("container stopped");
                    what(out);
                    let _ = write!(out, ": {reason}");
                    if let Some(x) = exit_code {
                        let _ = write!(out, ", exit code {x}");
                    }
                    let _ = write!(out, " [{}]", c.source);
                }
            }
        }
        Detail::Learned(l) => {
            let _ = write!(out, "added to model {}: {} {}", l.model, l.section, l.item);
        }
        Detail::Audit(a) => {
            let _ = write!(out, "[{}] {}", a.severity.name(), a.message);
            if a.incident > 0 {
                let _ = write!(out, " (incident #{})", a.incident);
            }
        }
        Detail::Binary(b) => {
            let _ = write!(out, "{} {} (written by pid ", b.reason.name(), b.path);
            let _ = match b.writer_pid {
                Some(p) => write!(out, "{p})"),
                None => write!(out, "?)"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::test_support::event,
        event::{
            AccountDetail, AuditDetail, BinaryDetail, BinaryReason, ContainerDetail, Creds,
            FileDetail, LearnedDetail, NetDetail, PrivDetail, Severity,
        },
        recorder::Limits,
    };

    fn ev(seq: u64, secs: i64, kind: pb::EventKind, comm: &str) -> pb::Event {
        pb::Event {
            seq,
            time: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            kind: kind as i32,
            process: Some(pb::Process {
                comm: comm.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn seqs(p: &Page<pb::Event>) -> Vec<u64> {
        p.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn filters_and_pages() {
        let evs: Vec<pb::Event> = (1..=10)
            .map(|i| {
                ev(
                    i,
                    i as i64,
                    if i % 2 == 0 {
                        pb::EventKind::Exec
                    } else {
                        pb::EventKind::Exit
                    },
                    if i == 4 { "CurL" } else { "sh" },
                )
            })
            .collect();
        let exec = [pb::EventKind::Exec as i32];
        let q = EventQuery::new(&exec, None, None, "", "", 2).unwrap();
        let page = q.page_stored(&mut evs.clone());
        assert_eq!(seqs(&page), [2, 4]);
        assert_eq!(page.next_cursor.as_deref(), Some("4"));
        let q = EventQuery::new(&exec, None, None, "", "4", 2).unwrap();
        assert_eq!(seqs(&q.page_stored(&mut evs.clone())), [6, 8]);
        let q = EventQuery::new(&exec, None, None, "", "8", 2).unwrap();
        let last = q.page_stored(&mut evs.clone());
        assert_eq!((seqs(&last), last.next_cursor), (vec![10], None));
        let q = EventQuery::new(&[], None, None, "curl", "", 0).unwrap();
        assert_eq!(seqs(&q.page_stored(&mut evs.clone())), [4]);
        let from = prost_types::Timestamp {
            seconds: 3,
            nanos: 0,
        };
        let to = prost_types::Timestamp {
            seconds: 5,
            nanos: 0,
        };
        let q = EventQuery::new(&[], Some(&from), Some(&to), "", "", 0).unwrap();
        assert_eq!(seqs(&q.page_stored(&mut evs.clone())), [3, 4, 5]);
    }

    #[test]
    fn times_past_u64_nanoseconds_do_not_overflow() {
        // Found by fuzzing a stored snapshot (fuzz/corpus/snapshot/year-4147).
        let late = ev(1, 1 << 36, pb::EventKind::Exec, "sh");
        let from = prost_types::Timestamp {
            seconds: 3,
            nanos: 0,
        };
        let q = EventQuery::new(&[], Some(&from), None, "", "", 0).unwrap();
        assert_eq!(seqs(&q.page_stored(&mut [late.clone()])), [1]);
        let q = EventQuery::new(&[], None, Some(&from), "", "", 0).unwrap();
        assert!(seqs(&q.page_stored(&mut [late])).is_empty());
    }

    #[test]
    fn bad_input_is_invalid_argument() {
        let a = prost_types::Timestamp {
            seconds: 5,
            nanos: 0,
        };
        let b = prost_types::Timestamp {
            seconds: 3,
            nanos: 0,
        };
        for res in [
            EventQuery::new(&[], Some(&a), Some(&b), "", "", 0),
            EventQuery::new(&[], None, None, "", "not-a-cursor", 0),
            EventQuery::new(&[99], None, None, "", "", 0),
        ] {
            assert_eq!(res.err().unwrap().code(), tonic::Code::InvalidArgument);
        }
    }

    /// Pages every event out of `page` (a query from a cursor), checking
    /// each page against the caps.
    fn drain(mut page: impl FnMut(&str) -> Page<pb::Event>, limit: usize) -> Vec<u64> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let p = page(&cursor);
            assert!(p.events.len() <= limit.min(MAX_PAGE_EVENTS));
            let bytes: usize = p.events.iter().map(wire_len).sum();
            assert!(p.events.len() == 1 || bytes <= MAX_PAGE_BYTES, "{bytes}");
            all.extend(p.events.iter().map(|e| e.seq));
            match p.next_cursor {
                Some(c) => cursor = c,
                None => return all,
            }
        }
    }

    #[test]
    fn stored_pages_are_capped_by_count_and_bytes() {
        let evs: Vec<pb::Event> = (1..=MAX_PAGE_EVENTS as u64 + 5)
            .map(|i| ev(i, 1, pb::EventKind::Exit, "sh"))
            .collect();
        let q = EventQuery::new(&[], None, None, "", "", 0).unwrap();
        let first = q.page_stored(&mut evs.clone());
        assert_eq!(first.events.len(), MAX_PAGE_EVENTS);
        assert_eq!(
            first.next_cursor,
            Some(MAX_PAGE_EVENTS.to_string()),
            "limit 0 is the cap, and the cursor continues"
        );
        let got = drain(
            |c| {
                EventQuery::new(&[], None, None, "", c, u32::MAX)
                    .unwrap()
                    .page_stored(&mut evs.clone())
            },
            usize::MAX,
        );
        assert_eq!(got, (1..=MAX_PAGE_EVENTS as u64 + 5).collect::<Vec<_>>());

        // 64 KiB events: about 63 to a page.
        let big: Vec<pb::Event> = (1..=200)
            .map(|i| {
                let mut e = ev(i, 1, pb::EventKind::Exec, "sh");
                e.process.as_mut().unwrap().argv = vec!["x".repeat(64 * 1024)];
                e
            })
            .collect();
        let pages = std::cell::Cell::new(0);
        let got = drain(
            |c| {
                pages.set(pages.get() + 1);
                EventQuery::new(&[], None, None, "", c, 0)
                    .unwrap()
                    .page_stored(&mut big.clone())
            },
            usize::MAX,
        );
        assert_eq!(got, (1..=200).collect::<Vec<_>>());
        assert_eq!(pages.get(), 4, "63 + 63 + 63 + 11");
    }

    fn in_scope(seq: u64, detail: Detail, comm: &str) -> Arc<Event> {
        let mut e = event(seq, 1, detail);
        e.record.task.comm = comm.into();
        Arc::new(e)
    }

    fn exit(seq: u64) -> Arc<Event> {
        in_scope(seq, Detail::Exit { status: 0 }, "t")
    }

    fn buffers() -> Mutex<ScopeBuffers> {
        Mutex::new(ScopeBuffers::new(Limits {
            scope_quota: 1 << 30,
            critical_reserve: 0,
            budget: 1 << 30,
            grace_ns: 0,
        }))
    }

    fn live<'a>(
        b: &'a Mutex<ScopeBuffers>,
        kinds: &[i32],
        text: &str,
        limit: u32,
    ) -> impl FnMut(&str) -> Page<pb::Event> + 'a {
        let kinds = kinds.to_vec();
        let text = text.to_owned();
        move |c: &str| {
            let q = EventQuery::new(&kinds, None, None, &text, c, limit).unwrap();
            q.page_live(b, Some(&Scope::Host), None, 0, "").0
        }
    }

    #[test]
    fn without_a_scope_every_scope_is_searched_merged_in_order_with_paging() {
        let b = buffers();
        let scopes = ["host", "container:a", "container:b"];
        // Interleaved over three scopes; every third one holds the text.
        let n = 3 * 16 * 1024u64;
        for seq in 1..=n {
            let comm = if seq % 3 == 0 { "marker" } else { "t" };
            let mut e = (*in_scope(seq, Detail::Exit { status: 0 }, comm)).clone();
            e.scope = Scope::from_key(scopes[(seq / 3 % 3) as usize]).unwrap();
            lock(&b).push(Arc::new(e));
        }
        let all = |text: &str, limit: u32| {
            let mut seqs = Vec::new();
            let mut seen_scopes = std::collections::BTreeSet::new();
            let mut cursor = String::new();
            let mut pages = 0;
            loop {
                let q = EventQuery::new(&[], None, None, text, &cursor, limit).unwrap();
                let (p, stats) = q.page_live(&b, None, None, 0, "");
                assert!(stats.longest_hold < Duration::from_secs(5));
                pages += 1;
                seqs.extend(p.events.iter().map(|e| e.seq));
                seen_scopes.extend(p.events.iter().map(|e| e.scope.clone()));
                match p.next_cursor {
                    Some(c) => cursor = c,
                    None => return (seqs, seen_scopes.len(), pages),
                }
            }
        };
        let (seqs, nscopes, pages) = all("", 5000);
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "each once, in order");
        assert_eq!((nscopes, pages), (3, 10));
        let (seqs, nscopes, _) = all("MARKER", 1000);
        assert_eq!(seqs, (1..=n / 3).map(|i| 3 * i).collect::<Vec<_>>());
        assert_eq!(nscopes, 3);
        // A scope narrows it.
        let q = EventQuery::new(&[], None, None, "", "", 0).unwrap();
        let (p, _) = q.page_live(
            &b,
            Some(&Scope::from_key("container:a").unwrap()),
            None,
            0,
            "",
        );
        assert!(p.events.iter().all(|e| e.scope == "container:a"));
        assert_eq!(p.events.len(), MAX_PAGE_EVENTS.min(n as usize / 3));
    }

    #[test]
    fn a_stream_backlog_is_read_in_bounded_batches_in_order_up_to_its_last_seq() {
        let b = buffers();
        let scopes = ["host", "container:a", "container:b"];
        let n = 10_000u64;
        let push = |seq: u64| {
            let mut e = (*exit(seq)).clone();
            e.scope = Scope::from_key(scopes[(seq % 3) as usize]).unwrap();
            lock(&b).push(Arc::new(e));
        };
        for seq in 1..=n {
            push(seq);
        }
        let last = lock(&b).last_seq();
        let (mut after, mut got, mut batches) = (0, Vec::new(), 0);
        loop {
            let (batch, done) = backlog_batch(&b, &mut after, last, |e| e.seq % 2 == 0);
            assert!(batch.len() <= DECODE_PER_LOCK);
            got.extend(batch.iter().map(|e| e.seq));
            batches += 1;
            // Recorded meanwhile: not part of the backlog.
            push(n + batches);
            if done {
                break;
            }
        }
        assert_eq!(got, (1..=n / 2).map(|i| 2 * i).collect::<Vec<_>>());
        assert!(
            batches as usize >= n as usize / SCAN_PER_LOCK,
            "{batches} batches"
        );
    }

    #[test]
    fn live_pages_continue_under_concurrent_pushes() {
        const N: u64 = 40_000;
        let b = buffers();
        for seq in 1..=1000 {
            lock(&b).push(exit(seq));
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                for chunk in (1001..=N).collect::<Vec<_>>().chunks(64) {
                    let mut g = lock(&b);
                    for &seq in chunk {
                        g.push(exit(seq));
                    }
                    drop(g);
                    std::thread::yield_now();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let mut all = Vec::new();
            let mut cursor = String::new();
            let mut page = live(&b, &[], "", 700);
            loop {
                // Read before the page: once done, a page without a cursor
                // has seen everything.
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let p = page(&cursor);
                assert!(p.events.len() <= 700);
                all.extend(p.events.iter().map(|e| e.seq));
                if let Some(last) = all.last() {
                    cursor = last.to_string();
                }
                if finished && p.next_cursor.is_none() {
                    return all;
                }
            }
        });
        assert_eq!(
            got,
            (1..=N).collect::<Vec<_>>(),
            "each event once, in order"
        );
    }

    #[test]
    fn live_limit_zero_is_the_cap_and_holds_are_bounded() {
        let b = buffers();
        // More than a page, a whole number of scans.
        let n = (MAX_PAGE_EVENTS / SCAN_PER_LOCK + 2) as u64 * SCAN_PER_LOCK as u64;
        for seq in 1..=n {
            lock(&b).push(exit(seq));
        }
        let q = EventQuery::new(&[], None, None, "", "", 0).unwrap();
        let (p, stats) = q.page_live(&b, Some(&Scope::Host), None, 0, "");
        assert_eq!(p.events.len(), MAX_PAGE_EVENTS);
        assert_eq!(p.next_cursor, Some(MAX_PAGE_EVENTS.to_string()));
        assert_eq!(
            stats.holds as usize,
            (MAX_PAGE_EVENTS + 1).div_ceil(DECODE_PER_LOCK),
            "holds decode a bounded number each: the page and one more"
        );
        assert_eq!(stats.examined, MAX_PAGE_EVENTS as u64 + 1);
        assert_eq!(
            drain(live(&b, &[], "", 0), usize::MAX),
            (1..=n).collect::<Vec<_>>()
        );

        // A rare kind: the whole scope is examined, a bounded part per hold.
        let exec = [pb::EventKind::Exec as i32];
        let q = EventQuery::new(&exec, None, None, "", "", 0).unwrap();
        let (p, stats) = q.page_live(&b, Some(&Scope::Host), None, 0, "");
        assert!(p.events.is_empty() && p.next_cursor.is_none());
        assert_eq!(stats.examined, n);
        assert_eq!(
            u64::from(stats.holds),
            n / SCAN_PER_LOCK as u64,
            "{stats:?}"
        );
    }

    #[test]
    fn text_matches_across_chunks() {
        let b = buffers();
        let n = 5 * TEXT_CHUNK as u64 + 17;
        let marked = |seq: u64| seq.is_multiple_of(997) || seq == TEXT_CHUNK as u64 || seq == n;
        for seq in 1..=n {
            let e = if marked(seq) {
                in_scope(seq, Detail::Exit { status: 0 }, "MaRkEr")
            } else {
                exit(seq)
            };
            lock(&b).push(e);
        }
        let want: Vec<u64> = (1..=n).filter(|&s| marked(s)).collect();
        for limit in [1, 3, 0] {
            assert_eq!(
                drain(live(&b, &[], "marKER", limit), usize::MAX),
                want,
                "limit {limit}"
            );
        }
        // The same, combined with a kind filter; none of another kind.
        let exit_kind = [pb::EventKind::Exit as i32];
        assert_eq!(drain(live(&b, &exit_kind, "MARKER", 2), usize::MAX), want);
        let exec = [pb::EventKind::Exec as i32];
        assert!(drain(live(&b, &exec, "marker", 2), usize::MAX).is_empty());
        // The detail text is searched too: "exit code 0" of every event.
        assert_eq!(
            drain(live(&b, &[], "EXIT CODE 0", 0), usize::MAX).len() as u64,
            n
        );
    }

    fn file(kind: EventKind, f: FileDetail) -> Detail {
        Detail::File {
            kind,
            file: Box::new(f),
        }
    }

    /// One event of every detail (and variants of their text).
    fn samples() -> Vec<Event> {
        let path = |p: &str| FileDetail {
            path: p.into(),
            syscall: "openat",
            ..Default::default()
        };
        let creds = |uid| Creds {
            uid,
            euid: uid,
            cap_effective: 0x1ff,
            ..Default::default()
        };
        let net = |local: &str, remote: Option<&str>, ret| NetDetail {
            protocol: 6,
            local: local.parse().unwrap(),
            remote: remote.map(|r| r.parse().unwrap()),
            backlog: 0,
            ret,
        };
        let container = |change| {
            Detail::Container(Box::new(ContainerDetail {
                id: Arc::from("c0ffee"),
                change,
                source: "cri",
            }))
        };
        let details = vec![
            Detail::Fork { parent_tid: 4 },
            Detail::Exec {
                filename: "/usr/bin/Curl".into(),
                exe: "/usr/bin/curl".into(),
                exe_incomplete: false,
                exe_dev: 0,
                exe_ino: 0,
                argv: vec!["curl".into(), "-H".into(), "it's a test".into(), "".into()],
                old_tid: 0,
                argv_truncated: true,
                argv_unreadable: false,
                filename_truncated: false,
                stdin_socket: false,
                not_utf8: Default::default(),
            },
            Detail::Exit { status: 3 << 8 },
            Detail::Exit { status: 0x80 | 11 },
            file(
                EventKind::FileRename,
                FileDetail {
                    path2: Some("/tmp/b".into()),
                    ..path("/tmp/a")
                },
            ),
            file(EventKind::FileRename, path("/tmp/a")),
            file(
                EventKind::FileLink,
                FileDetail {
                    flags: 1,
                    path2: Some("/tmp/l".into()),
                    ..path("target")
                },
            ),
            file(
                EventKind::FileLink,
                FileDetail {
                    path2: Some("/tmp/h".into()),
                    ..path("/tmp/a")
                },
            ),
            file(
                EventKind::FileChmod,
                FileDetail {
                    old_mode: Some(0o100644),
                    new_mode: Some(0o755),
                    ..path("/tmp/x")
                },
            ),
            file(
                EventKind::FileChmod,
                FileDetail {
                    new_mode: Some(0o4755),
                    ..path("/tmp/x")
                },
            ),
            file(
                EventKind::FileChown,
                FileDetail {
                    uid: Some(0),
                    ..path("/tmp/x")
                },
            ),
            file(
                EventKind::FileTruncate,
                FileDetail {
                    size: Some(12),
                    incomplete: true,
                    ..path("/tmp/Ünïcode")
                },
            ),
            file(EventKind::FileWrite, path("/etc/passwd")),
            Detail::Net {
                kind: EventKind::NetConnect,
                net: net("10.0.0.1:4242", Some("[::1]:80"), -111),
            },
            Detail::Net {
                kind: EventKind::NetListen,
                net: net("[fe80::1]:22", None, 0),
            },
            Detail::Priv(Box::new(PrivDetail {
                syscall: "setuid",
                old: creds(1000),
                new: creds(0),
            })),
            Detail::Account(Box::new(AccountDetail {
                hostname: "h".into(),
                uid: 0,
                user: "root".into(),
                files: vec!["/etc/passwd".into(), "/etc/shadow".into()],
                command: vec!["useradd".into(), "eve smith".into()],
                interactive: true,
                first_boot_ns: 0,
            })),
            Detail::Binary(Box::new(BinaryDetail {
                path: "/tmp/bin".into(),
                reason: BinaryReason::MadeExecutable,
                writer_pid: Some(7),
                writer_exe: None,
            })),
            Detail::Binary(Box::new(BinaryDetail {
                path: "/tmp/bin".into(),
                reason: BinaryReason::Executed,
                writer_pid: None,
                writer_exe: None,
            })),
            Detail::Learned(Box::new(LearnedDetail {
                model: Arc::from("image:nginx"),
                section: "exec",
                item: "/bin/sh".into(),
            })),
            Detail::Audit(Box::new(AuditDetail {
                model: Arc::from("image:nginx"),
                section: "rule",
                rule: "shell".into(),
                severity: Severity::High,
                message: "A Shell".into(),
                item: String::new(),
                incident: 3,
                trigger_seq: 1,
            })),
            container(Change::Started),
            container(Change::Stopped {
                exit_code: Some(137),
                reason: "OOMKilled".into(),
                finished_ns: 0,
            }),
            container(Change::Stopped {
                exit_code: None,
                reason: String::new(),
                finished_ns: 0,
            }),
        ];
        details
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let container = matches!(d, Detail::Container(_)) || i % 3 == 0;
                let mut e = event(i as u64 + 1, 40 + i as u32, d);
                if container {
                    e.scope = Scope::Container(Arc::from("c0ffee"));
                }
                e
            })
            .collect()
    }

    #[test]
    fn domain_haystack_is_the_converted_events() {
        let meta = Arc::new(ContainerMeta {
            id: Arc::from("c0ffee"),
            name: "Web".into(),
            image: "nginx:1".into(),
            ..Default::default()
        });
        let mut reg = ContainerRegistry::new(Duration::from_secs(60));
        reg.running((*meta).clone(), false);
        for e in samples() {
            for (lookup, en) in [
                (None, Enrich::BARE),
                (
                    Some(meta.clone()),
                    Enrich {
                        containers: Some(&reg),
                        ..Enrich::BARE
                    },
                ),
            ] {
                let mut mine = String::new();
                write_haystack(&e, &|_: &str| lookup.clone(), &mut mine);
                assert_eq!(mine, haystack(&event_to_pb(&e, &en)), "{e:?}");
            }
        }
    }
}
