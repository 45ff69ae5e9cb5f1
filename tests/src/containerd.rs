//! A private containerd, with its CRI plugin, for tests that need real
//! Kubernetes-shaped pods and containers without a kubelet or a registry.
//!
//! [`Containerd::start`] writes a configuration under a temporary
//! directory (root, state, sockets, runc state and CNI directories all
//! inside it), starts `containerd` on it and imports [`Containerd::IMAGE`],
//! a one-layer OCI image built on the spot from the host's static busybox.
//! The same image is the pods' sandbox ("pause") image: its command is
//! `sleep inf`. Pods use the node's network namespace (no CNI) and the
//! kubelet's cgroupfs layout: a container `<id>` of a pod `<uid>` runs in
//! the cgroup `/kubepods/besteffort/pod<uid>/<id>`, in every v1 hierarchy
//! and in the v2 (unified) one.
//!
//! Dropping a [`Containerd`] removes what it made: remaining pods, the
//! daemon, shims, mounts, the pods' cgroups and the temporary directory.
//!
//! Needs root and the Debian packages `containerd`, `runc` and
//! `busybox-static` (`cargo xtask test` installs them).

use std::{
    collections::HashMap,
    io::Write,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use fdr_proto::cri::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata,
    ContainerStatusRequest, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::{unique, TempDir};

/// Executables the harness needs, and the Debian package of each.
const REQUIRED: [(&str, &str); 5] = [
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("busybox", "busybox-static"),
];

/// The CRI namespace of containerd.
const NAMESPACE: &str = "k8s.io";

/// How long the daemon may take to answer.
const STARTUP: Duration = Duration::from_secs(20);

/// How long CRI may take to learn about the imported image (it does from
/// an event, within milliseconds).
const IMAGE_EVENT: Duration = Duration::from_secs(5);

/// The cgroup parent of a pod, as the kubelet's cgroupfs driver names it
/// for a best-effort pod.
pub fn pod_cgroup_parent(uid: &str) -> String {
    format!("/kubepods/besteffort/pod{uid}")
}

/// A pod UID (UUID-shaped) no other test will use.
pub fn pod_uid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let pid = std::process::id();
    let n = nanos as u64;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        pid,
        (n >> 48) & 0xffff,
        (n >> 36) & 0xfff,
        (n >> 24) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// A pod this harness started and has not removed yet.
struct Pod {
    uid: String,
    config: PodSandboxConfig,
}

/// A private containerd with the CRI plugin; see the module documentation.
pub struct Containerd {
    dir: TempDir,
    socket: PathBuf,
    child: Option<std::process::Child>,
    /// Pods started and not yet removed, by sandbox id.
    pods: Mutex<HashMap<String, Pod>>,
    /// UIDs of every pod started, whose cgroups are removed on drop.
    uids: Mutex<Vec<String>>,
    /// `ctr run` containers started, whose cgroups are removed on drop.
    ctr_ids: Mutex<Vec<String>>,
}

impl Containerd {
    /// The image every pod and container runs (busybox, `sleep inf`).
    /// A `localhost` name: if containerd ever tried to pull it, it would
    /// fail at once, without reaching out to a registry.
    pub const IMAGE: &'static str = "localhost/fdr/busybox:test";

    /// Starts a private containerd and imports [`Self::IMAGE`] into the
    /// `k8s.io` namespace. Panics, naming the Debian packages, when the
    /// binaries are missing.
    pub async fn start(tag: &str) -> Result<Containerd> {
        for (bin, package) in REQUIRED {
            let found = which(bin);
            assert!(
                found.is_some(),
                "the containerd tests need `{bin}` (Debian package `{package}`; \
                 `apt-get install containerd runc busybox-static`, or run `cargo xtask test`)"
            );
            if let (Some(path), "busybox") = (found, bin) {
                assert!(
                    is_static_elf(&path),
                    "{} is not statically linked: the test image needs the one of \
                     the Debian package `busybox-static`",
                    path.display()
                );
            }
        }
        let dir = TempDir::new(tag);
        let socket = dir.path().join("containerd.sock");
        let image = build_image(dir.path()).context("building the busybox image")?;
        let config = dir.path().join("config.toml");
        let runc = which("runc").context("runc not found")?;
        std::fs::write(&config, config_toml(dir.path(), &socket, &runc))?;
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let child = Command::new(which("containerd").context("containerd not found")?)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        // From here on, dropping `me` cleans up.
        let mut me = Containerd {
            dir,
            socket,
            child: Some(child),
            pods: Mutex::default(),
            uids: Mutex::default(),
            ctr_ids: Mutex::default(),
        };
        me.wait_ready().await?;
        me.ctr(&["images", "import"], &[image.as_os_str()])
            .context("importing the busybox image")?;
        Ok(me)
    }

    /// The daemon's gRPC socket (containerd and CRI services).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The temporary directory holding the daemon's root, state and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CRI log file of the container `name` of a pod started by
    /// [`Self::run_pod`] (lines `<time> stdout|stderr F <text>`).
    pub fn container_log(&self, pod_id: &str, name: &str) -> Result<PathBuf> {
        let pods = self.pods.lock().expect("pods lock");
        let pod = pods
            .get(pod_id)
            .with_context(|| format!("no pod {pod_id} started by this harness"))?;
        Ok(Path::new(&pod.config.log_directory).join(format!("{name}/0.log")))
    }

    /// The daemon's log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// A CRI runtime client on the daemon's socket.
    pub async fn cri(&self) -> Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(connect(&self.socket).await?))
    }

    /// Runs a pod sandbox in the node's network namespace, with the cgroup
    /// parent `/kubepods/besteffort/pod<uid>`; returns its id.
    pub async fn run_pod(&self, name: &str, namespace: &str, uid: &str) -> Result<String> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            // Empty: the node's host name (host network).
            hostname: String::new(),
            log_directory: self
                .dir
                .path()
                .join("pods")
                .join(format!("{namespace}_{name}_{uid}"))
                .to_string_lossy()
                .into_owned(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), name.into()),
                ("io.kubernetes.pod.namespace".into(), namespace.into()),
                ("io.kubernetes.pod.uid".into(), uid.into()),
            ]),
            annotations: HashMap::new(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: pod_cgroup_parent(uid),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
            }),
        };
        std::fs::create_dir_all(&config.log_directory)?;
        self.uids.lock().expect("uids lock").push(uid.to_owned());
        let mut cri = self.cri().await?;
        // CRI learns about the imported image from an event, shortly after
        // the import: until then it would try to pull it, and fail at once
        // (a `localhost` name with no registry there).
        let start = Instant::now();
        let id = loop {
            let req = RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            };
            match cri.run_pod_sandbox(req).await {
                Ok(resp) => break resp.into_inner().pod_sandbox_id,
                Err(e)
                    if start.elapsed() < IMAGE_EVENT
                        && e.message().contains("failed to get sandbox image") =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("RunPodSandbox {namespace}/{name}"))
                }
            }
        };
        self.pods.lock().expect("pods lock").insert(
            id.clone(),
            Pod {
                uid: uid.to_owned(),
                config,
            },
        );
        Ok(id)
    }

    /// Creates and starts a container named `name` in the pod, running
    /// `command` (argv) from [`Self::IMAGE`]; returns its id.
    pub async fn run_container(
        &self,
        pod_id: &str,
        name: &str,
        command: &[&str],
    ) -> Result<String> {
        let sandbox_config = self
            .pods
            .lock()
            .expect("pods lock")
            .get(pod_id)
            .map(|p| p.config.clone())
            .with_context(|| format!("no pod {pod_id} started by this harness"))?;
        std::fs::create_dir_all(Path::new(&sandbox_config.log_directory).join(name))?;
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: Self::IMAGE.into(),
                ..Default::default()
            }),
            command: command.iter().map(|&s| s.to_owned()).collect(),
            log_path: format!("{name}/0.log"), // as Self::container_log
            labels: HashMap::from([("io.kubernetes.container.name".into(), name.into())]),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let mut cri = self.cri().await?;
        let id = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .with_context(|| format!("CreateContainer {name}"))?
            .into_inner()
            .container_id;
        cri.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .with_context(|| format!("StartContainer {name} ({id})"))?;
        Ok(id)
    }

    /// The host pid of a running container's first process (from the
    /// verbose ContainerStatus: containerd's `info` JSON has `pid`).
    pub async fn container_pid(&self, id: &str) -> Result<u32> {
        let resp = self
            .cri()
            .await?
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .with_context(|| format!("ContainerStatus {id}"))?
            .into_inner();
        let info = resp
            .info
            .get("info")
            .with_context(|| format!("no `info` in the status of {id}"))?;
        let json: serde_json::Value =
            serde_json::from_str(info).context("parsing the container's info JSON")?;
        json.get("pid")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p != 0)
            .with_context(|| format!("no pid in the info of {id} (not running?)"))
    }

    /// Stops and removes a pod and its containers, then its cgroups.
    pub async fn remove_pod(&self, pod_id: &str) -> Result<()> {
        let mut cri = self.cri().await?;
        remove_pod(&mut cri, pod_id).await?;
        let pod = self.pods.lock().expect("pods lock").remove(pod_id);
        if let Some(pod) = pod {
            remove_pod_cgroups(&pod.uid);
        }
        Ok(())
    }

    /// Waits until the daemon answers a CRI Version call.
    async fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("containerd exited ({status}):\n{}", self.log());
                }
            }
            if self.socket.exists() {
                let version = async {
                    self.cri()
                        .await?
                        .version(VersionRequest {
                            version: "v1".into(),
                        })
                        .await
                        .map_err(anyhow::Error::from)
                };
                if version.await.is_ok() {
                    return Ok(());
                }
            }
            if start.elapsed() > STARTUP {
                bail!(
                    "containerd did not answer within {STARTUP:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a container with `ctr run` (containerd's own API, not the
    /// CRI) from the test image, detached: its cgroup is `/k8s.io/<id>`.
    /// Its runc state lives in the daemon's directory, so cleanup finds it.
    pub fn ctr_run(&self, id: &str, command: &[&str]) -> Result<()> {
        let runc = which("runc").context("runc not found")?;
        // The shim adds the namespace: the same root the CRI's runc uses.
        let root = self.dir.path().join("runc");
        if let Ok(mut ids) = self.ctr_ids.lock() {
            ids.push(id.to_owned());
        }
        let mut args: Vec<std::ffi::OsString> = vec![
            "run".into(),
            "-d".into(),
            // No stdio FIFOs: ctr would leave them in /run/containerd/fifo.
            "--null-io".into(),
            "--runc-binary".into(),
            runc.into_os_string(),
            "--runc-root".into(),
            root.into_os_string(),
            Self::IMAGE.into(),
            id.into(),
        ];
        args.extend(command.iter().map(|c| std::ffi::OsString::from(*c)));
        let more: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        self.ctr(&[], &more)?;
        Ok(())
    }

    /// Kills and removes a `ctr run` container.
    pub fn ctr_remove(&self, id: &str) -> Result<()> {
        let _ = self.ctr(&["task", "kill", "-s", "KILL", id], &[]);
        // The task is gone once its exit is collected.
        let start = Instant::now();
        while self.ctr(&["task", "delete", id], &[]).is_err()
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ctr(&["container", "delete", id], &[])?;
        Ok(())
    }

    /// Runs `ctr` on the daemon, in the `k8s.io` namespace.
    fn ctr(&self, args: &[&str], more: &[&std::ffi::OsStr]) -> Result<String> {
        let out = Command::new(which("ctr").context("ctr not found")?)
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .args(more)
            .stdin(Stdio::null())
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "`ctr {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Best-effort cleanup of what the CRI calls could not remove.
    fn force_cleanup(&mut self) {
        // Containers runc still knows about (its state is ours alone).
        let runc_root = self.dir.path().join("runc").join(NAMESPACE);
        let runc_bin = which("runc").unwrap_or_else(|| PathBuf::from("runc"));
        for id in runc_ids(&runc_root) {
            let runc = |args: &[&str]| {
                let _ = Command::new(&runc_bin)
                    .arg("--root")
                    .arg(&runc_root)
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            runc(&["kill", "--all", &id, "KILL"]);
            runc(&["delete", "--force", &id]);
        }
        // The daemon.
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child, which we have not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims outlive the daemon; ours name its socket on their command line.
        for pid in shim_pids(&self.socket) {
            // SAFETY: a plain signal to a process we started (through containerd).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        unmount_under(self.dir.path());
        for uid in self.uids.lock().map(|u| u.clone()).unwrap_or_default() {
            remove_pod_cgroups(&uid);
        }
        for id in self.ctr_ids.lock().map(|u| u.clone()).unwrap_or_default() {
            remove_ctr_cgroups(&id);
        }
        remove_run_containerd_leftovers();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pods: Vec<String> = self
            .pods
            .get_mut()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        if !pods.is_empty() && self.child.is_some() {
            // Drop may run inside the test's runtime: talk to the daemon
            // from a thread with a runtime of its own.
            let socket = self.socket.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    let work = async {
                        let mut cri = RuntimeServiceClient::new(connect(&socket).await?);
                        for id in &pods {
                            let _ = remove_pod(&mut cri, id).await;
                        }
                        anyhow::Ok(())
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(30), work).await;
                });
            })
            .join();
        }
        self.force_cleanup();
    }
}

/// StopPodSandbox then RemovePodSandbox.
async fn remove_pod(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> Result<()> {
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .with_context(|| format!("StopPodSandbox {id}"))?;
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .with_context(|| format!("RemovePodSandbox {id}"))?;
    Ok(())
}

/// Namespaces as the kubelet asks for a host-network pod: the node's
/// network, a pid namespace per container, the pod's IPC namespace.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node.into(),
        pid: NamespaceMode::Container.into(),
        ipc: NamespaceMode::Pod.into(),
        target_id: String::new(),
    }
}

/// A gRPC channel over a unix socket.
async fn connect(socket: &Path) -> Result<Channel> {
    fdr_agent::client::unix_channel(socket, Endpoint::from_static("http://containerd.invalid"))
        .await
        .context("connecting to containerd")
}

/// `program` on `PATH`, or `/bin/<program>` (and `/usr/sbin`, `/sbin`:
/// runc lives there on Debian, outside a non-root `PATH`).
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The daemon's configuration: everything under `dir`, CRI with host
/// networking only, cgroupfs, our image as the sandbox image.
fn config_toml(dir: &Path, socket: &Path, runc: &Path) -> String {
    let d = dir.display();
    let image = Containerd::IMAGE;
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Snapshotters this test setup cannot use, off to keep the log quiet.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  # Without CAP_SYS_RESOURCE, runc cannot lower oom_score_adj, and the
  # sandbox fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  disable_apparmor = true
  # A free port: the default 10010 would clash between parallel daemons.
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".cni]
    # Empty: pods use the node's network namespace.
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
        # The shim would look it up on PATH, which may lack /usr/sbin.
        BinaryName = "{runc}"
"#,
        socket = socket.display(),
        runc = runc.display(),
    )
}

/// Writes `<dir>/image.tar`: an OCI image layout (one uncompressed layer
/// with `/bin/busybox` and a symlink per applet), named [`Containerd::IMAGE`]
/// by the `io.containerd.image.name` annotation that `ctr images import`
/// reads.
fn build_image(dir: &Path) -> Result<PathBuf> {
    let busybox = which("busybox").context("busybox not found")?;
    let work = dir.join("image");
    let rootfs = work.join("rootfs");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).context("copying busybox")?;
    let applets = run(Command::new(&busybox).arg("--list"))?;
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;

    let blobs = work.join("layout/blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let layer = work.join("layer.tar");
    run(Command::new("tar")
        .args(["--create", "--file"])
        .arg(&layer)
        .args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name"])
        .args(["--mtime=@0", "--directory"])
        .arg(&rootfs)
        .arg("."))?;
    let (layer_digest, layer_size) = add_blob(&blobs, &std::fs::read(&layer)?)?;

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sleep", "inf"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = add_blob(&blobs, config.to_string().as_bytes())?;

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = add_blob(&blobs, manifest.to_string().as_bytes())?;

    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": { "io.containerd.image.name": Containerd::IMAGE },
        }],
    });
    let layout = work.join("layout");
    std::fs::write(layout.join("index.json"), index.to_string())?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let image = dir.join("image.tar");
    run(Command::new("tar")
        .args(["--create", "--file"])
        .arg(&image)
        .arg("--directory")
        .arg(&layout)
        .args(["oci-layout", "index.json", "blobs"]))?;
    std::fs::remove_dir_all(&work)?;
    Ok(image)
}

/// Stores `data` as a blob; returns its digest (`sha256:…`) and size.
fn add_blob(blobs: &Path, data: &[u8]) -> Result<(String, u64)> {
    let hex = sha256_hex(data)?;
    std::fs::write(blobs.join(&hex), data)?;
    Ok((format!("sha256:{hex}"), data.len() as u64))
}

/// The SHA-256 of `data`, in hex, from `sha256sum`.
fn sha256_hex(data: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum stdin")?
        .write_all(data)?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if !out.status.success() || hex.len() != 64 {
        bail!("sha256sum failed: {}", out.status);
    }
    Ok(hex.to_owned())
}

/// Runs a command, failing with its stderr; returns its stdout.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `path` is a 64-bit little-endian ELF without a program
/// interpreter (statically linked).
fn is_static_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = std::fs::read(path) else {
        return false;
    };
    let bytes = |o: usize, n: usize| elf.get(o..o + n);
    let int = |o: usize, n: usize| {
        bytes(o, n).map(|b| b.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    };
    if bytes(0, 6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (int(0x20, 8), int(0x36, 2), int(0x38, 2))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        usize::try_from(phoff + i * phentsize)
            .ok()
            .and_then(|o| int(o, 4))
            .is_some_and(|t| t != u64::from(PT_INTERP))
    })
}

/// Container ids in a runc state directory.
fn runc_ids(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("state.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// containerd-shim processes serving the daemon at `socket`.
fn shim_pids(socket: &Path) -> Vec<i32> {
    let socket = socket.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|&b| b == 0);
            let is_shim = args
                .next()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"));
            is_shim && args.any(|a| a == socket)
        })
        .collect()
}

/// Lazily unmounts every mount at or under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mount paths in mountinfo escape space, tab, newline and backslash in octal.
fn unescape_mount_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = (bytes[i] == b'\\')
            .then(|| p.get(i + 1..i + 4))
            .flatten()
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of every cgroup hierarchy (v1 and v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(dir))
        })
        .collect()
}

/// Removes a pod's cgroup (and leftover container cgroups in it) from every
/// hierarchy, then `besteffort` and `kubepods` when they are left empty.
fn remove_pod_cgroups(uid: &str) {
    let relative = pod_cgroup_parent(uid);
    let relative = relative.trim_start_matches('/');
    for mount in cgroup_mounts() {
        let pod = mount.join(relative);
        if pod.exists() {
            remove_cgroup_tree(&pod);
        }
        // rmdir fails on a non-empty cgroup: other pods' parents stay.
        let besteffort = mount.join("kubepods/besteffort");
        if std::fs::remove_dir(&besteffort).is_ok() || !besteffort.exists() {
            let _ = std::fs::remove_dir(mount.join("kubepods"));
        }
    }
}

/// Kills what is left in a `ctr run` container's cgroup (`/k8s.io/<id>`)
/// and removes it, and the namespace's cgroup when empty.
fn remove_ctr_cgroups(id: &str) {
    for mount in cgroup_mounts() {
        let dir = mount.join(NAMESPACE).join(id);
        if dir.exists() {
            // cgroup v2 only; v1 hierarchies have no cgroup.kill.
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            remove_cgroup_tree(&dir);
        }
        let _ = std::fs::remove_dir(mount.join(NAMESPACE));
    }
}

/// Removes a cgroup directory and its children, retrying while exiting
/// tasks are still accounted to them.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let start = Instant::now();
    while std::fs::remove_dir(dir).is_err()
        && dir.exists()
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// containerd makes `/run/containerd/{s,fifo,runc}` whatever its
/// configuration says; removes them (and `/run/containerd`) when empty and
/// no system containerd uses them.
fn remove_run_containerd_leftovers() {
    let run = Path::new("/run/containerd");
    // Shim sockets nobody listens on any more (a shim killed in cleanup
    // cannot remove its own); live shims of any containerd answer.
    if let Ok(entries) = std::fs::read_dir(run.join("s")) {
        for e in entries.flatten() {
            let refused = std::os::unix::net::UnixStream::connect(e.path())
                .err()
                .is_some_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused);
            if refused {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if run.join("containerd.sock").exists() {
        return;
    }
    for sub in [
        "s",
        "fifo",
        "runc/k8s.io",
        "runc",
        "io.containerd.runtime.v2.task",
    ] {
        let _ = std::fs::remove_dir(run.join(sub));
    }
    let _ = std::fs::remove_dir(run);
}

/// A unique name for a test pod or container.
pub fn unique_name(tag: &str) -> String {
    // Kubernetes names are DNS labels: lower case, at most 63 characters.
    let mut name = unique(tag).to_lowercase();
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        let exe = std::env::current_exe().expect("test binary");
        assert!(!is_static_elf(&exe), "test binaries are dynamically linked");
        assert!(!is_static_elf(Path::new("/nonexistent")));
        assert!(!is_static_elf(Path::new("/proc/self/status")));
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path(r"/tmp/a\040b\011c\134d"),
            "/tmp/a b\tc\\d"
        );
        assert_eq!(unescape_mount_path(r"/tmp/x\04"), r"/tmp/x\04");
    }

    #[test]
    fn pod_uids_are_uuid_shaped_and_unique() {
        let (a, b) = (pod_uid(), pod_uid());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(
            pod_cgroup_parent(&a),
            format!("/kubepods/besteffort/pod{a}")
        );
    }
}
