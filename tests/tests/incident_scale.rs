//! The incident API at scale, against the real agent binary and `fdrctl`:
//! a deny rule on file writes under a test directory makes every write an
//! audit of one incident, so thousands of audits come quickly.
//!
//! - `incidents watch --json` over a busy incident sends each audit once
//!   (no duplicates, none missing), as deltas;
//! - `incidents show` (text, `--json`, and `--json` of every audit) of an
//!   incident of 10 000 audits stays under 50 MB of fdrctl's memory;
//! - a query of more than 5 MB of audit events succeeds through fdrctl
//!   (paged, each page within the agent's page cap).

use std::{
    collections::HashSet,
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use fdr_cli::client::{self, Client};
use fdr_proto::v1 as pb;
use fdr_tests::{AgentProcess, TempDir, DEADLINE};
use prost::Message;

/// fdrctl's memory bound for `incidents show` of a 10 000-audit incident.
const MAX_CLIENT_RSS: u64 = 50 << 20;
/// The server's cap of encoded event bytes per query page.
const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

/// An agent whose deny rule `rule` audits every write under a directory
/// named `*<watched>*` (a glob: the model sees paths generalised)
/// (one incident, since the incident window is a day), keeping up to
/// 20 000 audits per incident, with room for them in the host buffer and a
/// short after-window so the incident's snapshot commits soon. Four
/// ancestors per audit (not 16): the test's own ancestry (cargo's long
/// command lines) would make each audit several KB for nothing.
fn start(dir: &TempDir, rule: &str, watched: &str) -> (AgentProcess, PathBuf) {
    let config = dir.path().join("fdr.toml");
    std::fs::write(
        &config,
        format!(
            "[recorder]\n\
             data_dir = \"{data}\"\n\
             scope_quota_bytes = {quota}\n\
             budget_bytes = {budget}\n\
             snapshot_after = \"3s\"\n\
             [attribution]\n\
             ancestry_depth = 4\n\
             [analysis]\n\
             max_audits_per_incident = 20000\n\
             [[analysis.rules]]\n\
             name = \"{rule}\"\n\
             action = \"deny\"\n\
             section = \"file\"\n\
             items = [\"*{watched}*\"]\n\
             severity = \"low\"\n",
            data = dir.path().join("data").display(),
            quota = 96u64 << 20,
            budget = 192u64 << 20,
        ),
    )
    .expect("write config");
    let socket = dir.path().join("fdr.sock");
    let agent = AgentProcess::start(&socket, &["--config".as_ref(), config.as_os_str()]);
    (agent, socket)
}

/// Opens (creating) `count` files `dir/<prefix>-<i>` for writing, a few
/// hundred at a time so the kernel rings keep up on a loaded machine.
fn write_files(dir: &Path, prefix: &str, from: usize, count: usize) {
    for i in from..from + count {
        let p =
            CString::new(dir.join(format!("{prefix}-{i}")).as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: a valid path; the descriptor is closed at once.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600) };
        assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
        // SAFETY: the descriptor just opened.
        unsafe { libc::close(fd) };
        if i % 250 == 249 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

async fn connect(socket: &Path) -> Client {
    client::connect_unix(socket).await.expect("connect")
}

/// The incident whose audits come from `rule`, once there is one.
async fn incident_of(c: &mut Client, rule: &str) -> Option<pb::Incident> {
    let list = c
        .list_incidents(pb::ListIncidentsRequest {
            after_serial: 0,
            limit: 1000,
            audit_limit: 1,
        })
        .await
        .expect("ListIncidents")
        .into_inner();
    list.incidents
        .into_iter()
        .find(|i| i.audits.iter().any(|a| a.rule == rule))
}

/// The serial of the incident of `rule`, once it is open.
async fn serial_of(c: &mut Client, rule: &str, deadline: Instant) -> u64 {
    loop {
        if let Some(i) = incident_of(c, rule).await {
            return i.serial;
        }
        assert!(Instant::now() < deadline, "an incident of {rule}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Incident `serial` with its first audit only (cheap: read from memory).
async fn header(c: &mut Client, serial: u64) -> pb::Incident {
    c.get_incident(pb::GetIncidentRequest {
        serial,
        audit_limit: 1,
        audit_offset: 0,
    })
    .await
    .expect("GetIncident")
    .into_inner()
}

/// Waits until incident `serial` holds at least `want` audits and its
/// count has not moved for a second (the agent has caught up); returns it.
async fn settled(c: &mut Client, serial: u64, want: u64, deadline: Instant) -> pb::Incident {
    let mut last = (0, Instant::now());
    loop {
        let i = header(c, serial).await;
        if i.audit_count != last.0 {
            last = (i.audit_count, Instant::now());
        } else if i.audit_count >= want && last.1.elapsed() > Duration::from_secs(1) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "incident #{serial}: {} audits, {want} wanted",
            last.0
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every kept audit of incident `serial`, through GetIncident's pages.
async fn all_audits(c: &mut Client, serial: u64) -> Vec<pb::Audit> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let i = c
            .get_incident(pb::GetIncidentRequest {
                serial,
                audit_limit: 0,
                audit_offset: offset,
            })
            .await
            .expect("GetIncident")
            .into_inner();
        assert_eq!(i.audits_offset, offset);
        assert!(i.encoded_len() <= 4 << 20, "a page within 4 MiB");
        out.extend(i.audits);
        if i.next_audit_offset == 0 {
            return out;
        }
        offset = i.next_audit_offset;
    }
}

/// Runs fdrctl with `args` against `socket`, its output into `out`;
/// returns its exit status and its peak resident memory, as GNU time
/// measures it (its own child: a process forked from this big test process
/// would count the test's memory in its peak).
fn fdrctl_rusage(socket: &Path, args: &[&str], out: &Path) -> (std::process::ExitStatus, u64) {
    let file = std::fs::File::create(out).expect("output file");
    let rss_file = out.with_extension("rss");
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(fdr_tests::fdrctl_binary())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(file)
        .stdin(Stdio::null())
        .status()
        .expect("run fdrctl under /usr/bin/time");
    let kib: u64 = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or_else(|| panic!("max RSS from /usr/bin/time in {}", rss_file.display()));
    (status, kib * 1024)
}

/// `incidents watch --json` over an incident that keeps growing: each
/// audit arrives once, in order, in messages that carry only what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_each_audit_once() {
    let dir = TempDir::new("incscale-watch");
    let watched = TempDir::new("scale-watch-files");
    let rule = "incscale-watch";
    let (agent, socket) = start(&dir, rule, "scale-watch-files");
    let out = dir.path().join("watch.jsonl");
    let mut watch = Command::new(fdr_tests::fdrctl_binary())
        .arg("--socket")
        .arg(&socket)
        .args(["incidents", "watch", "--json"])
        .stdout(std::fs::File::create(&out).expect("watch output"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start fdrctl incidents watch");
    // One audit opens the incident; once the watch has printed it, it is
    // subscribed and every later audit is a delta.
    write_files(watched.path(), "w", 0, 1);
    let deadline = Instant::now() + 6 * DEADLINE;
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains(rule)
    {
        assert!(Instant::now() < deadline, "the watch printed the incident");
        assert!(
            watch.try_wait().expect("watch status").is_none(),
            "watch runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bursts, so that updates come while earlier ones are sent.
    let mut written = 1;
    for round in 0..12 {
        let n = 100 + round * 50;
        let (path, start) = (watched.path().to_path_buf(), written);
        tokio::task::spawn_blocking(move || write_files(&path, "w", start, n))
            .await
            .expect("writer");
        written += n;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut c = connect(&socket).await;
    let serial = serial_of(&mut c, rule, deadline).await;
    // The kernel may drop a few writes on a loaded machine: most arrive.
    let inc = settled(&mut c, serial, written as u64 * 9 / 10, deadline).await;
    let audits = all_audits(&mut c, inc.serial).await;
    assert_eq!(audits.len() as u64, inc.audit_count, "all kept");
    let want: Vec<u64> = audits.iter().map(|a| a.event_seq).collect();
    // What the watch printed of this incident, once it has caught up.
    let (messages, streamed, bytes, overhead) = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let mut messages = 0;
        let mut seqs = Vec::new();
        // Bytes of each message besides its audits.
        let mut overhead = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
            if v["serial"] != inc.serial {
                continue;
            }
            messages += 1;
            // Each message's audits start where the previous ones ended.
            assert_eq!(
                v["audits_offset"].as_u64(),
                Some(seqs.len() as u64),
                "{line}"
            );
            assert_eq!(v["update"], messages > 1, "{line}");
            let mut audit_bytes = 0;
            for a in v["audits"].as_array().expect("audits") {
                seqs.push(a["event_seq"].as_u64().expect("seq"));
                audit_bytes += a.to_string().len() + 1;
            }
            overhead.push(line.len().saturating_sub(audit_bytes));
        }
        if seqs.len() >= want.len() || Instant::now() > deadline {
            break (messages, seqs, text.len(), overhead);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = watch.kill();
    let _ = watch.wait();
    let unique: HashSet<u64> = streamed.iter().copied().collect();
    assert_eq!(unique.len(), streamed.len(), "no audit sent twice");
    assert_eq!(streamed, want, "each audit once, in order");
    println!(
        "watch: {} audits in {messages} messages, {bytes} bytes of JSON",
        streamed.len()
    );
    // Deltas: besides its new audits, a message is only the header.
    let most = overhead.iter().max().copied().unwrap_or(0);
    assert!(most < 8192, "{most} bytes of a message besides its audits");
    drop(agent);
}

/// An incident of 10 000 audits: `incidents show` in text, in JSON, and in
/// JSON with every audit, each under 50 MB of fdrctl's memory, with "more"
/// counts; then a query of its audit events (over 5 MB) through fdrctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_and_query_of_a_10000_audit_incident_stay_bounded() {
    let dir = TempDir::new("incscale-show");
    let watched = TempDir::new("scale-show-files");
    let rule = "incscale-show";
    let (agent, socket) = start(&dir, rule, "scale-show-files");
    let mut c = connect(&socket).await;
    let deadline = Instant::now() + 15 * DEADLINE;
    // Long names: bigger audit events (the query must pass 5 MB).
    let prefix = "q".repeat(180);
    write_files(watched.path(), &prefix, 0, 1);
    let serial = serial_of(&mut c, rule, deadline).await;
    let mut written = 1;
    let inc = loop {
        let (path, start, p) = (watched.path().to_path_buf(), written, prefix.clone());
        tokio::task::spawn_blocking(move || write_files(&path, &p, start, 2000))
            .await
            .expect("writer");
        written += 2000;
        if written < 10_000 {
            continue;
        }
        let i = settled(&mut c, serial, 0, deadline).await;
        if i.audit_count >= 10_000 {
            break i;
        }
    };
    let serial = inc.serial.to_string();
    // The snapshot commits once its after-window (3 s) has passed.
    loop {
        let i = header(&mut c, inc.serial).await;
        if i.snapshot_id != 0 {
            let snaps = c
                .list_snapshots(pb::ListSnapshotsRequest::default())
                .await
                .expect("ListSnapshots")
                .into_inner();
            if snaps
                .snapshots
                .iter()
                .any(|s| s.id == i.snapshot_id && !s.open)
            {
                break;
            }
        }
        assert!(Instant::now() < deadline, "incident snapshot committed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let kept = inc.audit_count;

    // Text, default limit: 100 audits, then "N more".
    let out = dir.path().join("show.txt");
    let (st, rss) = fdrctl_rusage(&socket, &["incidents", "show", &serial], &out);
    assert!(st.success(), "incidents show: {st}");
    let text = std::fs::read_to_string(&out).expect("show output");
    println!("incidents show: {} bytes, max RSS {rss} bytes", text.len());
    assert!(rss < MAX_CLIENT_RSS, "fdrctl max RSS {rss}");
    // Counted as the agent had it then (a late audit may have come in).
    let head = &text[..text.len().min(6000)];
    let count: u64 = text
        .split_once("\naudits (first 100 of ")
        .and_then(|(_, rest)| rest.split_once("):\n"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("an audits line: {head}"));
    assert!(count >= kept, "{count} >= {kept}");
    assert!(
        text.contains(&format!("\n… {} more audits (--limit", count - 100)),
        "{head}"
    );
    assert_eq!(
        text.matches("\n    pid ").count(),
        100,
        "100 audits shown: {head}"
    );
    assert!(text.contains("\ntimeline (snapshot "), "timeline shown");
    assert!(
        text.contains("more events not shown (--limit to show more)"),
        "timeline capped"
    );
    assert!(text.len() < 1 << 20, "bounded output: {}", text.len());

    // JSON, default limit.
    let out = dir.path().join("show.json");
    let (st, rss) = fdrctl_rusage(&socket, &["incidents", "show", &serial, "--json"], &out);
    assert!(st.success(), "incidents show --json: {st}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("json")).expect("one JSON object");
    println!("incidents show --json: max RSS {rss} bytes");
    assert!(rss < MAX_CLIENT_RSS, "fdrctl max RSS {rss}");
    assert_eq!(v["audits"].as_array().map(Vec::len), Some(100));
    let count = v["audit_count"].as_u64().expect("audit_count");
    assert_eq!(v["audits_more"].as_u64(), Some(count - 100));
    assert_eq!(v["timeline"]["status"], "ok");
    assert_eq!(v["timeline"]["events"].as_array().map(Vec::len), Some(100));

    // JSON of every audit: written as the pages come.
    let out = dir.path().join("show-all.json");
    let (st, rss) = fdrctl_rusage(
        &socket,
        &["incidents", "show", &serial, "--json", "--limit", "100000"],
        &out,
    );
    assert!(st.success(), "incidents show --json --limit 100000: {st}");
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!("incidents show --json --limit 100000: {bytes} bytes, max RSS {rss} bytes");
    assert!(rss < MAX_CLIENT_RSS, "fdrctl max RSS {rss}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("json")).expect("one JSON object");
    let list = v["audits"].as_array().expect("audits");
    let seqs: HashSet<u64> = list
        .iter()
        .map(|a| a["event_seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs.len(), list.len(), "every audit once");
    // Audits that came in while it was paging are in too.
    let count = v["audit_count"].as_u64().expect("audit_count");
    assert!(seqs.len() as u64 >= count, "{} >= {count}", seqs.len());
    assert_eq!(v["audits_more"].as_u64(), Some(0));

    // The audit events through QueryEvents: over 5 MB, each page within
    // the cap.
    let mut req = pb::QueryEventsRequest {
        scope: "host".into(),
        kinds: vec![pb::EventKind::Audit as i32],
        ..Default::default()
    };
    let (mut total, mut events, mut pages) = (0usize, 0usize, 0);
    loop {
        let p = c
            .query_events(req.clone())
            .await
            .expect("QueryEvents")
            .into_inner();
        let page_bytes: usize = p.events.iter().map(|e| e.encoded_len()).sum();
        assert!(page_bytes <= MAX_PAGE_BYTES, "page of {page_bytes} bytes");
        total += page_bytes;
        events += p.events.len();
        pages += 1;
        if p.next_cursor.is_empty() {
            break;
        }
        req.cursor = p.next_cursor;
    }
    println!("query: {events} audit events, {total} bytes, {pages} pages");
    assert!(total >= 5_000_000, "the query returns over 5 MB: {total}");
    assert!(pages > 1, "paged");
    let out = dir.path().join("query.jsonl");
    let (st, rss) = fdrctl_rusage(
        &socket,
        &[
            "query", "--host", "--kind", "audit", "--json", "--since", "1h",
        ],
        &out,
    );
    assert!(st.success(), "fdrctl query: {st}");
    let lines = std::fs::read_to_string(&out).expect("query output");
    println!(
        "fdrctl query --host --kind audit --json: {} lines, {} bytes, max RSS {rss} bytes",
        lines.lines().count(),
        lines.len()
    );
    assert!(lines.lines().count() >= events, "every audit event printed");
    // A page at a time (about 4 MiB of events), not the whole answer.
    assert!(rss < 2 * MAX_CLIENT_RSS, "fdrctl query max RSS {rss}");
    drop(agent);
}
