//! Privilege changes: set*uid/set*gid and capset that succeeded and changed
//! something, with the credentials before and after.

use fdr_common::{EventKind, PrivEvent};

use crate::{
    emit::{enabled, header, send_to},
    syscalls::take_args,
    task::{creds, current, current_info, session_flags},
};

/// Exit of a credential syscall.
#[inline(never)]
pub fn exit_cred(nr: u32, rc: i64) -> i32 {
    let Some(a) = take_args(nr) else {
        return 0;
    };
    if rc < 0 || !enabled(EventKind::PrivChange as u16) {
        return 0;
    }
    let task = current();
    let new = creds(task);
    if new == a.creds {
        return 0;
    }
    let ev = PrivEvent {
        header: header(EventKind::PrivChange as u16, session_flags(task)),
        task: current_info(task),
        syscall_nr: a.nr,
        _pad: 0,
        old: a.creds,
        new,
    };
    send_to(
        true,
        EventKind::PrivChange as u16,
        &ev,
        core::mem::size_of::<PrivEvent>(),
    );
    0
}
