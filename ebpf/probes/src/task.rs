//! Reading `task_struct` and friends through offsets resolved from BTF.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_get_current_uid_gid, bpf_probe_read_kernel,
    generated::bpf_get_current_task_btf,
};
use fdr_common::{flags, TaskInfo, COMM_LEN};

use crate::emit::offsets;

/// Reads a `T` at `base + off`; `None` when the offset is unknown or the
/// read faults.
#[inline(always)]
pub fn field<T>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() || off == u32::MAX {
        return None;
    }
    // SAFETY: a probe read; faults are reported, not taken.
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<T>()).ok() }
}

/// The current task's `task_struct`.
#[inline(always)]
pub fn current() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// The thread-group id of `task`'s real parent.
#[inline(always)]
pub fn ppid_of(task: *const u8) -> u32 {
    let o = offsets();
    let parent: *const u8 = field(task, o.task_real_parent).unwrap_or(core::ptr::null());
    field(parent, o.task_tgid).unwrap_or(0)
}

/// The start time of `task`'s thread-group leader.
#[inline(always)]
pub fn leader_start_ns(task: *const u8) -> u64 {
    let o = offsets();
    let leader: *const u8 = field(task, o.task_group_leader).unwrap_or(core::ptr::null());
    field(leader, o.task_start_time).unwrap_or(0)
}

/// Header flags that describe the task's session.
#[inline(always)]
pub fn session_flags(task: *const u8) -> u16 {
    let o = offsets();
    let signal: *const u8 = field(task, o.task_signal).unwrap_or(core::ptr::null());
    let tty: usize = field(signal, o.signal_tty).unwrap_or(0);
    if tty != 0 {
        flags::HAS_TTY
    } else {
        0
    }
}

/// Everything about the current task that every event carries.
#[inline(always)]
pub fn current_info(task: *const u8) -> TaskInfo {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    TaskInfo {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        ppid: ppid_of(task),
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        loginuid: field(task, offsets().task_loginuid).unwrap_or(u32::MAX),
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        start_ns: leader_start_ns(task),
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// The current task's `task_struct` as the verifier's typed (BTF) pointer:
/// loads through it and through the typed pointers read from it ([`load`])
/// are plain memory loads the JIT guards, not helper calls — a
/// `bpf_probe_read_kernel` costs tens of nanoseconds on a VM.
#[inline(always)]
fn current_btf() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// A load of the `T` at `base + off` where `base` is a typed (BTF) pointer
/// and `off` a member's offset from the read-only data (a constant to the
/// verifier, which checks the load against the kernel's BTF and makes it a
/// guarded load: a bad address reads 0 instead of faulting).
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: see above; the caller passes a typed pointer and a member offset.
    unsafe { core::ptr::read_volatile(base.add(off as usize).cast::<T>()) }
}

/// The `struct file *` of descriptor `fd` of the current task.
///
/// task → files → fdt → (max_fds, fd[]) are typed loads; the slot of the
/// `fd` array (a `struct file **`, which BTF does not type further) is one
/// probe read.
#[inline(always)]
pub fn file_of_fd(fd: i64) -> *const u8 {
    let o = offsets();
    if fd < 0 {
        return core::ptr::null();
    }
    // SAFETY: typed loads of members at their BTF offsets (see `load`).
    let (max, array) = unsafe {
        let files: *const u8 = load(current_btf(), o.task_files);
        let fdt: *const u8 = load(files, o.files_fdt);
        (
            load::<u32>(fdt, o.fdtable_max_fds),
            load::<u64>(fdt, o.fdtable_fd) as *const u8,
        )
    };
    if fd as u64 >= max as u64 || array.is_null() {
        return core::ptr::null();
    }
    // SAFETY: pointer arithmetic only; the read is a probe read.
    let slot = unsafe { array.add(fd as usize * 8) };
    field(slot, 0).unwrap_or(core::ptr::null())
}

/// A file's inode and `f_flags`, in one read when they are neighbours.
#[inline(always)]
pub fn file_inode_flags(file: *const u8) -> Option<(*const u8, u32)> {
    let o = offsets();
    if o.file_f_flags == o.file_f_inode.wrapping_add(8) {
        let pair: [u64; 2] = field(file, o.file_f_inode)?;
        Some((pair[0] as *const u8, pair[1] as u32))
    } else {
        Some((field(file, o.file_f_inode)?, field(file, o.file_f_flags)?))
    }
}

/// An inode's `i_sb` and `i_ino`, in one read when they are at most
/// 24 bytes apart (they are 24 apart in 6.x kernels).
#[inline(always)]
pub fn inode_sb_ino(inode: *const u8) -> Option<(*const u8, u64)> {
    let o = offsets();
    let gap = o.inode_i_ino.wrapping_sub(o.inode_i_sb);
    if o.inode_i_ino > o.inode_i_sb && gap <= 24 && gap % 8 == 0 {
        let w: [u64; 4] = field(inode, o.inode_i_sb)?;
        let ino = match gap {
            8 => w[1],
            16 => w[2],
            _ => w[3],
        };
        Some((w[0] as *const u8, ino))
    } else {
        Some((field(inode, o.inode_i_sb)?, field(inode, o.inode_i_ino)?))
    }
}

/// Identity and type of an inode.
#[derive(Clone, Copy)]
pub struct InodeInfo {
    pub dev: u32,
    pub ino: u64,
    pub mode: u32,
    pub magic: u64,
}

/// Device and inode number only.
#[inline(always)]
pub fn inode_id(inode: *const u8) -> Option<(u32, u64)> {
    let o = offsets();
    let sb: *const u8 = field(inode, o.inode_i_sb)?;
    Some((field(sb, o.sb_s_dev)?, field(inode, o.inode_i_ino)?))
}

#[inline(always)]
pub fn inode_info(inode: *const u8) -> Option<InodeInfo> {
    let o = offsets();
    let sb: *const u8 = field(inode, o.inode_i_sb)?;
    Some(InodeInfo {
        dev: field(sb, o.sb_s_dev)?,
        ino: field(inode, o.inode_i_ino)?,
        mode: field::<u16>(inode, o.inode_i_mode)? as u32,
        magic: field(sb, o.sb_s_magic)?,
    })
}

/// The current task's credentials.
#[inline(always)]
pub fn creds(task: *const u8) -> fdr_common::Creds {
    let o = offsets();
    let c: *const u8 = field(task, o.task_cred).unwrap_or(core::ptr::null());
    fdr_common::Creds {
        uid: field(c, o.cred_uid).unwrap_or(u32::MAX),
        euid: field(c, o.cred_euid).unwrap_or(u32::MAX),
        suid: field(c, o.cred_suid).unwrap_or(u32::MAX),
        fsuid: field(c, o.cred_fsuid).unwrap_or(u32::MAX),
        gid: field(c, o.cred_gid).unwrap_or(u32::MAX),
        egid: field(c, o.cred_egid).unwrap_or(u32::MAX),
        sgid: field(c, o.cred_sgid).unwrap_or(u32::MAX),
        fsgid: field(c, o.cred_fsgid).unwrap_or(u32::MAX),
        cap_effective: field(c, o.cred_cap_effective).unwrap_or(0),
        cap_permitted: field(c, o.cred_cap_permitted).unwrap_or(0),
    }
}
