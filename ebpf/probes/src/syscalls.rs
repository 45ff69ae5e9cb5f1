//! Syscalls, through the two raw tracepoints every syscall passes:
//! `sys_enter` keeps the arguments (and, for credential changes, the
//! credentials) of the syscalls of interest until `sys_exit`, which hands
//! them to the handler of their kind. Two attachments instead of one per
//! syscall, and no perf record built per call; uninteresting syscalls cost
//! one array lookup.
//!
//! Arguments are read from the saved user registers (`struct pt_regs`,
//! x86_64 syscall convention: di, si, dx, r10, r8, r9; the number in
//! `orig_ax`), at offsets resolved from BTF.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use fdr_common::{op, Creds, SyscallArgs};

use crate::{
    cred::exit_cred,
    emit::{agent_tgid, offsets, syscall_op, ARGS},
    file::{exit_file, exit_open},
    net::exit_net,
    task::{creds, current, field, file_of_fd},
};

/// Whether the current process is the agent (whose activity is not recorded).
#[inline(always)]
pub fn is_agent() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == agent_tgid()
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn fdr_sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    if id < 0 {
        return 0;
    }
    let op = syscall_op(id as u32);
    if op == 0 || op == op::OPEN || op == op::ACCEPT || is_agent() {
        return 0;
    }
    enter(ctx.arg(0), id as u32, op);
    0
}

#[inline(never)]
fn enter(regs: *const u8, nr: u32, op: u8) {
    let o = offsets();
    let mut a = SyscallArgs {
        nr,
        op: op as u32,
        args: [0; 6],
        creds: Creds::default(),
        old_mode: 0,
        _pad: 0,
    };
    for (slot, off) in a.args.iter_mut().zip(o.regs_args) {
        *slot = field(regs, off).unwrap_or(0);
    }
    let task = current();
    if op == op::CRED {
        a.creds = creds(task);
    } else if op == op::FCHMOD {
        let file = file_of_fd(task, a.args[0] as i32 as i64);
        let inode: *const u8 = field(file, o.file_f_inode).unwrap_or(core::ptr::null());
        a.old_mode = field::<u16>(inode, o.inode_i_mode).unwrap_or(0) as u32;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = ARGS.insert(tid, a, 0);
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn fdr_sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let Some(nr) = field::<i64>(regs, offsets().regs_orig_ax) else {
        return 0;
    };
    if nr < 0 {
        return 0;
    }
    let op = syscall_op(nr as u32);
    if op == 0 {
        return 0;
    }
    let rc: i64 = ctx.arg(1);
    match op {
        op::OPEN => exit_open(nr as u32, rc),
        op::BIND | op::CONNECT | op::LISTEN | op::ACCEPT => exit_net(op, rc),
        op::CRED => exit_cred(rc),
        _ => exit_file(rc),
    }
}

/// The arguments kept at entry for the current thread, removed.
#[inline(always)]
pub fn take_args() -> Option<SyscallArgs> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let a = unsafe { ARGS.get(tid) }.copied();
    if a.is_some() {
        let _ = ARGS.remove(tid);
    }
    a
}
