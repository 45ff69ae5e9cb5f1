//! Syscalls, through the per-syscall tracepoints of the syscalls fdr
//! watches (`syscalls:sys_enter_<name>`, `syscalls:sys_exit_<name>`): the
//! kernel tests a per-syscall bit before it calls a program, so every other
//! syscall (read, write, getppid, futex, close, …) runs none of fdr's code.
//! One entry and one exit program serve every watched syscall (user space
//! attaches them to each one's tracepoints); the record carries the
//! syscall's number, which `FDR_SYSCALLS` maps to its shape ([`fdr_common::op`]).
//!
//! Most watched syscalls need only their exit: the arguments are still in
//! the saved user registers then. Credential changes and fchmod need the
//! state before the call: their `sys_enter` keeps the arguments and the
//! credentials or the old mode until `sys_exit`, which hands them to the
//! handler of their kind.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_task_pt_regs},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use fdr_common::{op, sys_tp, Creds, SyscallArgs};

use crate::{
    cred::exit_cred,
    emit::{agent_tgid, offsets, syscall_op, ARGS},
    file::{exit_file, exit_open},
    net::exit_net,
    task::{creds, current, field, file_of_fd, load},
};

/// Whether the current process is the agent (whose activity is not recorded).
#[inline(always)]
pub fn is_agent() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == agent_tgid()
}

/// The syscall number and its first `N` arguments (the rest 0) from a
/// `sys_enter_*` record.
///
/// The kernel refuses to attach a program that reads past the end of a
/// tracepoint's record, and a syscall's entry record holds only its own
/// arguments: hence one entry program per argument count, each reading no
/// further than its count (user space attaches the one that fits).
#[inline(always)]
fn enter_record<const N: usize>(ctx: &TracePointContext) -> Option<(i64, [u64; 6])> {
    let o = offsets();
    let p = ctx.as_ptr() as *const u8;
    let mut args = [0u64; 6];
    if o.tp_sys_nr == sys_tp::NR && o.tp_sys_args == sys_tp::ARGS {
        // The usual layout: loads at constant offsets, which the verifier
        // allows on the context (the offsets are known from the frozen
        // read-only data, so only one of the two branches is kept).
        // SAFETY: inside the record, whose layout tracefs described.
        unsafe {
            let nr = *(p.add(sys_tp::NR as usize) as *const i32) as i64;
            let a = p.add(sys_tp::ARGS as usize) as *const u64;
            for (i, slot) in args.iter_mut().enumerate().take(N) {
                *slot = *a.add(i);
            }
            Some((nr, args))
        }
    } else {
        // SAFETY: probe reads of the record at the offsets tracefs gave.
        let nr: i32 = unsafe { ctx.read_at(o.tp_sys_nr as usize) }.ok()?;
        for (i, slot) in args.iter_mut().enumerate().take(N) {
            // SAFETY: as above.
            *slot = unsafe { ctx.read_at(o.tp_sys_args as usize + 8 * i) }.ok()?;
        }
        Some((nr as i64, args))
    }
}

/// The syscall number and return value from a `sys_exit_*` record.
#[inline(always)]
fn exit_record(ctx: &TracePointContext) -> Option<(i64, i64)> {
    let o = offsets();
    let p = ctx.as_ptr() as *const u8;
    if o.tp_sys_nr == sys_tp::NR && o.tp_sys_ret == sys_tp::RET {
        // SAFETY: as in `enter_record`.
        unsafe {
            Some((
                *(p.add(sys_tp::NR as usize) as *const i32) as i64,
                *(p.add(sys_tp::RET as usize) as *const i64),
            ))
        }
    } else {
        // SAFETY: probe reads of the record at the offsets tracefs gave.
        let nr: i32 = unsafe { ctx.read_at(o.tp_sys_nr as usize) }.ok()?;
        let rc: i64 = unsafe { ctx.read_at(o.tp_sys_ret as usize) }.ok()?;
        Some((nr as i64, rc))
    }
}

/// Entry of a watched syscall with `N` arguments.
#[inline(always)]
fn on_enter<const N: usize>(ctx: &TracePointContext) -> i32 {
    let Some((nr, args)) = enter_record::<N>(ctx) else {
        return 0;
    };
    if nr < 0 {
        return 0;
    }
    let op = syscall_op(nr as u32);
    if (op != op::CRED && op != op::FCHMOD) || is_agent() {
        return 0;
    }
    enter(args, nr as u32, op);
    0
}

// One entry program per argument count (`fdr_common::sys_tp::ENTER_PROGRAMS`).
#[tracepoint]
pub fn fdr_sys_enter1(ctx: TracePointContext) -> i32 {
    on_enter::<1>(&ctx)
}
#[tracepoint]
pub fn fdr_sys_enter2(ctx: TracePointContext) -> i32 {
    on_enter::<2>(&ctx)
}
#[tracepoint]
pub fn fdr_sys_enter3(ctx: TracePointContext) -> i32 {
    on_enter::<3>(&ctx)
}
#[tracepoint]
pub fn fdr_sys_enter4(ctx: TracePointContext) -> i32 {
    on_enter::<4>(&ctx)
}
#[tracepoint]
pub fn fdr_sys_enter5(ctx: TracePointContext) -> i32 {
    on_enter::<5>(&ctx)
}
#[tracepoint]
pub fn fdr_sys_enter6(ctx: TracePointContext) -> i32 {
    on_enter::<6>(&ctx)
}

#[inline(never)]
fn enter(args: [u64; 6], nr: u32, op: u8) {
    let mut a = SyscallArgs {
        nr,
        op: op as u32,
        args,
        creds: Creds::default(),
        old_mode: 0,
        _pad: 0,
    };
    let task = current();
    if op == op::CRED {
        a.creds = creds(task);
    } else if op == op::FCHMOD {
        let o = offsets();
        let file = file_of_fd(a.args[0] as i32 as i64);
        let inode: *const u8 = field(file, o.file_f_inode).unwrap_or(core::ptr::null());
        a.old_mode = field::<u16>(inode, o.inode_i_mode).unwrap_or(0) as u32;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = ARGS.insert(tid, a, 0);
}

#[tracepoint]
pub fn fdr_sys_exit(ctx: TracePointContext) -> i32 {
    let Some((nr, rc)) = exit_record(&ctx) else {
        return 0;
    };
    if nr < 0 {
        return 0;
    }
    let op = syscall_op(nr as u32);
    match op {
        0 => 0,
        op::OPEN => exit_open(nr as u32, rc),
        op::ACCEPT => exit_net(op, rc, None),
        op::CRED => exit_cred(nr as u32, rc),
        op::BIND | op::CONNECT | op::LISTEN => match exit_args(nr as u32, op) {
            Some(a) => exit_net(op, rc, Some(a)),
            None => 0,
        },
        _ => {
            // Only successful changes are reported; fchmod's entry state
            // is taken out of the map whatever the result.
            if rc != 0 && op != op::FCHMOD {
                return 0;
            }
            match exit_args(nr as u32, op) {
                Some(a) => exit_file(rc, a),
                None => 0,
            }
        }
    }
}

/// The arguments of the syscall that is exiting: kept at its entry (for
/// what needs the state before the call: credential changes, fchmod's old
/// mode), read from the saved user registers otherwise — a syscall leaves
/// its argument registers as they were, so most watched syscalls need no
/// entry program at all. `None` for the agent's own syscalls.
#[inline(always)]
pub fn exit_args(nr: u32, op: u8) -> Option<SyscallArgs> {
    if op == op::CRED || op == op::FCHMOD {
        return take_args(nr);
    }
    if is_agent() {
        return None;
    }
    let o = offsets();
    // SAFETY: the helper takes the typed current task; what it returns is
    // a typed `struct pt_regs *`, read with typed loads at BTF offsets.
    let args = unsafe {
        let regs = bpf_task_pt_regs(current() as *mut _) as *const u8;
        [
            load(regs, o.regs_args[0]),
            load(regs, o.regs_args[1]),
            load(regs, o.regs_args[2]),
            load(regs, o.regs_args[3]),
            load(regs, o.regs_args[4]),
            load(regs, o.regs_args[5]),
        ]
    };
    Some(SyscallArgs {
        nr,
        op: op as u32,
        args,
        creds: Creds::default(),
        old_mode: 0,
        _pad: 0,
    })
}

/// The arguments kept at entry of syscall `nr` for the current thread,
/// removed. An entry another syscall left (its exit never came: the probes
/// were attached or detached in between) is removed, not used.
#[inline(always)]
pub fn take_args(nr: u32) -> Option<SyscallArgs> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let a = unsafe { ARGS.get(tid) }.copied();
    if a.is_some() {
        let _ = ARGS.remove(tid);
    }
    a.filter(|a| a.nr == nr)
}
