//! Network events at syscall exit, in the calling process's context:
//! listen, UDP bind, connect (TCP and UDP), accept. Addresses and ports are
//! read from the socket itself, after the kernel filled them in.

use fdr_common::{op, EventKind, NetEvent};

use crate::{
    emit::{enabled, header, offsets, send_to},
    syscalls::{is_agent, take_args},
    task::{current, current_info, field, file_of_fd, session_flags},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_UDP: u16 = 17;
const EINPROGRESS: i64 = 115;

/// Exit of bind, connect, listen or accept.
#[inline(never)]
pub fn exit_net(opn: u8, rc: i64) -> i32 {
    // accept has no entry program: its descriptor is the return value.
    let (kind, fd, backlog) = if opn == op::ACCEPT {
        if rc < 0 || is_agent() {
            return 0;
        }
        (EventKind::NetAccept, rc, 0)
    } else {
        let Some(a) = take_args() else {
            return 0;
        };
        let ok = rc == 0 || (a.op as u8 == op::CONNECT && rc == -EINPROGRESS);
        if !ok {
            return 0;
        }
        let kind = match a.op as u8 {
            op::BIND => EventKind::NetBind,
            op::CONNECT => EventKind::NetConnect,
            op::LISTEN => EventKind::NetListen,
            _ => return 0,
        };
        (kind, a.args[0] as i32 as i64, a.args[1] as u32)
    };
    if !enabled(kind as u16) {
        return 0;
    }
    let task = current();
    let o = offsets();
    let file = file_of_fd(task, fd);
    let socket: *const u8 = field(file, o.file_private_data).unwrap_or(core::ptr::null());
    let sk: *const u8 = field(socket, o.socket_sk).unwrap_or(core::ptr::null());
    let Some(family) = field::<u16>(sk, o.sk_family) else {
        return 0;
    };
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let protocol = field::<u16>(sk, o.sk_protocol).unwrap_or(0);
    if kind == EventKind::NetBind && protocol != IPPROTO_UDP {
        return 0; // TCP binds are reported when they listen or connect
    }
    let mut ev = NetEvent {
        header: header(kind as u16, session_flags(task)),
        task: current_info(task),
        family,
        protocol,
        local_port: field(sk, o.sk_num).unwrap_or(0),
        remote_port: u16::from_be(field(sk, o.sk_dport).unwrap_or(0)),
        ret: rc as i32,
        backlog,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
    if family == AF_INET {
        let l: [u8; 4] = field(sk, o.sk_rcv_saddr).unwrap_or([0; 4]);
        let r: [u8; 4] = field(sk, o.sk_daddr).unwrap_or([0; 4]);
        ev.local_addr[..4].copy_from_slice(&l);
        ev.remote_addr[..4].copy_from_slice(&r);
    } else {
        ev.local_addr = field(sk, o.sk_v6_rcv_saddr).unwrap_or([0; 16]);
        ev.remote_addr = field(sk, o.sk_v6_daddr).unwrap_or([0; 16]);
    }
    send_to(
        kind.is_critical(),
        kind as u16,
        &ev,
        core::mem::size_of::<NetEvent>(),
    );
    0
}
