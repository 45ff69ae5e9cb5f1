//! The API end to end: the real agent binary, a gRPC client on its socket.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use fdr_cli::client;
use fdr_proto::v1::{self as pb, event::Detail, stream_events_response::Item};
use fdr_tests::{poll_until, unique, AgentProcess, Capture, TempDir, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_binary_streams_exec_events_over_its_socket() {
    let dir = TempDir::new("e2e");
    let socket = dir.path().join("fdr.sock");
    let data = dir.path().join("data");
    let mut agent = AgentProcess::start(&socket, &["--data-dir".as_ref(), data.as_os_str()]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "socket is private to root");

    let mut client = client::connect_unix(&socket).await.expect("connect");
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            kinds: vec![pb::EventKind::Exec as i32],
            pids: vec![],
            buffered: false,
            follow: true,
            ..Default::default()
        })
        .await
        .expect("StreamEvents")
        .into_inner();

    let marker = unique("e2e");
    let child = Command::new("/bin/echo")
        .arg(&marker)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(child.success());

    let ev = tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = stream
                .message()
                .await
                .expect("stream ok")
                .expect("stream open");
            if let Some(Item::Event(ev)) = msg.item {
                assert_eq!(ev.kind, pb::EventKind::Exec as i32, "kind filter honoured");
                if matches!(&ev.detail, Some(Detail::Exec(x)) if x.argv.last() == Some(&marker)) {
                    return ev;
                }
            }
        }
    })
    .await
    .expect("exec event within the deadline");
    let p = ev.process.expect("process");
    assert_eq!(p.ppid, std::process::id());
    assert_eq!(p.comm, "echo");
    assert_eq!(
        p.exe,
        std::fs::canonicalize("/bin/echo")
            .unwrap()
            .to_str()
            .unwrap()
    );
    // SAFETY: no preconditions.
    assert_eq!(p.uid, unsafe { libc::geteuid() });
    match ev.detail {
        Some(Detail::Exec(x)) => {
            assert_eq!(x.filename, "/bin/echo");
            assert_eq!(x.argv, vec!["/bin/echo".to_string(), marker.clone()]);
        }
        other => panic!("{other:?}"),
    }
    let t = ev.time.expect("time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!((now.as_secs() as i64 - t.seconds).abs() < 30);

    let stats = client
        .get_stats(pb::GetStatsRequest {})
        .await
        .expect("GetStats")
        .into_inner();
    let exec = stats
        .kinds
        .iter()
        .find(|k| k.name == "exec")
        .expect("exec stats");
    assert!(exec.seen >= 1);
    assert_eq!(exec.kernel_drops, 0);
    assert_eq!(stats.subscribers, 1);
    assert!(stats.buffers.unwrap().events >= 1);
    // The real agent binary: processes from /proc, no runtime socket here
    // unless the machine has one, models learning what it saw.
    let procs = stats.processes.expect("process counts");
    assert!(procs.live > 10, "{procs:?}");
    let analysis = stats.analysis.expect("analysis counts");
    assert!(
        analysis.models >= 1 && analysis.learning == analysis.models,
        "{analysis:?}"
    );
    assert!(analysis.items >= 1);
    assert!(analysis.next_serial >= 1);

    // SIGTERM: a clean shutdown removes the socket.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let status = poll_until("agent exit", || agent.0.try_wait().ok().flatten());
    assert!(status.success(), "agent exit status {status}");
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_client_loses_events_but_capture_goes_on() {
    let mut cap = Capture::start_with("slow", |cfg| cfg.api.stream_queue = 16).await;
    // A small HTTP/2 window, so that what the transport buffers for a
    // client that does not read is small too.
    let endpoint = client::unix_endpoint()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024));
    let mut client = client::connect_unix_with(&cap.socket(), endpoint)
        .await
        .expect("connect");
    // A client that subscribes and then does not read.
    let mut stalled = client
        .stream_events(pb::StreamEventsRequest {
            kinds: vec![],
            pids: vec![],
            buffered: false,
            follow: true,
            ..Default::default()
        })
        .await
        .expect("StreamEvents")
        .into_inner();
    let marker = unique("slow");
    let n = 300;
    for i in 0..n {
        let st = Command::new("/bin/true")
            .arg(format!("{marker}-{i}"))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let last = format!("{marker}-{}", n - 1);
    // Capture kept up: the last process is recorded.
    cap.wait_for("the last exec", |e| e.argv().last() == Some(&last))
        .await;
    let drops = poll_until("stream drops counted", || {
        let d = cap
            .agent
            .as_ref()
            .unwrap()
            .state
            .counters
            .stream_drops
            .load(std::sync::atomic::Ordering::Relaxed);
        (d > 0).then_some(d)
    });
    // The stalled client, once it reads, is told how many it lost, before
    // the next event it gets.
    // Keep some events flowing while it catches up.
    let end = format!("{marker}-end");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (done, end) = (done.clone(), end.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(Command::new("/bin/true")
                    .arg(&end)
                    .status()
                    .unwrap()
                    .success());
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let lost = tokio::time::timeout(DEADLINE, async {
        let mut total = 0;
        while let Some(msg) = stalled.message().await.expect("stream ok") {
            match msg.item {
                Some(Item::Lost(l)) => total += l.count,
                Some(Item::Event(ev))
                    if ev
                        .process
                        .as_ref()
                        .is_some_and(|p| p.argv.last() == Some(&end)) =>
                {
                    return total;
                }
                _ => {}
            }
        }
        panic!("stream ended")
    })
    .await
    .expect("end event within deadline");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    let counted = cap
        .agent
        .as_ref()
        .unwrap()
        .state
        .counters
        .stream_drops
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        lost >= drops,
        "reported {lost} lost, {drops} counted while stalled"
    );
    assert!(lost <= counted, "reported {lost}, counted {counted}");
    let stats = client
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stats.stream_drops >= drops);
    let exec = stats.kinds.iter().find(|k| k.name == "exec").unwrap();
    assert!(exec.seen >= n as u64, "exec seen {}", exec.seen);
    drop(stalled);
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_events_are_replayed_with_filters() {
    let mut cap = Capture::start("replay").await;
    let marker = unique("replay");
    let mut child = Command::new("/bin/sleep")
        .arg("0.01")
        .arg(&marker)
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    // Exec and exit travel in different rings: both must be recorded.
    for kind in [fdr_common::EventKind::Exec, fdr_common::EventKind::Exit] {
        cap.wait_for("exec and exit of sleep", |e| {
            e.pid() == pid && e.kind() == kind
        })
        .await;
    }
    let mut client = client::connect_unix(&cap.socket()).await.expect("connect");
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            kinds: vec![],
            pids: vec![pid],
            buffered: true,
            follow: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no stall")
        .expect("stream ok")
    {
        if let Some(Item::Event(ev)) = msg.item {
            assert_eq!(ev.process.as_ref().unwrap().pid, pid, "pid filter honoured");
            let kind = pb::EventKind::try_from(ev.kind).unwrap();
            // What the models made of them is the process's too.
            if kind != pb::EventKind::ModelLearned && kind != pb::EventKind::Audit {
                kinds.push((ev.boot_ns, kind));
            }
        }
    }
    // In the order they happened (a ring drained later may add an earlier
    // event after a later one).
    kinds.sort();
    let kinds: Vec<pb::EventKind> = kinds.into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        kinds,
        [
            pb::EventKind::Fork,
            pb::EventKind::Exec,
            pb::EventKind::Exit
        ]
    );
    // An unknown kind is a clear error.
    let err = client
        .stream_events(pb::StreamEventsRequest {
            kinds: vec![999],
            pids: vec![],
            buffered: true,
            follow: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    cap.stop().await;
}
