//! Walking a `struct path` up the dentry cache to its root, crossing mounts,
//! the way the kernel's `d_path` does, without the `bpf_d_path` helper
//! (which tracepoint programs may not call).
//!
//! The walk runs under `bpf_loop`, so the verifier checks one step instead
//! of every unrolled iteration; its state lives in a per-CPU map rather
//! than on the stack, so that every step starts from the same verifier state
//! (map contents are opaque to it) and verification converges at once.
//! Components are written leaf first, each ended by NUL, into the per-CPU
//! scratch record at masked offsets so every write is bounded; user space
//! reverses them into an absolute path.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_loop},
    macros::map,
    maps::PerCpuArray,
};
use fdr_common::{flags, NAME_BUF, PATH_DEPTH, PATH_MAX};

use crate::{
    emit::{offsets, scratch_bytes, watch_flags, SCRATCH_SIZE},
    task::{field, inode_sb_ino, read3},
};

/// The walk's state, shared with the loop callback.
#[repr(C)]
struct Walk {
    /// Kernel addresses, kept as integers (map values must be `Sync`).
    dentry: usize,
    vfsmnt: usize,
    mnt: usize,
    /// Where in the scratch record the components go (start of the area).
    area: usize,
    /// Bytes written so far.
    len: usize,
    flags: u16,
    done: bool,
    /// `fdr_common::watch` bits of every inode on the way, or-ed.
    watch: u32,
    /// Look the inodes up in the watch map (file events; not for exec).
    want_watch: bool,
    /// `mnt_root` of the current mount, read once per mount.
    mnt_root: usize,
    /// The last superblock seen and its device (most paths stay on one).
    sb: usize,
    dev: u32,
}

#[map(name = "FDR_WALK")]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn state() -> Option<&'static mut Walk> {
    // SAFETY: per-CPU value; these programs do not nest on one CPU.
    WALK.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Result of a walk.
pub struct Walked {
    /// Bytes written.
    pub len: usize,
    /// `PATH_*` flags.
    pub flags: u16,
    /// `fdr_common::watch` bits of the inodes on the path, or-ed.
    pub watch: u32,
}

/// Walks `path` (a `struct path *`) into the scratch record at byte offset
/// `area`, which must leave `PATH_MAX + NAME_BUF` bytes of room; with
/// `want_watch`, or-ing the watch bits of every inode on the way.
#[inline(always)]
pub fn walk(path: *const u8, area: usize, want_watch: bool) -> Walked {
    let o = offsets();
    let dentry: *const u8 = field(path, o.path_dentry).unwrap_or(core::ptr::null());
    let vfsmnt: *const u8 = field(path, o.path_mnt).unwrap_or(core::ptr::null());
    let failed = |fl| Walked {
        len: 0,
        flags: fl,
        watch: 0,
    };
    if dentry.is_null() || vfsmnt.is_null() || o.mount_mnt == u32::MAX {
        return failed(flags::PATH_DISCONNECTED);
    }
    let Some(w) = state() else {
        return failed(flags::PATH_TRUNCATED);
    };
    w.dentry = dentry as usize;
    w.vfsmnt = vfsmnt as usize;
    // container_of(vfsmnt, struct mount, mnt)
    w.mnt = (vfsmnt as usize).wrapping_sub(o.mount_mnt as usize);
    w.area = area;
    w.len = 0;
    w.flags = 0;
    w.done = false;
    w.watch = 0;
    w.want_watch = want_watch;
    w.mnt_root = field::<usize>(vfsmnt, o.vfsmount_mnt_root).unwrap_or(0);
    w.sb = 0;
    w.dev = 0;
    // SAFETY: `step` has the callback signature bpf_loop expects.
    unsafe { bpf_loop(PATH_DEPTH, step as *mut c_void, core::ptr::null_mut(), 0) };
    let Some(w) = state() else {
        return failed(flags::PATH_TRUNCATED);
    };
    if !w.done {
        w.flags |= flags::PATH_TRUNCATED;
    }
    Walked {
        len: w.len,
        flags: w.flags,
        watch: w.watch,
    }
}

/// One component. Returns 1 to stop the loop, 0 to go on.
extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(w) = state() else {
        return 1;
    };
    let o = offsets();
    let (dentry, mnt) = (w.dentry as *const u8, w.mnt as *const u8);
    let mnt_root = w.mnt_root as *const u8;
    // d_parent, d_name.name and d_inode are neighbours: one read.
    let (parent, name, inode) =
        read3(dentry, o.dentry_d_parent, o.dentry_name, o.dentry_d_inode).unwrap_or((0, 0, 0));
    let (parent, name, inode) = (parent as *const u8, name as *const u8, inode as *const u8);
    if dentry == mnt_root || dentry == parent || parent.is_null() {
        if dentry != mnt_root {
            // The root of a dentry tree that is no mount root: deleted or
            // disconnected.
            return finish(w, flags::PATH_DISCONNECTED);
        }
        let mnt_parent: *const u8 = field(mnt, o.mount_mnt_parent).unwrap_or(core::ptr::null());
        if mnt_parent.is_null() || mnt_parent == mnt {
            return finish(w, 0); // the root of the mount tree
        }
        // Go on from where this mount sits in its parent.
        w.dentry = field::<usize>(mnt, o.mount_mnt_mountpoint).unwrap_or(0);
        w.mnt = mnt_parent as usize;
        w.vfsmnt = (mnt_parent as usize).wrapping_add(o.mount_mnt as usize);
        w.mnt_root = field::<usize>(w.vfsmnt as *const u8, o.vfsmount_mnt_root).unwrap_or(0);
        if w.dentry == 0 {
            return finish(w, flags::PATH_DISCONNECTED);
        }
        return 0;
    }
    if w.len >= PATH_MAX - NAME_BUF {
        return finish(w, flags::PATH_TRUNCATED);
    }
    if w.want_watch {
        if let Some((sb, ino)) = inode_sb_ino(inode) {
            if sb as usize != w.sb {
                w.sb = sb as usize;
                w.dev = field(sb, o.sb_s_dev).unwrap_or(0);
            }
            w.watch |= watch_flags(w.dev, ino);
        }
    }
    let Some(buf) = scratch_bytes() else {
        return finish(w, flags::PATH_TRUNCATED);
    };
    let at = core::cmp::min(w.area, SCRATCH_SIZE) + (w.len & (PATH_MAX - 1));
    let Some(dst) = buf.get_mut(at..at + NAME_BUF) else {
        return finish(w, flags::PATH_TRUNCATED);
    };
    // SAFETY: a probe read into a bounded slice; stops at NUL.
    match unsafe { bpf_probe_read_kernel_str_bytes(name, dst) } {
        Ok(s) => w.len += s.len() + 1,
        Err(_) => return finish(w, flags::PATH_DISCONNECTED),
    }
    w.dentry = parent as usize;
    0
}

#[inline(always)]
fn finish(w: &mut Walk, fl: u16) -> i64 {
    w.flags |= fl;
    w.done = true;
    1
}
