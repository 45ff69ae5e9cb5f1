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

/// The container's events as the API gives them (enriched when read).
async fn events_of(
    socket: &std::path::Path,
    id: &str,
) -> anyhow::Result<Vec<fdr_proto::v1::Event>> {
    let mut client = fdr_cli::client::connect_unix(socket).await?;
    let resp = client
        .query_events(fdr_proto::v1::QueryEventsRequest {
            scope: format!("container:{id}"),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_container_events_name_pod_image_and_outlive_the_pod() -> anyhow::Result<()> {
    use fdr_agent::event::{Detail, EventKind};
    use fdr_proto::v1 as pb;

    let containerd = Containerd::start("attr").await?;
    let socket = containerd.socket().to_path_buf();
    let mut cap = fdr_tests::Capture::start_with("attr", |c| {
        c.attribution.runtime_endpoints = vec![socket.clone()];
        c.attribution.runtime_poll = Duration::from_millis(300);
    })
    .await;
    let uid = pod_uid();
    let pod_name = unique_name("web");
    let pod = containerd.run_pod(&pod_name, "shop", &uid).await?;
    let marker = unique_name("marker");
    let script = format!("echo {marker}; sleep 30");
    let id = containerd
        .run_container(&pod, "app", &["sh", "-c", &script])
        .await?;

    // The exec inside the container, attributed to it by its cgroup.
    let exec = cap
        .wait_for("the container's exec", |e| {
            e.kind() == EventKind::Exec && e.argv().iter().any(|a| a.contains(&marker))
        })
        .await;
    assert_eq!(exec.scope.container_id(), Some(id.as_str()));

    // The runtime names it: container, pod, namespace, image.
    let state = cap.agent.as_ref().expect("running").state.clone();
    let meta = fdr_tests::wait_until("container metadata from CRI", || {
        state.containers.lock().ok()?.get(&id)
    })
    .await;
    assert_eq!(meta.name, "app");
    assert_eq!(meta.pod_name, pod_name);
    assert_eq!(meta.pod_namespace, "shop");
    assert_eq!(meta.pod_uid, uid);
    assert_eq!(meta.image, Containerd::IMAGE);
    assert!(
        meta.image_digest.starts_with("sha256:"),
        "{}",
        meta.image_digest
    );
    assert!(meta.runtime.starts_with("containerd"), "{}", meta.runtime);

    // What the container did before the runtime answered is modelled
    // under its image.
    let image_key = format!("image:{}", meta.image_digest);
    let exec_items = fdr_tests::wait_until("the image's model", || {
        let models = state.models.lock().ok()?;
        let m = models.get(&image_key)?;
        let items = m.sections.get(&fdr_agent::analysis::model::Section::Exec)?;
        Some(items.keys().cloned().collect::<Vec<_>>())
    })
    .await;
    assert!(!exec_items.is_empty());
    assert!(
        state
            .models
            .lock()
            .unwrap()
            .get(&format!("container:{id}"))
            .is_none(),
        "the container's own model was merged into the image's"
    );

    let start = cap
        .wait_for("container start from CRI", |e| {
            e.kind() == EventKind::ContainerStart && e.scope.container_id() == Some(id.as_str())
        })
        .await;
    assert!(matches!(&start.record.detail, Detail::Container(c) if c.source == "cri"));

    let check = |events: &[pb::Event]| {
        let ev = events
            .iter()
            .find(|e| e.seq == exec.seq)
            .expect("the exec is in the container's buffer");
        let c = ev.container.clone().expect("container info");
        assert_eq!(c.id, id);
        assert_eq!(c.name, "app");
        assert_eq!(c.pod_name, pod_name);
        assert_eq!(c.pod_namespace, "shop");
        assert_eq!(c.pod_uid, uid);
        assert_eq!(c.image, Containerd::IMAGE);
    };
    check(&events_of(&cap.socket(), &id).await?);

    // The pod goes; its events still name it (tombstone).
    containerd.remove_pod(&pod).await?;
    let stop = cap
        .wait_for("container stop", |e| {
            e.kind() == EventKind::ContainerStop && e.scope.container_id() == Some(id.as_str())
        })
        .await;
    assert!(stop.seq > start.seq);
    let after = events_of(&cap.socket(), &id).await?;
    check(&after);
    // And the agent still lists it, stopped, with its pod.
    let mine = fdr_tests::listed_container(&cap.socket(), &id).await;
    assert!(!mine.running && mine.stopped.is_some());
    assert_eq!(
        mine.info.as_ref().map(|c| c.pod_name.as_str()),
        Some(pod_name.as_str())
    );
    let stop_pb = after
        .iter()
        .find(|e| e.seq == stop.seq)
        .expect("stop event in the buffer");
    match &stop_pb.detail {
        Some(pb::event::Detail::ContainerLifecycle(l)) => {
            assert!(!l.started);
            assert_eq!(l.source, "cri");
        }
        other => panic!("{other:?}"),
    }
    cap.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_containerd_container_is_named_by_containerd() -> anyhow::Result<()> {
    use fdr_agent::{
        attribution::containers::Change,
        event::{Detail, EventKind},
    };

    let containerd = Containerd::start("native").await?;
    let socket = containerd.socket().to_path_buf();
    let mut cap = fdr_tests::Capture::start_with("native", |c| {
        c.attribution.runtime_endpoints = vec![socket.clone()];
        c.attribution.runtime_poll = Duration::from_millis(300);
    })
    .await;
    let state = cap.agent.as_ref().expect("running").state.clone();
    fdr_tests::wait_until("the runtime connected", || {
        state.containers.lock().ok()?.runtime.clone()
    })
    .await;
    let id = unique_name("ctr").replace(['_'], "-");
    let marker = unique_name("native");
    let script = format!("echo {marker}; sleep 30");
    containerd.ctr_run(&id, &["sh", "-c", &script])?;

    // The shell inside (ctr's own command line names the marker too).
    let exec = cap
        .wait_for("the exec in the ctr container", |e| {
            e.kind() == EventKind::Exec
                && e.argv().first().is_some_and(|a| a == "sh")
                && e.argv().iter().any(|a| a.contains(&marker))
        })
        .await;
    assert_eq!(exec.scope.container_id(), Some(id.as_str()));
    let start = cap.container_start(&id, "containerd").await;
    let meta = state.containers.lock().unwrap().get(&id).expect("metadata");
    assert_eq!(meta.image, Containerd::IMAGE);
    assert!(
        meta.image_digest.starts_with("sha256:"),
        "{}",
        meta.image_digest
    );
    assert!(
        meta.runtime.contains("namespace k8s.io"),
        "{}",
        meta.runtime
    );
    assert_eq!(meta.name, id);

    containerd.ctr_remove(&id)?;
    let stop = cap
        .wait_for("its stop, when its cgroup goes", |e| {
            e.kind() == EventKind::ContainerStop && e.scope.container_id() == Some(id.as_str())
        })
        .await;
    assert!(stop.seq > start.seq);
    // From its cgroup: the CRI not listing it never stopped it early.
    assert!(
        matches!(&stop.record.detail, Detail::Container(c) if c.source == "cgroup"
            && matches!(&c.change, Change::Stopped { reason, .. } if reason == "cgroup removed")),
        "{:?}",
        stop.record.detail
    );
    assert_eq!(
        state
            .containers
            .lock()
            .unwrap()
            .get(&id)
            .map(|m| m.image.clone())
            .as_deref(),
        Some(Containerd::IMAGE),
        "tombstone"
    );
    cap.stop().await;
    Ok(())
}
