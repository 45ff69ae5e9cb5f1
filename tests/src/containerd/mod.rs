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

pub(crate) mod cleanup;
pub(crate) mod image;

pub use cleanup::cgroup_mounts;
use cleanup::{
    remove_ctr_cgroups, remove_pod_cgroups, remove_run_containerd_leftovers, runc_ids, shim_pids,
    unmount_under,
};
use image::{build_image, is_static_elf};

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
        Self::start_on(tag, None).await
    }

    /// The same, with the daemon's socket at `socket` (its directory must
    /// exist) instead of inside its temporary directory.
    pub async fn start_on(tag: &str, socket: Option<&Path>) -> Result<Containerd> {
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
        let socket = socket.map_or_else(|| dir.path().join("containerd.sock"), Path::to_path_buf);
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
    fdr_proto::transport::unix_channel(socket, Endpoint::from_static("http://containerd.invalid"))
        .await
        .context("connecting to containerd")
}

/// `program` on `PATH`, or `/bin/<program>` (and `/usr/sbin`, `/sbin`:
/// runc lives there on Debian, outside a non-root `PATH`).
pub(crate) fn which(program: &str) -> Option<PathBuf> {
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
