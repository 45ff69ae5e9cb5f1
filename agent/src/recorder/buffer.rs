//! One scope's event buffer: the most recent events, bounded by memory,
//! in two classes. Beyond its capacity the buffer evicts *bulk* kinds
//! (writes, unlinks, connects, accepts, forks, exits, …) before
//! *critical* ones (exec, listen, bind, privilege and account changes,
//! sensitive reads, written binaries, container starts and stops, model
//! items and audits): a reserved share of the capacity
//! ([`EventBuffer::new`]'s `reserve`) holds the newest critical events
//! whatever the flood of bulk ones; beyond that share both classes go
//! oldest first. Every eviction is counted per kind, at the evicted
//! event's own time, so a snapshot can say what is missing from its window.

use std::{borrow::Borrow, collections::VecDeque, sync::Arc};

use crate::{
    event::{scope::Scope, Event, EventKind},
    recorder::{
        codec::{self, Corrupt, Dict, Head, State, Stepped},
        loss::LossLedger,
    },
};

/// Whether a kind is kept before bulk kinds when memory runs short.
pub const fn kept_first(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Exec
            | EventKind::NetListen
            | EventKind::NetBind
            | EventKind::PrivChange
            | EventKind::AccountChange
            | EventKind::SensitiveRead
            | EventKind::BinaryWritten
            | EventKind::ContainerStart
            | EventKind::ContainerStop
            | EventKind::ModelLearned
            | EventKind::Audit
    )
}

/// Bytes an event is charged when held as an `Arc<Event>` (open
/// snapshots, live queues); a buffer holds its compact record instead.
pub fn charged_bytes(ev: &Event) -> usize {
    ev.approx_bytes() + std::mem::size_of::<(Arc<Event>, usize)>()
}

/// Records are appended to chunks of at most this many bytes (less for a
/// small capacity): what a class holds beyond its records is at most its
/// newest chunk's free room and its oldest chunk's evicted part.
const MAX_CHUNK: usize = 16 << 10;
/// A class's first chunk; each next one is twice the last, up to the
/// buffer's chunk size, so a quiet scope holds little.
const FIRST_CHUNK: usize = 256;

/// One class's records, oldest first, in chunks.
#[derive(Default, Clone)]
struct Class {
    chunks: VecDeque<Vec<u8>>,
    /// Where the oldest record starts in the first chunk.
    head: usize,
    len: usize,
    /// Capacity of the chunks held.
    bytes: usize,
    /// The state the oldest record is a difference from.
    first: State,
    /// The newest record's state.
    last: State,
    /// The oldest record's head.
    front: Option<Head>,
    /// The state before each chunk's first record (the first chunk's is
    /// `first` once its oldest records are gone): where a read after a
    /// seq starts, found by halving.
    marks: VecDeque<State>,
    /// A record came with a seq below its predecessor's: reads after a seq
    /// start at the oldest record.
    unordered: bool,
}

impl Class {
    /// Appends a record; `before` is the state before it.
    fn append(&mut self, rec: &[u8], max_chunk: usize, before: &State) {
        let n = codec::framed_len(rec.len());
        if self
            .chunks
            .back()
            .is_none_or(|c| c.capacity() - c.len() < n)
        {
            let size = self
                .chunks
                .back()
                .map_or(FIRST_CHUNK, |c| c.capacity().saturating_mul(2))
                .min(max_chunk)
                .max(n);
            let c = Vec::with_capacity(size);
            self.bytes += c.capacity();
            self.chunks.push_back(c);
            self.marks.push_back(before.clone());
        }
        if let Some(c) = self.chunks.back_mut() {
            codec::frame_into(c, rec);
        }
        self.len += 1;
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.front.map(|h| h.seq)
    }

    /// The oldest record's head, read after `first`.
    fn read_front(&self) -> Result<Option<Head>, Corrupt> {
        if self.len == 0 {
            return Ok(None);
        }
        let c = self.chunks.front().ok_or(Corrupt)?;
        let (rec, _) = codec::frame(c, self.head)?;
        codec::peek_head(rec, &self.first).map(Some)
    }

    /// Takes the oldest record out, releasing its dictionary references.
    fn pop_front(&mut self, dict: &mut Dict) -> Result<Option<Head>, Corrupt> {
        if self.len == 0 {
            return Ok(None);
        }
        let c = self.chunks.front().ok_or(Corrupt)?;
        let (rec, end) = codec::frame(c, self.head)?;
        let s = codec::step(rec, &mut self.first)?;
        let head = s.head;
        codec::release(s, &self.first, dict)?;
        self.len -= 1;
        self.head = end;
        if end >= c.len() {
            if let Some(c) = self.chunks.pop_front() {
                self.bytes -= c.capacity();
            }
            self.marks.pop_front();
            self.head = 0;
        }
        self.front = self.read_front()?;
        Ok(Some(head))
    }

    /// Drops every record (after a record did not decode: a bug, logged).
    fn clear(&mut self) {
        self.chunks.clear();
        self.marks.clear();
        self.head = 0;
        self.len = 0;
        self.bytes = 0;
        self.first = self.last.clone();
        self.front = None;
    }
}

pub struct EventBuffer {
    scope: Scope,
    bulk: Class,
    critical: Class,
    dict: Dict,
    /// The record being written.
    scratch: Vec<u8>,
    capacity: usize,
    /// Bytes of critical events protected from bulk pressure.
    reserve: usize,
    /// Largest chunk.
    chunk: usize,
    evicted: u64,
    /// Evictions by kind, at the evicted events' time.
    losses: LossLedger,
}

impl std::fmt::Debug for EventBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBuffer")
            .field("scope", &self.scope)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A buffer's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct BufferStats {
    pub events: u64,
    /// Memory held: records, their chunks' free room, the dictionary.
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub evicted: u64,
    /// Of `events` and `bytes`, the critical class (its chunks).
    pub critical_events: u64,
    pub critical_bytes: u64,
}

impl EventBuffer {
    /// A buffer of `scope`'s events, of `capacity_bytes`, of which
    /// `reserve_bytes` hold critical kinds against bulk pressure.
    pub fn new(scope: Scope, capacity_bytes: usize, reserve_bytes: usize) -> Self {
        EventBuffer {
            scope,
            bulk: Class::default(),
            critical: Class::default(),
            dict: Dict::default(),
            scratch: Vec::new(),
            capacity: capacity_bytes,
            reserve: reserve_bytes.min(capacity_bytes),
            chunk: (capacity_bytes / 128).clamp(1, MAX_CHUNK),
            evicted: 0,
            losses: LossLedger::default(),
        }
    }

    /// A copy of the records, their dictionary and eviction counts, to
    /// be read without the buffers' lock: copying is a few memcpys where
    /// decoding a whole buffer takes a hundred milliseconds (a snapshot's
    /// freeze). The copy is transient; it is not charged to the budget.
    pub fn copy(&self) -> EventBuffer {
        EventBuffer {
            scope: self.scope.clone(),
            bulk: self.bulk.clone(),
            critical: self.critical.clone(),
            dict: self.dict.clone(),
            scratch: Vec::new(),
            capacity: self.capacity,
            reserve: self.reserve,
            chunk: self.chunk,
            evicted: self.evicted,
            losses: self.losses.clone(),
        }
    }

    /// Memory held: both classes' chunks, the dictionary, and the
    /// bookkeeping around them.
    pub fn bytes(&self) -> usize {
        self.bulk.bytes
            + self.critical.bytes
            + (self.bulk.chunks.capacity() + self.critical.chunks.capacity())
                * std::mem::size_of::<Vec<u8>>()
            + (self.bulk.marks.capacity() + self.critical.marks.capacity())
                * std::mem::size_of::<State>()
            + self.dict.bytes()
            + self.scratch.capacity()
    }

    pub fn len(&self) -> usize {
        self.bulk.len + self.critical.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries of the dictionary (images, units, directories).
    pub fn dict_entries(&self) -> (usize, usize, usize) {
        self.dict.entries()
    }

    /// Bytes of the dictionary.
    pub fn dict_bytes(&self) -> usize {
        self.dict.bytes()
    }

    /// Adds an event (encoded: the buffer keeps no reference to it);
    /// returns the bytes it added net of what it evicted.
    pub fn push<E: Borrow<Event>>(&mut self, ev: E) -> isize {
        let ev = ev.borrow();
        let before = self.bytes();
        let class = if kept_first(ev.kind()) {
            &mut self.critical
        } else {
            &mut self.bulk
        };
        let prev = class.last.clone();
        codec::encode(ev, &mut self.dict, &mut class.last, &mut self.scratch);
        class.append(&self.scratch, self.chunk, &prev);
        if class.len > 1 && ev.seq <= prev.seq {
            class.unordered = true;
        }
        if class.front.is_none() {
            class.front = Some(Head {
                kind: ev.kind(),
                seq: ev.seq,
                time_ns: ev.time_ns,
            });
        }
        while self.bytes() > self.capacity {
            if self.evict_one().is_none() {
                break;
            }
        }
        self.bytes() as isize - before as isize
    }

    /// Evicts one event by the retention rule: bulk first while the
    /// critical class is within its reserve, else the oldest of both.
    /// Returns the bytes that freed (0 until its chunk empties), or `None`
    /// when empty.
    pub fn evict_one(&mut self) -> Option<usize> {
        let from_critical = match (self.bulk.oldest_seq(), self.critical.oldest_seq()) {
            (None, None) => return None,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(b), Some(c)) => self.critical.bytes > self.reserve && c < b,
        };
        let before = self.bytes();
        let class = if from_critical {
            &mut self.critical
        } else {
            &mut self.bulk
        };
        match class.pop_front(&mut self.dict) {
            Ok(Some(h)) => {
                self.evicted += 1;
                self.losses.note(h.kind, h.time_ns, 1);
            }
            Ok(None) => return None,
            Err(Corrupt) => {
                tracing::error!(scope = %self.scope.key(), "a buffered record did not decode: the class is dropped");
                class.clear();
            }
        }
        if self.is_empty() {
            // Nothing refers to the dictionary any more: its tables go too,
            // and the bookkeeping around the records.
            self.dict = Dict::default();
            self.bulk.chunks = VecDeque::new();
            self.critical.chunks = VecDeque::new();
            self.bulk.marks = VecDeque::new();
            self.critical.marks = VecDeque::new();
            self.scratch = Vec::new();
        }
        Some(before.saturating_sub(self.bytes()))
    }

    /// Events oldest first (by seq), both classes merged, decoded.
    pub fn iter(&self) -> Select<'_, impl FnMut(&Head) -> bool> {
        self.select(|_| true)
    }

    /// Events with a seq above `after`, oldest first (skipped ones are not
    /// decoded).
    pub fn iter_after(&self, after: u64) -> Select<'_, impl FnMut(&Head) -> bool> {
        Select {
            buf: self,
            forks: Default::default(),
            a: Cursor::after(&self.bulk, after),
            b: Cursor::after(&self.critical, after),
            keep: move |h: &Head| h.seq > after,
        }
    }

    /// The events whose head `keep` accepts, oldest first; only those are
    /// decoded.
    pub fn select<F: FnMut(&Head) -> bool>(&self, keep: F) -> Select<'_, F> {
        Select {
            buf: self,
            forks: Default::default(),
            a: Cursor::new(&self.bulk),
            b: Cursor::new(&self.critical),
            keep,
        }
    }

    /// Every event with a seq above `after`, oldest first: its seq, and the
    /// event when `keep` accepts its head (the others are not decoded).
    pub fn scan_after<F: FnMut(&Head) -> bool>(&self, after: u64, keep: F) -> Scan<'_, F> {
        Scan {
            buf: self,
            forks: Default::default(),
            a: Cursor::after(&self.bulk, after),
            b: Cursor::after(&self.critical, after),
            after,
            keep,
        }
    }

    /// The heads of the events `keep` accepts, oldest first, with what
    /// each would be charged as an `Arc<Event>` (sized from the records).
    pub fn sizes<F: FnMut(&Head) -> bool>(&self, keep: F) -> Sizes<'_, F> {
        Sizes {
            buf: self,
            a: Cursor::new(&self.bulk),
            b: Cursor::new(&self.critical),
            keep,
        }
    }

    /// The newest event's seq, if any.
    pub fn last_seq(&self) -> Option<u64> {
        let b = (self.bulk.len > 0).then_some(self.bulk.last.seq);
        let c = (self.critical.len > 0).then_some(self.critical.last.seq);
        b.max(c)
    }

    /// Wall-clock ns of the oldest event still held of each class (bulk,
    /// critical): before it, that class has lost events if it evicted any.
    pub fn oldest_times(&self) -> (Option<u64>, Option<u64>) {
        (
            self.bulk.front.map(|h| h.time_ns),
            self.critical.front.map(|h| h.time_ns),
        )
    }

    /// Evictions by kind and time.
    pub fn losses(&self) -> &LossLedger {
        &self.losses
    }

    /// Forgets eviction counts of seconds before `before_ns` (no snapshot
    /// window can reach them any more).
    pub fn forget_losses_before(&mut self, before_ns: u64) {
        self.losses.forget_before(before_ns);
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            events: self.len() as u64,
            bytes: self.bytes() as u64,
            capacity_bytes: self.capacity as u64,
            evicted: self.evicted,
            critical_events: self.critical.len as u64,
            critical_bytes: self.critical.bytes as u64,
        }
    }
}

/// Reads one class's records in order.
struct Cursor<'a> {
    class: &'a Class,
    chunk: usize,
    off: usize,
    st: State,
    left: usize,
    /// The next record's seq, once read.
    peeked: Option<u64>,
}

impl<'a> Cursor<'a> {
    fn new(class: &'a Class) -> Self {
        Cursor {
            class,
            chunk: 0,
            off: class.head,
            st: class.first.clone(),
            left: class.len,
            peeked: None,
        }
    }

    /// A cursor at the chunk holding the first record with a seq above
    /// `after` (or before it): the chunks before are not read.
    fn after(class: &'a Class, after: u64) -> Self {
        let mut c = Cursor::new(class);
        if class.unordered || class.chunks.len() < 2 {
            return c;
        }
        let first_seq = |i: usize| -> Option<u64> {
            let (rec, _) = codec::frame(class.chunks.get(i)?, 0).ok()?;
            codec::peek_head(rec, class.marks.get(i)?)
                .ok()
                .map(|h| h.seq)
        };
        // The last chunk (past the first) whose first record is at or
        // before `after`.
        let (mut lo, mut hi) = (1, class.chunks.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match first_seq(mid) {
                Some(s) if s <= after => lo = mid + 1,
                Some(_) => hi = mid,
                None => return c,
            }
        }
        let i = lo - 1;
        if i >= 1 {
            if let Some(st) = class.marks.get(i) {
                c.chunk = i;
                c.off = 0;
                c.st = st.clone();
                // (Only a bound from here: the count is for size hints.)
                c.left = usize::MAX;
            }
        }
        c
    }

    /// The next record and where the one after it starts.
    fn current(&mut self) -> Result<Option<(&'a [u8], usize)>, Corrupt> {
        if self.left == 0 {
            return Ok(None);
        }
        loop {
            let Some(c) = self.class.chunks.get(self.chunk) else {
                return Ok(None);
            };
            if self.off < c.len() {
                return codec::frame(c, self.off).map(Some);
            }
            self.chunk += 1;
            self.off = 0;
        }
    }

    fn peek(&mut self) -> Option<u64> {
        if self.peeked.is_none() {
            match self.current().and_then(|r| {
                r.map(|(rec, _)| codec::peek_head(rec, &self.st))
                    .transpose()
            }) {
                Ok(h) => self.peeked = h.map(|h| h.seq),
                Err(Corrupt) => self.fail(),
            }
        }
        self.peeked
    }

    fn fail(&mut self) {
        tracing::error!("a buffered record did not decode: the rest of its class is skipped");
        self.left = 0;
        self.peeked = None;
    }
}

/// The next record of the two classes in seq order, read up to its
/// detail; whether it came from `a`.
fn next_merged<'a>(a: &mut Cursor<'a>, b: &mut Cursor<'a>) -> Option<(bool, Stepped<'a>)> {
    loop {
        let from_a = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(x), Some(y)) => x < y,
        };
        let cur = if from_a { &mut *a } else { &mut *b };
        cur.peeked = None;
        let (rec, end) = match cur.current() {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(Corrupt) => {
                cur.fail();
                continue;
            }
        };
        match codec::step(rec, &mut cur.st) {
            Ok(s) => {
                cur.off = end;
                cur.left = cur.left.saturating_sub(1);
                return Some((from_a, s));
            }
            Err(Corrupt) => cur.fail(),
        }
    }
}

/// A buffer's events, both classes merged in seq order, decoded when
/// `keep` accepts their head.
pub struct Select<'a, F> {
    buf: &'a EventBuffer,
    forks: codec::ForkCopies,
    a: Cursor<'a>,
    b: Cursor<'a>,
    keep: F,
}

impl<F: FnMut(&Head) -> bool> Iterator for Select<'_, F> {
    type Item = Arc<Event>;

    fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            let (from_a, s) = next_merged(&mut self.a, &mut self.b)?;
            if !(self.keep)(&s.head) {
                continue;
            }
            let cur = if from_a { &mut self.a } else { &mut self.b };
            match codec::decode(s, &cur.st, &self.buf.dict, &self.buf.scope, &mut self.forks) {
                Ok(ev) => return Some(Arc::new(ev)),
                Err(Corrupt) => cur.fail(),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.a.left.saturating_add(self.b.left)))
    }
}

/// Every event after a seq, in seq order: its seq, and the event decoded
/// when `keep` accepts its head (a scan that decides on seq, kind and time
/// decodes only what it takes).
pub struct Scan<'a, F> {
    buf: &'a EventBuffer,
    forks: codec::ForkCopies,
    a: Cursor<'a>,
    b: Cursor<'a>,
    after: u64,
    keep: F,
}

impl<F: FnMut(&Head) -> bool> Iterator for Scan<'_, F> {
    type Item = (u64, Option<Arc<Event>>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (from_a, s) = next_merged(&mut self.a, &mut self.b)?;
            let seq = s.head.seq;
            if seq <= self.after {
                continue;
            }
            if !(self.keep)(&s.head) {
                return Some((seq, None));
            }
            let cur = if from_a { &mut self.a } else { &mut self.b };
            match codec::decode(s, &cur.st, &self.buf.dict, &self.buf.scope, &mut self.forks) {
                Ok(ev) => return Some((seq, Some(Arc::new(ev)))),
                Err(Corrupt) => cur.fail(),
            }
        }
    }
}

/// The heads of a buffer's events that `keep` accepts, in seq order, with
/// what each is charged as an `Arc<Event>` ([`charged_bytes`]), mostly
/// without decoding them.
pub struct Sizes<'a, F> {
    buf: &'a EventBuffer,
    a: Cursor<'a>,
    b: Cursor<'a>,
    keep: F,
}

impl<F: FnMut(&Head) -> bool> Iterator for Sizes<'_, F> {
    type Item = (Head, usize);

    fn next(&mut self) -> Option<(Head, usize)> {
        loop {
            let (from_a, s) = next_merged(&mut self.a, &mut self.b)?;
            if !(self.keep)(&s.head) {
                continue;
            }
            let head = s.head;
            let cur = if from_a { &mut self.a } else { &mut self.b };
            match codec::charged(s, &cur.st, &self.buf.dict, &self.buf.scope) {
                Ok(n) => return Some((head, n)),
                Err(Corrupt) => cur.fail(),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::event::test_support::event;
    use crate::event::{
        container::Change, lineage::Image, AccountDetail, AuditDetail, BinaryDetail, BinaryReason,
        Comm, ContainerDetail, Creds, Detail, FileDetail, LearnedDetail, NetDetail, NotUtf8,
        PrivDetail, Severity,
    };

    fn image() -> Arc<Image> {
        Image::root(7, 0, Arc::from("/bin/t"), Arc::from(vec!["t".to_string()]))
    }

    /// An event of one shared image (as a process's events are).
    fn with(seq: u64, img: &Arc<Image>, detail: Detail) -> Arc<Event> {
        let mut e = event(seq, img.pid, detail);
        e.image = img.clone();
        Arc::new(e)
    }

    fn exit(seq: u64, img: &Arc<Image>) -> Arc<Event> {
        with(seq, img, Detail::Exit { status: 0 })
    }

    fn listen(seq: u64, img: &Arc<Image>) -> Arc<Event> {
        with(seq, img, crate::event::test_support::listen_detail())
    }

    fn write(seq: u64, img: &Arc<Image>, path: String) -> Arc<Event> {
        with(
            seq,
            img,
            Detail::File {
                kind: EventKind::FileWrite,
                file: Box::new(FileDetail {
                    path,
                    flags: 0o101,
                    mode: 0o100644,
                    syscall: "openat",
                    ino: 1234,
                    ..FileDetail::default()
                }),
            },
        )
    }

    #[test]
    fn evicts_oldest_beyond_capacity_and_counts() {
        let img = image();
        let cap = 64 << 10;
        let mut b = EventBuffer::new(Scope::Host, cap, 0);
        let n = 20_000;
        for seq in 1..=n {
            b.push(exit(seq, &img));
            assert!(b.bytes() <= cap, "within capacity after every push");
        }
        let st = b.stats();
        assert!(st.evicted > 0 && st.events > 1000, "{st:?}");
        assert_eq!(st.events + st.evicted, n);
        let seqs: Vec<u64> = b.iter().map(|e| e.seq).collect();
        let want: Vec<u64> = (st.evicted + 1..=n).collect();
        assert_eq!(seqs, want, "the newest kept, in order");
        // Reads after a seq start at its chunk.
        assert!(b.bulk.chunks.len() > 10);
        for after in [0, st.evicted, st.evicted + 1, n - 1000, n - 1, n] {
            let got: Vec<u64> = b.iter_after(after).map(|e| e.seq).collect();
            let want: Vec<u64> = (after.max(st.evicted) + 1..=n).collect();
            assert_eq!(got, want, "after {after}");
            let scanned: Vec<u64> = b.scan_after(after, |_| false).map(|(s, _)| s).collect();
            assert_eq!(scanned, want, "scanned after {after}");
        }
        assert_eq!(b.last_seq(), Some(n));
        let lost = b.losses().within(0, u64::MAX);
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].kind, lost[0].lost), (EventKind::Exit, st.evicted));
        assert_eq!(
            b.oldest_times(),
            (Some((st.evicted + 1) * 1000), None),
            "the oldest kept"
        );
    }

    #[test]
    fn a_bulk_flood_never_evicts_the_critical_reserve() {
        let img = image();
        let cap = 64 << 10;
        let mut b = EventBuffer::new(Scope::Host, cap, 16 << 10);
        b.push(listen(1, &img));
        b.push(listen(2, &img));
        for seq in 3..100_000 {
            b.push(exit(seq, &img));
        }
        b.push(listen(100_000, &img));
        let crit_seqs: Vec<u64> = b
            .iter()
            .filter(|e| kept_first(e.kind()))
            .map(|e| e.seq)
            .collect();
        assert_eq!(crit_seqs, [1, 2, 100_000], "within the reserve: all kept");
        assert!(b.bytes() <= cap);
        // Merged in seq order.
        let all: Vec<u64> = b.iter().map(|e| e.seq).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(all.first(), Some(&1));
        assert!(all.len() > 1000);
        // Beyond the reserve, old critical events age out like bulk ones.
        for seq in 200_000..260_000 {
            b.push(listen(seq, &img));
        }
        let st = b.stats();
        assert!(st.critical_bytes as usize <= cap);
        assert!(!b.iter().any(|e| e.seq == 1), "oldest critical aged out");
        assert!(b
            .losses()
            .within(0, u64::MAX)
            .iter()
            .any(|l| l.kind == EventKind::NetListen));
    }

    /// Every kind of detail, hostile strings and extreme values.
    fn variety() -> Vec<Event> {
        let root = Image::root(
            1,
            0,
            Arc::from("/sbin/init"),
            Arc::from(vec!["/sbin/init".to_string()]),
        );
        let shell = Image::child_of(
            Some(&root),
            u32::MAX,
            u32::MAX,
            Arc::from("/bin/\\xff\nsh"),
            Arc::from(vec![
                "sh".to_string(),
                "-c".into(),
                "\u{0}\u{1b}[31m é".into(),
            ]),
        );
        let fork = Image::forked(&shell, 77, 1000);
        let long: String = (0..200).map(|i| format!("/d{i:03}")).collect::<String>() + "/file";
        let creds = Creds {
            uid: u32::MAX,
            euid: 0,
            suid: 1,
            fsuid: 2,
            gid: 3,
            egid: 4,
            sgid: 5,
            fsgid: u32::MAX,
            cap_effective: u64::MAX,
            cap_permitted: 0x1ff_ffff_ffff,
        };
        let details = vec![
            Detail::Fork {
                parent_tid: u32::MAX,
            },
            Detail::Exec {
                filename: "./relative".into(),
                exe: "/bin/\\xff\nsh".into(),
                exe_incomplete: true,
                exe_dev: u32::MAX,
                exe_ino: u64::MAX,
                argv: vec!["sh".into(), "-c".into(), "\u{0}\u{1b}[31m é".into()],
                old_tid: 5,
                argv_truncated: true,
                argv_unreadable: false,
                filename_truncated: true,
                stdin_socket: true,
                not_utf8: NotUtf8::EXE.with(NotUtf8::ARGV),
            },
            Detail::Exec {
                filename: "/usr/bin/x".into(),
                exe: "/usr/bin/x".into(),
                exe_incomplete: false,
                exe_dev: 0,
                exe_ino: 0,
                argv: vec![],
                old_tid: 0,
                argv_truncated: false,
                argv_unreadable: true,
                filename_truncated: false,
                stdin_socket: false,
                not_utf8: NotUtf8::NONE,
            },
            Detail::Exit { status: u32::MAX },
            Detail::File {
                kind: EventKind::FileRename,
                file: Box::new(FileDetail {
                    path: long.clone(),
                    path2: Some("no-slash \\x80 name".into()),
                    incomplete: true,
                    flags: u32::MAX,
                    mode: 0o100755,
                    new_mode: Some(0),
                    old_mode: Some(u32::MAX),
                    uid: Some(0),
                    gid: Some(u32::MAX),
                    size: Some(u64::MAX),
                    dev: u32::MAX,
                    ino: u64::MAX,
                    syscall: "renameat2",
                    not_utf8: NotUtf8::PATH2,
                }),
            },
            Detail::File {
                kind: EventKind::SensitiveRead,
                file: Box::new(FileDetail {
                    path: "/".into(),
                    syscall: "openat",
                    ..FileDetail::default()
                }),
            },
            Detail::File {
                kind: EventKind::FileUnlink,
                file: Box::new(FileDetail {
                    path: String::new(),
                    path2: Some("/tmp/".into()),
                    syscall: "",
                    ..FileDetail::default()
                }),
            },
            Detail::Net {
                kind: EventKind::NetConnect,
                net: NetDetail {
                    protocol: u16::MAX,
                    local: "[fe80::1%4]:65535".parse().unwrap(),
                    remote: Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                        "2001:db8::2".parse().unwrap(),
                        1,
                        u32::MAX,
                        u32::MAX,
                    ))),
                    backlog: u32::MAX,
                    ret: i32::MIN,
                },
            },
            Detail::Net {
                kind: EventKind::NetAccept,
                net: NetDetail {
                    protocol: 6,
                    local: "10.0.0.1:80".parse().unwrap(),
                    remote: Some("10.0.0.2:40000".parse().unwrap()),
                    backlog: 0,
                    ret: i32::MAX,
                },
            },
            crate::event::test_support::listen_detail(),
            Detail::Priv(Box::new(PrivDetail {
                syscall: "setresuid",
                old: Creds::default(),
                new: creds,
            })),
            Detail::Account(Box::new(AccountDetail {
                hostname: "h\u{0}st".into(),
                uid: u32::MAX,
                user: "r\\xfft".into(),
                files: vec!["/etc/passwd".into(), "/etc/shadow".into()],
                command: vec!["useradd".into(), "-m".into(), "x y".into()],
                interactive: true,
                first_boot_ns: u64::MAX,
            })),
            Detail::Binary(Box::new(BinaryDetail {
                path: "/tmp/x".into(),
                reason: BinaryReason::Executed,
                writer_pid: Some(u32::MAX),
                writer_exe: Some("/usr/bin/cc".into()),
            })),
            Detail::Binary(Box::new(BinaryDetail {
                path: String::new(),
                reason: BinaryReason::MadeExecutable,
                writer_pid: None,
                writer_exe: None,
            })),
            Detail::Container(Box::new(ContainerDetail {
                id: Arc::from("abc"),
                change: Change::Started,
                source: "cri",
            })),
            Detail::Container(Box::new(ContainerDetail {
                id: Arc::from("abc"),
                change: Change::Stopped {
                    exit_code: Some(i32::MIN),
                    reason: "OOMKilled".into(),
                    finished_ns: u64::MAX,
                },
                source: "cgroup",
            })),
            Detail::Container(Box::new(ContainerDetail {
                id: Arc::from(""),
                change: Change::Stopped {
                    exit_code: None,
                    reason: String::new(),
                    finished_ns: 0,
                },
                source: "docker",
            })),
            Detail::Learned(Box::new(LearnedDetail {
                model: Arc::from("image:sha256:00"),
                section: "exec",
                item: "/bin/sh -> /bin/\\xffx".into(),
            })),
            Detail::Audit(Box::new(AuditDetail {
                model: Arc::from("service:sshd.service"),
                section: "rule",
                rule: "shell-in-container".into(),
                severity: Severity::Critical,
                message: "a\nb".into(),
                item: String::new(),
                incident: u64::MAX,
                trigger_seq: 3,
            })),
        ];
        let unit: Arc<str> = Arc::from("session-3.scope");
        let mut out = Vec::new();
        let mut seq = 1u64;
        for (i, d) in details.into_iter().enumerate() {
            let img = [&root, &shell, &fork][i % 3];
            let mut e = event(1, img.pid, d);
            e.seq = seq;
            // Jumps in every state field, both ways.
            e.time_ns = if i % 2 == 0 {
                u64::MAX - i as u64
            } else {
                i as u64
            };
            e.record.boot_ns = if i % 4 == 1 { u64::MAX } else { 3 };
            e.record.cpu = if i % 2 == 0 { u32::MAX } else { 0 };
            let t = &mut e.record.task;
            t.tid = if i % 3 == 0 { 0 } else { u32::MAX };
            t.ppid = u32::MAX - i as u32;
            t.uid = if i % 2 == 0 { u32::MAX } else { 0 };
            t.gid = i as u32;
            t.loginuid = [None, Some(u32::MAX), Some(0)][i % 3];
            t.cgroup_id = if i % 2 == 0 { u64::MAX } else { 1 };
            t.start_ns = if i % 3 == 0 { u64::MAX } else { 0 };
            t.comm = if i % 2 == 0 {
                Comm::from_kernel(&[0xff, 0xfe, b'a', 0, b'b'])
            } else {
                Comm::new("exactly-16-bytes")
            };
            t.has_tty = i % 2 == 0;
            e.image = img.clone();
            e.unit = (i % 3 != 2).then(|| unit.clone());
            out.push(e);
            seq = if i == 5 { u64::MAX - 100 } else { seq + 1 };
        }
        out
    }

    #[test]
    fn every_detail_round_trips_with_its_lineage() {
        let evs = variety();
        for critical_reserve in [0, 1 << 20] {
            let scope = Scope::Container(Arc::from("c1"));
            let mut b = EventBuffer::new(scope.clone(), 1 << 20, critical_reserve);
            for e in &evs {
                let mut e = e.clone();
                e.scope = scope.clone();
                b.push(&e);
            }
            let back: Vec<Arc<Event>> = b.iter().collect();
            assert_eq!(back.len(), evs.len());
            for (got, want) in back.iter().zip(&evs) {
                let mut want = want.clone();
                want.scope = scope.clone();
                assert_eq!(**got, want, "seq {}", want.seq);
                if want.image.inherited {
                    // A fork's copy is made again, of the same parent.
                    assert!(Arc::ptr_eq(
                        got.image.parent.as_ref().unwrap(),
                        want.image.parent.as_ref().unwrap()
                    ));
                } else {
                    assert!(Arc::ptr_eq(&got.image, &want.image), "the same lineage");
                }
            }
            // Sized from the records as decoded events are charged.
            let sizes: Vec<usize> = b.sizes(|_| true).map(|(_, n)| n).collect();
            let want: Vec<usize> = back.iter().map(|e| charged_bytes(e)).collect();
            assert_eq!(sizes, want);
            // Reading after a cursor skips without decoding.
            let after: Vec<u64> = b.iter_after(evs[3].seq).map(|e| e.seq).collect();
            assert_eq!(after, evs[4..].iter().map(|e| e.seq).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_long_command_line_and_path_round_trip() {
        let argv: Vec<String> = (0..500).map(|i| format!("arg-{i}-\\x{i:02x}")).collect();
        let img = Image::root(3, 0, Arc::from("/x"), Arc::from(argv.clone()));
        let mut e = (*with(
            1,
            &img,
            crate::event::test_support::exec_detail("/y", "/y", &[]),
        ))
        .clone();
        if let Detail::Exec { argv: a, .. } = &mut e.record.detail {
            *a = argv.iter().rev().cloned().collect();
        }
        let path = "/".to_string() + &"a/".repeat(2048) + "f";
        let w = write(2, &img, path.clone());
        let mut b = EventBuffer::new(Scope::Host, 1 << 20, 0);
        b.push(&e);
        b.push(w.clone());
        let back: Vec<Arc<Event>> = b.iter().collect();
        assert_eq!(*back[0], e);
        assert_eq!(*back[1], *w);
    }

    #[test]
    fn the_dictionary_lets_go_of_what_evicted_events_used() {
        let unit: Arc<str> = Arc::from("cron.service");
        let mut b = EventBuffer::new(Scope::Host, 1 << 20, 0);
        let mut images = Vec::new();
        for i in 0..100u64 {
            let parent = image();
            let img = Image::forked(&parent, 100 + i as u32, 0);
            let mut e = (*write(i + 1, &img, format!("/var/tmp/d{i}/f"))).clone();
            e.unit = Some(unit.clone());
            b.push(e);
            images.push((parent, img));
        }
        // Each fork's parent (the fork copies are not kept), one unit, each
        // directory.
        assert_eq!(b.dict_entries(), (100, 1, 100));
        assert!(images.iter().all(|(p, _)| Arc::strong_count(p) == 3));
        for _ in 0..50 {
            assert!(b.evict_one().is_some());
        }
        assert_eq!(b.dict_entries(), (50, 1, 50), "the evicted half let go");
        assert!(images[..50]
            .iter()
            .all(|(p, i)| Arc::strong_count(i) == 1 && Arc::strong_count(p) == 2));
        let dict_half = b.dict_bytes();
        while b.evict_one().is_some() {}
        assert_eq!(b.dict_entries(), (0, 0, 0));
        assert_eq!(Arc::strong_count(&unit), 1);
        assert!(images
            .iter()
            .all(|(p, i)| Arc::strong_count(i) == 1 && Arc::strong_count(p) == 2));
        assert_eq!(b.bytes(), 0, "an empty buffer holds nothing");
        assert!(dict_half > 0);
        assert_eq!(b.stats().evicted, 100);
    }

    #[test]
    fn its_memory_is_charged_and_small() {
        let img = image();
        let mut b = EventBuffer::new(Scope::Host, 16 << 20, 0);
        let n = 50_000u64;
        for seq in 1..=n {
            b.push(write(
                seq,
                &img,
                format!("/var/log/app/worker-{}.log", seq % 16),
            ));
        }
        let st = b.stats();
        assert_eq!(st.events, n);
        let per = st.bytes as f64 / n as f64;
        assert!(per < 40.0, "{per} bytes per event");
        // The dictionary's memory is in the figure.
        assert!(st.bytes as usize >= b.dict_bytes() + b.bulk.bytes);
    }
}
