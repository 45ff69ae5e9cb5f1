//! Reading `task_struct` and friends through offsets resolved from BTF.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_get_current_uid_gid, bpf_probe_read_kernel,
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

/// The `struct file *` of descriptor `fd` of the current task.
#[inline(always)]
pub fn file_of_fd(task: *const u8, fd: i64) -> *const u8 {
    let o = offsets();
    if fd < 0 {
        return core::ptr::null();
    }
    let files: *const u8 = field(task, o.task_files).unwrap_or(core::ptr::null());
    let fdt: *const u8 = field(files, o.files_fdt).unwrap_or(core::ptr::null());
    // `max_fds` and `fd` are neighbours: one read when they fit in 16 bytes.
    let (max, array) = if o.fdtable_max_fds == 0 && o.fdtable_fd == 8 {
        let pair: [u64; 2] = field(fdt, 0).unwrap_or([0; 2]);
        (pair[0] as u32, pair[1] as *const u8)
    } else {
        (
            field::<u32>(fdt, o.fdtable_max_fds).unwrap_or(0),
            field(fdt, o.fdtable_fd).unwrap_or(core::ptr::null()),
        )
    };
    if fd as u64 >= max as u64 || array.is_null() {
        return core::ptr::null();
    }
    // SAFETY: pointer arithmetic only; the read is a probe read.
    let slot = unsafe { array.add(fd as usize * 8) };
    field(slot, 0).unwrap_or(core::ptr::null())
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
