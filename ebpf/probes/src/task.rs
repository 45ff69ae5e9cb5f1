//! Reading `task_struct` and friends through offsets resolved from BTF.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_probe_read_kernel, generated::bpf_get_current_task_btf,
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

/// The current task's `task_struct`, as the verifier's typed (BTF) pointer:
/// [`load`]s through it and through the typed pointers read from it are
/// plain memory loads the JIT guards, not helper calls (a
/// `bpf_probe_read_kernel` costs tens of nanoseconds on a VM). It is an
/// address like any other for [`field`].
#[inline(always)]
pub fn current() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// The thread-group id of the current task's real parent.
#[inline(always)]
fn ppid_of(task: *const u8) -> u32 {
    let o = offsets();
    // SAFETY: typed loads of members at their BTF offsets (see `load`).
    unsafe {
        let parent: *const u8 = load(task, o.task_real_parent);
        load(parent, o.task_tgid)
    }
}

/// The start time of the current task's thread-group leader.
#[inline(always)]
fn leader_start_ns(task: *const u8) -> u64 {
    let o = offsets();
    // SAFETY: as above.
    unsafe {
        let leader: *const u8 = load(task, o.task_group_leader);
        load(leader, o.task_start_time)
    }
}

/// Header flags that describe the session of `task` (the current task,
/// from [`current`]).
#[inline(always)]
pub fn session_flags(task: *const u8) -> u16 {
    let o = offsets();
    // SAFETY: as above.
    let tty: usize = unsafe {
        let signal: *const u8 = load(task, o.task_signal);
        load(signal, o.signal_tty)
    };
    if tty != 0 {
        flags::HAS_TTY
    } else {
        0
    }
}

/// Everything about the current task (`task`, from [`current`]) that every
/// event carries.
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
        loginuid: if offsets().task_loginuid == u32::MAX {
            u32::MAX
        } else {
            // SAFETY: as above.
            unsafe { load(task, offsets().task_loginuid) }
        },
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        start_ns: leader_start_ns(task),
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// A load of the `T` at `base + off` where `base` is a typed (BTF) pointer
/// and `off` a member's offset from the read-only data (a constant to the
/// verifier, which checks the load against the kernel's BTF and makes it a
/// guarded load: a bad address reads 0 instead of faulting).
#[inline(always)]
pub unsafe fn load<T: Copy>(base: *const u8, off: u32) -> T {
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
        let files: *const u8 = load(current(), o.task_files);
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
    if o.inode_i_ino > o.inode_i_sb && gap <= 24 && gap & 7 == 0 {
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

/// The 8-byte members at offsets `a`, `b` and `c` of `base`: one probe
/// read when they lie within 32 bytes (8-byte apart), three otherwise.
#[inline(always)]
pub fn read3(base: *const u8, a: u32, b: u32, c: u32) -> Option<(u64, u64, u64)> {
    let lo = core::cmp::min(a, core::cmp::min(b, c));
    let hi = core::cmp::max(a, core::cmp::max(b, c));
    let aligned = (a - lo) & 7 == 0 && (b - lo) & 7 == 0 && (c - lo) & 7 == 0;
    if hi != u32::MAX && hi - lo <= 24 && aligned {
        let w: [u64; 4] = field(base, lo)?;
        let pick = |off: u32| match (off - lo) / 8 {
            0 => w[0],
            1 => w[1],
            2 => w[2],
            _ => w[3],
        };
        Some((pick(a), pick(b), pick(c)))
    } else {
        Some((field(base, a)?, field(base, b)?, field(base, c)?))
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

#[inline(always)]
pub fn inode_info(inode: *const u8) -> Option<InodeInfo> {
    let o = offsets();
    let (sb, ino) = inode_sb_ino(inode)?;
    Some(InodeInfo {
        dev: field(sb, o.sb_s_dev)?,
        ino,
        mode: field::<u16>(inode, o.inode_i_mode)? as u32,
        magic: field(sb, o.sb_s_magic)?,
    })
}

/// The credentials of `task` (the current task, from [`current`]).
#[inline(always)]
pub fn creds(task: *const u8) -> fdr_common::Creds {
    let o = offsets();
    // SAFETY: typed loads of members at their BTF offsets (see `load`).
    unsafe {
        let c: *const u8 = load(task, o.task_cred);
        fdr_common::Creds {
            uid: load(c, o.cred_uid),
            euid: load(c, o.cred_euid),
            suid: load(c, o.cred_suid),
            fsuid: load(c, o.cred_fsuid),
            gid: load(c, o.cred_gid),
            egid: load(c, o.cred_egid),
            sgid: load(c, o.cred_sgid),
            fsgid: load(c, o.cred_fsgid),
            cap_effective: load(c, o.cred_cap_effective),
            cap_permitted: load(c, o.cred_cap_permitted),
        }
    }
}
