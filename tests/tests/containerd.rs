//! The containerd harness end to end: a CRI pod and container on a private
//! containerd, their status, pid and cgroups, and the cleanup.

use std::time::{Duration, Instant};

use anyhow::Context;
use fdr_proto::cri::{
    ContainerFilter, ContainerState, ContainerStatusRequest, ListContainersRequest,
    PodSandboxState, PodSandboxStatusRequest,
};
use fdr_tests::{
    containerd::{cgroup_mounts, pod_cgroup_parent, pod_uid, unique_name, Containerd},
    poll_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pod_lifecycle() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let containerd = Containerd::start("cri").await?;
    let started = t0.elapsed();
    let dir = containerd.dir().to_path_buf();
    let mut cri = containerd.cri().await?;

    let uid = pod_uid();
    let pod_name = unique_name("pod");
    let pod = containerd.run_pod(&pod_name, "fdr-test", &uid).await?;
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("pod status")?;
    assert_eq!(status.state(), PodSandboxState::SandboxReady);
    let meta = status.metadata.context("pod metadata")?;
    assert_eq!(
        (meta.name.as_str(), meta.uid.as_str()),
        (pod_name.as_str(), uid.as_str())
    );

    let id = containerd
        .run_container(&pod, "app", &["sh", "-c", "echo hi; sleep 30"])
        .await?;
    let ran = t0.elapsed();
    let status = cri
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("container status")?;
    assert_eq!(status.id, id);
    assert_eq!(status.state(), ContainerState::ContainerRunning);
    assert_eq!(status.metadata.context("container metadata")?.name, "app");
    assert_eq!(
        status.image.context("container image")?.image,
        Containerd::IMAGE
    );
    let listed = cri
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    assert_eq!(listed.iter().map(|c| &c.id).collect::<Vec<_>>(), [&id]);

    // The container's first process, in the kubelet-shaped cgroup.
    let pid = containerd.container_pid(&id).await?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    println!("/proc/{pid}/cgroup of container {id}:\n{cgroups}");
    // busybox sh runs the last command of `-c` in its own process (exec).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    assert!(
        [&b"sh\0-c\0echo hi; sleep 30\0"[..], b"sleep\x0030\0"].contains(&cmdline.as_slice()),
        "init process of the container: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let path = format!("{}/{id}", pod_cgroup_parent(&uid));
    let unified = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 line")?;
    assert_eq!(unified, path, "v2 cgroup of the container");
    for line in cgroups.lines() {
        assert!(line.ends_with(&path), "{line} names {path}");
    }
    let dirs: Vec<_> = cgroup_mounts()
        .into_iter()
        .map(|m| m.join(path.trim_start_matches('/')))
        .collect();
    for d in &dirs {
        assert!(d.is_dir(), "{} exists", d.display());
    }

    // The container's output went to its CRI log.
    let log = containerd.container_log(&pod, "app")?;
    poll_until("the container's output in its log", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains(" stdout F hi"))
    });

    let removing = Instant::now();
    containerd.remove_pod(&pod).await?;
    let removed = removing.elapsed();
    poll_until("the container's process to be gone", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
        let pod_dir = d.parent().context("pod cgroup")?;
        assert!(!pod_dir.exists(), "{} removed", pod_dir.display());
    }
    let left = cri
        .list_containers(ListContainersRequest::default())
        .await?
        .into_inner()
        .containers;
    assert!(left.is_empty(), "containers left: {left:?}");

    drop(cri);
    let dropping = Instant::now();
    drop(containerd);
    let dropped = dropping.elapsed();
    // Nothing of it is left: processes naming its directory (daemon,
    // shims), mounts under it, the directory itself.
    let marker = dir.to_string_lossy().into_owned();
    let procs: Vec<_> = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        })
        .map(|e| e.file_name())
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(!mounts.contains(&marker), "mounts left under {marker}");
    assert!(!dir.exists(), "{marker} removed");

    println!(
        "containerd up and image imported in {started:?}; pod and container running at {ran:?}; \
         pod removed in {removed:?}; harness dropped in {dropped:?}; total {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    Ok(())
}
