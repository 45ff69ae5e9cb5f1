//! SIGHUP reloads the configuration file of the real `fdr-agent` binary: a
//! deny rule added to the file fires without a restart, a finer
//! `log.level` is in force at once; a broken file is
//! refused (the reason on stderr) and the rules in force keep firing; keys
//! that cannot change at run time are named as needing a restart; SIGHUP
//! never terminates the agent. The agent also runs with `--log-format
//! json` (every log line is a JSON object) and `--node-name` (its
//! incidents carry that name).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fdr_proto::v1 as pb;
use fdr_tests::{agent_binary, unique, TempDir};

/// Generous: other engineers' builds and tests share the machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The agent binary, killed (and waited for) when dropped.
struct Agent {
    child: Child,
    stderr: PathBuf,
}

impl Agent {
    fn start(dir: &Path, args: &[&std::ffi::OsStr]) -> Agent {
        Self::start_with_env(dir, args, &[])
    }

    fn start_with_env(dir: &Path, args: &[&std::ffi::OsStr], env: &[(&str, String)]) -> Agent {
        let socket = dir.join("fdr.sock");
        let stderr = dir.join("stderr.log");
        let child = Command::new(agent_binary())
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start fdr-agent");
        let mut agent = Agent { child, stderr };
        let start = Instant::now();
        while !socket.exists() {
            agent.assert_running("starting");
            assert!(start.elapsed() < DEADLINE, "agent socket never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn socket(&self) -> PathBuf {
        self.stderr.with_file_name("fdr.sock")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the agent exited ({status}) {when}:\n{}", self.stderr());
        }
    }

    fn hup(&mut self) {
        // SAFETY: a signal to our own child, which has not been waited for.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill -HUP");
    }

    /// Waits until stderr holds `n` lines containing `what`.
    async fn wait_log(&mut self, what: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            let text = self.stderr();
            if text.lines().filter(|l| l.contains(what)).count() >= n {
                return text;
            }
            self.assert_running(&format!("waiting for {what:?}"));
            assert!(
                start.elapsed() < DEADLINE,
                "no {what:?} ({n}) in stderr:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config file: the agent's own data elsewhere, and `rules` as the
/// whole rule list (TOML `[[analysis.rules]]` tables).
fn config(extra: &str, rules: &str) -> String {
    format!("[recorder]\nsnapshot_after = \"1s\"\n{extra}\n[attribution]\nruntime_endpoints = []\nengine_endpoints = []\n{rules}")
}

/// A deny rule on running `program`. Its incident type is one nothing
/// else raises here (the config has no other rule of it): the host's
/// incidents are shared with whatever else runs on the machine.
fn deny_exec(name: &str, program: &str) -> String {
    format!(
        "[[analysis.rules]]\nname = \"{name}\"\naction = \"deny\"\nsection = \"exec\"\nitems = [\"* -> */{program}\"]\nseverity = \"high\"\nincident = \"crypto-miner\"\n"
    )
}

/// Writes `text` to `path` whole (a rename: the agent never reads half).
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// The audits counted by the incidents where rule `rule` raised one, and
/// those incidents' node names.
async fn audits_of(socket: &Path, rule: &str) -> (u64, Vec<String>) {
    let Ok(mut c) = fdr_cli::client::connect_unix(socket).await else {
        return (0, Vec::new());
    };
    let Ok(r) = c
        .list_incidents(pb::ListIncidentsRequest {
            audit_limit: 1000,
            ..Default::default()
        })
        .await
    else {
        return (0, Vec::new());
    };
    let mut n = 0;
    let mut hosts = Vec::new();
    for i in r.into_inner().incidents {
        if i.audits.iter().any(|a| a.rule == rule) {
            n += i.audit_count;
            hosts.push(i.hostname.clone());
        }
    }
    (n, hosts)
}

/// Runs `program` until rule `rule` has more than `seen` audits.
async fn fire_until(
    agent: &mut Agent,
    program: &Path,
    rule: &str,
    seen: u64,
) -> (u64, Vec<String>) {
    let start = Instant::now();
    loop {
        let st = Command::new(program).status().expect("run the program");
        assert!(st.success());
        let (n, hosts) = audits_of(&agent.socket(), rule).await;
        if n > seen {
            return (n, hosts);
        }
        agent.assert_running("waiting for the rule to fire");
        assert!(
            start.elapsed() < DEADLINE,
            "rule {rule} never fired (audits {n}):\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_deny_rule_and_refuses_a_broken_file() {
    let dir = TempDir::new("reload");
    let file = dir.path().join("fdr.toml");
    let node = unique("node");
    // Letters only: analysis generalises digits in names away.
    let program_name: String = format!("fdrhupprobe{}", std::process::id())
        .chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from(b'a' + d as u8),
            None => c,
        })
        .collect();
    let program = dir.path().join(&program_name);
    std::fs::copy("/bin/true", &program).expect("copy /bin/true");
    let rule = unique("deny-hup");

    // Start with a harmless rule only.
    write_config(
        &file,
        &config("", &deny_exec("never", "fdr-never-runs-this")),
    );
    let mut agent = Agent::start(
        dir.path(),
        &[
            "--config".as_ref(),
            file.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
            "--node-name".as_ref(),
            node.as_ref(),
        ],
    );
    agent.wait_log("fdr agent running", 1).await;

    // The new rule, a finer log level, and a change that needs a restart.
    let debug_lines = |text: &str| {
        text.lines()
            .filter(|l| l.contains(r#""level":"DEBUG""#))
            .count()
    };
    assert_eq!(debug_lines(&agent.stderr()), 0);
    write_config(
        &file,
        &config(
            "max_snapshots = 42",
            &format!(
                "[log]\nlevel = \"fdr_agent=debug\"\n{}{}",
                deny_exec("never", "fdr-never-runs-this"),
                deny_exec(&rule, &program_name)
            ),
        ),
    );
    agent.hup();
    let log = agent.wait_log("configuration reloaded", 1).await;
    assert!(
        log.lines()
            .any(|l| l.contains("need a restart") && l.contains("recorder.max_snapshots")),
        "{log}"
    );
    assert!(
        log.lines().any(
            |l| l.contains("configuration reloaded") && l.contains("analysis.rules, log.level")
        ),
        "{log}"
    );
    let (fired, hosts) = fire_until(&mut agent, &program, &rule, 0).await;
    assert!(hosts.iter().all(|h| h == &node), "{hosts:?} vs {node}");
    // The incident's snapshot is built and committed: logged at debug
    // level, now in force.
    agent.wait_log(r#""level":"DEBUG""#, 1).await;

    // A rule that does not compile: refused, the running rules stay.
    write_config(
        &file,
        &format!(
            "{}[[analysis.rules]]\nname = \"broken\"\naction = \"deny\"\nsection = \"no-such-section\"\n",
            config("", &deny_exec(&rule, &program_name))
        ),
    );
    agent.hup();
    let log = agent.wait_log("configuration reload refused", 1).await;
    let refused = log
        .lines()
        .find(|l| l.contains("configuration reload refused"))
        .unwrap();
    assert!(
        refused.contains("no-such-section") && refused.contains("ERROR"),
        "{refused}"
    );
    fire_until(&mut agent, &program, &rule, fired).await;

    // Not TOML at all: refused too, the agent stays.
    write_config(&file, "[analysis\nrules = ");
    agent.hup();
    agent.wait_log("configuration reload refused", 2).await;
    for n in 3..6 {
        agent.hup();
        agent.wait_log("configuration reload refused", n).await;
    }
    agent.assert_running("after SIGHUPs");

    // Every line on stderr is a JSON object.
    for line in agent.stderr().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_config_file_changes_nothing_and_never_stops_the_agent() {
    let dir = TempDir::new("reload-none");
    let mut agent = Agent::start(dir.path(), &[]);
    agent.wait_log("fdr agent running", 1).await;
    agent.hup();
    agent.wait_log("nothing to reload", 1).await;
    agent.hup();
    agent.wait_log("nothing to reload", 2).await;
    agent.assert_running("after SIGHUP");
    // Still serving.
    let mut c = fdr_cli::client::connect_unix(&agent.socket())
        .await
        .expect("connect");
    c.get_stats(pb::GetStatsRequest::default())
        .await
        .expect("GetStats after SIGHUP");
}

/// The next notification the agent sent to `sock` (a datagram).
async fn notification(sock: &tokio::net::UnixDatagram, agent: &mut Agent) -> String {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(DEADLINE, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        other => panic!("no notification ({other:?}):\n{}", agent.stderr()),
    }
}

/// Reads notifications until one satisfies `pred` (watchdog pings may
/// come in between).
async fn notification_where(
    sock: &tokio::net::UnixDatagram,
    agent: &mut Agent,
    pred: impl Fn(&str) -> bool,
) -> String {
    loop {
        let n = notification(sock, agent).await;
        if pred(&n) {
            return n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_ready_reloading_and_stopping_and_the_watchdog_is_fed() {
    let dir = TempDir::new("notify");
    let file = dir.path().join("fdr.toml");
    write_config(&file, &config("", ""));
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    let mut agent = Agent::start_with_env(
        dir.path(),
        &["--config".as_ref(), file.as_os_str()],
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            // A ping every 500 ms.
            ("WATCHDOG_USEC", "1000000".into()),
        ],
    );
    let ready = notification(&sock, &mut agent).await;
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready}");
    // Fed while the pipeline advances: several pings.
    for _ in 0..3 {
        notification_where(&sock, &mut agent, |n| n == "WATCHDOG=1").await;
    }
    agent.hup();
    let reloading = notification_where(&sock, &mut agent, |n| n != "WATCHDOG=1").await;
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("{reloading}"));
    assert!(usec > 0);
    let again = notification_where(&sock, &mut agent, |n| n != "WATCHDOG=1").await;
    assert!(again.starts_with("READY=1"), "{again}");
    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) },
        0
    );
    let stopping = notification_where(&sock, &mut agent, |n| n != "WATCHDOG=1").await;
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let status = agent.child.wait().expect("wait");
    assert!(status.success(), "{status}");
}
