//! File events: writes (opens for writing), changes by path or descriptor
//! (rename, unlink, chmod, chown, link, truncate) and reads of sensitive
//! files. Filtering happens here, before the ring buffer: read-only opens
//! of anything not on the sensitive list, non-regular files, pseudo
//! filesystems and excluded directories never leave the kernel.

use aya_ebpf::helpers::bpf_probe_read_user_str_bytes;
use fdr_common::{
    flags, op, watch, EventKind, FileEvent, PathRef, SyscallArgs, PATH_AREA, PATH_MAX,
};

use crate::{
    emit::{
        enabled, header, maybe_sensitive, offsets, prefixes, scratch_bytes, scratch_file, send_to,
        watch_flags,
    },
    path::walk,
    syscalls::is_agent,
    task::{
        current, current_info, field, file_inode_flags, file_of_fd, inode_info, inode_sb_ino,
        session_flags, InodeInfo,
    },
};

const AT_FDCWD: i64 = -100;
const AT_REMOVEDIR: u64 = 0x200;
const O_ACCMODE: u32 = 0o3;
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

/// Filesystems whose files are interfaces, not data: proc, sysfs, cgroup
/// v1/v2, tracefs, debugfs, securityfs, bpffs, devpts, configfs.
#[inline(always)]
fn pseudo_fs(magic: u64) -> bool {
    matches!(
        magic,
        0x9fa0
            | 0x6265_6572
            | 0x0027_e0eb
            | 0x6367_7270
            | 0x7472_6163
            | 0x6462_6720
            | 0x7363_6673
            | 0xcafe_4a11
            | 0x1cd1
            | 0x6265_6570
    )
}

/// Fills the fields every file record has.
#[inline(always)]
fn begin(ev: &mut FileEvent, nr: u32) {
    ev.syscall_nr = nr;
    ev.flags = 0;
    ev.mode = 0;
    ev.new_mode = 0;
    ev.old_mode = 0;
    ev.uid = u32::MAX;
    ev.gid = u32::MAX;
    ev.dev = 0;
    ev.ino = 0;
    ev.size = 0;
    ev.path = PathRef::default();
    ev.path2 = PathRef::default();
}

fn set_inode(ev: &mut FileEvent, i: &InodeInfo) {
    ev.dev = i.dev;
    ev.ino = i.ino;
    ev.mode = i.mode;
}

/// Exit of an open (open, openat, openat2, creat) that returned `fd`.
///
/// Read-only opens are the most frequent syscall fdr watches and almost
/// all of them are dropped: their path costs the descriptor lookup, the
/// inode's number and a bit test of the sensitive inodes' bitmap; only
/// an inode whose bit is set pays for its device and the map lookup.
#[inline(never)]
pub fn exit_open(nr: u32, fd: i64) -> i32 {
    if fd < 0 {
        return 0;
    }
    let file = file_of_fd(fd);
    let Some((inode, f_flags)) = file_inode_flags(file) else {
        return 0;
    };
    let writing = f_flags & O_ACCMODE != 0;
    let kind = if writing {
        EventKind::FileWrite
    } else {
        EventKind::SensitiveRead
    };
    if !enabled(kind as u16) {
        return 0;
    }
    let o = offsets();
    let own = if writing {
        0
    } else {
        let Some((sb, ino)) = inode_sb_ino(inode) else {
            return 0;
        };
        if !maybe_sensitive(ino) {
            return 0; // a read-only open of an ordinary file
        }
        let Some(dev) = field::<u32>(sb, o.sb_s_dev) else {
            return 0;
        };
        let own = watch_flags(dev, ino);
        if own & watch::SENSITIVE == 0 {
            return 0;
        }
        own
    };
    // After the read-only filter: the agent's own opens are mostly
    // read-only ones of ordinary files, dropped above anyway.
    if is_agent() {
        return 0;
    }
    let task = current();
    let Some(info) = inode_info(inode) else {
        return 0;
    };
    if info.mode & S_IFMT != S_IFREG || pseudo_fs(info.magic) {
        return 0;
    }
    let own = if writing {
        watch_flags(info.dev, info.ino)
    } else {
        own
    };
    let Some(ev) = scratch_file() else {
        return 0;
    };
    begin(ev, nr);
    ev.flags = f_flags;
    set_inode(ev, &info);
    // SAFETY: pointer arithmetic only.
    let f_path = unsafe { file.add(o.file_f_path as usize) };
    let w = walk(f_path, FileEvent::FIXED_LEN, true);
    if (w.watch | own) & watch::EXCLUDED != 0 {
        return 0;
    }
    ev.path = PathRef {
        tail_len: 0,
        walk_len: w.len as u16,
        walk_off: 0,
        flags: w.flags,
    };
    ev.task = current_info(task);
    ev.header = header(kind as u16, session_flags(task));
    let critical = (w.watch | own) & watch::CRITICAL != 0;
    send_to(
        critical,
        kind as u16,
        ev,
        FileEvent::FIXED_LEN + (w.len & (2 * PATH_MAX - 1)),
    );
    0
}

/// Result of resolving one path argument.
struct Resolved {
    path: PathRef,
    watch: u32,
}

/// Resolves a path argument into the record's area `slot` (0 or 1): the
/// string the process passed, and — when it is relative — the walked
/// directory it is relative to (`dfd`, or the working directory).
#[inline(always)]
fn resolve(task: *const u8, dfd: i64, user: u64, slot: usize, text_only: bool) -> Resolved {
    let area = FileEvent::FIXED_LEN + (slot & 1) * PATH_AREA;
    let mut r = Resolved {
        path: PathRef::default(),
        watch: 0,
    };
    let Some(buf) = scratch_bytes() else {
        r.path.flags = PathRef::TAIL_UNREADABLE;
        return r;
    };
    let Some(dst) = buf.get_mut(area..area + PATH_MAX) else {
        return r;
    };
    // SAFETY: a probe read of the process's string into a bounded slice.
    let tail_len = match unsafe { bpf_probe_read_user_str_bytes(user as *const u8, dst) } {
        Ok(s) => s.len(),
        Err(_) => {
            r.path.flags = PathRef::TAIL_UNREADABLE;
            0
        }
    };
    r.path.tail_len = tail_len as u16;
    let absolute = dst.first() == Some(&b'/');
    if text_only || absolute {
        r.path.flags |= PathRef::TAIL_ONLY;
        if absolute {
            r.watch = prefix_class(area);
        }
        return r;
    }
    let o = offsets();
    let dir_path = if dfd == AT_FDCWD {
        let fs: *const u8 = field(task, o.task_fs).unwrap_or(core::ptr::null());
        if fs.is_null() {
            return r;
        }
        // SAFETY: pointer arithmetic only.
        unsafe { fs.add(o.fs_pwd as usize) }
    } else {
        let file = file_of_fd(dfd);
        if file.is_null() {
            return r;
        }
        // SAFETY: pointer arithmetic only.
        unsafe { file.add(o.file_f_path as usize) }
    };
    let w = walk(dir_path, area + PATH_MAX, true);
    r.path.walk_len = w.len as u16;
    r.path.walk_off = PATH_MAX as u16;
    r.path.flags |= w.flags;
    r.watch = w.watch;
    r
}

/// Resolves a descriptor's file into area `slot`.
#[inline(always)]
fn resolve_fd(fd: i64, ev: &mut FileEvent) -> Resolved {
    let o = offsets();
    let file = file_of_fd(fd);
    let inode: *const u8 = field(file, o.file_f_inode).unwrap_or(core::ptr::null());
    let mut own = 0;
    if let Some(info) = inode_info(inode) {
        if pseudo_fs(info.magic) {
            own = watch::EXCLUDED;
        }
        own |= watch_flags(info.dev, info.ino);
        set_inode(ev, &info);
    }
    if file.is_null() {
        return Resolved {
            path: PathRef {
                flags: flags::PATH_DISCONNECTED,
                ..PathRef::default()
            },
            watch: own,
        };
    }
    // SAFETY: pointer arithmetic only.
    let f_path = unsafe { file.add(o.file_f_path as usize) };
    let w = walk(f_path, FileEvent::FIXED_LEN, true);
    Resolved {
        path: PathRef {
            tail_len: 0,
            walk_len: w.len as u16,
            walk_off: 0,
            flags: w.flags,
        },
        watch: w.watch | own,
    }
}

/// The `watch` class of the configured prefix an absolute path string at
/// scratch offset `area` starts with, 0 when none.
#[inline(always)]
fn prefix_class(area: usize) -> u32 {
    let p = prefixes();
    let Some(buf) = scratch_bytes() else {
        return 0;
    };
    let mut class = 0;
    for i in 0..fdr_common::MAX_PREFIXES {
        if i as u32 >= p.count {
            break;
        }
        let len = p.len[i] as usize;
        let mut matched = len > 0;
        for w in 0..fdr_common::PREFIX_LEN / 8 {
            if w * 8 >= len {
                break;
            }
            let at = area + w * 8;
            let Some(bytes) = buf.get(at..at + 8) else {
                matched = false;
                break;
            };
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            let word = u64::from_le_bytes(word);
            let rem = len - w * 8;
            let mask = if rem >= 8 {
                u64::MAX
            } else {
                (1u64 << (rem * 8)) - 1
            };
            if word & mask != p.words[i][w] {
                matched = false;
                break;
            }
        }
        if matched {
            class |= p.class[i];
        }
    }
    class
}

/// Path- and descriptor-based file changes, at exit, when they succeeded.
/// Exit of a path or descriptor based file change.
#[inline(never)]
pub fn exit_file(rc: i64, a: SyscallArgs) -> i32 {
    if rc != 0 {
        return 0;
    }
    let Some(ev) = scratch_file() else {
        return 0;
    };
    begin(ev, a.nr);
    let task = current();
    let x = a.args;
    let opn = a.op as u8;
    let kind = match opn {
        op::UNLINK | op::UNLINKAT | op::RMDIR => EventKind::FileUnlink,
        op::RENAME | op::RENAMEAT => EventKind::FileRename,
        op::CHMOD | op::FCHMOD | op::FCHMODAT => EventKind::FileChmod,
        op::CHOWN | op::FCHOWN | op::FCHOWNAT => EventKind::FileChown,
        op::LINK | op::LINKAT | op::SYMLINK | op::SYMLINKAT => EventKind::FileLink,
        op::TRUNCATE | op::FTRUNCATE => EventKind::FileTruncate,
        _ => return 0,
    };
    if !enabled(kind as u16) {
        return 0;
    }
    // (dfd, path) of the first and second path; fd for descriptor calls.
    let (r1, r2) = match opn {
        op::UNLINK => (resolve(task, AT_FDCWD, x[0], 0, false), None),
        op::RMDIR => {
            ev.flags = AT_REMOVEDIR as u32;
            (resolve(task, AT_FDCWD, x[0], 0, false), None)
        }
        op::UNLINKAT => {
            ev.flags = (x[2] & AT_REMOVEDIR) as u32;
            (resolve(task, x[0] as i32 as i64, x[1], 0, false), None)
        }
        op::RENAME | op::LINK => (
            resolve(task, AT_FDCWD, x[0], 0, false),
            Some(resolve(task, AT_FDCWD, x[1], 1, false)),
        ),
        op::RENAMEAT | op::LINKAT => {
            ev.flags = x[4] as u32;
            (
                resolve(task, x[0] as i32 as i64, x[1], 0, false),
                Some(resolve(task, x[2] as i32 as i64, x[3], 1, false)),
            )
        }
        op::SYMLINK => {
            ev.flags = 1; // symbolic
            (
                resolve(task, AT_FDCWD, x[0], 0, true),
                Some(resolve(task, AT_FDCWD, x[1], 1, false)),
            )
        }
        op::SYMLINKAT => {
            ev.flags = 1;
            (
                resolve(task, AT_FDCWD, x[0], 0, true),
                Some(resolve(task, x[1] as i32 as i64, x[2], 1, false)),
            )
        }
        op::CHMOD => {
            ev.new_mode = x[1] as u32;
            (resolve(task, AT_FDCWD, x[0], 0, false), None)
        }
        op::FCHMODAT => {
            ev.new_mode = x[2] as u32;
            (resolve(task, x[0] as i32 as i64, x[1], 0, false), None)
        }
        op::FCHMOD => {
            ev.new_mode = x[1] as u32;
            ev.old_mode = a.old_mode;
            (resolve_fd(x[0] as i32 as i64, ev), None)
        }
        op::CHOWN => {
            ev.uid = x[1] as u32;
            ev.gid = x[2] as u32;
            (resolve(task, AT_FDCWD, x[0], 0, false), None)
        }
        op::FCHOWNAT => {
            ev.uid = x[2] as u32;
            ev.gid = x[3] as u32;
            ev.flags = x[4] as u32;
            (resolve(task, x[0] as i32 as i64, x[1], 0, false), None)
        }
        op::FCHOWN => {
            ev.uid = x[1] as u32;
            ev.gid = x[2] as u32;
            (resolve_fd(x[0] as i32 as i64, ev), None)
        }
        op::TRUNCATE => {
            ev.size = x[1];
            (resolve(task, AT_FDCWD, x[0], 0, false), None)
        }
        op::FTRUNCATE => {
            ev.size = x[1];
            (resolve_fd(x[0] as i32 as i64, ev), None)
        }
        _ => return 0,
    };
    let watch_all = r1.watch | r2.as_ref().map_or(0, |r| r.watch);
    if watch_all & watch::EXCLUDED != 0 {
        return 0;
    }
    ev.path = r1.path;
    let len = match r2 {
        Some(r) => {
            ev.path2 = r.path;
            PATH_AREA + used(&r.path)
        }
        None => used(&ev.path),
    };
    ev.task = current_info(task);
    ev.header = header(kind as u16, session_flags(task));
    let critical = watch_all & watch::CRITICAL != 0;
    send_to(
        critical,
        kind as u16,
        ev,
        FileEvent::FIXED_LEN + core::cmp::min(len, 2 * PATH_AREA),
    );
    0
}

/// Bytes of a path's area in use.
#[inline(always)]
fn used(p: &PathRef) -> usize {
    let tail = p.tail_len as usize + 1;
    let walk = p.walk_off as usize + p.walk_len as usize;
    if walk > tail {
        walk
    } else {
        tail
    }
}
