//! Hostile names through everything `fdrctl` prints: file names and
//! arguments with a newline and a forged row, ESC, CR, BEL, bytes that are
//! not UTF-8, and spreadsheet formulas, through `events`, `query`,
//! `snapshot show` (the real `fdrctl` binary) and the CSV export: no forged
//! row, no raw control byte, two different byte names never merge (in
//! text, in JSON and on the wire), formula cells neutralised.

use std::{
    ffi::{CString, OsStr},
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::Path,
    process::Command,
    time::Duration,
};

use fdr_agent::{
    event::{Detail, Event, EventKind},
    pipeline::decode::lossless,
};
use fdr_cli::client;
use fdr_proto::v1::{self as pb, stream_events_response::Item};
use fdr_tests::{fdrctl_binary, unique, Capture, Cgroup, TempDir, DEADLINE};

/// A row that a name with a newline would print if it were not escaped.
const FORGED: &str = "2026-01-01T00:00:00.000Z exec           host        1       0      0 init             sbin-init FORGED";

/// The file names the child creates (in the test's directory).
fn file_names() -> Vec<Vec<u8>> {
    vec![
        format!("nl-\n{FORGED}").into_bytes(),
        b"esc-\x1b[31mred\x1b[0m".to_vec(),
        b"cr-\rbel-\x07".to_vec(),
        // A C1 control (CSI) and a right-to-left override.
        "c1-\u{9b}2J-bidi-\u{202e}txt.exe".as_bytes().to_vec(),
        b"b-\xff\xfe".to_vec(),
        b"b-\xfe\xff".to_vec(),
        // Spelled with backslashes: must not look like the bytes above.
        br"b-\xff\xfe".to_vec(),
        b"+1".to_vec(),
        b"-1".to_vec(),
        b"@SUM(1)".to_vec(),
    ]
}

/// Symbolic link targets: kept as written, so a CSV cell starts with them.
const FORMULAS: [&str; 4] = ["=cmd|' /C calc'!A0", "+1", "-1", "@SUM(1)"];

/// A comm with a newline, ESC and a byte that is not UTF-8 (15 bytes).
const COMM: &[u8] = b"c\n\x1b[31m\xff\x07evil";

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// `procs`: async-signal-safe (for a child between fork and exec).
///
/// # Safety
/// Only system calls on `procs`, prepared by the caller.
unsafe fn join_cgroup(procs: &CString) -> bool {
    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return false;
    }
    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
    libc::close(fd);
    ok
}

/// Forks a child that joins the cgroup of `procs`, names itself [`COMM`],
/// creates every file of [`file_names`] in `dir` and one symlink per
/// [`FORMULAS`] target, then exits; returns its pid once it has.
fn hostile_child(dir: &Path, procs: &CString) -> u32 {
    let files: Vec<CString> = file_names()
        .iter()
        .map(|n| CString::new([dir.as_os_str().as_bytes(), b"/", n].concat()).unwrap())
        .collect();
    let links: Vec<(CString, CString)> = FORMULAS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let link = dir.join(format!("link-{i}"));
            (
                CString::new(*t).unwrap(),
                CString::new(link.as_os_str().as_bytes()).unwrap(),
            )
        })
        .collect();
    let comm = CString::new(COMM).unwrap();
    // SAFETY: the child only makes async-signal-safe system calls on data
    // prepared before the fork, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe {
            if !join_cgroup(procs) {
                libc::_exit(3);
            }
            libc::prctl(libc::PR_SET_NAME, comm.as_ptr());
            for f in &files {
                let fd = libc::open(
                    f.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o600,
                );
                if fd < 0 {
                    libc::_exit(1);
                }
                libc::close(fd);
            }
            for (target, link) in &links {
                if libc::symlink(target.as_ptr(), link.as_ptr()) != 0 {
                    libc::_exit(2);
                }
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    pid as u32
}

/// The arguments of the hostile exec (`argv[0]` a formula).
fn exec_args(marker: &str) -> Vec<Vec<u8>> {
    vec![
        format!("a\n{FORGED}").into_bytes(),
        b"\x1b]0;title\x07\r".to_vec(),
        b"b-\xff\xfe".to_vec(),
        marker.as_bytes().to_vec(),
    ]
}

/// Runs `fdrctl --socket SOCKET args…` and returns its standard output.
async fn fdrctl(socket: &Path, args: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new(fdrctl_binary());
    cmd.arg("--socket").arg(socket).args(args);
    let what = format!("fdrctl {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run fdrctl");
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Text output: valid UTF-8 (no raw byte of a name that is not), and not
/// one control character but the line ends.
fn checked_text(out: Vec<u8>, what: &str) -> String {
    let text = String::from_utf8(out).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    if let Some((i, c)) = text
        .char_indices()
        .find(|&(_, c)| c != '\n' && (c.is_control() || ('\u{80}'..='\u{9f}').contains(&c)))
    {
        let at = text[..i].rfind('\n').map_or(0, |n| n + 1);
        panic!(
            "{what}: raw control {c:?} in line {:?}",
            &text[at..(i + 40).min(text.len())]
        );
    }
    text
}

/// Rows that look like event rows (they start with a timestamp).
fn event_rows(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            let b = l.as_bytes();
            b.len() > 24 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
        })
        .collect()
}

/// The checks every table makes: as many event rows as events, each
/// hostile name escaped on its own row, the two byte names apart.
fn check_table(text: &str, events: usize, what: &str) {
    let rows = event_rows(text);
    assert_eq!(rows.len(), events, "{what}: one row per event:\n{text}");
    for l in text.lines() {
        assert!(
            !l.contains("FORGED") || l.contains(r"\nFORGED") || l.contains(r"\n2026-01-01"),
            "{what}: a forged line: {l:?}"
        );
    }
    for want in [
        r"/nl-\n2026-01-01T00:00:00.000Z exec",
        r"/esc-\x1b[31mred\x1b[0m",
        r"/cr-\rbel-\x07",
        r"/c1-\xc2\x9b2J-bidi-\xe2\x80\xaetxt.exe",
        r"/b-\xff\xfe",
        r"/b-\xfe\xff",
        r"/b-\\xff\\xfe",
    ] {
        assert!(
            rows.iter().any(|r| r.contains(want)),
            "{what}: no row with {want}:\n{text}"
        );
    }
}

/// A captured event of `pid` matching `pred`, with a deadline.
async fn recorded(cap: &mut Capture, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    (*cap.wait_for(what, pred).await).clone()
}

fn file_path(ev: &Event) -> Option<&str> {
    match &ev.record.detail {
        Detail::File { file, .. } => Some(&file.path),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_never_forge_output() {
    let mut cap = Capture::start_with("hostile", |c| {
        c.recorder.snapshot_after = Duration::from_millis(500);
    })
    .await;
    let socket = cap.socket();
    let tmp = TempDir::new("hostile");
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let marker = dir.file_name().unwrap().to_str().unwrap().to_owned();
    // A container of its own: its buffer is not evicted by a flood elsewhere
    // on the machine (other tests may be running).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{:0>64x}", nanos ^ u128::from(std::process::id()) << 64);
    let cg = Cgroup::create(&format!("{}/docker/{id}", unique("hostile")));
    let procs = CString::new(cg.procs_file().as_os_str().as_bytes()).unwrap();
    let scope = format!("container:{id}");

    // The files and links, by a child with a hostile comm.
    let child = hostile_child(&dir, &procs);
    for name in file_names() {
        let (text, _) = lossless([dir.as_os_str().as_bytes(), b"/", &name].concat());
        recorded(&mut cap, &format!("the write of {text:?}"), |e| {
            e.pid() == child
                && e.kind() == EventKind::FileWrite
                && file_path(e) == Some(text.as_str())
        })
        .await;
    }
    for t in FORMULAS {
        recorded(&mut cap, &format!("the link to {t}"), |e| {
            e.pid() == child && e.kind() == EventKind::FileLink && file_path(e) == Some(t)
        })
        .await;
    }
    recorded(&mut cap, "the child's exit", |e| {
        e.pid() == child && e.kind() == EventKind::Exit
    })
    .await;

    // An exec whose argv[0] is a formula and whose arguments are hostile.
    let args = exec_args(&marker);
    let mut cmd = Command::new("/bin/true");
    cmd.arg0(FORMULAS[0])
        .args(args.iter().map(|a| OsStr::from_bytes(a)));
    let join = procs.clone();
    // SAFETY: join_cgroup is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if join_cgroup(&join) {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    };
    let status = cmd.status().unwrap();
    assert!(status.success());
    let exec = recorded(&mut cap, "the hostile exec", |e| {
        e.kind() == EventKind::Exec && e.argv().last().map(String::as_str) == Some(&marker)
    })
    .await;
    assert_eq!(exec.scope.key(), scope, "in the test's container");
    recorded(&mut cap, "the hostile exec's exit", |e| {
        e.pid() == exec.pid() && e.kind() == EventKind::Exit
    })
    .await;
    let pids = [child.to_string(), exec.pid().to_string()];
    // What happened in the container (the forks and the first exit are
    // the host's, where a flood elsewhere could evict them).
    let kinds = [
        ("write", pb::EventKind::FileWrite),
        ("link", pb::EventKind::FileLink),
        ("exec", pb::EventKind::Exec),
    ];

    // On the wire: the exact bytes, and two different names.
    let mut c = client::connect_unix(&socket).await.expect("connect");
    let mut stream = c
        .stream_events(pb::StreamEventsRequest {
            pids: vec![child, exec.pid()],
            kinds: kinds.iter().map(|k| k.1 as i32).collect(),
            buffered: true,
            follow: false,
            ..Default::default()
        })
        .await
        .expect("StreamEvents")
        .into_inner();
    let mut wire = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream") {
        if let Some(Item::Event(ev)) = msg.item {
            wire.push(ev);
        }
    }
    let raw_paths: Vec<&[u8]> = wire
        .iter()
        .filter_map(|e| match &e.detail {
            Some(pb::event::Detail::File(f)) if !f.path_raw.is_empty() => {
                Some(f.path_raw.as_slice())
            }
            _ => None,
        })
        .collect();
    let exact = |name: &[u8]| [dir.as_os_str().as_bytes(), b"/", name].concat();
    assert!(
        raw_paths.contains(&exact(b"b-\xff\xfe").as_slice()),
        "{wire:?}"
    );
    assert!(
        raw_paths.contains(&exact(b"b-\xfe\xff").as_slice()),
        "{wire:?}"
    );
    assert_eq!(
        raw_paths.len(),
        2,
        "only names that are not UTF-8 carry bytes"
    );
    let wire_exec = wire
        .iter()
        .find_map(|e| match &e.detail {
            Some(pb::event::Detail::Exec(x)) => Some(x),
            _ => None,
        })
        .expect("the exec on the wire");
    let mut want_argv = vec![FORMULAS[0].as_bytes().to_vec()];
    want_argv.extend(args.iter().cloned());
    assert_eq!(wire_exec.argv_raw, want_argv, "argv, byte for byte");
    assert!(
        wire.iter()
            .any(|e| e.process.as_ref().is_some_and(|p| p.comm_raw == COMM)),
        "the comm, byte for byte"
    );

    // fdrctl events: a table with one row per event, and JSON.
    let mut ev_args = vec!["events"];
    for p in &pids {
        ev_args.extend(["--pid", p]);
    }
    for (k, _) in &kinds {
        ev_args.extend(["--kind", k]);
    }
    let json = checked_text(
        fdrctl(&socket, &[&ev_args[..], &["--json"]].concat()).await,
        "events --json",
    );
    let json: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(json.len(), wire.len());
    assert!(wire.len() > file_names().len() + FORMULAS.len(), "{wire:?}");
    let not_utf8: Vec<&str> = json
        .iter()
        .filter(|v| v["detail"]["path_utf8"] == false)
        .filter_map(|v| v["detail"]["path"].as_str())
        .collect();
    assert_eq!(not_utf8.len(), 2, "{not_utf8:?}");
    assert_ne!(not_utf8[0], not_utf8[1]);
    assert!(not_utf8.iter().any(|p| p.ends_with(r"/b-\xff\xfe")));
    assert!(not_utf8.iter().any(|p| p.ends_with(r"/b-\xfe\xff")));
    assert!(
        json.iter().any(|v| v["detail"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(r"/b-\xff\xfe"))
            && v["detail"]["path_utf8"] == true),
        "the name spelled with backslashes is UTF-8"
    );
    assert!(json.iter().any(|v| v["detail"]["argv_utf8"] == false));
    assert!(json.iter().any(|v| v["process"]["comm_utf8"] == false));

    let table = checked_text(fdrctl(&socket, &ev_args).await, "events");
    check_table(&table, wire.len(), "events");
    assert_eq!(
        table.lines().count(),
        wire.len() + 1,
        "header and rows:\n{table}"
    );
    assert!(
        table.contains(&format!(
            r"/bin/true '=cmd|'\'' /C calc'\''!A0' $'a\n{FORGED}' $'\x1b]0;title\x07\r' $'b-\xff\xfe' {marker}"
        )),
        "the command line, as bash reads it back:\n{table}"
    );
    assert!(
        table.contains(r" c\n\x1b[31m\xff\x07evil"),
        "the comm:\n{table}"
    );

    // fdrctl query: the same, by text.
    let query_args = [
        "query",
        "--container",
        &id,
        "--since",
        "10m",
        "--grep",
        &marker,
    ];
    let q_json = checked_text(
        fdrctl(&socket, &[&query_args[..], &["--json"]].concat()).await,
        "query --json",
    );
    let q_events = q_json.lines().count();
    assert!(q_events > file_names().len() + FORMULAS.len(), "{q_json}");
    let q_table = checked_text(fdrctl(&socket, &query_args).await, "query");
    check_table(&q_table, q_events, "query");
    assert_eq!(q_table.lines().count(), q_events + 1, "{q_table}");

    // A snapshot: fdrctl snapshot show, and the CSV export.
    let info = c
        .create_snapshot(pb::CreateSnapshotRequest {
            scope: scope.clone(),
            reason: "hostile\nnames\x1b[2J".into(),
        })
        .await
        .expect("CreateSnapshot")
        .into_inner();
    let deadline = tokio::time::Instant::now() + DEADLINE * 3;
    loop {
        let list = c
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await
            .expect("ListSnapshots")
            .into_inner();
        if list.snapshots.iter().any(|i| i.id == info.id && !i.open) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshot never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = info.id.to_string();
    let show_args = ["snapshot", "show", &id, "--grep", &marker];
    let s_json = checked_text(
        fdrctl(&socket, &[&show_args[..], &["--json"]].concat()).await,
        "snapshot show --json",
    );
    let s_events = s_json.lines().count() - 1; // the summary first
    assert!(s_events > file_names().len() + FORMULAS.len(), "{s_json}");
    let s_table = checked_text(fdrctl(&socket, &show_args).await, "snapshot show");
    check_table(&s_table, s_events, "snapshot show");
    assert!(
        s_table
            .lines()
            .next()
            .unwrap()
            .ends_with(r"hostile\nnames\x1b[2J"),
        "the reason, escaped:\n{s_table}"
    );
    let list = checked_text(
        fdrctl(&socket, &["snapshot", "list"]).await,
        "snapshot list",
    );
    assert!(list.contains(r"hostile\nnames\x1b[2J"), "{list}");

    let csv_data = fdrctl(&socket, &["snapshot", "export", &id, "--format", "csv"]).await;
    let csv_text = String::from_utf8(csv_data).expect("CSV is UTF-8");
    let mut prev = '\0';
    for c in csv_text.chars() {
        assert!(
            !(c.is_control() && c != '\n' && c != '\r') && (c != '\r' || prev != '\n'),
            "raw control {c:?} in the CSV"
        );
        prev = c;
    }
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.expect("a CSV row")).collect();
    for r in &rows {
        for cell in r {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a formula cell: {cell:?} in {r:?}"
            );
            assert!(!cell.contains(|c: char| c.is_control()), "{cell:?}");
        }
    }
    let ours: Vec<&csv::StringRecord> = rows
        .iter()
        .filter(|r| r.iter().any(|c| c.contains(&marker)))
        .collect();
    assert_eq!(ours.len(), s_events, "one CSV row per event: {ours:?}");
    let what: Vec<&str> = ours.iter().map(|r| &r[10]).collect();
    for f in FORMULAS {
        let want = format!("'{f}");
        assert!(what.contains(&want.as_str()), "{want} in {what:?}");
    }
    assert!(
        what.iter()
            .any(|w| w.starts_with(r"'=cmd|' /C calc'!A0 a\n2026")),
        "the exec's command: {what:?}"
    );
    for name in [r"/b-\xff\xfe", r"/b-\xfe\xff", r"/b-\\xff\\xfe"] {
        assert_eq!(
            what.iter().filter(|w| w.ends_with(name)).count(),
            1,
            "{name} in {what:?}"
        );
    }

    drop(c);
    cap.stop().await;
    drop(cg);
}
