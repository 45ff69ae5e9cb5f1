//! `host.root`: the agent seeing the host's filesystem somewhere else than
//! at its own `/` (a pod mounts the host's `/` at `/host`). Here a fake
//! host tree whose `/etc/shadow` and `/etc/hostname` are its own (not the
//! agent's), `/proc` and `/sys` the real ones: a process of that "host"
//! (in a mount namespace whose root is that tree) reading its
//! `/etc/shadow` is a sensitive read reported as `/etc/shadow`; the
//! agent's own `/etc/shadow` is not watched; the node is named after the
//! fake host's `/etc/hostname`.

use std::os::unix::{ffi::OsStrExt, process::CommandExt};

use fdr_agent::event::{Detail, EventKind};
use fdr_tests::{Capture, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_files_are_watched_under_the_host_root_and_reported_as_host_paths() {
    let host = TempDir::new("hostroot");
    let root = std::fs::canonicalize(host.path()).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/shadow"), "root:*:1::::::\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "fake-host-node\n").unwrap();
    std::os::unix::fs::symlink("/proc", root.join("proc")).unwrap();
    std::os::unix::fs::symlink("/sys", root.join("sys")).unwrap();
    let root_for_agent = root.clone();
    let mut cap = Capture::start_with("hostroot", move |c| {
        c.host.root = root_for_agent;
        c.attribution.runtime_endpoints.clear();
        c.attribution.engine_endpoints.clear();
    })
    .await;
    let me = std::process::id();

    // The agent's own /etc/shadow: not the host's, not watched.
    std::fs::read("/etc/shadow").unwrap();
    // A process of the fake host reads its /etc/shadow.
    let root_c = std::ffi::CString::new(root.as_os_str().as_bytes()).unwrap();
    let shadow_c = std::ffi::CString::new("/etc/shadow").unwrap();
    let mut cmd = std::process::Command::new("/bin/true");
    // SAFETY: only async-signal-safe calls in the child, on strings made
    // before the fork; it ends with `_exit` (never runs the program).
    unsafe {
        cmd.pre_exec(move || {
            // Its own mount namespace whose root is the fake host's tree,
            // as the host's processes see the host's `/`.
            let dot = c".".as_ptr();
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    root_c.as_ptr(),
                    root_c.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                || libc::chdir(root_c.as_ptr()) != 0
                || libc::syscall(libc::SYS_pivot_root, dot, dot) != 0
                || libc::umount2(dot, libc::MNT_DETACH) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                libc::_exit(3);
            }
            let fd = libc::open(shadow_c.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                libc::_exit(4);
            }
            let mut b = [0u8; 16];
            libc::read(fd, b.as_mut_ptr().cast(), b.len());
            libc::close(fd);
            libc::_exit(0);
        });
    }
    let status = cmd.status().expect("the chrooted reader");
    assert!(status.success(), "{status}");

    let ev = cap
        .wait_for("the host's /etc/shadow read", |e| {
            e.record.task.ppid == me
                && matches!(&e.record.detail, Detail::File { kind: EventKind::SensitiveRead, file } if file.path == "/etc/shadow")
        })
        .await;
    // Recorded in order: the agent's own /etc/shadow, read before, is not
    // a sensitive read.
    let own = cap.recorded(|e| {
        e.pid() == me
            && matches!(&e.record.detail, Detail::File { kind: EventKind::SensitiveRead, file } if file.path == "/etc/shadow")
    });
    assert!(own.is_empty(), "{own:?}");

    let state = &cap.agent.as_ref().expect("running").state;
    let pb = state.with_enrich(0, |en| fdr_agent::event::wire::event_to_pb(&ev, en));
    if std::env::var_os("NODE_NAME").is_none() {
        assert_eq!(&*state.node, "fake-host-node");
        assert_eq!(pb.hostname, "fake-host-node");
    } else {
        assert_eq!(pb.hostname, &*state.node);
    }
    cap.stop().await;
}
