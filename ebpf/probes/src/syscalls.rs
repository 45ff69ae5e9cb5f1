//! Syscall entry: one program, attached to every `syscalls:sys_enter_*`
//! tracepoint of interest, keeps the arguments (and, for credential
//! changes, the credentials) until the matching exit program runs.
//!
//! Record fields of `sys_enter_*`: `__syscall_nr` at 8, arguments at 16 +
//! 8·i; of `sys_exit_*`: `__syscall_nr` at 8, `ret` at 16. The agent checks
//! these offsets in tracefs before it attaches.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use fdr_common::{op, Creds, SyscallArgs};

use crate::{
    emit::{agent_tgid, syscall_op, ARGS},
    task::{creds, current, field, file_of_fd},
};

const NR_OFF: usize = 8;
const ARGS_OFF: usize = 16;
const RET_OFF: usize = 16;

/// The syscall number of a `sys_enter_*`/`sys_exit_*` record.
#[inline(always)]
pub fn nr(ctx: &TracePointContext) -> u32 {
    // SAFETY: a bounds-checked read of the tracepoint record.
    unsafe { ctx.read_at::<i32>(NR_OFF) }.unwrap_or(-1) as u32
}

/// The return value of a `sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as above.
    unsafe { ctx.read_at::<i64>(RET_OFF) }.unwrap_or(-1)
}

/// Whether the current process is the agent (whose activity is not recorded).
#[inline(always)]
pub fn is_agent() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == agent_tgid()
}

#[tracepoint]
pub fn fdr_sys_enter(ctx: TracePointContext) -> i32 {
    let nr = nr(&ctx);
    let op = syscall_op(nr);
    if op == 0 || op == op::OPEN || op == op::ACCEPT || is_agent() {
        return 0;
    }
    let mut a = SyscallArgs {
        nr,
        op: op as u32,
        args: [0; 6],
        creds: Creds::default(),
        old_mode: 0,
        _pad: 0,
    };
    for (i, slot) in a.args.iter_mut().enumerate() {
        // SAFETY: as above.
        *slot = unsafe { ctx.read_at::<u64>(ARGS_OFF + 8 * i) }.unwrap_or(0);
    }
    let task = current();
    if op == op::CRED {
        a.creds = creds(task);
    } else if op == op::FCHMOD {
        let file = file_of_fd(task, a.args[0] as i64);
        let o = crate::emit::offsets();
        let inode: *const u8 = field(file, o.file_f_inode).unwrap_or(core::ptr::null());
        a.old_mode = field::<u16>(inode, o.inode_i_mode).unwrap_or(0) as u32;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = ARGS.insert(&tid, &a, 0);
    0
}

/// The arguments kept at entry for the current thread, removed.
#[inline(always)]
pub fn take_args() -> Option<SyscallArgs> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let a = unsafe { ARGS.get(&tid) }.copied();
    if a.is_some() {
        let _ = ARGS.remove(&tid);
    }
    a
}
