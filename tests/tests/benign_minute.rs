//! A benign host minute raises no audit after learning: the agent learns
//! while a private containerd starts, runs a pod and stops, and a shell
//! makes mktemp'ed and Python-tempfile'd work directories with a script in
//! them; after learning, the same work again — a containerd restart (a new
//! random CRI streaming port, new FIFOs and state names), new random work
//! directories, and a `chmod +x` of the work tree's script — raises no
//! audit from the processes of this test.

use std::{process::Command, sync::Arc, time::Duration};

use fdr_agent::event::{BinaryReason, Detail, Event, EventKind};
use fdr_tests::{
    containerd::{pod_uid, unique_name, Containerd},
    wait_until, Capture,
};

/// How long each model learns.
const LEARNING: Duration = Duration::from_secs(30);

/// The work of one phase: two random work directories (mktemp's
/// `tmp.XXXXXXXXXX`, Python's `tmpXXXXXXXX`), a script and a note written
/// in them, the script's mode changed (`mode`), everything removed.
fn work(mode: &str) {
    let script = format!(
        r#"set -e
d=$(mktemp -d)
p=$(python3 -c 'import tempfile; print(tempfile.mkdtemp())')
mkdir -p "$d/work" "$p/work"
printf '#!/bin/sh\necho built\n' > "$d/work/build.sh"
printf 'note\n' > "$p/work/notes.txt"
chmod {mode} "$d/work/build.sh"
echo "$d"
rm -rf "$d" "$p""#
    );
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .expect("run the work script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A containerd started, a pod with a container run and removed, the
/// daemon stopped (dropped).
async fn containerd_cycle(tag: &str) -> anyhow::Result<()> {
    let containerd = Containerd::start(tag).await?;
    let pod = containerd
        .run_pod(&unique_name("benign"), "fdr-test", &pod_uid())
        .await?;
    containerd
        .run_container(&pod, "app", &["sh", "-c", "echo hi; sleep 30"])
        .await?;
    let log = containerd.container_log(&pod, "app")?;
    wait_until("the container's output", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains(" stdout F hi"))
    })
    .await;
    containerd.remove_pod(&pod).await?;
    drop(containerd);
    Ok(())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Whether `e` happened in this test's process or one it started.
fn ours(e: &Event) -> bool {
    let me = std::process::id();
    e.image.pid == me || e.image.ancestors(usize::MAX).any(|a| a.pid == me)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benign_host_minute_raises_no_audit_after_learning() -> anyhow::Result<()> {
    let mut cap = Capture::start_with("benign", |c| {
        c.analysis.learning_period = LEARNING;
        c.attribution.runtime_endpoints.clear();
    })
    .await;
    let state = cap.agent.as_ref().expect("running").state.clone();
    // The agent runs in this process: its own bookkeeping (its store, the
    // harness's directories named `fdr-test-<tag>-<pid>-<nanos>`) is this
    // process's model, not part of the minute.
    let own_model = format!("exe:{}", std::env::current_exe()?.display());

    // Learning.
    containerd_cycle("benign").await?;
    work("644");
    let learned_until = now_ns() + LEARNING.as_nanos() as u64;
    // Every model of the learning phase active (a fixed wait: learning
    // ends at a time, not at an event).
    while now_ns() <= learned_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The benign minute.
    let from = state
        .buffers
        .lock()
        .expect("buffer lock")
        .all()
        .last()
        .map_or(0, |e| e.seq);
    containerd_cycle("benign").await?;
    work("+x");
    // The script made executable was seen as such (and judged).
    let made_exec = cap
        .wait_for("the chmod +x of the work tree's script", |e| {
            e.seq > from
                && ours(e)
                && matches!(&e.record.detail, Detail::Binary(b)
                    if b.reason == BinaryReason::MadeExecutable && b.path.ends_with("/work/build.sh"))
        })
        .await;
    println!("made executable: {:?}", made_exec.record.detail);
    // containerd listened again (its CRI streaming server's random port).
    let listens: Vec<String> = cap
        .recorded(|e| {
            e.seq > from
                && ours(e)
                && e.kind() == EventKind::NetListen
                && e.exe().ends_with("/containerd")
        })
        .iter()
        .map(|e| format!("{:?}", e.record.detail))
        .collect();
    println!("containerd listened: {listens:?}");
    // Every event of the minute went through the analysis: a marker event
    // after it is recorded, so earlier audits are too.
    Command::new("/bin/true").status()?;
    cap.wait_for("a marker after the minute", |e| {
        e.seq > made_exec.seq
            && e.kind() == EventKind::Exec
            && e.exe().ends_with("/true")
            && ours(e)
    })
    .await;

    // The harness's directories are named `fdr-test-<tag>-<pid>-<nanos in
    // hex>`: a marker unique per run by design, which no host has (the
    // generaliser takes most such nanos for random, not all: `23456fbb`).
    let audits: Vec<Arc<Event>> = cap.recorded(|e| {
        e.seq > from
            && ours(e)
            && matches!(&e.record.detail, Detail::Audit(a)
                if *a.model != *own_model && !a.item.contains("/fdr-test-"))
    });
    let shown: Vec<String> = audits
        .iter()
        .filter_map(|e| match &e.record.detail {
            Detail::Audit(a) => Some(format!(
                "{} [{} {}] {}: {}",
                a.model, a.section, a.rule, a.item, a.message
            )),
            _ => None,
        })
        .collect();
    assert!(shown.is_empty(), "audits in a benign minute: {shown:#?}");
    cap.stop().await;
    Ok(())
}
