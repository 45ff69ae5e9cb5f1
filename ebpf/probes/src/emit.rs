//! Output side: the ring buffer, the per-kind drop counters, the scratch
//! space for large records and the globals user space writes before load.

use core::mem::size_of;

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use fdr_common::{
    DropKey, EventHeader, ExecEvent, FileEvent, InodeKey, KernelOffsets, Prefixes, SyscallArgs,
    MAX_DROP_KEYS, MAX_KINDS, MAX_SYSCALL, MAX_WATCH, SENSITIVE_WORDS,
};

/// Default ring size; user space resizes it from the config before load.
const EVENTS_BYTES: u32 = 4 << 20;

#[map(name = "FDR_EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Critical kinds travel here, so a flood of others cannot crowd them out.
#[map(name = "FDR_CRITICAL")]
static CRITICAL: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Watched inodes: `fdr_common::watch` bits.
#[map(name = "FDR_WATCH")]
static WATCH: HashMap<InodeKey, u32> = HashMap::with_max_entries(MAX_WATCH, 0);

/// One bit per inode number (modulo the bitmap's size) of the inodes
/// whose read-only opens are reported (`watch::SENSITIVE` in `FDR_WATCH`):
/// a clear bit spares a read-only open the device read and the map lookup.
#[map(name = "FDR_SENSITIVE_BITS")]
static SENSITIVE_BITS: Array<[u64; SENSITIVE_WORDS]> = Array::with_max_entries(1, 0);

/// Syscall number → `fdr_common::op`.
#[map(name = "FDR_SYSCALLS")]
static SYSCALLS: Array<u8> = Array::with_max_entries(MAX_SYSCALL, 0);

/// Syscalls in flight, by thread id. LRU: the entry of a thread killed
/// inside a syscall (no exit ever comes) ages out instead of leaking.
#[map(name = "FDR_ARGS")]
pub static ARGS: LruHashMap<u32, SyscallArgs> = LruHashMap::with_max_entries(16384, 0);

/// `[0]` non-zero while the reader sleeps: the next record wakes it (and
/// clears the flag, so one record of a burst pays for the wake-up).
#[map(name = "FDR_READER")]
static READER: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "FDR_DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_KINDS, 0);

/// Bytes of the per-CPU scratch record: room for the largest record.
pub const SCRATCH_SIZE: usize = max(size_of::<ExecEvent>(), size_of::<FileEvent>());

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

#[map(name = "FDR_SCRATCH")]
static SCRATCH: PerCpuArray<[u8; SCRATCH_SIZE]> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static FDR_OFFSETS: KernelOffsets = KernelOffsets::UNSET;

#[unsafe(no_mangle)]
static FDR_AGENT_TGID: u32 = 0;

#[unsafe(no_mangle)]
static FDR_WAKEUP_BYTES: u64 = 0;

#[unsafe(no_mangle)]
static FDR_ENABLED_KINDS: u64 = u64::MAX;

#[unsafe(no_mangle)]
static FDR_PREFIXES: Prefixes = Prefixes::EMPTY;

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// The offsets table, read through a volatile load so the compiler keeps the
/// value user space wrote instead of folding the initial one.
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    // SAFETY: a static of plain integers; reading it is always defined.
    unsafe { core::ptr::read_volatile(&&FDR_OFFSETS) }
}

/// Whether events of `kind` are wanted (per-kind switches from the config).
#[inline(always)]
pub fn enabled(kind: u16) -> bool {
    // SAFETY: a plain integer static.
    let mask = unsafe { core::ptr::read_volatile(&FDR_ENABLED_KINDS) };
    kind < 64 && mask & (1u64 << kind) != 0
}

#[inline(always)]
pub fn prefixes() -> &'static Prefixes {
    // SAFETY: as for `offsets`.
    unsafe { core::ptr::read_volatile(&&FDR_PREFIXES) }
}

#[inline(always)]
pub fn agent_tgid() -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&FDR_AGENT_TGID) }
}

/// A header for an event of `kind` happening now on this CPU.
#[inline(always)]
pub fn header(kind: u16, flags: u16) -> EventHeader {
    EventHeader {
        kind,
        flags,
        // SAFETY: helpers without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}

/// Per-CPU scratch space large enough for any record, as raw bytes.
#[inline(always)]
pub fn scratch_bytes() -> Option<&'static mut [u8; SCRATCH_SIZE]> {
    // SAFETY: per-CPU value; programs do not nest on one CPU for these hooks.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The scratch space as an exec record (every bit pattern is valid).
#[inline(always)]
pub fn scratch_exec() -> Option<&'static mut ExecEvent> {
    // SAFETY: as above; ExecEvent is plain old data no larger than the
    // scratch value, which is 8-byte aligned.
    SCRATCH
        .get_ptr_mut(0)
        .map(|p| unsafe { &mut *p.cast::<ExecEvent>() })
}

/// The scratch space as a file record.
#[inline(always)]
pub fn scratch_file() -> Option<&'static mut FileEvent> {
    // SAFETY: as for `scratch_exec`.
    SCRATCH
        .get_ptr_mut(0)
        .map(|p| unsafe { &mut *p.cast::<FileEvent>() })
}

/// Sends `len` bytes of `record` (`len` ≤ its size); counts a drop when the
/// ring buffer is full.
///
/// The reader is woken only once `FDR_WAKEUP_BYTES` are pending; otherwise
/// it picks records up on its own poll tick. A wake-up per record costs an
/// interrupt (a VM exit on virtual machines), over ten times the program.
#[inline(always)]
pub fn send<T>(kind: u16, record: &T, len: usize) {
    send_to(false, kind, record, len)
}

/// [`send`] to the critical ring when `critical`.
#[inline(always)]
pub fn send_to<T>(critical: bool, kind: u16, record: &T, len: usize) {
    // SAFETY: `len` never exceeds the size of `*record` (callers clamp it).
    let bytes = unsafe { core::slice::from_raw_parts((record as *const T).cast::<u8>(), len) };
    let ring = if critical { &CRITICAL } else { &EVENTS };
    // SAFETY: a plain integer static; volatile so the loaded value is used.
    let threshold = unsafe { core::ptr::read_volatile(&FDR_WAKEUP_BYTES) };
    let wake = if reader_asleep() || ring.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if ring.output::<[u8]>(bytes, wake).is_err() {
        count_drop(kind);
    }
}

/// Whether the reader went to sleep; the flag is cleared by the caller
/// that sees it set (it wakes the reader).
#[inline(always)]
fn reader_asleep() -> bool {
    match READER.get_ptr_mut(0) {
        // SAFETY: a valid pointer into the array's only element; a racing
        // writer makes at worst one more wake-up.
        Some(p) if unsafe { *p } != 0 => {
            unsafe { *p = 0 };
            true
        }
        _ => false,
    }
}

#[map(name = "FDR_SCOPE_DROPS")]
static SCOPE_DROPS: LruPerCpuHashMap<DropKey, u64> =
    LruPerCpuHashMap::with_max_entries(MAX_DROP_KEYS, 0);

/// Counts a refused record by kind, and by the current task's cgroup and
/// kind (only on this path: a full ring costs the map update, nothing else).
#[inline(always)]
fn count_drop(kind: u16) {
    if let Some(n) = DROPS.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *n += 1 };
    }
    let key = DropKey {
        // SAFETY: a helper without arguments, allowed in tracepoints.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        kind: kind as u32,
        _pad: 0,
    };
    match SCOPE_DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of the entry; only this CPU writes it.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = SCOPE_DROPS.insert(key, 1, 0);
        }
    }
}

/// `fdr_common::watch` bits of an inode, 0 when not watched.
#[inline(always)]
pub fn watch_flags(dev: u32, ino: u64) -> u32 {
    let key = InodeKey { dev, _pad: 0, ino };
    // SAFETY: a map lookup; the value is copied out at once.
    unsafe { WATCH.get(key) }.copied().unwrap_or(0)
}

/// Whether inode number `ino` may be a sensitive file's (its bit in
/// `FDR_SENSITIVE_BITS` is set); `false` means it certainly is not.
#[inline(always)]
pub fn maybe_sensitive(ino: u64) -> bool {
    let Some(bits) = SENSITIVE_BITS.get(0) else {
        return true;
    };
    let (word, bit) = fdr_common::sensitive_bit(ino);
    bits.get(word).is_some_and(|w| w & bit != 0)
}

/// The `fdr_common::op` of a syscall number, 0 when not of interest.
#[inline(always)]
pub fn syscall_op(nr: u32) -> u8 {
    SYSCALLS.get(nr).copied().unwrap_or(0)
}
