//! Files, sensitive reads, network and privilege changes from the real
//! probes, triggered by real syscalls from the test.

use std::{
    ffi::CString,
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::{ffi::OsStrExt, fs::PermissionsExt, process::CommandExt},
    process::Command,
};

use fdr_agent::event::{BinaryReason, Detail, Event, EventKind, FileDetail};
use fdr_tests::{unique, Capture, TempDir};

/// The file detail of `ev` when it is of `kind`.
fn file_of(ev: &Event, kind: EventKind) -> Option<&FileDetail> {
    match &ev.record.detail {
        Detail::File { kind: k, file } if *k == kind => Some(file),
        _ => None,
    }
}

fn cstr(p: &std::path::Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_carry_absolute_paths_and_fields() {
    let mut cap = Capture::start("files").await;
    let dir = TempDir::new("files");
    // Canonical: /tmp may itself be a symlink elsewhere.
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let me = std::process::id();

    // write (create)
    let a = d.join("a.txt");
    std::fs::write(&a, b"hello").unwrap();
    let ev = cap
        .wait_for("write", |e| {
            file_of(e, EventKind::FileWrite).is_some_and(|f| f.path == a.to_str().unwrap())
        })
        .await;
    let f = file_of(&ev, EventKind::FileWrite).unwrap();
    assert_eq!(ev.pid(), me);
    assert_eq!(f.mode & 0o170000, 0o100000, "regular file");
    assert_eq!(f.flags & 0o3, libc::O_WRONLY as u32);
    assert_ne!(f.ino, 0);
    assert!(!f.incomplete);

    // rename
    let b = d.join("b.txt");
    std::fs::rename(&a, &b).unwrap();
    let ev = cap
        .wait_for("rename", |e| {
            file_of(e, EventKind::FileRename).is_some_and(|f| f.path == a.to_str().unwrap())
        })
        .await;
    assert_eq!(
        file_of(&ev, EventKind::FileRename)
            .unwrap()
            .path2
            .as_deref(),
        b.to_str()
    );

    // chmod by path, then by descriptor (old mode known)
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o640)).unwrap();
    let ev = cap
        .wait_for("chmod", |e| {
            file_of(e, EventKind::FileChmod).is_some_and(|f| f.path == b.to_str().unwrap())
        })
        .await;
    assert_eq!(
        file_of(&ev, EventKind::FileChmod).unwrap().new_mode,
        Some(0o640)
    );
    let file = std::fs::File::open(&b).unwrap();
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    let ev = cap
        .wait_for("fchmod", |e| {
            file_of(e, EventKind::FileChmod)
                .is_some_and(|f| f.new_mode == Some(0o600) && f.path == b.to_str().unwrap())
        })
        .await;
    let f = file_of(&ev, EventKind::FileChmod).unwrap();
    assert_eq!(f.path, b.to_str().unwrap());
    assert_eq!(f.old_mode.map(|m| m & 0o7777), Some(0o640));
    assert_eq!(f.syscall, "fchmod");

    // chown
    std::os::unix::fs::chown(&b, Some(1), Some(2)).unwrap();
    let ev = cap
        .wait_for("chown", |e| {
            file_of(e, EventKind::FileChown).is_some_and(|f| f.path == b.to_str().unwrap())
        })
        .await;
    let f = file_of(&ev, EventKind::FileChown).unwrap();
    assert_eq!((f.uid, f.gid), (Some(1), Some(2)));

    // hard link and symlink
    let h = d.join("hard");
    std::fs::hard_link(&b, &h).unwrap();
    let ev = cap
        .wait_for("link", |e| {
            file_of(e, EventKind::FileLink).is_some_and(|f| f.path2.as_deref() == h.to_str())
        })
        .await;
    let f = file_of(&ev, EventKind::FileLink).unwrap();
    assert_eq!(f.path, b.to_str().unwrap());
    assert_eq!(f.flags & 1, 0);
    let s = d.join("soft");
    std::os::unix::fs::symlink("b.txt", &s).unwrap();
    let ev = cap
        .wait_for("symlink", |e| {
            file_of(e, EventKind::FileLink).is_some_and(|f| f.path2.as_deref() == s.to_str())
        })
        .await;
    let f = file_of(&ev, EventKind::FileLink).unwrap();
    assert_eq!(f.path, "b.txt", "a symlink's target is reported as written");
    assert_eq!(f.flags & 1, 1);

    // truncate by descriptor
    let file = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
    file.set_len(3).unwrap();
    let ev = cap
        .wait_for("ftruncate", |e| {
            file_of(e, EventKind::FileTruncate).is_some_and(|f| f.path == b.to_str().unwrap())
        })
        .await;
    assert_eq!(file_of(&ev, EventKind::FileTruncate).unwrap().size, Some(3));
    drop(file);

    // unlink and rmdir
    std::fs::remove_file(&s).unwrap();
    cap.wait_for("unlink", |e| {
        file_of(e, EventKind::FileUnlink).is_some_and(|f| f.path == s.to_str().unwrap())
    })
    .await;
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::remove_dir(&sub).unwrap();
    let ev = cap
        .wait_for("rmdir", |e| {
            file_of(e, EventKind::FileUnlink).is_some_and(|f| f.path == sub.to_str().unwrap())
        })
        .await;
    assert_ne!(
        file_of(&ev, EventKind::FileUnlink).unwrap().flags & libc::AT_REMOVEDIR as u32,
        0
    );
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_are_resolved_against_cwd_and_dirfd() {
    let mut cap = Capture::start("relpaths").await;
    let dir = TempDir::new("rel");
    let d = std::fs::canonicalize(dir.path()).unwrap();
    // cwd-relative, in a child (the test must not change its own cwd).
    let st = Command::new("/bin/sh")
        .current_dir(&d)
        .args([
            "-c",
            "echo x > one && mv one ../$(basename $PWD)/two && chmod 600 ./two",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let one = d.join("one");
    let two = d.join("two");
    cap.wait_for("relative write", |e| {
        file_of(e, EventKind::FileWrite).is_some_and(|f| f.path == one.to_str().unwrap())
    })
    .await;
    let ev = cap
        .wait_for("relative rename", |e| {
            file_of(e, EventKind::FileRename).is_some_and(|f| f.path == one.to_str().unwrap())
        })
        .await;
    assert_eq!(
        file_of(&ev, EventKind::FileRename)
            .unwrap()
            .path2
            .as_deref(),
        two.to_str(),
        "'..' resolved"
    );
    cap.wait_for("relative chmod", |e| {
        file_of(e, EventKind::FileChmod).is_some_and(|f| f.path == two.to_str().unwrap())
    })
    .await;

    // dirfd-relative, from the test process.
    let dfd = unsafe { libc::open(cstr(&d).as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY) };
    assert!(dfd >= 0);
    let name = CString::new("two").unwrap();
    // SAFETY: valid descriptor and string.
    assert_eq!(unsafe { libc::unlinkat(dfd, name.as_ptr(), 0) }, 0);
    // SAFETY: our descriptor.
    unsafe { libc::close(dfd) };
    let ev = cap
        .wait_for("unlinkat", |e| {
            file_of(e, EventKind::FileUnlink).is_some_and(|f| f.path == two.to_str().unwrap())
        })
        .await;
    assert_eq!(
        file_of(&ev, EventKind::FileUnlink).unwrap().syscall,
        "unlinkat"
    );
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_opens_are_silent_but_sensitive_reads_are_not() {
    let mut cap = Capture::start("reads").await;
    let dir = TempDir::new("reads");
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let plain = d.join("plain.txt");
    std::fs::write(&plain, b"data").unwrap();
    for _ in 0..20 {
        std::fs::read(&plain).unwrap();
    }
    let _ = std::fs::read("/etc/shadow").unwrap();
    let ev = cap
        .wait_for("sensitive read of /etc/shadow", |e| {
            e.pid() == std::process::id()
                && file_of(e, EventKind::SensitiveRead).is_some_and(|f| f.path == "/etc/shadow")
        })
        .await;
    let f = file_of(&ev, EventKind::SensitiveRead).unwrap();
    assert_eq!(f.flags & 0o3, libc::O_RDONLY as u32);
    // The write is recorded (the two rings may be read in either order
    // under load); none of the 20 reads is.
    cap.wait_for("the write of plain.txt", |e| {
        file_of(e, EventKind::FileWrite).is_some_and(|f| f.path == plain.to_str().unwrap())
    })
    .await;
    let about_plain: Vec<_> = cap
        .recorded(|e| matches!(&e.record.detail, Detail::File { file, .. } if file.path == plain.to_str().unwrap()))
        .iter()
        .map(|e| e.kind())
        .collect();
    assert_eq!(
        about_plain,
        [EventKind::FileWrite],
        "only the write, never the 20 reads"
    );
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_connect_accept_and_udp_bind() {
    let mut cap = Capture::start("net").await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ev = cap
        .wait_for("listen", |e| matches!(&e.record.detail, Detail::Net { kind: EventKind::NetListen, net } if net.local.port() == port))
        .await;
    let Detail::Net { net, .. } = &ev.record.detail else {
        unreachable!()
    };
    assert_eq!(net.local, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(net.protocol, 6);
    assert!(net.backlog > 0);
    assert_eq!(ev.pid(), std::process::id());

    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (_server_side, _) = listener.accept().unwrap();
    let ev = cap
        .wait_for("connect", |e| matches!(&e.record.detail, Detail::Net { kind: EventKind::NetConnect, net } if net.local.port() == client_port))
        .await;
    let Detail::Net { net, .. } = &ev.record.detail else {
        unreachable!()
    };
    assert_eq!(net.remote, Some(SocketAddr::from(([127, 0, 0, 1], port))));
    let ev = cap
        .wait_for("accept", |e| matches!(&e.record.detail, Detail::Net { kind: EventKind::NetAccept, net } if net.local.port() == port))
        .await;
    let Detail::Net { net, .. } = &ev.record.detail else {
        unreachable!()
    };
    assert_eq!(
        net.remote,
        Some(SocketAddr::from(([127, 0, 0, 1], client_port)))
    );

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = udp.local_addr().unwrap().port();
    let ev = cap
        .wait_for("udp bind", |e| matches!(&e.record.detail, Detail::Net { kind: EventKind::NetBind, net } if net.local.port() == uport))
        .await;
    let Detail::Net { net, .. } = &ev.record.detail else {
        unreachable!()
    };
    assert_eq!(net.protocol, 17);

    // IPv6
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    let p6 = l6.local_addr().unwrap().port();
    let _c6 = TcpStream::connect(("::1", p6)).unwrap();
    let ev = cap
        .wait_for("v6 connect", |e| matches!(&e.record.detail, Detail::Net { kind: EventKind::NetConnect, net } if net.remote.is_some_and(|r| r.port() == p6)))
        .await;
    let Detail::Net { net, .. } = &ev.record.detail else {
        unreachable!()
    };
    assert_eq!(
        net.remote.unwrap().ip(),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
    );
    cap.stop().await;
}

/// A port nothing listens on (bound, then closed).
fn closed_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_are_events_with_their_target_and_error() {
    let mut cap = Capture::start("refused").await;
    for ip in ["127.0.0.1", "::1"] {
        let port = closed_port(ip);
        let target = SocketAddr::new(ip.parse().unwrap(), port);
        let err = TcpStream::connect(target).expect_err("nothing listens");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        let ev = cap
            .wait_for("the refused connect", |e| {
                matches!(&e.record.detail, Detail::Net { kind: EventKind::NetConnect, net } if net.remote == Some(target))
            })
            .await;
        let Detail::Net { net, .. } = &ev.record.detail else {
            unreachable!()
        };
        assert_eq!(ev.pid(), std::process::id());
        assert_eq!(net.protocol, 6);
        assert_eq!(net.ret, -111, "{ip}");
        assert_eq!(net.error().as_deref(), Some("ECONNREFUSED"));
        // Through the API too, with the error named.
        let pb = fdr_agent::event::wire::event_to_pb(&ev, &fdr_agent::event::wire::Enrich::BARE);
        let Some(fdr_proto::v1::event::Detail::Net(n)) = pb.detail else {
            panic!("{pb:?}")
        };
        assert_eq!(
            (n.remote_port, n.error.as_str()),
            (u32::from(port), "ECONNREFUSED")
        );
    }
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privilege_drop_reports_old_and_new_ids() {
    let mut cap = Capture::start("priv").await;
    let marker = unique("priv");
    let mut cmd = Command::new("/bin/true");
    cmd.arg(&marker);
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let ev = cap
        .wait_for("setresuid", |e| {
            e.pid() == pid
                && matches!(&e.record.detail, Detail::Priv(p) if p.syscall == "setresuid")
        })
        .await;
    let Detail::Priv(p) = &ev.record.detail else {
        unreachable!()
    };
    assert_eq!((p.old.uid, p.old.euid, p.old.suid), (0, 0, 0));
    assert_eq!((p.new.uid, p.new.euid, p.new.suid), (65534, 65534, 65534));
    assert_eq!(p.new.gid, 65534, "the gid changed first");
    assert_ne!(p.old.cap_effective, 0);
    assert_eq!(
        p.new.cap_effective, 0,
        "dropping root drops the capabilities"
    );
    let ev = cap
        .wait_for("setresgid", |e| {
            e.pid() == pid
                && matches!(&e.record.detail, Detail::Priv(p) if p.syscall == "setresgid")
        })
        .await;
    let Detail::Priv(p) = &ev.record.detail else {
        unreachable!()
    };
    assert_eq!((p.old.gid, p.new.gid, p.new.egid), (0, 65534, 65534));
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executable_written_then_run_is_a_binary_event() {
    let mut cap = Capture::start("binary").await;
    let dir = TempDir::new("bin");
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let path = d.join("dropped");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&path)
            .unwrap();
        f.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
    }
    assert!(Command::new(&path).status().unwrap().success());
    let p = path.to_str().unwrap().to_owned();
    let is = |e: &Event, r: BinaryReason| matches!(&e.record.detail, Detail::Binary(b) if b.path == p && b.reason == r);
    // Created with execute bits: "written-executable"? Not at open time: the
    // mode applies to the new inode, which has them from the start.
    let ev = cap
        .wait_for("binary executed", |e| is(e, BinaryReason::Executed))
        .await;
    let Detail::Binary(b) = &ev.record.detail else {
        unreachable!()
    };
    assert_eq!(b.writer_pid, Some(std::process::id()));
    assert!(
        !cap.recorded(|e| is(e, BinaryReason::WrittenExecutable))
            .is_empty(),
        "written with exec bits"
    );
    cap.stop().await;
}
