//! Process lifecycle: fork, exec, exit.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_user,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use fdr_common::{
    flags, EventKind, ExecEvent, ExitEvent, ForkEvent, ARGV_MAX, FILENAME_MAX, PATH_MAX,
};

use crate::{
    emit::{agent_tgid, enabled, header, offsets, scratch_exec, send, send_to},
    path::walk,
    task::{current, current_info, field, file_of_fd, inode_info, session_flags},
};

/// `sched_process_fork(parent, child)`, raw: the child's `task_struct` is
/// at hand, so threads can be told apart from processes.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn fdr_fork(ctx: RawTracePointContext) -> i32 {
    if !enabled(EventKind::Fork as u16) {
        return 0;
    }
    let child: *const u8 = ctx.arg(1);
    let o = offsets();
    let (Some(child_pid), Some(child_tgid)) = (
        field::<u32>(child, o.task_pid),
        field::<u32>(child, o.task_tgid),
    ) else {
        return 0;
    };
    if child_pid != child_tgid {
        return 0; // a new thread, not a new process
    }
    let parent = current();
    let mut info = current_info(parent);
    if info.tgid == agent_tgid() {
        return 0;
    }
    let parent_tid = info.tid;
    info.ppid = info.tgid;
    info.tgid = child_tgid;
    info.tid = child_pid;
    info.start_ns = field(child, o.task_start_time).unwrap_or(0);
    let ev = ForkEvent {
        header: header(EventKind::Fork as u16, session_flags(parent)),
        task: info,
        parent_tid,
        _pad: 0,
    };
    send(
        EventKind::Fork as u16,
        &ev,
        core::mem::size_of::<ForkEvent>(),
    );
    0
}

#[tracepoint]
pub fn fdr_exec(ctx: TracePointContext) -> i32 {
    if !enabled(EventKind::Exec as u16) {
        return 0;
    }
    let Some(ev) = scratch_exec() else {
        return 0;
    };
    let task = current();
    ev.task = current_info(task);
    if ev.task.tgid == agent_tgid() {
        return 0;
    }
    let o = offsets();
    let mut fl = session_flags(task);

    // SAFETY: reads of the tracepoint record, bounds-checked by the helper.
    let loc: u32 = unsafe { ctx.read_at(o.tp_exec_filename as usize) }.unwrap_or(0);
    ev.old_tid = unsafe { ctx.read_at(o.tp_exec_old_pid as usize) }.unwrap_or(0);
    let name_off = (loc & 0xffff) as usize;
    let name_len = (loc >> 16) as usize;
    ev.filename_len = 0;
    if name_off != 0 {
        // SAFETY: the record's own filename bytes; the helper stops at NUL.
        let src = unsafe { (ctx.as_ptr() as *const u8).add(name_off) };
        if let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut ev.filename) } {
            ev.filename_len = s.len() as u16;
        }
        if name_len > FILENAME_MAX {
            fl |= flags::FILENAME_TRUNCATED;
        }
    }

    let mm: *const u8 = field(task, o.task_mm).unwrap_or(core::ptr::null());
    let start: u64 = field(mm, o.mm_arg_start).unwrap_or(0);
    let end: u64 = field(mm, o.mm_arg_end).unwrap_or(0);
    let mut n = end.wrapping_sub(start);
    if start == 0 || end < start {
        n = 0;
        fl |= flags::ARGV_UNREADABLE;
    }
    if n > ARGV_MAX as u64 {
        n = ARGV_MAX as u64;
        fl |= flags::ARGV_TRUNCATED;
    }
    let mut argv_len = n as u32;
    if argv_len > 0 {
        // SAFETY: `argv_len` ≤ ARGV_MAX ≤ the destination's size; the helper
        // faults safely.
        let rc = unsafe {
            bpf_probe_read_user(
                ev.data.as_mut_ptr().cast(),
                argv_len,
                start as *const core::ffi::c_void,
            )
        };
        if rc < 0 {
            argv_len = 0;
            fl |= flags::ARGV_UNREADABLE;
        }
    }
    ev.argv_len = argv_len as u16;

    // The executable's real path, after the arguments.
    let exe_file: *const u8 = field(mm, o.mm_exe_file).unwrap_or(core::ptr::null());
    let (exe_len, path_flags) = if exe_file.is_null() || o.file_f_path == u32::MAX {
        (0, flags::PATH_DISCONNECTED)
    } else {
        // SAFETY: pointer arithmetic only; the walk uses probe reads.
        let f_path = unsafe { exe_file.add(o.file_f_path as usize) };
        let w = walk(f_path, ExecEvent::FIXED_LEN + argv_len as usize, false);
        (w.len, w.flags)
    };
    ev.exe_len = exe_len as u16;
    let inode: *const u8 = field(exe_file, o.file_f_inode).unwrap_or(core::ptr::null());
    let (dev, ino) = inode_info(inode).map_or((0, 0), |i| (i.dev, i.ino));
    ev.exe_dev = dev;
    ev.exe_ino = ino;
    if stdin_is_socket() {
        fl |= flags::STDIN_SOCKET;
    }
    ev.header = header(EventKind::Exec as u16, fl | path_flags);
    let len = ExecEvent::FIXED_LEN + ((argv_len as usize + exe_len) & (4 * PATH_MAX - 1));
    if len <= core::mem::size_of::<ExecEvent>() {
        send_to(true, EventKind::Exec as u16, ev, len);
    }
    0
}

/// Whether the current task's descriptor 0 is a socket.
#[inline(always)]
fn stdin_is_socket() -> bool {
    const S_IFMT: u32 = 0o170000;
    const S_IFSOCK: u32 = 0o140000;
    let file = file_of_fd(0);
    let inode: *const u8 = field(file, offsets().file_f_inode).unwrap_or(core::ptr::null());
    field::<u16>(inode, offsets().inode_i_mode).is_some_and(|m| u32::from(m) & S_IFMT == S_IFSOCK)
}

#[tracepoint]
pub fn fdr_exit(_ctx: TracePointContext) -> i32 {
    if !enabled(EventKind::Exit as u16) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return 0; // a thread other than the leader
    }
    let task = current();
    let info = current_info(task);
    if info.tgid == agent_tgid() {
        return 0;
    }
    let ev = ExitEvent {
        header: header(EventKind::Exit as u16, session_flags(task)),
        task: info,
        exit_status: field(task, offsets().task_exit_code).unwrap_or(0),
        _pad: 0,
    };
    send(
        EventKind::Exit as u16,
        &ev,
        core::mem::size_of::<ExitEvent>(),
    );
    0
}
