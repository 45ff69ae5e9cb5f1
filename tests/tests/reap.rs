//! Processes whose exit record was lost are reaped by the `/proc` sweep;
//! running ones stay live (the kernel's start time matches `/proc`'s).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use fdr_tests::Capture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_whose_exit_was_lost_are_reaped_running_ones_stay() {
    // No exit record ever arrives: every exit is "lost".
    let cap = Capture::start_with("reap", |c| {
        c.capture.disabled_kinds = vec!["exit".into()];
    })
    .await;
    let state = cap.agent.as_ref().expect("running").state.clone();
    let mut running = Command::new("sleep")
        .arg("120")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let mut gone = Vec::new();
    for _ in 0..20 {
        let mut c = Command::new("true").spawn().expect("spawn true");
        gone.push(c.id());
        c.wait().expect("wait");
    }
    let live_pid = running.id();
    // Both kinds must be in the table (their fork records) first.
    let start = Instant::now();
    let all_known = || {
        let procs = state.procs.lock().unwrap();
        procs.get(live_pid).is_some() && gone.iter().all(|p| procs.get(*p).is_some())
    };
    while !all_known() {
        assert!(start.elapsed() < Duration::from_secs(20), "forks recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(
        state
            .procs
            .lock()
            .unwrap()
            .get(live_pid)
            .map(|e| e.start_ns),
        Some(0),
        "the kernel's start time is known, so pid reuse is told apart"
    );
    // Sweeps every 2 s over batches of 1024, a 5 s delay before reaping.
    let deadline = Duration::from_secs(60);
    loop {
        let (reaped_all, live_ok, counts) = {
            let procs = state.procs.lock().unwrap();
            let reaped_all = gone
                .iter()
                .all(|p| procs.get(*p).is_none_or(|e| e.exited_at.is_some()));
            let live_ok = procs.get(live_pid).is_some_and(|e| e.exited_at.is_none());
            (reaped_all, live_ok, procs.counts())
        };
        assert!(live_ok, "the running process was reaped: {counts:?}");
        if reaped_all {
            assert!(counts.reaped >= gone.len() as u64, "{counts:?}");
            break;
        }
        assert!(
            start.elapsed() < deadline,
            "exited processes not reaped within {deadline:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more full sweep period: the running one is still live.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(state
        .procs
        .lock()
        .unwrap()
        .get(live_pid)
        .is_some_and(|e| e.exited_at.is_none()));
    let _ = running.kill();
    let _ = running.wait();
    cap.stop().await;
}
