//! The compact form of a buffered event, and the dictionary its records
//! refer to.
//!
//! A scope buffer holds records, not `Event`s: an `Arc<Event>` with its
//! boxed detail and strings took 336–391 bytes; a record takes a few tens.
//! Like the stored snapshots ([`crate::store::compact`]), what repeats is
//! kept once and referred to by number: program images (the process's
//! executable and command line, with their ancestry: the `Arc<Image>`
//! itself, so an event read back shows the very lineage it was recorded
//! with), systemd units, and the directories of paths. Unlike them the
//! buffer is written per event, so there is no protobuf and no
//! compression: varints, and fields given as the difference from the
//! previous record of the same class (seq, times, and the task: a burst of
//! one process's events repeats none of its fields).
//!
//! Every dictionary entry counts the records (and, for images, the child
//! images) that refer to it, and goes when the last one is evicted; its
//! memory — the entry, its index slot, the strings it keeps alive — is
//! charged to the buffer ([`Dict::bytes`]).
//!
//! A record is `len` (varint) then:
//! `kind` (u8), `seq`, `time_ns` and `time_ns - boot_ns` as zigzag
//! differences from the previous record, `cpu`, a mask of the task's fields
//! that changed (then each changed field), `tid - pid` (zigzag), and the
//! detail (see [`encode`]).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::Arc,
};

use crate::event::scope::Scope;
use crate::event::{
    container::Change, lineage::Image, AccountDetail, AuditDetail, BinaryDetail, BinaryReason,
    Comm, ContainerDetail, Creds, Detail, Event, EventKind, FileDetail, LearnedDetail, NetDetail,
    NotUtf8, PrivDetail, Record, Severity, Task,
};

/// A record that does not decode: a bug of this module, never data.
#[derive(Debug, thiserror::Error)]
#[error("a buffered record does not decode")]
pub struct Corrupt;

// ---------------------------------------------------------------- varints

#[inline]
fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, ((v << 1) ^ (v >> 63)) as u64);
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Bytes a varint of `v` takes.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a record's fields in order.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn u(&mut self) -> Result<u64, Corrupt> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = *self.buf.get(self.pos).ok_or(Corrupt)?;
            self.pos += 1;
            if shift > 63 {
                return Err(Corrupt);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    fn i(&mut self) -> Result<i64, Corrupt> {
        let v = self.u()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, Corrupt> {
        u32::try_from(self.u()?).map_err(|_| Corrupt)
    }

    #[inline]
    pub(crate) fn byte(&mut self) -> Result<u8, Corrupt> {
        let b = *self.buf.get(self.pos).ok_or(Corrupt)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.pos.checked_add(n).ok_or(Corrupt)?;
        let s = self.buf.get(self.pos..end).ok_or(Corrupt)?;
        self.pos = end;
        Ok(s)
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = usize::try_from(self.u()?).map_err(|_| Corrupt)?;
        self.take(n)
    }

    #[inline]
    fn str(&mut self) -> Result<&'a str, Corrupt> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Corrupt)
    }

    fn string(&mut self) -> Result<String, Corrupt> {
        self.str().map(str::to_owned)
    }

    fn skip_bytes(&mut self) -> Result<(), Corrupt> {
        self.bytes().map(|_| ())
    }
}

// ----------------------------------------------------------------- hashing

/// A fast, non-cryptographic hasher (FxHash's multiply–rotate) for the
/// dictionary's indexes: their keys are pointers and paths the buffer
/// already holds, so flooding one index costs the flooder its own
/// buffer's memory and nothing else.
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl Fx {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = self.0.wrapping_add(w).wrapping_mul(FX_K);
    }
}

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

// -------------------------------------------------------------- dictionary

#[derive(Clone)]
struct Slot<T> {
    val: Option<T>,
    /// Records and child entries referring to it.
    rc: u32,
    /// Heap bytes the entry keeps alive, charged to the buffer.
    heap: u32,
}

/// Refcounted entries by number, numbers reused once freed.
#[derive(Clone)]
struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    heap: usize,
    live: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            heap: 0,
            live: 0,
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, val: T, heap: usize) -> u32 {
        let heap = u32::try_from(heap).unwrap_or(u32::MAX);
        self.heap += heap as usize;
        self.live += 1;
        let slot = Slot {
            val: Some(val),
            rc: 1,
            heap,
        };
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    #[inline]
    fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(id as usize)?.val.as_ref()
    }

    #[inline]
    fn acquire(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            s.rc += 1;
        }
    }

    /// Drops one reference; returns the entry when that was the last.
    fn release(&mut self, id: u32) -> Option<T> {
        let s = self.slots.get_mut(id as usize)?;
        s.val.as_ref()?;
        s.rc -= 1;
        if s.rc > 0 {
            return None;
        }
        self.heap -= s.heap as usize;
        self.live -= 1;
        self.free.push(id);
        s.val.take()
    }

    fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot<T>>()
            + self.free.capacity() * 4
            + self.heap
    }
}

/// Bytes a hash index of `cap` entries of `K → u32` takes (hashbrown: a
/// control byte per bucket, buckets 8/7 of the capacity).
fn index_bytes<K>(cap: usize) -> usize {
    cap * 8 / 7 * (std::mem::size_of::<(K, u32)>() + 1)
}

#[derive(Clone)]
struct ImageEntry {
    img: Arc<Image>,
    /// The entry of its parent image, which this one holds a reference on.
    parent: Option<u32>,
}

/// Heap bytes an image keeps alive that its parent does not already: the
/// node, and its executable and command line unless shared with the
/// parent (a fork's copy shares them).
fn image_heap(img: &Image) -> usize {
    let mut n = std::mem::size_of::<Image>() + 16;
    let parent = img.parent.as_deref();
    if parent.is_none_or(|p| !Arc::ptr_eq(&p.exe, &img.exe)) {
        n += 16 + img.exe.len();
    }
    if parent.is_none_or(|p| !Arc::ptr_eq(&p.argv, &img.argv)) {
        n += 16
            + img
                .argv
                .iter()
                .map(|a| std::mem::size_of::<String>() + a.capacity())
                .sum::<usize>();
    }
    n
}

/// The parent of a fork's copy of its image, when `img` is one.
fn fork_of(img: &Image) -> Option<&Arc<Image>> {
    let p = img.parent.as_ref()?;
    (img.inherited && Arc::ptr_eq(&p.exe, &img.exe) && Arc::ptr_eq(&p.argv, &img.argv)).then_some(p)
}

/// Fork copies made while reading, by (parent entry, pid, uid): the events
/// of one process read in one pass share one image, as they did when
/// recorded.
pub type ForkCopies = HashMap<(u32, u32, u32), Arc<Image>, BuildHasherDefault<Fx>>;

/// What a scope buffer's records refer to by number.
#[derive(Default, Clone)]
pub struct Dict {
    /// Program images by their `Arc` (the entry holds it: the pointer
    /// cannot be reused while the entry lives).
    images: Slab<ImageEntry>,
    image_index: FxMap<usize, u32>,
    /// systemd units, by content.
    units: Slab<Arc<str>>,
    unit_index: FxMap<Arc<str>, u32>,
    /// Directories of paths (with the trailing `/`), by content.
    dirs: Slab<Arc<str>>,
    dir_index: FxMap<Arc<str>, u32>,
    /// Names the code gives as `&'static str` (syscalls, model sections,
    /// sources): a few dozen, never freed.
    statics: Vec<&'static str>,
}

/// "No image yet" in a [`State`].
const NO_IMAGE: u32 = u32::MAX;

impl Dict {
    /// Memory the dictionary takes and keeps alive.
    pub fn bytes(&self) -> usize {
        self.images.bytes()
            + index_bytes::<usize>(self.image_index.capacity())
            + self.units.bytes()
            + index_bytes::<Arc<str>>(self.unit_index.capacity())
            + self.dirs.bytes()
            + index_bytes::<Arc<str>>(self.dir_index.capacity())
            + self.statics.capacity() * std::mem::size_of::<&str>()
    }

    /// Entries held (images, units, directories).
    pub fn entries(&self) -> (usize, usize, usize) {
        (self.images.live, self.units.live, self.dirs.live)
    }

    /// Whether no record refers to anything (the statics aside).
    pub fn is_empty(&self) -> bool {
        self.images.live == 0 && self.units.live == 0 && self.dirs.live == 0
    }

    /// The entry of `img`, with one more reference (the caller's).
    fn intern_image(&mut self, img: &Arc<Image>) -> u32 {
        if let Some(&id) = self.image_index.get(&(Arc::as_ptr(img) as usize)) {
            self.images.acquire(id);
            return id;
        }
        // New: so may be its nearest ancestors. Interned oldest first, each
        // holding a reference on its parent's entry.
        let mut chain: Vec<&Arc<Image>> = vec![img];
        let mut anchor = None;
        let mut cur = img.parent.as_ref();
        while let Some(p) = cur {
            if let Some(&id) = self.image_index.get(&(Arc::as_ptr(p) as usize)) {
                self.images.acquire(id);
                anchor = Some(id);
                break;
            }
            chain.push(p);
            cur = p.parent.as_ref();
        }
        for a in chain.into_iter().rev() {
            let id = self.images.insert(
                ImageEntry {
                    img: a.clone(),
                    parent: anchor,
                },
                image_heap(a),
            );
            self.image_index.insert(Arc::as_ptr(a) as usize, id);
            anchor = Some(id);
        }
        anchor.unwrap_or(NO_IMAGE)
    }

    fn release_image(&mut self, mut id: u32) {
        while let Some(e) = self.images.release(id) {
            self.image_index.remove(&(Arc::as_ptr(&e.img) as usize));
            match e.parent {
                Some(p) => id = p,
                None => break,
            }
        }
    }

    #[inline]
    fn image(&self, id: u32) -> Option<&Arc<Image>> {
        self.images.get(id).map(|e| &e.img)
    }

    fn intern_unit(&mut self, unit: &Arc<str>) -> u32 {
        if let Some(&id) = self.unit_index.get(&**unit) {
            self.units.acquire(id);
            return id;
        }
        let id = self.units.insert(unit.clone(), 16 + unit.len());
        self.unit_index.insert(unit.clone(), id);
        id
    }

    fn release_unit(&mut self, id: u32) {
        if let Some(u) = self.units.release(id) {
            self.unit_index.remove(&*u);
        }
    }

    fn intern_dir(&mut self, dir: &str) -> u32 {
        if let Some(&id) = self.dir_index.get(dir) {
            self.dirs.acquire(id);
            return id;
        }
        let s: Arc<str> = Arc::from(dir);
        let id = self.dirs.insert(s.clone(), 16 + dir.len());
        self.dir_index.insert(s, id);
        id
    }

    fn release_dir(&mut self, id: u32) {
        if let Some(d) = self.dirs.release(id) {
            self.dir_index.remove(&*d);
        }
    }

    fn static_id(&mut self, s: &'static str) -> u32 {
        match self
            .statics
            .iter()
            .position(|x| std::ptr::eq(*x, s) || *x == s)
        {
            Some(i) => i as u32,
            None => {
                self.statics.push(s);
                (self.statics.len() - 1) as u32
            }
        }
    }

    fn static_str(&self, id: u32) -> Result<&'static str, Corrupt> {
        self.statics.get(id as usize).copied().ok_or(Corrupt)
    }
}

// ------------------------------------------------------------------- state

/// What a record is the difference from: the previous record of its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub seq: u64,
    pub time_ns: u64,
    /// `time_ns - boot_ns`, wrapping.
    off: u64,
    pid: u32,
    ppid: u32,
    uid: u32,
    gid: u32,
    loginuid: Option<u32>,
    cgroup_id: u64,
    start_ns: u64,
    comm: Comm,
    has_tty: bool,
    image: u32,
    /// The process's image is a fork's copy of `image` (not interned: made
    /// again when read), under this pid and uid.
    fork: Option<(u32, u32)>,
    unit: Option<u32>,
}

impl Default for State {
    fn default() -> Self {
        State {
            seq: 0,
            time_ns: 0,
            off: 0,
            pid: 0,
            ppid: 0,
            uid: 0,
            gid: 0,
            loginuid: None,
            cgroup_id: 0,
            start_ns: 0,
            comm: Comm::default(),
            has_tty: false,
            image: NO_IMAGE,
            fork: None,
            unit: None,
        }
    }
}

// Task fields that changed from the previous record.
const F_PID: u64 = 1;
const F_IMAGE: u64 = 2;
const F_START: u64 = 4;
const F_PPID: u64 = 8;
const F_COMM: u64 = 16;
const F_UID: u64 = 32;
const F_GID: u64 = 64;
const F_LOGIN: u64 = 128;
const F_CGROUP: u64 = 256;
const F_TTY: u64 = 512;
const F_UNIT: u64 = 1024;

/// The head of a record: what iteration and eviction decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub kind: EventKind,
    pub seq: u64,
    pub time_ns: u64,
}

// ------------------------------------------------------------------ encode

#[inline]
fn kind_byte(kind: EventKind) -> u8 {
    kind as u16 as u8
}

fn put_opt_u32(out: &mut Vec<u8>, v: Option<u32>) {
    put_u(out, v.map_or(0, |v| u64::from(v) + 1));
}

/// A path as its directory's entry (+1; 0: none) and the rest.
fn put_path(out: &mut Vec<u8>, dict: &mut Dict, path: &str) {
    match path.rfind('/') {
        Some(i) => {
            let id = dict.intern_dir(&path[..=i]);
            put_u(out, u64::from(id) + 1);
            put_bytes(out, &path.as_bytes()[i + 1..]);
        }
        None => {
            out.push(0);
            put_bytes(out, path.as_bytes());
        }
    }
}

fn put_addr(out: &mut Vec<u8>, a: Option<&SocketAddr>) {
    match a {
        None => out.push(0),
        Some(SocketAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
            put_u(out, u64::from(a.flowinfo()));
            put_u(out, u64::from(a.scope_id()));
        }
    }
}

fn put_creds(out: &mut Vec<u8>, c: &Creds) {
    for v in [
        c.uid, c.euid, c.suid, c.fsuid, c.gid, c.egid, c.sgid, c.fsgid,
    ] {
        put_u(out, u64::from(v));
    }
    put_u(out, c.cap_effective);
    put_u(out, c.cap_permitted);
}

fn put_strs(out: &mut Vec<u8>, v: &[String]) {
    put_u(out, v.len() as u64);
    for s in v {
        put_bytes(out, s.as_bytes());
    }
}

// Exec flags.
const X_EXE_INCOMPLETE: u8 = 1;
const X_ARGV_TRUNCATED: u8 = 2;
const X_ARGV_UNREADABLE: u8 = 4;
const X_FILENAME_TRUNCATED: u8 = 8;
const X_STDIN_SOCKET: u8 = 16;
/// `exe` is the image's executable.
const X_EXE_IMAGE: u8 = 32;
/// `argv` is the image's command line.
const X_ARGV_IMAGE: u8 = 64;
/// `filename` is `exe`.
const X_FILENAME_EXE: u8 = 128;

// File flags.
const P_PATH2: u8 = 1;
const P_INCOMPLETE: u8 = 2;
const P_NEW_MODE: u8 = 4;
const P_OLD_MODE: u8 = 8;
const P_UID: u8 = 16;
const P_GID: u8 = 32;
const P_SIZE: u8 = 64;

/// Writes `ev`'s record into `w` (cleared first), taking the dictionary
/// references it needs; `st` is the previous record's state of the class
/// and becomes this one's. The caller frames it ([`frame_into`]).
pub fn encode(ev: &Event, dict: &mut Dict, st: &mut State, w: &mut Vec<u8>) {
    w.clear();
    let t = &ev.record.task;
    w.push(kind_byte(ev.kind()));
    put_i(w, ev.seq.wrapping_sub(st.seq) as i64);
    put_i(w, ev.time_ns.wrapping_sub(st.time_ns) as i64);
    let off = ev.time_ns.wrapping_sub(ev.record.boot_ns);
    put_i(w, off.wrapping_sub(st.off) as i64);
    put_u(w, u64::from(ev.record.cpu));

    // The image: the previous record's when the same `Arc` (checked on the
    // entry, which holds it), else looked up.
    // A fork's copy of its parent's image (a process that has not run a
    // program of its own yet) is kept as the parent's and its pid and uid:
    // one per process would take more than its events.
    let (img, fork) = match fork_of(&ev.image) {
        Some(parent) => (parent, Some((ev.image.pid, ev.image.uid))),
        None => (&ev.image, None),
    };
    let image = match dict.image(st.image) {
        Some(i) if Arc::ptr_eq(i, img) => {
            dict.images.acquire(st.image);
            st.image
        }
        _ => dict.intern_image(img),
    };
    let unit = ev.unit.as_ref().map(|u| match st.unit {
        Some(id)
            if dict
                .units
                .get(id)
                .is_some_and(|x| Arc::ptr_eq(x, u) || **x == **u) =>
        {
            dict.units.acquire(id);
            id
        }
        _ => dict.intern_unit(u),
    });
    let mut mask = 0;
    if t.pid != st.pid {
        mask |= F_PID;
    }
    if image != st.image || fork != st.fork {
        mask |= F_IMAGE;
    }
    if t.start_ns != st.start_ns {
        mask |= F_START;
    }
    if t.ppid != st.ppid {
        mask |= F_PPID;
    }
    if t.comm != st.comm {
        mask |= F_COMM;
    }
    if t.uid != st.uid {
        mask |= F_UID;
    }
    if t.gid != st.gid {
        mask |= F_GID;
    }
    if t.loginuid != st.loginuid {
        mask |= F_LOGIN;
    }
    if t.cgroup_id != st.cgroup_id {
        mask |= F_CGROUP;
    }
    if t.has_tty != st.has_tty {
        mask |= F_TTY;
    }
    if unit != st.unit {
        mask |= F_UNIT;
    }
    put_u(w, mask);
    if mask != 0 {
        if mask & F_PID != 0 {
            put_u(w, u64::from(t.pid));
        }
        if mask & F_IMAGE != 0 {
            put_u(w, u64::from(image));
            match fork {
                None => w.push(0),
                Some((pid, uid)) => {
                    put_u(w, u64::from(pid) + 1);
                    put_u(w, u64::from(uid));
                }
            }
        }
        if mask & F_START != 0 {
            put_i(w, ev.record.boot_ns.wrapping_sub(t.start_ns) as i64);
        }
        if mask & F_PPID != 0 {
            put_u(w, u64::from(t.ppid));
        }
        if mask & F_COMM != 0 {
            let (len, bytes) = t.comm.to_parts();
            w.push(len);
            w.extend_from_slice(bytes);
        }
        if mask & F_UID != 0 {
            put_u(w, u64::from(t.uid));
        }
        if mask & F_GID != 0 {
            put_u(w, u64::from(t.gid));
        }
        if mask & F_LOGIN != 0 {
            put_opt_u32(w, t.loginuid);
        }
        if mask & F_CGROUP != 0 {
            put_u(w, t.cgroup_id);
        }
        if mask & F_TTY != 0 {
            w.push(u8::from(t.has_tty));
        }
        if mask & F_UNIT != 0 {
            put_opt_u32(w, unit);
        }
    }
    put_i(w, i64::from(t.tid) - i64::from(t.pid));
    st.seq = ev.seq;
    st.time_ns = ev.time_ns;
    st.off = off;
    st.pid = t.pid;
    st.ppid = t.ppid;
    st.uid = t.uid;
    st.gid = t.gid;
    st.loginuid = t.loginuid;
    st.cgroup_id = t.cgroup_id;
    st.start_ns = t.start_ns;
    st.comm = t.comm;
    st.has_tty = t.has_tty;
    st.image = image;
    st.fork = fork;
    st.unit = unit;

    match &ev.record.detail {
        Detail::Fork { parent_tid } => put_u(w, u64::from(*parent_tid)),
        Detail::Exit { status } => put_u(w, u64::from(*status)),
        Detail::Exec {
            filename,
            exe,
            exe_incomplete,
            exe_dev,
            exe_ino,
            argv,
            old_tid,
            argv_truncated,
            argv_unreadable,
            filename_truncated,
            stdin_socket,
            not_utf8,
        } => {
            let mut f = 0u8;
            for (on, bit) in [
                (*exe_incomplete, X_EXE_INCOMPLETE),
                (*argv_truncated, X_ARGV_TRUNCATED),
                (*argv_unreadable, X_ARGV_UNREADABLE),
                (*filename_truncated, X_FILENAME_TRUNCATED),
                (*stdin_socket, X_STDIN_SOCKET),
                (**exe == *ev.image.exe, X_EXE_IMAGE),
                (argv[..] == ev.image.argv[..], X_ARGV_IMAGE),
                (filename == exe, X_FILENAME_EXE),
            ] {
                if on {
                    f |= bit;
                }
            }
            w.push(f);
            // The filename first: eviction reads its directory entry.
            if f & X_FILENAME_EXE == 0 {
                put_path(w, dict, filename);
            }
            w.push(not_utf8.bits());
            if f & X_EXE_IMAGE == 0 {
                put_bytes(w, exe.as_bytes());
            }
            put_u(w, u64::from(*exe_dev));
            put_u(w, *exe_ino);
            put_u(w, u64::from(*old_tid));
            if f & X_ARGV_IMAGE == 0 {
                put_strs(w, argv);
            }
        }
        Detail::File { file, .. } => {
            // The paths first: eviction reads their directory entries.
            put_path(w, dict, &file.path);
            let mut f = 0u8;
            for (on, bit) in [
                (file.path2.is_some(), P_PATH2),
                (file.incomplete, P_INCOMPLETE),
                (file.new_mode.is_some(), P_NEW_MODE),
                (file.old_mode.is_some(), P_OLD_MODE),
                (file.uid.is_some(), P_UID),
                (file.gid.is_some(), P_GID),
                (file.size.is_some(), P_SIZE),
            ] {
                if on {
                    f |= bit;
                }
            }
            w.push(f);
            if let Some(p2) = &file.path2 {
                put_path(w, dict, p2);
            }
            put_u(w, u64::from(file.flags));
            put_u(w, u64::from(file.mode));
            for v in [file.new_mode, file.old_mode, file.uid, file.gid]
                .into_iter()
                .flatten()
            {
                put_u(w, u64::from(v));
            }
            if let Some(s) = file.size {
                put_u(w, s);
            }
            put_u(w, u64::from(file.dev));
            put_u(w, file.ino);
            put_u(w, u64::from(dict.static_id(file.syscall)));
            w.push(file.not_utf8.bits());
        }
        Detail::Net { net, .. } => {
            put_u(w, u64::from(net.protocol));
            put_addr(w, Some(&net.local));
            put_addr(w, net.remote.as_ref());
            put_u(w, u64::from(net.backlog));
            put_i(w, i64::from(net.ret));
        }
        Detail::Priv(p) => {
            put_u(w, u64::from(dict.static_id(p.syscall)));
            put_creds(w, &p.old);
            put_creds(w, &p.new);
        }
        Detail::Account(a) => {
            put_bytes(w, a.hostname.as_bytes());
            put_u(w, u64::from(a.uid));
            put_bytes(w, a.user.as_bytes());
            put_strs(w, &a.files);
            put_strs(w, &a.command);
            w.push(u8::from(a.interactive));
            put_u(w, a.first_boot_ns);
        }
        Detail::Binary(b) => {
            put_bytes(w, b.path.as_bytes());
            w.push(match b.reason {
                BinaryReason::WrittenExecutable => 0,
                BinaryReason::MadeExecutable => 1,
                BinaryReason::Executed => 2,
            });
            put_opt_u32(w, b.writer_pid);
            match &b.writer_exe {
                None => w.push(0),
                Some(e) => {
                    w.push(1);
                    put_bytes(w, e.as_bytes());
                }
            }
        }
        Detail::Container(c) => {
            put_bytes(w, c.id.as_bytes());
            match &c.change {
                Change::Started => w.push(0),
                Change::Stopped {
                    exit_code,
                    reason,
                    finished_ns,
                } => {
                    w.push(1);
                    match exit_code {
                        None => w.push(0),
                        Some(x) => {
                            w.push(1);
                            put_i(w, i64::from(*x));
                        }
                    }
                    put_bytes(w, reason.as_bytes());
                    put_u(w, *finished_ns);
                }
            }
            put_u(w, u64::from(dict.static_id(c.source)));
        }
        Detail::Learned(l) => {
            put_bytes(w, l.model.as_bytes());
            put_u(w, u64::from(dict.static_id(l.section)));
            put_bytes(w, l.item.as_bytes());
        }
        Detail::Audit(a) => {
            put_bytes(w, a.model.as_bytes());
            put_u(w, u64::from(dict.static_id(a.section)));
            put_bytes(w, a.rule.as_bytes());
            w.push(a.severity as u8);
            put_bytes(w, a.message.as_bytes());
            put_bytes(w, a.item.as_bytes());
            put_u(w, a.incident);
            put_u(w, a.trigger_seq);
        }
    }
}

/// Appends a record: its length, then its bytes.
#[inline]
pub fn frame_into(out: &mut Vec<u8>, rec: &[u8]) {
    put_u(out, rec.len() as u64);
    out.extend_from_slice(rec);
}

/// Bytes `encode` will append for a record of `len` bytes.
pub fn framed_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

// ------------------------------------------------------------------ decode

/// Reads a record's frame: its bytes, and where the next one starts.
#[inline]
pub fn frame(buf: &[u8], at: usize) -> Result<(&[u8], usize), Corrupt> {
    let mut r = Reader::new(buf.get(at..).ok_or(Corrupt)?);
    let len = usize::try_from(r.u()?).map_err(|_| Corrupt)?;
    let start = at + r.pos();
    let end = start.checked_add(len).ok_or(Corrupt)?;
    Ok((buf.get(start..end).ok_or(Corrupt)?, end))
}

/// The head of a record after `st`, without reading its task or detail.
#[inline]
pub fn peek_head(rec: &[u8], st: &State) -> Result<Head, Corrupt> {
    let mut r = Reader::new(rec);
    let kind = EventKind::from_raw(u16::from(r.byte()?)).ok_or(Corrupt)?;
    let seq = st.seq.wrapping_add(r.i()? as u64);
    let time_ns = st.time_ns.wrapping_add(r.i()? as u64);
    Ok(Head { kind, seq, time_ns })
}

/// A record whose head and task fields were read: the detail follows.
pub struct Stepped<'a> {
    pub head: Head,
    pub tid: u32,
    pub cpu: u32,
    r: Reader<'a>,
}

/// Reads a record's head and task fields, advancing `st` to it.
#[inline]
pub fn step<'a>(rec: &'a [u8], st: &mut State) -> Result<Stepped<'a>, Corrupt> {
    let mut r = Reader::new(rec);
    let kind = EventKind::from_raw(u16::from(r.byte()?)).ok_or(Corrupt)?;
    st.seq = st.seq.wrapping_add(r.i()? as u64);
    st.time_ns = st.time_ns.wrapping_add(r.i()? as u64);
    st.off = st.off.wrapping_add(r.i()? as u64);
    let cpu = r.u32()?;
    let mask = r.u()?;
    if mask != 0 {
        if mask & F_PID != 0 {
            st.pid = r.u32()?;
        }
        if mask & F_IMAGE != 0 {
            st.image = r.u32()?;
            st.fork = match r.u()? {
                0 => None,
                v => Some((u32::try_from(v - 1).map_err(|_| Corrupt)?, r.u32()?)),
            };
        }
        if mask & F_START != 0 {
            let boot = st.time_ns.wrapping_sub(st.off);
            st.start_ns = boot.wrapping_sub(r.i()? as u64);
        }
        if mask & F_PPID != 0 {
            st.ppid = r.u32()?;
        }
        if mask & F_COMM != 0 {
            let len = r.byte()?;
            let bytes = r.take(usize::from(len & 0x7f))?;
            st.comm = Comm::from_parts(len, bytes).ok_or(Corrupt)?;
        }
        if mask & F_UID != 0 {
            st.uid = r.u32()?;
        }
        if mask & F_GID != 0 {
            st.gid = r.u32()?;
        }
        if mask & F_LOGIN != 0 {
            st.loginuid = opt_u32(&mut r)?;
        }
        if mask & F_CGROUP != 0 {
            st.cgroup_id = r.u()?;
        }
        if mask & F_TTY != 0 {
            st.has_tty = r.byte()? != 0;
        }
        if mask & F_UNIT != 0 {
            st.unit = opt_u32(&mut r)?;
        }
    }
    let tid = u32::try_from(i64::from(st.pid) + r.i()?).map_err(|_| Corrupt)?;
    Ok(Stepped {
        head: Head {
            kind,
            seq: st.seq,
            time_ns: st.time_ns,
        },
        tid,
        cpu,
        r,
    })
}

fn opt_u32(r: &mut Reader) -> Result<Option<u32>, Corrupt> {
    match r.u()? {
        0 => Ok(None),
        v => u32::try_from(v - 1).map(Some).map_err(|_| Corrupt),
    }
}

fn path(r: &mut Reader, dict: &Dict) -> Result<String, Corrupt> {
    let dir = r.u32()?;
    let rest = r.str()?;
    if dir == 0 {
        return Ok(rest.to_owned());
    }
    let d = dict.dirs.get(dir - 1).ok_or(Corrupt)?;
    let mut s = String::with_capacity(d.len() + rest.len());
    s.push_str(d);
    s.push_str(rest);
    Ok(s)
}

fn skip_path(r: &mut Reader, dict: &mut Dict) -> Result<(), Corrupt> {
    let dir = r.u32()?;
    r.skip_bytes()?;
    if dir != 0 {
        dict.release_dir(dir - 1);
    }
    Ok(())
}

fn addr(r: &mut Reader) -> Result<Option<SocketAddr>, Corrupt> {
    Ok(match r.byte()? {
        0 => None,
        4 => {
            let ip: [u8; 4] = r.take(4)?.try_into().map_err(|_| Corrupt)?;
            let port = u16::from_le_bytes(r.take(2)?.try_into().map_err(|_| Corrupt)?);
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        6 => {
            let ip: [u8; 16] = r.take(16)?.try_into().map_err(|_| Corrupt)?;
            let port = u16::from_le_bytes(r.take(2)?.try_into().map_err(|_| Corrupt)?);
            let flow = r.u32()?;
            let scope = r.u32()?;
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => return Err(Corrupt),
    })
}

fn creds(r: &mut Reader) -> Result<Creds, Corrupt> {
    Ok(Creds {
        uid: r.u32()?,
        euid: r.u32()?,
        suid: r.u32()?,
        fsuid: r.u32()?,
        gid: r.u32()?,
        egid: r.u32()?,
        sgid: r.u32()?,
        fsgid: r.u32()?,
        cap_effective: r.u()?,
        cap_permitted: r.u()?,
    })
}

fn strs(r: &mut Reader) -> Result<Vec<String>, Corrupt> {
    let n = usize::try_from(r.u()?).map_err(|_| Corrupt)?;
    // Each string takes at least its length byte: a corrupt count cannot
    // make this allocate more than the record's size.
    let mut v = Vec::with_capacity(n.min(r.buf.len()));
    for _ in 0..n {
        v.push(r.string()?);
    }
    Ok(v)
}

/// Drops the dictionary references of a record being evicted (`st`: its
/// state, from [`step`]).
pub fn release(s: Stepped, st: &State, dict: &mut Dict) -> Result<(), Corrupt> {
    dict.release_image(st.image);
    if let Some(u) = st.unit {
        dict.release_unit(u);
    }
    let mut r = s.r;
    match s.head.kind {
        EventKind::Exec if r.byte()? & X_FILENAME_EXE == 0 => skip_path(&mut r, dict)?,
        EventKind::FileWrite
        | EventKind::FileRename
        | EventKind::FileUnlink
        | EventKind::FileChmod
        | EventKind::FileChown
        | EventKind::FileLink
        | EventKind::FileTruncate
        | EventKind::SensitiveRead => {
            skip_path(&mut r, dict)?;
            if r.byte()? & P_PATH2 != 0 {
                skip_path(&mut r, dict)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Bytes of a path as decoded, without building it.
fn path_len(r: &mut Reader, dict: &Dict) -> Result<usize, Corrupt> {
    let dir = r.u32()?;
    let rest = r.bytes()?.len();
    if dir == 0 {
        return Ok(rest);
    }
    Ok(dict.dirs.get(dir - 1).ok_or(Corrupt)?.len() + rest)
}

/// What the record's event is charged as an `Arc<Event>`
/// ([`crate::recorder::buffer::charged_bytes`]: [`Event::approx_bytes`]
/// and its place in a queue), read from the record for the common kinds.
pub fn charged(s: Stepped, st: &State, dict: &Dict, scope: &Scope) -> Result<usize, Corrupt> {
    const BASE: usize = std::mem::size_of::<Event>() + std::mem::size_of::<(Arc<Event>, usize)>();
    let mut r = s.r.clone();
    let detail = match s.head.kind {
        EventKind::Fork
        | EventKind::Exit
        | EventKind::NetListen
        | EventKind::NetBind
        | EventKind::NetConnect
        | EventKind::NetAccept => 0,
        EventKind::Exec => {
            let image = dict.image(st.image).ok_or(Corrupt)?;
            let f = r.byte()?;
            let filename = if f & X_FILENAME_EXE == 0 {
                Some(path_len(&mut r, dict)?)
            } else {
                None
            };
            r.byte()?;
            let exe = if f & X_EXE_IMAGE == 0 {
                r.bytes()?.len()
            } else {
                image.exe.len()
            };
            r.u()?;
            r.u()?;
            r.u()?;
            let argv = if f & X_ARGV_IMAGE == 0 {
                let n = r.u()?;
                let mut t = 0;
                for _ in 0..n {
                    t += r.bytes()?.len() + 24;
                }
                t
            } else {
                image.argv.iter().map(|a| a.len() + 24).sum()
            };
            filename.unwrap_or(exe) + exe + argv
        }
        EventKind::FileWrite
        | EventKind::FileRename
        | EventKind::FileUnlink
        | EventKind::FileChmod
        | EventKind::FileChown
        | EventKind::FileLink
        | EventKind::FileTruncate
        | EventKind::SensitiveRead => {
            let p1 = path_len(&mut r, dict)?;
            let p2 = if r.byte()? & P_PATH2 != 0 {
                path_len(&mut r, dict)?
            } else {
                0
            };
            std::mem::size_of::<FileDetail>() + p1 + p2
        }
        _ => {
            return decode(s, st, dict, scope, &mut ForkCopies::default())
                .map(|e| e.approx_bytes() + std::mem::size_of::<(Arc<Event>, usize)>())
        }
    };
    Ok(BASE + detail)
}

/// The event of a record (`st`: its state, from [`step`]).
pub fn decode(
    s: Stepped,
    st: &State,
    dict: &Dict,
    scope: &Scope,
    forks: &mut ForkCopies,
) -> Result<Event, Corrupt> {
    let base = dict.image(st.image).ok_or(Corrupt)?;
    let image = match st.fork {
        None => base.clone(),
        Some((pid, uid)) => forks
            .entry((st.image, pid, uid))
            .or_insert_with(|| Image::forked(base, pid, uid))
            .clone(),
    };
    let unit = match st.unit {
        None => None,
        Some(u) => Some(dict.units.get(u).ok_or(Corrupt)?.clone()),
    };
    let mut r = s.r;
    let kind = s.head.kind;
    let detail = match kind {
        EventKind::Fork => Detail::Fork {
            parent_tid: r.u32()?,
        },
        EventKind::Exit => Detail::Exit { status: r.u32()? },
        EventKind::Exec => {
            let f = r.byte()?;
            let filename = if f & X_FILENAME_EXE == 0 {
                Some(path(&mut r, dict)?)
            } else {
                None
            };
            let not_utf8 = NotUtf8::from_bits(r.byte()?);
            let exe = if f & X_EXE_IMAGE == 0 {
                r.string()?
            } else {
                image.exe.to_string()
            };
            let exe_dev = r.u32()?;
            let exe_ino = r.u()?;
            let old_tid = r.u32()?;
            let argv = if f & X_ARGV_IMAGE == 0 {
                strs(&mut r)?
            } else {
                image.argv.to_vec()
            };
            Detail::Exec {
                filename: filename.unwrap_or_else(|| exe.clone()),
                exe,
                exe_incomplete: f & X_EXE_INCOMPLETE != 0,
                exe_dev,
                exe_ino,
                argv,
                old_tid,
                argv_truncated: f & X_ARGV_TRUNCATED != 0,
                argv_unreadable: f & X_ARGV_UNREADABLE != 0,
                filename_truncated: f & X_FILENAME_TRUNCATED != 0,
                stdin_socket: f & X_STDIN_SOCKET != 0,
                not_utf8,
            }
        }
        EventKind::FileWrite
        | EventKind::FileRename
        | EventKind::FileUnlink
        | EventKind::FileChmod
        | EventKind::FileChown
        | EventKind::FileLink
        | EventKind::FileTruncate
        | EventKind::SensitiveRead => {
            let path1 = path(&mut r, dict)?;
            let f = r.byte()?;
            let path2 = if f & P_PATH2 != 0 {
                Some(path(&mut r, dict)?)
            } else {
                None
            };
            let flags = r.u32()?;
            let mode = r.u32()?;
            let mut opt = |bit: u8| -> Result<Option<u32>, Corrupt> {
                if f & bit != 0 {
                    r.u32().map(Some)
                } else {
                    Ok(None)
                }
            };
            let new_mode = opt(P_NEW_MODE)?;
            let old_mode = opt(P_OLD_MODE)?;
            let uid = opt(P_UID)?;
            let gid = opt(P_GID)?;
            let size = if f & P_SIZE != 0 { Some(r.u()?) } else { None };
            Detail::File {
                kind,
                file: Box::new(FileDetail {
                    path: path1,
                    path2,
                    incomplete: f & P_INCOMPLETE != 0,
                    flags,
                    mode,
                    new_mode,
                    old_mode,
                    uid,
                    gid,
                    size,
                    dev: r.u32()?,
                    ino: r.u()?,
                    syscall: dict.static_str(r.u32()?)?,
                    not_utf8: NotUtf8::from_bits(r.byte()?),
                }),
            }
        }
        EventKind::NetListen
        | EventKind::NetBind
        | EventKind::NetConnect
        | EventKind::NetAccept => {
            let protocol = u16::try_from(r.u()?).map_err(|_| Corrupt)?;
            let local = addr(&mut r)?.ok_or(Corrupt)?;
            let remote = addr(&mut r)?;
            let backlog = r.u32()?;
            let ret = i32::try_from(r.i()?).map_err(|_| Corrupt)?;
            Detail::Net {
                kind,
                net: NetDetail {
                    protocol,
                    local,
                    remote,
                    backlog,
                    ret,
                },
            }
        }
        EventKind::PrivChange => Detail::Priv(Box::new(PrivDetail {
            syscall: dict.static_str(r.u32()?)?,
            old: creds(&mut r)?,
            new: creds(&mut r)?,
        })),
        EventKind::AccountChange => Detail::Account(Box::new(AccountDetail {
            hostname: r.string()?,
            uid: r.u32()?,
            user: r.string()?,
            files: strs(&mut r)?,
            command: strs(&mut r)?,
            interactive: r.byte()? != 0,
            first_boot_ns: r.u()?,
        })),
        EventKind::BinaryWritten => Detail::Binary(Box::new(BinaryDetail {
            path: r.string()?,
            reason: match r.byte()? {
                0 => BinaryReason::WrittenExecutable,
                1 => BinaryReason::MadeExecutable,
                2 => BinaryReason::Executed,
                _ => return Err(Corrupt),
            },
            writer_pid: opt_u32(&mut r)?,
            writer_exe: match r.byte()? {
                0 => None,
                _ => Some(r.string()?),
            },
        })),
        EventKind::ContainerStart | EventKind::ContainerStop => {
            let id: Arc<str> = Arc::from(r.str()?);
            let change = match r.byte()? {
                0 => Change::Started,
                _ => {
                    let exit_code = match r.byte()? {
                        0 => None,
                        _ => Some(i32::try_from(r.i()?).map_err(|_| Corrupt)?),
                    };
                    Change::Stopped {
                        exit_code,
                        reason: r.string()?,
                        finished_ns: r.u()?,
                    }
                }
            };
            Detail::Container(Box::new(ContainerDetail {
                id,
                change,
                source: dict.static_str(r.u32()?)?,
            }))
        }
        EventKind::ModelLearned => Detail::Learned(Box::new(LearnedDetail {
            model: Arc::from(r.str()?),
            section: dict.static_str(r.u32()?)?,
            item: r.string()?,
        })),
        EventKind::Audit => Detail::Audit(Box::new(AuditDetail {
            model: Arc::from(r.str()?),
            section: dict.static_str(r.u32()?)?,
            rule: r.string()?,
            severity: Severity::from_raw(i32::from(r.byte()?)).ok_or(Corrupt)?,
            message: r.string()?,
            item: r.string()?,
            incident: r.u()?,
            trigger_seq: r.u()?,
        })),
    };
    if detail.kind() != kind {
        return Err(Corrupt);
    }
    Ok(Event {
        seq: st.seq,
        time_ns: st.time_ns,
        record: Record {
            boot_ns: st.time_ns.wrapping_sub(st.off),
            cpu: s.cpu,
            task: Task {
                pid: st.pid,
                tid: s.tid,
                ppid: st.ppid,
                uid: st.uid,
                gid: st.gid,
                loginuid: st.loginuid,
                cgroup_id: st.cgroup_id,
                start_ns: st.start_ns,
                comm: st.comm,
                has_tty: st.has_tty,
            },
            detail,
        },
        image,
        scope: scope.clone(),
        unit,
    })
}
