//! A private Docker Engine for the tests: `dockerd` with its data, state
//! and socket in a temporary directory, no networking of its own
//! (`--bridge=none`, no iptables), the vfs storage driver, and the busybox
//! test image imported from a root filesystem tarball. Debian's `docker.io`
//! package; `cargo xtask test` installs it. Everything it started is removed
//! on drop: containers, the daemon (and the containerd it manages), their
//! cgroups and mounts.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    containerd::{
        cleanup::{cgroup_mounts, remove_cgroup_tree, unmount_under},
        image::rootfs_layer,
        which, Containerd,
    },
    TempDir,
};

/// The cgroup parent of docker's containers (cgroupfs driver).
const CGROUP_PARENT: &str = "docker";

pub struct Docker {
    dir: TempDir,
    socket: PathBuf,
    cli: PathBuf,
    child: Option<Child>,
    /// Containers started, removed on drop (and their cgroups).
    ids: Mutex<Vec<String>>,
}

impl Docker {
    /// The image containers run: the same busybox image as containerd's.
    pub const IMAGE: &'static str = Containerd::IMAGE;

    /// Starts the daemon and imports [`Self::IMAGE`]. Panics, naming the
    /// Debian package, when `dockerd` is missing.
    pub async fn start(tag: &str) -> Result<Docker> {
        let dockerd = which("dockerd");
        assert!(
            dockerd.is_some(),
            "the Docker tests need `dockerd` (Debian package `docker.io`; `apt-get install \
             docker.io`, or run `cargo xtask test`)"
        );
        // The package's own client: another `docker` on PATH may be of a
        // version this daemon does not speak.
        let cli = ["/usr/bin/docker"]
            .map(PathBuf::from)
            .into_iter()
            .find(|p| p.is_file())
            .or_else(|| which("docker"))
            .context("the docker client (package docker.io) is missing")?;
        let dir = TempDir::new(tag);
        let socket = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log"))?;
        let d = dir.path();
        let child = Command::new(dockerd.context("dockerd")?)
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "--cgroup-parent", CGROUP_PARENT])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let me = Docker {
            dir,
            socket,
            cli,
            child: Some(child),
            ids: Mutex::default(),
        };
        me.wait_ready().await?;
        let layer = rootfs_layer(&me.dir.path().join("image"))?;
        me.cli(&[
            "import",
            "--change",
            r#"CMD ["sleep", "inf"]"#,
            &layer.display().to_string(),
            Self::IMAGE,
        ])
        .context("importing the busybox image")?;
        Ok(me)
    }

    async fn wait_ready(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.socket.exists() && self.cli(&["version"]).is_ok() {
                return Ok(());
            }
            if start.elapsed() > crate::DEADLINE {
                bail!("dockerd did not answer: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Engine API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker client against this daemon; its standard output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.cli)
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running docker")?;
        if !out.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `docker run -d` of [`Self::IMAGE`] named `name`, without network,
    /// with `extra` options before the image and `command` after it;
    /// returns the container id.
    pub fn run(&self, name: &str, extra: &[&str], command: &[&str]) -> Result<String> {
        let mut opts = vec!["--network", "none"];
        opts.extend_from_slice(extra);
        self.run_image(name, &opts, Self::IMAGE, command)
    }

    /// `docker run -d --name name options… image command…` (removed on
    /// drop); returns the container id.
    pub fn run_image(
        &self,
        name: &str,
        options: &[&str],
        image: &str,
        command: &[&str],
    ) -> Result<String> {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(command);
        let id = self.cli(&args)?;
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id.clone());
        }
        Ok(id)
    }

    /// `docker rm -f`.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.cli(&["rm", "-f", id]).map(drop)
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ids = self.ids.get_mut().map(std::mem::take).unwrap_or_default();
        for id in &ids {
            let _ = self.cli(&["rm", "-f", id]);
        }
        if let Some(mut child) = self.child.take() {
            // SIGTERM: dockerd stops the containerd it started.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for mount in cgroup_mounts() {
            for id in &ids {
                let dir = mount.join(CGROUP_PARENT).join(id);
                if dir.exists() {
                    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                    remove_cgroup_tree(&dir);
                }
            }
            let _ = std::fs::remove_dir(mount.join(CGROUP_PARENT));
        }
        unmount_under(self.dir.path());
    }
}
