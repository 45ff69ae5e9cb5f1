//! Event records shared by fdr's kernel programs and its agent.
//!
//! Every record the kernel sends starts with an [`EventHeader`]; its `kind`
//! field is one of the stable numbers in [`EventKind`] and says which of the
//! `#[repr(C)]` structs below follows. All structs are plain old data: every
//! bit pattern is a valid value, there is no implicit padding (sizes are
//! asserted at compile time) and nothing in them depends on the target.
//!
//! Variable-length records (exec) are sent truncated to the bytes in use; the
//! user-space decoder copies what arrived into a zeroed struct.
#![no_std]

use core::mem::{offset_of, size_of};

/// Length of `task_struct.comm`, NUL included.
pub const COMM_LEN: usize = 16;
/// Bytes of the executable path kept for an exec (NUL included).
pub const FILENAME_MAX: usize = 512;
/// Bytes of the command line kept for an exec (`argv` joined by NULs).
pub const ARGV_MAX: usize = 4096;
/// Bytes of path components a record may carry (a path walked in the
/// kernel is sent leaf first, each component ended by NUL).
pub const PATH_MAX: usize = 4096;
/// Longest single path component (`NAME_MAX` + NUL).
pub const NAME_BUF: usize = 256;
/// Deepest path the kernel walks; deeper ones are cut and flagged.
pub const PATH_DEPTH: u32 = 48;
/// Size of the per-kind counter arrays (drops, switches). Kinds are < this.
pub const MAX_KINDS: u32 = 32;

/// Stable event kind numbers. Never renumber; only append.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A new process (thread-group leader) was created.
    Fork = 1,
    /// A process image was replaced by `execve`/`execveat`.
    Exec = 2,
    /// A process (its thread-group leader) exited.
    Exit = 3,
}

impl EventKind {
    /// Every kind this build knows, in numeric order.
    pub const ALL: [EventKind; 3] = [EventKind::Fork, EventKind::Exec, EventKind::Exit];

    /// The kind for a raw number, or `None` for a number this build does not know.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            1 => Some(EventKind::Fork),
            2 => Some(EventKind::Exec),
            3 => Some(EventKind::Exit),
            _ => None,
        }
    }

    /// Lower-case name, as used in the config, the API and `fdrctl`.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Fork => "fork",
            EventKind::Exec => "exec",
            EventKind::Exit => "exit",
        }
    }

    /// The kind for a lower-case name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Bits of [`EventHeader::flags`].
pub mod flags {
    /// The process has a controlling terminal (`signal->tty` is set).
    pub const HAS_TTY: u16 = 1 << 0;
    /// The command line was longer than [`super::ARGV_MAX`] and was cut.
    pub const ARGV_TRUNCATED: u16 = 1 << 1;
    /// The executable path was longer than [`super::FILENAME_MAX`] and was cut.
    pub const FILENAME_TRUNCATED: u16 = 1 << 2;
    /// The command line could not be read from the new image's memory.
    pub const ARGV_UNREADABLE: u16 = 1 << 3;
    /// A path walked in the kernel was deeper or longer than the limits
    /// ([`super::PATH_DEPTH`], [`super::PATH_MAX`]): its top is missing.
    pub const PATH_TRUNCATED: u16 = 1 << 4;
    /// A path walked in the kernel ended at an unreachable root (a
    /// deleted or disconnected dentry, or another mount namespace's root).
    pub const PATH_DISCONNECTED: u16 = 1 << 5;
}

/// Fixed header at the start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] number.
    pub kind: u16,
    /// [`flags`] bits.
    pub flags: u16,
    /// CPU the event was recorded on.
    pub cpu: u32,
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`).
    pub ts_ns: u64,
}

/// Who did it: the task the event is about, as the kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskInfo {
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    /// Real user id, as seen from the initial user namespace.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Audit login uid (`u32::MAX` when unset or unknown).
    pub loginuid: u32,
    /// Id of the task's cgroup v2 (the inode number of its directory).
    pub cgroup_id: u64,
    /// `task_struct.start_time` of the thread-group leader (`CLOCK_MONOTONIC` ns):
    /// with `tgid`, a key that survives pid reuse.
    pub start_ns: u64,
    /// `task_struct.comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// A new process. Sent from the parent's context.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub header: EventHeader,
    /// The child: its ids, and the credentials and cgroup it inherited.
    pub task: TaskInfo,
    /// Thread of the parent that called `fork`/`clone`.
    pub parent_tid: u32,
    pub _pad: u32,
}

/// A new program image.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Bytes used in `filename`, without the NUL.
    pub filename_len: u16,
    /// Bytes of `data` holding `argv` (arguments each ended by NUL).
    pub argv_len: u16,
    /// Bytes of `data`, after `argv`, holding the executable's path
    /// components, leaf first, each ended by NUL.
    pub exe_len: u16,
    pub _pad: u16,
    /// Process id before the exec (differs when a non-leader thread execs).
    pub old_tid: u32,
    pub _pad2: u32,
    /// The path as given to `execve`.
    pub filename: [u8; FILENAME_MAX],
    /// `argv` read from the new image's memory (`mm->arg_start..arg_end`),
    /// then the path of `mm->exe_file` walked through the dentry cache.
    pub data: [u8; ARGV_MAX + PATH_MAX + NAME_BUF],
}

/// A process exit (its thread-group leader's `do_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// `task_struct.exit_code`, a wait(2) status: exit status in bits 8..16,
    /// terminating signal in bits 0..7, core dump flag in bit 7.
    pub exit_status: u32,
    pub _pad: u32,
}

impl ExecEvent {
    /// Bytes of a record before its variable-length `data`.
    pub const FIXED_LEN: usize = offset_of!(ExecEvent, data);
}

/// Kernel structure offsets resolved from BTF at load time, plus tracepoint
/// field offsets read from tracefs. Written into the programs' read-only data
/// before they load; `u32::MAX` marks a field this kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    pub task_start_time: u32,
    pub task_loginuid: u32,
    pub task_comm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub signal_tty: u32,
    pub mm_exe_file: u32,
    pub file_f_path: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    /// `dentry.d_name.name` (the `qstr`'s name pointer).
    pub dentry_name: u32,
    pub vfsmount_mnt_root: u32,
    /// Offset of the `struct vfsmount` embedded in `struct mount`.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    /// Offset of the `__data_loc char[] filename` field of `sched:sched_process_exec`.
    pub tp_exec_filename: u32,
    /// Offset of the `pid` field of `sched:sched_process_exec`.
    pub tp_exec_pid: u32,
    /// Offset of the `old_pid` field of `sched:sched_process_exec`.
    pub tp_exec_old_pid: u32,
}

impl KernelOffsets {
    /// The value the programs start with: every offset unknown.
    pub const UNSET: KernelOffsets = KernelOffsets {
        task_pid: u32::MAX,
        task_tgid: u32::MAX,
        task_real_parent: u32::MAX,
        task_group_leader: u32::MAX,
        task_mm: u32::MAX,
        task_signal: u32::MAX,
        task_exit_code: u32::MAX,
        task_start_time: u32::MAX,
        task_loginuid: u32::MAX,
        task_comm: u32::MAX,
        mm_arg_start: u32::MAX,
        mm_arg_end: u32::MAX,
        signal_tty: u32::MAX,
        mm_exe_file: u32::MAX,
        file_f_path: u32::MAX,
        path_mnt: u32::MAX,
        path_dentry: u32::MAX,
        dentry_d_parent: u32::MAX,
        dentry_name: u32::MAX,
        vfsmount_mnt_root: u32::MAX,
        mount_mnt: u32::MAX,
        mount_mnt_parent: u32::MAX,
        mount_mnt_mountpoint: u32::MAX,
        tp_exec_filename: u32::MAX,
        tp_exec_pid: u32::MAX,
        tp_exec_old_pid: u32::MAX,
    };
}

/// Names of the globals in the programs' read-only data.
pub mod globals {
    /// [`super::KernelOffsets`].
    pub const OFFSETS: &str = "FDR_OFFSETS";
    /// `u32`: the agent's own process id; its events never leave the kernel.
    pub const AGENT_TGID: &str = "FDR_AGENT_TGID";
    /// `u64`: pending ring buffer bytes at which the reader is woken.
    pub const WAKEUP_BYTES: &str = "FDR_WAKEUP_BYTES";
}

/// Names of the maps user space opens.
pub mod maps {
    /// Ring buffer carrying every record.
    pub const EVENTS: &str = "FDR_EVENTS";
    /// `PerCpuArray<u64>` indexed by kind: records the ring buffer refused.
    pub const DROPS: &str = "FDR_DROPS";
    /// `PerCpuArray<ExecEvent>`: scratch space for building large records.
    pub const SCRATCH: &str = "FDR_SCRATCH";
}

// No implicit padding: each size is the sum of its fields.
const _: () = assert!(size_of::<EventHeader>() == 16);
const _: () = assert!(size_of::<TaskInfo>() == 6 * 4 + 2 * 8 + COMM_LEN);
const _: () = assert!(size_of::<ForkEvent>() == 16 + 56 + 8);
const _: () =
    assert!(size_of::<ExecEvent>() == 16 + 56 + 16 + FILENAME_MAX + ARGV_MAX + PATH_MAX + NAME_BUF);
const _: () = assert!(size_of::<ExitEvent>() == 16 + 56 + 8);
const _: () = assert!(size_of::<KernelOffsets>() == 26 * 4);
const _: () = assert!(offset_of!(ExecEvent, filename) == 88);
const _: () = assert!(ARGV_MAX + PATH_MAX + NAME_BUF <= u16::MAX as usize);
// The kernel side bounds offsets with masks: these must be powers of two.
const _: () = assert!(ARGV_MAX.is_power_of_two() && PATH_MAX.is_power_of_two());
const _: () = assert!(NAME_BUF.is_power_of_two());

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data, `#[repr(C)]`, no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
}
