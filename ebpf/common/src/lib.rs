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
    /// A regular file opened for writing (write, read-write, create or truncate).
    FileWrite = 4,
    /// A file renamed (old and new path).
    FileRename = 5,
    /// A file unlinked or a directory removed.
    FileUnlink = 6,
    /// A file's mode changed.
    FileChmod = 7,
    /// A file's owner or group changed.
    FileChown = 8,
    /// A hard or symbolic link created.
    FileLink = 9,
    /// A file truncated by path or descriptor.
    FileTruncate = 10,
    /// A read-only open of a file on the sensitive list.
    SensitiveRead = 11,
    /// A TCP socket started listening.
    NetListen = 12,
    /// A UDP socket bound to a local address.
    NetBind = 13,
    /// An outbound connection (TCP connect, or UDP connect).
    NetConnect = 14,
    /// An inbound TCP connection accepted.
    NetAccept = 15,
    /// User or group ids, or capabilities, changed (setuid & co, capset).
    PrivChange = 16,
    /// Accounts modified (passwd, shadow, group, sudoers, authorized_keys);
    /// made by the agent from file and exec events, one per change.
    AccountChange = 17,
    /// An executable written, or a written file later executed; made by the agent.
    BinaryWritten = 18,
    /// A container started (from the container runtime, or the first
    /// process seen in a container's cgroup); made by the agent.
    ContainerStart = 19,
    /// A container stopped (runtime status, or its cgroup removed); made
    /// by the agent.
    ContainerStop = 20,
    /// Something was added to a runtime model while it was learning; made
    /// by the agent.
    ModelLearned = 21,
    /// Behaviour outside a runtime model, or a rule hit; made by the agent.
    Audit = 22,
}

impl EventKind {
    /// Every kind this build knows, in numeric order.
    pub const ALL: [EventKind; 22] = [
        EventKind::Fork,
        EventKind::Exec,
        EventKind::Exit,
        EventKind::FileWrite,
        EventKind::FileRename,
        EventKind::FileUnlink,
        EventKind::FileChmod,
        EventKind::FileChown,
        EventKind::FileLink,
        EventKind::FileTruncate,
        EventKind::SensitiveRead,
        EventKind::NetListen,
        EventKind::NetBind,
        EventKind::NetConnect,
        EventKind::NetAccept,
        EventKind::PrivChange,
        EventKind::AccountChange,
        EventKind::BinaryWritten,
        EventKind::ContainerStart,
        EventKind::ContainerStop,
        EventKind::ModelLearned,
        EventKind::Audit,
    ];

    /// The kind for a raw number, or `None` for a number this build does not know.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        if raw == 0 || raw as usize > Self::ALL.len() {
            return None;
        }
        Some(Self::ALL[raw as usize - 1])
    }

    /// Lower-case name, as used in the config, the API and `fdrctl`.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Fork => "fork",
            EventKind::Exec => "exec",
            EventKind::Exit => "exit",
            EventKind::FileWrite => "write",
            EventKind::FileRename => "rename",
            EventKind::FileUnlink => "unlink",
            EventKind::FileChmod => "chmod",
            EventKind::FileChown => "chown",
            EventKind::FileLink => "link",
            EventKind::FileTruncate => "truncate",
            EventKind::SensitiveRead => "sensitive-read",
            EventKind::NetListen => "listen",
            EventKind::NetBind => "bind",
            EventKind::NetConnect => "connect",
            EventKind::NetAccept => "accept",
            EventKind::PrivChange => "priv-change",
            EventKind::AccountChange => "account",
            EventKind::BinaryWritten => "binary",
            EventKind::ContainerStart => "container-start",
            EventKind::ContainerStop => "container-stop",
            EventKind::ModelLearned => "model-learned",
            EventKind::Audit => "audit",
        }
    }

    /// Kinds that travel in the critical ring buffer, so that a flood of
    /// other events cannot crowd them out.
    pub const fn is_critical(self) -> bool {
        matches!(
            self,
            EventKind::Exec | EventKind::NetListen | EventKind::PrivChange
        )
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
    /// Exec: the new program's standard input is a socket (what a shell
    /// handed a network connection looks like), checked in the kernel at
    /// exec time.
    pub const STDIN_SOCKET: u16 = 1 << 6;
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
    /// Device and inode of the executable (to match files written earlier).
    pub exe_dev: u32,
    pub exe_ino: u64,
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

/// What a watched inode is (values of the `FDR_WATCH` map, bits).
pub mod watch {
    /// Read-only opens of it are reported ([`super::EventKind::SensitiveRead`]).
    pub const SENSITIVE: u32 = 1 << 0;
    /// Changes to it, or below it for a directory, go to the critical ring.
    pub const CRITICAL: u32 = 1 << 1;
    /// A directory whose subtree is never reported (e.g. the agent's data).
    pub const EXCLUDED: u32 = 1 << 2;
}

/// Entries of the `FDR_WATCH` map: the host's watched inodes and every
/// container's own sensitive files.
pub const MAX_WATCH: u32 = 4096;

/// Words of the `FDR_SENSITIVE_BITS` bitmap (one bit per inode number
/// modulo 2^18, 32 KiB).
pub const SENSITIVE_WORDS: usize = 4096;

/// The word and bit of inode number `ino` in `FDR_SENSITIVE_BITS`.
#[inline(always)]
pub const fn sensitive_bit(ino: u64) -> (usize, u64) {
    let n = ino as usize & (SENSITIVE_WORDS * 64 - 1);
    (n / 64, 1u64 << (n % 64))
}

/// Key of the `FDR_WATCH` map: an inode on a device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    /// Kernel device number (`MKDEV(major, minor)`: major << 20 | minor).
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Key of the `FDR_SCOPE_DROPS` map: records of a kind the ring buffer
/// refused for a task of a cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// cgroup v2 id of the task whose record was dropped.
    pub cgroup_id: u64,
    /// Its [`EventKind`] number.
    pub kind: u32,
    pub _pad: u32,
}

/// Entries of `FDR_SCOPE_DROPS`; beyond them the least recently dropping
/// cgroups lose their counts (those drops are then host-wide only).
pub const MAX_DROP_KEYS: u32 = 4096;

/// Syscall shapes the generic syscall programs know; user space maps this
/// architecture's syscall numbers to them in `FDR_SYSCALLS`.
pub mod op {
    pub const OPEN: u8 = 1;
    pub const UNLINK: u8 = 2; // (path)
    pub const UNLINKAT: u8 = 3; // (dfd, path, flags)
    pub const RMDIR: u8 = 4; // (path)
    pub const RENAME: u8 = 5; // (old, new)
    pub const RENAMEAT: u8 = 6; // (odfd, old, ndfd, new[, flags])
    pub const CHMOD: u8 = 7; // (path, mode)
    pub const FCHMOD: u8 = 8; // (fd, mode)
    pub const FCHMODAT: u8 = 9; // (dfd, path, mode)
    pub const CHOWN: u8 = 10; // (path, uid, gid); lchown too
    pub const FCHOWN: u8 = 11; // (fd, uid, gid)
    pub const FCHOWNAT: u8 = 12; // (dfd, path, uid, gid, flags)
    pub const LINK: u8 = 13; // (old, new)
    pub const LINKAT: u8 = 14; // (odfd, old, ndfd, new, flags)
    pub const SYMLINK: u8 = 15; // (target, new)
    pub const SYMLINKAT: u8 = 16; // (target, ndfd, new)
    pub const TRUNCATE: u8 = 17; // (path, length)
    pub const FTRUNCATE: u8 = 18; // (fd, length)
    pub const BIND: u8 = 20; // (fd, addr, len)
    pub const CONNECT: u8 = 21; // (fd, addr, len)
    pub const LISTEN: u8 = 22; // (fd, backlog)
    pub const ACCEPT: u8 = 23; // exit: fd
    pub const CRED: u8 = 30; // set*id, capset
}

/// Size of the `FDR_SYSCALLS` table (syscall number → [`op`]).
pub const MAX_SYSCALL: u32 = 512;

/// The layout of `syscalls:sys_enter_*` / `sys_exit_*` records every kernel
/// so far has (`struct syscall_trace_enter { struct trace_entry; int nr;
/// unsigned long args[]; }`, `syscall_trace_exit { …; int nr; long ret; }`).
/// The programs read the record directly at these offsets when the ones
/// read from tracefs ([`KernelOffsets::tp_sys_nr`] & co) are the same,
/// through a probe read at tracefs's offsets otherwise.
pub mod sys_tp {
    pub const NR: u32 = 8;
    pub const ARGS: u32 = 16;
    pub const RET: u32 = 16;
    /// The entry programs, by argument count (index = count − 1): the
    /// kernel attaches a program to a tracepoint only when it reads no
    /// further than the record, which holds just the syscall's arguments.
    pub const ENTER_PROGRAMS: [&str; 6] = [
        "fdr_sys_enter1",
        "fdr_sys_enter2",
        "fdr_sys_enter3",
        "fdr_sys_enter4",
        "fdr_sys_enter5",
        "fdr_sys_enter6",
    ];
    /// The exit program, for every watched syscall.
    pub const EXIT_PROGRAM: &str = "fdr_sys_exit";
}

/// Bytes for one path in a file record: the string the process passed
/// (up to [`PATH_MAX`]), then the walked components of the directory it is
/// relative to (or of the file itself), leaf first.
pub const PATH_AREA: usize = 2 * PATH_MAX + NAME_BUF;

/// One path in a [`FileEvent`]: a string the process passed (`tail`, at
/// the start of the path's area) and/or walked components (leaf first) of
/// the directory it is relative to, or of the file itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathRef {
    /// Bytes of the string passed by the process (no NUL).
    pub tail_len: u16,
    /// Bytes of walked components.
    pub walk_len: u16,
    /// Where the walked components start, from the area's start.
    pub walk_off: u16,
    /// [`flags`] `PATH_*` bits, and [`PathRef::TAIL_ONLY`].
    pub flags: u16,
}

impl PathRef {
    /// `tail` is the whole path: absolute, or a symlink's target text.
    pub const TAIL_ONLY: u16 = 1 << 8;
    /// The string could not be read from the process's memory.
    pub const TAIL_UNREADABLE: u16 = 1 << 9;
}

/// A file change or a sensitive read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// The syscall's number on this architecture.
    pub syscall_nr: u32,
    /// `f_flags` of an opened file; `AT_*`/`RENAME_*` flags otherwise.
    pub flags: u32,
    /// `i_mode` of the file when known (opens, fd-based calls), else 0.
    pub mode: u32,
    /// New mode (chmod), else 0.
    pub new_mode: u32,
    /// Mode before a chmod when known (fchmod), else 0.
    pub old_mode: u32,
    pub _pad2: u32,
    /// New owner and group (chown); `u32::MAX` = unchanged.
    pub uid: u32,
    pub gid: u32,
    /// Device and inode of the file when known, else 0.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
    /// New length (truncate).
    pub size: u64,
    pub path: PathRef,
    /// Second path: the new name (rename, link).
    pub path2: PathRef,
    pub data: [u8; 2 * PATH_AREA],
}

impl FileEvent {
    pub const FIXED_LEN: usize = offset_of!(FileEvent, data);
}

/// Network operations: listen, bind, connect, accept.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, …
    pub protocol: u16,
    /// Local port, host order.
    pub local_port: u16,
    /// Remote port, host order (0 for listen and bind).
    pub remote_port: u16,
    /// The syscall's return value (connect: 0, `-EINPROGRESS`, or the error
    /// of a failed attempt such as `-ECONNREFUSED`).
    pub ret: i32,
    /// listen backlog, else 0.
    pub backlog: u32,
    /// Addresses in network order; IPv4 in the first 4 bytes.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// User and group ids and capabilities of a task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
}

/// A successful change of credentials.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    pub syscall_nr: u32,
    pub _pad: u32,
    pub old: Creds,
    pub new: Creds,
}

/// Arguments of a syscall in flight, kept from its entry to its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallArgs {
    pub nr: u32,
    pub op: u32,
    pub args: [u64; 6],
    /// Credentials at entry (for [`op::CRED`]).
    pub creds: Creds,
    /// Mode of the file at entry (for [`op::FCHMOD`]), else 0.
    pub old_mode: u32,
    pub _pad: u32,
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
    pub dentry_d_inode: u32,
    pub task_fs: u32,
    pub fs_pwd: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_f_inode: u32,
    pub file_f_flags: u32,
    pub file_private_data: u32,
    pub inode_i_mode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub sb_s_magic: u32,
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_rcv_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    pub sk_protocol: u32,
    pub task_cred: u32,
    pub cred_uid: u32,
    pub cred_euid: u32,
    pub cred_suid: u32,
    pub cred_fsuid: u32,
    pub cred_gid: u32,
    pub cred_egid: u32,
    pub cred_sgid: u32,
    pub cred_fsgid: u32,
    pub cred_cap_effective: u32,
    pub cred_cap_permitted: u32,
    /// Offset of `__syscall_nr` in the records of `syscalls:sys_enter_*`
    /// and `syscalls:sys_exit_*`.
    pub tp_sys_nr: u32,
    /// Offset of the first argument in `syscalls:sys_enter_*` records (the
    /// six follow as `unsigned long`s).
    pub tp_sys_args: u32,
    /// Offset of `ret` in `syscalls:sys_exit_*` records.
    pub tp_sys_ret: u32,
    /// `struct pt_regs` slots of the six syscall arguments, in order (read
    /// at a syscall's exit).
    pub regs_args: [u32; 6],
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
        dentry_d_inode: u32::MAX,
        task_fs: u32::MAX,
        fs_pwd: u32::MAX,
        task_files: u32::MAX,
        files_fdt: u32::MAX,
        fdtable_fd: u32::MAX,
        fdtable_max_fds: u32::MAX,
        file_f_inode: u32::MAX,
        file_f_flags: u32::MAX,
        file_private_data: u32::MAX,
        inode_i_mode: u32::MAX,
        inode_i_ino: u32::MAX,
        inode_i_sb: u32::MAX,
        sb_s_dev: u32::MAX,
        sb_s_magic: u32::MAX,
        socket_sk: u32::MAX,
        sk_family: u32::MAX,
        sk_num: u32::MAX,
        sk_dport: u32::MAX,
        sk_rcv_saddr: u32::MAX,
        sk_daddr: u32::MAX,
        sk_v6_rcv_saddr: u32::MAX,
        sk_v6_daddr: u32::MAX,
        sk_protocol: u32::MAX,
        task_cred: u32::MAX,
        cred_uid: u32::MAX,
        cred_euid: u32::MAX,
        cred_suid: u32::MAX,
        cred_fsuid: u32::MAX,
        cred_gid: u32::MAX,
        cred_egid: u32::MAX,
        cred_sgid: u32::MAX,
        cred_fsgid: u32::MAX,
        cred_cap_effective: u32::MAX,
        cred_cap_permitted: u32::MAX,
        tp_sys_nr: u32::MAX,
        tp_sys_args: u32::MAX,
        tp_sys_ret: u32::MAX,
        regs_args: [u32::MAX; 6],
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
    /// `u64`: bit per [`super::EventKind`] number: the kind is captured.
    pub const ENABLED_KINDS: &str = "FDR_ENABLED_KINDS";
    /// [`super::Prefixes`]: path prefixes matched against absolute paths
    /// passed to path-based syscalls.
    pub const PREFIXES: &str = "FDR_PREFIXES";
}

/// How many prefixes [`Prefixes`] holds, and their longest length.
pub const MAX_PREFIXES: usize = 8;
pub const PREFIX_LEN: usize = 64;

/// Path prefixes for absolute paths given to path-based syscalls: those of
/// class [`watch::EXCLUDED`] are dropped, [`watch::CRITICAL`] go to the
/// critical ring. Each is stored as 8 little-endian words with a mask.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefixes {
    pub count: u32,
    pub _pad: u32,
    pub class: [u32; MAX_PREFIXES],
    /// Bytes of each prefix.
    pub len: [u32; MAX_PREFIXES],
    pub words: [[u64; PREFIX_LEN / 8]; MAX_PREFIXES],
}

impl Prefixes {
    pub const EMPTY: Prefixes = Prefixes {
        count: 0,
        _pad: 0,
        class: [0; MAX_PREFIXES],
        len: [0; MAX_PREFIXES],
        words: [[0; PREFIX_LEN / 8]; MAX_PREFIXES],
    };
}

/// Names of the maps user space opens.
pub mod maps {
    /// Ring buffer carrying every record but the critical ones.
    pub const EVENTS: &str = "FDR_EVENTS";
    /// Ring buffer for critical kinds ([`super::EventKind::is_critical`] and
    /// changes to [`super::watch::CRITICAL`] files).
    pub const CRITICAL: &str = "FDR_CRITICAL";
    /// `HashMap<InodeKey, u32>`: watched inodes ([`super::watch`] bits).
    pub const WATCH: &str = "FDR_WATCH";
    /// `Array<[u64; SENSITIVE_WORDS]>` of one element: a bit per inode
    /// number of the sensitive entries of [`WATCH`] ([`super::sensitive_bit`]).
    pub const SENSITIVE_BITS: &str = "FDR_SENSITIVE_BITS";
    /// `Array<u8>` indexed by syscall number: its [`super::op`].
    pub const SYSCALLS: &str = "FDR_SYSCALLS";
    /// `HashMap<u32, SyscallArgs>` by thread id: syscalls in flight.
    pub const ARGS: &str = "FDR_ARGS";
    /// `PerCpuArray<u64>` indexed by kind: records the ring buffer refused.
    pub const DROPS: &str = "FDR_DROPS";
    /// `LruPerCpuHashMap<DropKey, u64>`: records the ring buffer refused,
    /// by cgroup and kind (so a gap can name its scope).
    pub const SCOPE_DROPS: &str = "FDR_SCOPE_DROPS";
    /// `Array<u32>` of one element, non-zero while the agent's reader sleeps:
    /// the next record wakes it whatever the ring's fill.
    pub const READER: &str = "FDR_READER";
    /// `PerCpuArray<ExecEvent>`: scratch space for building large records.
    pub const SCRATCH: &str = "FDR_SCRATCH";
}

// No implicit padding: each size is the sum of its fields.
const _: () = assert!(size_of::<EventHeader>() == 16);
const _: () = assert!(size_of::<TaskInfo>() == 6 * 4 + 2 * 8 + COMM_LEN);
const _: () = assert!(size_of::<ForkEvent>() == 16 + 56 + 8);
const _: () =
    assert!(size_of::<ExecEvent>() == 16 + 56 + 24 + FILENAME_MAX + ARGV_MAX + PATH_MAX + NAME_BUF);
const _: () = assert!(size_of::<ExitEvent>() == 16 + 56 + 8);
const _: () = assert!(size_of::<KernelOffsets>() == 70 * 4);
const _: () = assert!(size_of::<InodeKey>() == 16);
const _: () = assert!(SENSITIVE_WORDS.is_power_of_two());
const _: () = assert!(size_of::<DropKey>() == 16);
const _: () = assert!(size_of::<PathRef>() == 8);
const _: () = assert!(size_of::<FileEvent>() == 16 + 56 + 10 * 4 + 16 + 16 + 2 * PATH_AREA);
const _: () = assert!(size_of::<NetEvent>() == 16 + 56 + 16 + 32);
const _: () = assert!(size_of::<Creds>() == 48);
const _: () = assert!(size_of::<PrivEvent>() == 16 + 56 + 8 + 96);
const _: () = assert!(size_of::<SyscallArgs>() == 8 + 48 + 48 + 8);
const _: () = assert!(size_of::<Prefixes>() == 8 + 8 * 8 + 8 * PREFIX_LEN);
const _: () = assert!((EventKind::Audit as u32) < MAX_KINDS && MAX_KINDS <= 64);
const _: () = assert!(offset_of!(ExecEvent, filename) == 96);
const _: () = assert!(ARGV_MAX + PATH_MAX + NAME_BUF <= u16::MAX as usize);
// The kernel side bounds offsets with masks: these must be powers of two.
const _: () = assert!(ARGV_MAX.is_power_of_two() && PATH_MAX.is_power_of_two());
const _: () = assert!(NAME_BUF.is_power_of_two());

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data, `#[repr(C)]`, no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InodeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Prefixes {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropKey {}
}
