//! A flood of file writes from one process while an exec happens: the exec
//! still arrives (critical ring), and every write is either delivered or
//! counted as lost. Alone in its test binary, so no other test's writes
//! share the rings.

use std::{os::unix::ffi::OsStrExt, process::Command};

use fdr_agent::event::{Detail, EventKind};
use fdr_tests::{unique, Capture, TempDir};

const WRITES: usize = 20_000;
/// Other processes' writes that may be dropped alongside the flood.
const FOREIGN_SLACK: u64 = 100;

fn write_drops(cap: &Capture) -> u64 {
    cap.agent
        .as_ref()
        .unwrap()
        .state
        .kernel_drops()
        .iter()
        .find(|(k, _)| *k == EventKind::FileWrite)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_survives_a_write_flood_and_losses_are_counted() {
    // The target exists before capture starts: only the flood writes it.
    let dir = TempDir::new("flood");
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let target = d.join("target");
    std::fs::write(&target, b"x").unwrap();
    // Small rings, so that the flood overflows the one for ordinary events.
    let mut cap =
        Capture::start_with("flood", |cfg| cfg.probes.ring_buffer_bytes = 16 * 1024).await;
    let path = std::ffi::CString::new(target.as_os_str().as_bytes()).unwrap();
    let drops_before = write_drops(&cap);
    let marker = unique("flood-exec");

    // The reader is held still while the flood runs (it needs the process
    // table for every batch), so the ring overflows whatever the machine's
    // speed; the exec's own ring must still carry it.
    let reader_stalled = cap.agent.as_ref().unwrap().state.procs.lock().unwrap();
    let flood = {
        let path = path.clone();
        std::thread::spawn(move || {
            for _ in 0..WRITES {
                // SAFETY: a valid path; the descriptor is closed at once.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY) };
                assert!(fd >= 0);
                unsafe { libc::close(fd) };
            }
        })
    };
    // The exec happens while the flood runs.
    assert!(Command::new("/bin/true")
        .arg(&marker)
        .status()
        .unwrap()
        .success());
    flood.join().unwrap();
    drop(reader_stalled);
    let exec = cap
        .wait_for("the exec during the flood", |e| {
            e.argv().last() == Some(&marker) && e.kind() == EventKind::Exec
        })
        .await;
    assert_eq!(exec.exe().rsplit('/').next(), Some("true"));

    // A sentinel exec after the flood, in the critical ring: once it is
    // recorded, the flood is over and the reader is draining again.
    let sentinel = unique("flood-sentinel");
    assert!(Command::new("/bin/true")
        .arg(&sentinel)
        .status()
        .unwrap()
        .success());
    cap.wait_for("the sentinel exec", |e| {
        e.argv().last() == Some(&sentinel) && e.kind() == EventKind::Exec
    })
    .await;
    let state = cap.agent.as_ref().unwrap().state.clone();
    let target_str = target.to_str().unwrap().to_owned();
    let count = |p: &str| {
        let all = state.buffers.lock().unwrap().all();
        all.iter()
            .filter(|e| matches!(&e.record.detail, Detail::File { kind: EventKind::FileWrite, file } if file.path == p))
            .count() as u64
    };
    // What the ring still held arrives within the next passes.
    let (received, drops) = fdr_tests::wait_until("every flood write delivered or counted", || {
        let r = count(&target_str);
        let d = write_drops(&cap) - drops_before;
        (r + d >= WRITES as u64).then_some((r, d))
    })
    .await;
    eprintln!("flood: {WRITES} writes, {received} delivered, {drops} counted lost");
    assert!(drops > 0, "the flood overflowed the ring");
    // Drops are counted per kind, not per process: a write by another
    // process dropped during the flood counts too. So every flood write is
    // delivered or counted (never fewer), and on a quiet machine the sum is
    // exact (the usual case); a busy one may add a few foreign drops.
    let accounted = received + drops;
    assert!(
        accounted >= WRITES as u64,
        "{} flood writes neither delivered nor counted",
        WRITES as u64 - accounted
    );
    assert!(
        accounted - WRITES as u64 <= FOREIGN_SLACK,
        "{} more losses than the flood can explain",
        accounted - WRITES as u64
    );
    let stats = state.buffers.lock().unwrap().stats();
    assert_eq!(stats.evicted, 0, "the host buffer held the whole flood");
    cap.stop().await;
}
