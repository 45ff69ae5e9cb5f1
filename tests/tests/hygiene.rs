//! API hygiene against the real agent: the socket is never reachable with a
//! loose mode, huge arguments are not echoed back whole, and grpc-core
//! clients (Python `grpcio`) work over the unix socket without options.

use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::Instant,
};

use fdr_proto::v1 as pb;
use fdr_tests::{agent_binary, Capture, TempDir, DEADLINE};

#[test]
fn socket_never_appears_with_a_loose_mode_even_under_umask_000() {
    let dir = TempDir::new("umask");
    let socket = dir.path().join("fdr.sock");
    let mut cmd = Command::new(agent_binary());
    cmd.arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start fdr-agent");
    let start = Instant::now();
    let mut seen = 0u64;
    // Every observation of the path, from the first, shows a 0600 socket.
    let res = loop {
        match std::fs::symlink_metadata(&socket) {
            Ok(md) => {
                seen += 1;
                let mode = md.permissions().mode() & 0o777;
                if !md.file_type().is_socket() || mode != 0o600 {
                    break Err(format!("observed {:?} mode {mode:o}", md.file_type()));
                }
                if seen > 1000 {
                    break Ok(());
                }
            }
            Err(_) if start.elapsed() > DEADLINE => break Err("no socket".into()),
            Err(_) => std::hint::spin_loop(),
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("agent exited: {status}"));
        }
    };
    // No temporary left next to it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".fdr"))
        .collect();
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    res.unwrap();
    assert!(names.is_empty(), "{names:?}");
    assert!(!socket.exists(), "removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_arguments_are_not_echoed_whole() {
    let cap = Capture::start("huge-args").await;
    let mut client = fdr_cli::client::connect_unix(&cap.socket())
        .await
        .expect("connect");
    let huge = "A".repeat(1 << 20);
    let check = |what: &str, status: tonic::Status| {
        let m = status.message();
        assert!(m.len() < 1024, "{what}: a message of {} bytes", m.len());
        assert!(
            m.contains(&format!("({} bytes)", huge.len())),
            "{what}: {m}"
        );
    };
    let err = client
        .create_snapshot(pb::CreateSnapshotRequest {
            scope: huge.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("bad scope");
    check("CreateSnapshot scope", err);
    let err = client
        .get_model(pb::GetModelRequest {
            key: huge.clone(),
            ..Default::default()
        })
        .await
        .expect_err("unknown model");
    check("GetModel key", err);
    let err = match client
        .export_snapshot(pb::ExportSnapshotRequest {
            id: 1,
            format: huge.clone(),
        })
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("bad format accepted"),
    };
    check("ExportSnapshot format", err);
    let err = client
        .query_events(pb::QueryEventsRequest {
            scope: "host".into(),
            cursor: huge.clone(),
            ..Default::default()
        })
        .await
        .expect_err("bad cursor");
    check("QueryEvents cursor", err);
    cap.stop().await;
}

/// A Python with `grpcio`: `FDR_TEST_PYTHON`, else `python3` if it has it.
fn python_with_grpcio() -> Option<String> {
    let candidates = std::env::var("FDR_TEST_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_owned()]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import grpc"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py);
        }
    }
    None
}

const GRPCIO_CLIENT: &str = r#"
import grpc, sys
ch = grpc.insecure_channel("unix:" + sys.argv[1])
stats = ch.unary_unary("/fdr.v1.FlightRecorder/GetStats",
    request_serializer=lambda x: x, response_deserializer=lambda x: x)
# Several calls on one connection: the dynamic table is shared.
for i in range(20):
    reply = stats(b"", timeout=10, metadata=[("x-call", str(i) * 100)])
    assert len(reply) > 0
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_needs_no_default_authority_over_the_unix_socket() {
    let Some(py) = python_with_grpcio() else {
        eprintln!("skipped: no Python with grpcio (pip install grpcio; FDR_TEST_PYTHON=<python>)");
        return;
    };
    let cap = Capture::start("grpcio").await;
    let socket = cap.socket();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .args(["-c", GRPCIO_CLIENT])
            .arg(&socket)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    cap.stop().await;
}
