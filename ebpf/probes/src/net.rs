//! Network events at syscall exit, in the calling process's context:
//! listen, UDP bind, connect (TCP and UDP), accept. Addresses and ports are
//! read from the socket itself, after the kernel filled them in.

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use fdr_common::{op, EventKind, NetEvent, SyscallArgs};

use crate::{
    emit::{enabled, header, offsets, send_to},
    syscalls::is_agent,
    task::{current, current_info, field, file_of_fd, session_flags},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_UDP: u16 = 17;
const EINPROGRESS: i64 = 115;
/// A non-blocking connect asked again: not a new attempt.
const EALREADY: i64 = 114;
const EISCONN: i64 = 106;
/// `sizeof(struct sockaddr_in6)`, the largest address read.
const SOCKADDR_MAX: usize = 28;

/// Exit of bind, connect, listen or accept.
#[inline(never)]
pub fn exit_net(opn: u8, rc: i64, args: Option<SyscallArgs>) -> i32 {
    // accept needs no arguments: its descriptor is the return value.
    // For a failed connect: the address the caller asked for, as the
    // socket may have forgotten it by now.
    let mut user_addr = 0u64;
    let (kind, fd, backlog) = if opn == op::ACCEPT {
        if rc < 0 || is_agent() {
            return 0;
        }
        (EventKind::NetAccept, rc, 0)
    } else {
        let Some(a) = args else {
            return 0;
        };
        let connect = a.op as u8 == op::CONNECT;
        // Failed connects count too (refused, unreachable, timed out: what
        // a scan or a dead C2 server looks like), but not the re-polls of a
        // non-blocking connect already under way.
        let ok = rc == 0 || (connect && rc != -EALREADY && rc != -EISCONN);
        if !ok {
            return 0;
        }
        let kind = match a.op as u8 {
            op::BIND => EventKind::NetBind,
            op::CONNECT => EventKind::NetConnect,
            op::LISTEN => EventKind::NetListen,
            _ => return 0,
        };
        if connect && rc < 0 && rc != -EINPROGRESS {
            user_addr = a.args[1];
        }
        // listen(fd, backlog); for bind and connect args[1] is the address.
        let backlog = if kind == EventKind::NetListen {
            a.args[1] as u32
        } else {
            0
        };
        (kind, a.args[0] as i32 as i64, backlog)
    };
    if !enabled(kind as u16) {
        return 0;
    }
    let task = current();
    let o = offsets();
    let file = file_of_fd(fd);
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
    if user_addr != 0 {
        requested_peer(&mut ev, user_addr);
    }
    send_to(
        kind.is_critical(),
        kind as u16,
        &ev,
        core::mem::size_of::<NetEvent>(),
    );
    0
}

/// Fills the remote end of a failed connect from the caller's
/// `sockaddr_in` / `sockaddr_in6`.
#[inline(always)]
fn requested_peer(ev: &mut NetEvent, user: u64) {
    let mut sa = [0u8; SOCKADDR_MAX];
    // SAFETY: the destination holds SOCKADDR_MAX bytes; the helper faults
    // safely on a bad user pointer.
    let rc = unsafe {
        bpf_probe_read_user(
            sa.as_mut_ptr().cast(),
            SOCKADDR_MAX as u32,
            user as *const core::ffi::c_void,
        )
    };
    if rc < 0 {
        // A short sockaddr_in at the end of a mapping: try its own size.
        // SAFETY: as above, 16 bytes fit.
        if unsafe {
            bpf_probe_read_user(sa.as_mut_ptr().cast(), 16, user as *const core::ffi::c_void)
        } < 0
        {
            return;
        }
    }
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    if family != ev.family {
        return;
    }
    ev.remote_port = u16::from_be_bytes([sa[2], sa[3]]);
    ev.remote_addr = [0; 16];
    if family == AF_INET {
        ev.remote_addr[..4].copy_from_slice(&sa[4..8]);
    } else {
        ev.remote_addr.copy_from_slice(&sa[8..24]);
    }
}
