//! The container image end to end: the archive `cargo xtask image` writes
//! is loaded into a private Docker Engine and run the way the DaemonSet runs
//! it (privileged, or every capability this process holds where it may not
//! hand out all of them; the host's PID namespace, the host's `/` read-only at
//! `/host` with `HOST_ROOT=/host`, the socket and data directories from the
//! host, `NODE_NAME` set). From the host the test then finds: a process run
//! on the host, named with the node; a read of the host's /etc/shadow as a
//! sensitive read; `fdrctl` inside the container reaching the agent; the
//! gRPC health service SERVING; `/metrics` in Prometheus text format with
//! `fdr_events_total{kind="exec"}` growing.
//!
//! `ctr import` and `podman load` take the same archive, naming the image
//! as Docker does.
//!
//! The archive: `$FDR_IMAGE_ARCHIVE` (`cargo xtask test` builds it once
//! before the tests), else `cargo xtask image --out <temp dir>` (a release
//! build, quick when target/release is fresh).
//!
//! Networking: as in the DaemonSet (no hostNetwork), the container has a
//! network namespace of its own (`--network none`: the private dockerd has
//! no bridge) and the DaemonSet's config (deploy/kubernetes/base/fdr.toml)
//! listens on 0.0.0.0:6789 (health) and 0.0.0.0:9477 (metrics) there; the
//! test checks them from a thread that joined that namespace, where the
//! kubelet and Prometheus reach a pod. No port of the machine is taken, so
//! runs side by side never collide.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use fdr_proto::v1 as pb;
use fdr_tests::{docker::Docker, unique, TempDir};

/// How long the agent may take to start in the container (attach its
/// probes on a loaded machine) and an event to show up.
const START_DEADLINE: Duration = Duration::from_secs(120);
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

/// The DaemonSet's health and metrics ports.
const HEALTH: u16 = 6789;
const METRICS: u16 = 9477;

/// The variable `cargo xtask test` names the archive in.
const ARCHIVE_ENV: &str = "FDR_IMAGE_ARCHIVE";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_like_the_daemonset_and_records_the_host() -> Result<()> {
    let tmp = TempDir::new("image");
    let archive = image_archive(tmp.path())?;

    let docker = Docker::start("image-docker").await?;
    let loaded = docker
        .cli(&["load", "--input", &archive.display().to_string()])
        .context("docker load of the archive")?;
    let tag = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .with_context(|| format!("docker load named no image: {loaded}"))?
        .trim()
        .to_owned();
    ensure!(
        tag.starts_with("fdr-agent:") && !tag.ends_with(":latest"),
        "{tag}"
    );
    let version = tag.trim_start_matches("fdr-agent:");
    ensure!(
        version.starts_with(&format!("{}-g", env!("CARGO_PKG_VERSION"))),
        "{tag}"
    );
    let config: serde_json::Value = serde_json::from_str(&docker.cli(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        &tag,
    ])?)?;
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/fdr-agent"])
    );
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["--config", "/etc/fdr/fdr.toml"])
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let revision = config["Labels"]["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default();
    let short = version
        .split_once("-g")
        .and_then(|(_, r)| r.split('-').next())
        .unwrap_or_default();
    assert!(
        revision.len() == 40 && !short.is_empty() && revision.starts_with(short),
        "revision label {revision:?} of {tag}"
    );

    ctr_import(&docker, &archive, &tag)?;
    podman_load(tmp.path(), &archive, &tag)?;

    // The DaemonSet's mounts, from a temporary directory.
    let run = tmp.path().join("run");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&run)?;
    std::fs::create_dir_all(&data)?;
    // The DaemonSet's own config (its ConfigMap): health on 6789, metrics
    // on 9477, JSON logs.
    let config_file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/base/fdr.toml")
        .canonicalize()
        .context("deploy/kubernetes/base/fdr.toml")?;
    let config_text = std::fs::read_to_string(&config_file)?;
    for listen in [HEALTH, METRICS] {
        ensure!(
            config_text.contains(&format!("listen = \"0.0.0.0:{listen}\"")),
            "{} does not listen on {listen}",
            config_file.display()
        );
    }
    // The DaemonSet's Secrets (fdr-agent-tls, fdr-api-token): the TCP API
    // the console copies from is on in the base.
    let tls = tmp.path().join("tls");
    let token_dir = tmp.path().join("token");
    std::fs::create_dir_all(&tls)?;
    std::fs::create_dir_all(&token_dir)?;
    let ca = fdr_tests::pki::Ca::new(tmp.path(), "fdr-image-test-ca");
    let server = ca.server("fdr-agent");
    std::fs::copy(&server.cert, tls.join("tls.crt"))?;
    std::fs::copy(&server.key, tls.join("tls.key"))?;
    std::fs::copy(&ca.cert, tls.join("ca.crt"))?;
    std::fs::write(token_dir.join("token"), "fdr-image-test-token\n")?;
    let (v_tls, v_token) = (
        format!("{}:/etc/fdr/tls:ro", tls.display()),
        format!("{}:/etc/fdr/token:ro", token_dir.display()),
    );
    let node = format!("test-node-{}", unique("n"));
    let name = format!("fdr-agent-{}", std::process::id());
    let vol = |from: &Path, to: &str| format!("{}:{to}", from.display());
    let (v_run, v_data, v_conf) = (
        vol(&run, "/run/fdr"),
        vol(&data, "/var/lib/fdr"),
        vol(&config_file, "/etc/fdr/fdr.toml:ro"),
    );
    let node_env = format!("NODE_NAME={node}");
    let privilege = privilege_options()?;
    let mut options: Vec<&str> = privilege.iter().map(String::as_str).collect();
    options.extend_from_slice(&[
        "--pid=host",
        "--network=none",
        host_root_volume(),
        "--env=HOST_ROOT=/host",
        "--volume=/sys/kernel:/sys/kernel:ro",
        "--volume=/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "--volume",
        &v_run,
        "--volume",
        &v_data,
        "--volume",
        &v_conf,
        "--volume",
        &v_tls,
        "--volume",
        &v_token,
        "--env",
        &node_env,
    ]);
    let id = docker.run_image(&name, &options, &tag, &[])?;
    let agent = Agent {
        docker: &docker,
        id: &id,
    };
    let pid: u32 = docker
        .cli(&["inspect", "--format", "{{.State.Pid}}", &id])?
        .parse()
        .context("the container's pid")?;

    // The socket appears on the host, and answers.
    let socket = run.join("fdr.sock");
    let client = agent
        .poll(START_DEADLINE, "the agent's socket to answer", || async {
            let mut c = fdr_cli::client::connect_unix(&socket).await.ok()?;
            c.get_stats(pb::GetStatsRequest {}).await.ok()?;
            Some(c)
        })
        .await?;

    // (d) The health service says SERVING once the probes are attached.
    // Checked where the kubelet checks it, on the container's own network.
    agent
        .poll(START_DEADLINE, "health SERVING", || async {
            let serving = tonic_health::pb::health_check_response::ServingStatus::Serving;
            (health(pid).await.ok()? == serving as i32).then_some(())
        })
        .await?;

    // (a) A process run on the host, recorded with the node's name.
    let execs_before = exec_total(pid)
        .await
        .map_err(|e| agent.failed(&format!("reading /metrics: {e:#}")))?;
    let marker = unique("image");
    let status = Command::new("/bin/true").arg(&marker).status()?;
    ensure!(status.success());
    let exec = agent
        .poll(EVENT_DEADLINE, "the host's marked exec", || {
            find_event(client.clone(), pb::EventKind::Exec, &marker, |e| {
                e.process
                    .as_ref()
                    .is_some_and(|p| p.argv.iter().any(|a| a == &marker))
            })
        })
        .await?;
    assert_eq!(exec.scope, "host");
    assert_eq!(exec.hostname, node, "the exec is named with NODE_NAME");

    // (b) The host's /etc/shadow read on the host (not in the container).
    let cat = Command::new("cat")
        .arg("/etc/shadow")
        .stdout(Stdio::null())
        .spawn()?;
    let cat_pid = cat.id();
    let output = cat.wait_with_output()?;
    ensure!(output.status.success(), "cat /etc/shadow: {output:?}");
    let read = agent
        .poll(EVENT_DEADLINE, "the host's /etc/shadow read", || {
            find_event(
                client.clone(),
                pb::EventKind::SensitiveRead,
                "/etc/shadow",
                move |e| e.process.as_ref().is_some_and(|p| p.pid == cat_pid),
            )
        })
        .await?;
    match &read.detail {
        Some(pb::event::Detail::File(f)) => assert_eq!(f.path, "/etc/shadow"),
        other => panic!("sensitive read without a file: {other:?}"),
    }
    assert_eq!(read.scope, "host");
    assert_eq!(read.hostname, node);

    // (c) fdrctl inside the container reaches the agent over the default
    // socket (/run/fdr/fdr.sock).
    let stats = docker
        .cli(&["exec", &id, "fdrctl", "stats", "--json"])
        .map_err(|e| agent.failed(&format!("fdrctl stats in the container: {e:#}")))?;
    let stats: serde_json::Value = serde_json::from_str(&stats)?;
    let seen = stats["kinds"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["kind"] == "exec"))
        .and_then(|k| k["seen"].as_u64())
        .unwrap_or(0);
    assert!(seen > 0, "fdrctl stats in the container: {stats}");
    let found = docker.cli(&["exec", &id, "fdrctl", "query", "--grep", &marker])?;
    assert!(
        found.contains(&marker),
        "fdrctl query in the container: {found}"
    );

    // (e) fdr_events_total{kind="exec"} counted the host's execs.
    agent
        .poll(
            EVENT_DEADLINE,
            "fdr_events_total{kind=\"exec\"} to grow",
            || async {
                let _ = Command::new("/bin/true").arg(&marker).status();
                (exec_total(pid).await.ok()? > execs_before).then_some(())
            },
        )
        .await?;

    docker.remove(&id)?;
    docker.cli(&["image", "rm", "--force", &tag])?;
    Ok(())
}

/// The container under test, for polling with its log on failure.
struct Agent<'a> {
    docker: &'a Docker,
    id: &'a str,
}

impl Agent<'_> {
    /// Polls `f` until it gives a value, within `deadline`; fails with the
    /// container's state and log, and sooner when the container stopped.
    async fn poll<T, F, Fut>(&self, deadline: Duration, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = f().await {
                return Ok(v);
            }
            let running = self
                .docker
                .cli(&["inspect", "--format", "{{.State.Running}}", self.id])
                .unwrap_or_default();
            if running != "true" {
                return Err(self.failed(&format!("the agent's container stopped before {what}")));
            }
            if start.elapsed() > deadline {
                return Err(self.failed(&format!("no {what} within {deadline:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn failed(&self, what: &str) -> anyhow::Error {
        let state = self
            .docker
            .cli(&["inspect", "--format", "{{json .State}}", self.id])
            .unwrap_or_default();
        let logs = Command::new("/usr/bin/docker")
            .arg("--host")
            .arg(format!("unix://{}", self.docker.socket().display()))
            .args(["logs", "--tail", "60", self.id])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default();
        anyhow::anyhow!("{what}\ncontainer state: {state}\nagent log (last lines):\n{logs}")
    }
}

/// The first event of `kind` whose text matches `text` and that `pred`
/// accepts, in every scope.
async fn find_event(
    mut client: fdr_cli::client::Client,
    kind: pb::EventKind,
    text: &str,
    pred: impl Fn(&pb::Event) -> bool,
) -> Option<pb::Event> {
    let mut cursor = String::new();
    loop {
        let page = client
            .query_events(pb::QueryEventsRequest {
                kinds: vec![kind as i32],
                text: text.to_owned(),
                cursor,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        if let Some(e) = page.events.into_iter().find(|e| pred(e)) {
            return Some(e);
        }
        if page.next_cursor.is_empty() {
            return None;
        }
        cursor = page.next_cursor;
    }
}

/// The health service's status for service "" on the container's
/// 127.0.0.1:6789 (the config listens on 0.0.0.0).
async fn health(pid: u32) -> Result<i32> {
    in_netns(pid, || async {
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{HEALTH}"))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .connect()
                .await?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner()
            .status;
        Ok(status)
    })
    .await
}

/// Runs `f`'s future on a thread of its own that joined the network
/// namespace of process `pid`: the container's, where its listeners are,
/// as a pod's are on the pod's IP.
async fn in_netns<T, F, Fut>(pid: u32, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("the network namespace of {pid}"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let run = || -> Result<T> {
            // SAFETY: moves only this thread, which is ours, to the namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(f())
        };
        let _ = tx.send(run());
    });
    rx.await.context("the namespace thread ended")?
}

/// `fdr_events_total{kind="exec"}` from `GET /metrics` on the container's
/// 127.0.0.1:9477, parsed as Prometheus text.
async fn exec_total(pid: u32) -> Result<f64> {
    let body = in_netns(pid, || http_get(METRICS, "/metrics")).await?;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .context("/metrics is not Prometheus text format")?;
    ensure!(
        scrape.docs.contains_key("fdr_events_total"),
        "/metrics has no HELP for fdr_events_total"
    );
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == "fdr_events_total" && s.labels.get("kind") == Some("exec"))
        .context("no fdr_events_total{kind=\"exec\"} in /metrics")?;
    match sample.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => Ok(v),
        ref other => bail!("fdr_events_total is not a counter: {other:?}"),
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (so the answer is never chunked): the
/// body of a 200 answer.
async fn http_get(port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8(raw).context("/metrics is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of the HTTP header")?;
    let status = head.lines().next().unwrap_or_default();
    ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "GET {path}: {status}"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    ensure!(
        content_type.starts_with("text/plain"),
        "GET {path}: content type {content_type:?}"
    );
    Ok(body.to_owned())
}

/// `ctr import` (how a containerd node without a registry takes an image)
/// accepts the archive, naming the image as Docker does; into a namespace of
/// its own of the containerd the private dockerd runs (or the machine's, if
/// dockerd uses that one), removed again.
fn ctr_import(docker: &Docker, archive: &Path, tag: &str) -> Result<()> {
    let private = docker
        .socket()
        .parent()
        .context("dockerd's directory")?
        .join("exec/containerd/containerd.sock");
    let address = [
        private.as_path(),
        Path::new("/run/containerd/containerd.sock"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .context("no containerd socket: dockerd runs one")?;
    let namespace = unique("image-ns");
    let ctr = |args: &[&std::ffi::OsStr]| -> Result<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(address)
            .args(["--namespace", &namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ctr (package containerd)")?;
        ensure!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let imported = ctr(&["images".as_ref(), "import".as_ref(), archive.as_os_str()]);
    let listed = ctr(&["images".as_ref(), "list".as_ref(), "--quiet".as_ref()]);
    let name = format!("docker.io/library/{tag}");
    let removed = ctr(&[
        "images".as_ref(),
        "rm".as_ref(),
        "--sync".as_ref(),
        name.as_ref(),
    ]);
    let ns_removed = ctr(&["namespaces".as_ref(), "rm".as_ref(), namespace.as_ref()]);
    imported.context("ctr import of the archive")?;
    let listed = listed?;
    ensure!(
        listed.lines().any(|l| l == name),
        "ctr import named the image {listed:?}, not {name}"
    );
    removed?;
    ns_removed.context("removing the namespace after the image")?;
    Ok(())
}

/// `podman load` accepts the archive, naming the image as Docker does; into
/// a storage of its own under `dir` (vfs: nothing mounted), removed again.
fn podman_load(dir: &Path, archive: &Path, tag: &str) -> Result<()> {
    let podman = ["/usr/bin/podman"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
        .context(
            "the image test needs podman (Debian package `podman`; `cargo xtask test` installs it)",
        )?;
    let store = dir.join("podman");
    let podman = |args: &[&str]| -> Result<String> {
        let out = Command::new(&podman)
            .arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver=vfs", "--events-backend=none"])
            .arg("--tmpdir")
            .arg(store.join("tmp"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running podman")?;
        ensure!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let archive = archive.display().to_string();
    let loaded = podman(&["load", "--input", &archive]);
    let name = format!("docker.io/library/{tag}");
    let listed = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let removed = podman(&["rmi", "--all", "--force"]);
    let loaded = loaded.context("podman load of the archive")?;
    ensure!(
        loaded.contains(&name) && listed?.lines().any(|l| l == name),
        "podman load named the image otherwise than {name}: {loaded}"
    );
    removed?;
    std::fs::remove_dir_all(&store)?;
    Ok(())
}

/// `--privileged`, as the DaemonSet runs the agent, when this process may
/// hand out every capability. Where its bounding set lacks some (a sandbox
/// without CAP_SYS_RESOURCE, say), runc cannot start a privileged container
/// ("unable to apply caps"): then every capability held, no seccomp filter
/// and no masked /proc paths, what `--privileged` gives that the agent uses.
fn privilege_options() -> Result<Vec<String>> {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let status = std::fs::read_to_string("/proc/self/status")?;
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .context("no CapBnd in /proc/self/status")?;
    let bounding = u64::from_str_radix(bounding.trim(), 16)?;
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()?;
    let missing: Vec<&str> = (0..=last.min(NAMES.len() as u32 - 1))
        .filter(|&c| bounding & (1 << c) == 0)
        .map(|c| NAMES[c as usize])
        .collect();
    if missing.is_empty() {
        return Ok(vec!["--privileged".into()]);
    }
    eprintln!(
        "capabilities {missing:?} are not ours to give: not --privileged, but every other one"
    );
    let mut opts = vec!["--cap-add=ALL".to_owned()];
    opts.extend(missing.iter().map(|c| format!("--cap-drop={c}")));
    opts.push("--security-opt=seccomp=unconfined".into());
    opts.push("--security-opt=systempaths=unconfined".into());
    if std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
    {
        opts.push("--security-opt=apparmor=unconfined".into());
    }
    Ok(opts)
}

/// The host's `/` read-only at /host; as `mountPropagation:
/// HostToContainer` (`rslave`) when the host's root is a shared mount (the
/// usual case under systemd), which Docker requires for it.
fn host_root_volume() -> &'static str {
    let shared = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&"/")
                && f.iter()
                    .skip(6)
                    .take_while(|x| **x != "-")
                    .any(|x| x.starts_with("shared:"))
        })
    });
    if shared {
        "--volume=/:/host:ro,rslave"
    } else {
        "--volume=/:/host:ro"
    }
}

/// The image archive: `$FDR_IMAGE_ARCHIVE`, else built into `dir` with
/// `cargo xtask image`.
fn image_archive(dir: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ARCHIVE_ENV) {
        let p = PathBuf::from(p);
        ensure!(p.is_file(), "{ARCHIVE_ENV}={} is not a file", p.display());
        return Ok(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace root")?;
    let out = dir.join("fdr-agent.oci.tar");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("{ARCHIVE_ENV} unset: building the image with `cargo xtask image`");
    let status = Command::new(cargo)
        .args(["xtask", "image", "--debug", "--out"])
        .arg(&out)
        .current_dir(root)
        .stdin(Stdio::null())
        .status()
        .context("running cargo xtask image")?;
    ensure!(status.success(), "cargo xtask image failed: {status}");
    Ok(out)
}
