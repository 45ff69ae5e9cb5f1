//! A real fleet on this machine for the console tests: agents (own
//! sockets, data directories, node names, TLS listeners with client
//! certificates and a token), a real `fdr-console`, and interactive
//! account changes that raise real incidents.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fdr_proto::v1 as pb;

use crate::{agent_binary, console_binary, fdrctl_binary, pki::Ca};

/// The bearer token of the agents' TCP API and of the console's.
pub const TOKEN: &str = "fdr-console-test-token-7d1e";

/// Long enough for agents to start, an incident's snapshot window to
/// close and the console to copy it on a busy 2-core machine.
pub const SLOW: Duration = Duration::from_secs(90);

/// One test at a time: every agent sees every `useradd` of the machine, so
/// tests running together would raise incidents in each other's consoles.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `f` until it gives a value or `limit` passes (polling).
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process, killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test PKI: a CA, the agents' server certificate, the console's
/// client certificate, and the token file.
pub struct Pki {
    pub ca: Ca,
    pub server: crate::pki::Pair,
    pub client: crate::pki::Pair,
    pub token: PathBuf,
}

pub fn pki(dir: &Path) -> Pki {
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

/// One agent: its own socket, data directory, node name and TLS port.
pub struct Node {
    pub name: String,
    pub data: PathBuf,
    pub port: u16,
    pub process: Option<Killed>,
}

impl Node {
    pub fn start(dir: &Path, name: &str, pki: &Pki) -> Node {
        Self::start_with(dir, name, pki, |_| {})
    }

    /// Started with the test's defaults changed by `tweak`.
    pub fn start_with(
        dir: &Path,
        name: &str,
        pki: &Pki,
        tweak: impl FnOnce(&mut fdr_agent::config::Config),
    ) -> Node {
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
        cfg.api.tcp_listen = Some(format!("127.0.0.1:{port}").parse().expect("address"));
        cfg.api.tls_cert_file = Some(pki.server.cert.clone());
        cfg.api.tls_key_file = Some(pki.server.key.clone());
        cfg.api.tls_client_ca_file = Some(pki.ca.cert.clone());
        cfg.api.tcp_token_file = Some(pki.token.clone());
        tweak(&mut cfg);
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

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `fdrctl` against this agent over TLS.
    pub fn ctl(&self, pki: &Pki, args: &[&str]) -> Vec<u8> {
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
    pub fn destroy(&mut self) {
        if let Some(mut p) = self.process.take() {
            // SIGKILL: no goodbye.
            let _ = p.0.kill();
            let _ = p.0.wait();
        }
        std::fs::remove_dir_all(&self.data).expect("remove the node's data");
    }
}

/// The console: config file, process, its own port.
pub struct Console {
    pub dir: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    pub process: Option<Killed>,
}

impl Console {
    /// A console on `agents` (URLs, or `dns:NAME:PORT` for discovery by a
    /// DNS name) keeping at most `max_snapshots`, its settings changed by
    /// `tweak`.
    pub fn new(
        dir: &Path,
        agents: &[String],
        pki: &Pki,
        max_snapshots: u64,
        tweak: impl FnOnce(&mut fdr_console::config::Config),
    ) -> Console {
        let cdir = dir.join("console");
        std::fs::create_dir_all(&cdir).expect("console dir");
        let port = free_port();
        let mut cfg = fdr_console::config::Config::default();
        cfg.api.listen = format!("127.0.0.1:{port}").parse().expect("address");
        cfg.api.token_file = Some(pki.token.clone());
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
        // The web UI on a port of its own (not the default 7444, which
        // another console on the machine may hold).
        cfg.web.listen = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        tweak(&mut cfg);
        let config = cdir.join("console.toml");
        std::fs::write(&config, toml::to_string(&cfg).expect("config")).expect("write");
        Console {
            dir: cdir,
            port,
            config,
            process: None,
        }
    }

    /// The fdr.v1 API's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
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
            if let Some(Some(st)) = self.process.as_mut().map(|p| p.0.try_wait().ok().flatten()) {
                panic!("the console exited ({st}):\n{}", self.log());
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
    }

    /// SIGTERM, and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            // SAFETY: our child, not yet waited for.
            unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + SLOW;
            while p.0.try_wait().ok().flatten().is_none() {
                assert!(Instant::now() < deadline, "the console did not stop");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// `fdrctl` against the console: output, or the error text.
    pub fn try_ctl(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let out = Command::new(fdrctl_binary())
            .args(["--url", &self.url(), "--token", TOKEN])
            .args(args)
            .output()
            .expect("run fdrctl");
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Vec<u8> {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("fdrctl {args:?} at the console: {e}\n{}", self.log()))
    }

    /// Every incident the console holds.
    pub fn incidents(&self) -> Vec<pb::Incident> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let target = fdr_cli::client::Target::Tcp {
                url: self.url(),
                token: Some(TOKEN.into()),
                tls: Default::default(),
            };
            let mut c = fdr_cli::client::connect(&target).await.expect("connect");
            crate::all_incidents(&mut c).await
        })
    }

    /// The console's backdoor-account incident of `node` for `user`, once
    /// its snapshot is copied.
    pub fn wait_incident(&self, node: &str, user: &str) -> pb::Incident {
        poll(
            &format!("{node}'s incident for {user} in the console"),
            SLOW,
            || {
                self.incidents().into_iter().find(|i| {
                    i.node == node
                        && i.r#type == "backdoor-account"
                        && i.snapshot_id > 0
                        && i.accounts.iter().any(|a| a.account == user)
                })
            },
        )
    }
}

/// Runs `useradd` in a private mount namespace over a copy of /etc, under
/// a pseudo-terminal: an interactive account change, a backdoor-account
/// incident on every agent of this machine. The machine's accounts are
/// never touched. The user's name.
pub fn interactive_useradd(dir: &Path) -> String {
    let etc = dir.join(format!("etc-{}", crate::unique("u")));
    let st = Command::new("cp")
        .args(["-a", "/etc/."])
        .arg(&etc)
        .status()
        .expect("cp");
    assert!(st.success());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
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
