//! Containers of a real Docker Engine (the Debian `docker.io` daemon, a
//! private instance): named by the Engine API, with their image and its
//! digest, and their exit code kept after they are gone.

use std::time::Duration;

use fdr_agent::{
    attribution::containers::Change,
    event::{Detail, EventKind},
};
use fdr_proto::v1 as pb;
use fdr_tests::{
    containerd::unique_name, docker::Docker, listed_container, unique, Capture, TempDir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_container_is_named_by_the_engine_and_keeps_its_exit_code() -> anyhow::Result<()> {
    let docker = Docker::start("docker").await?;
    let socket = docker.socket().to_path_buf();
    let mut cap = Capture::start_with("docker", |c| {
        c.attribution.runtime_endpoints.clear();
        c.attribution.engine_endpoints = vec![socket.clone()];
        c.attribution.runtime_poll = Duration::from_millis(300);
    })
    .await;
    let state = cap.agent.as_ref().expect("running").state.clone();

    // The container runs a marked program, then waits for the test's
    // go-ahead and exits with 3.
    let go = TempDir::new("docker-go");
    let marker = unique("dk");
    let name = unique_name("web");
    let script = format!("/bin/true {marker}; while [ ! -e /go/now ]; do sleep 0.05; done; exit 3");
    let id = docker.run(
        &name,
        &["--volume", &format!("{}:/go", go.path().display())],
        &["sh", "-c", &script],
    )?;

    let exec = cap
        .wait_for("the marked exec in the container", |e| {
            e.kind() == EventKind::Exec && e.argv().iter().any(|a| a == &marker)
        })
        .await;
    assert_eq!(exec.scope.container_id(), Some(id.as_str()));
    let start = cap.container_start(&id, "docker").await;
    let meta = state.containers.lock().unwrap().get(&id).expect("metadata");
    assert_eq!(meta.name, name);
    assert_eq!(meta.image, Docker::IMAGE);
    // An imported image has no repo digest: its id stands for it.
    let image_id = docker.cli(&["image", "inspect", "--format", "{{.Id}}", Docker::IMAGE])?;
    assert_eq!(meta.image_digest, image_id);
    assert!(meta.runtime.starts_with("docker "), "{}", meta.runtime);

    // Its exit, with the code the engine recorded.
    std::fs::write(go.path().join("now"), "")?;
    let stop = cap
        .wait_for("its stop", |e| {
            e.kind() == EventKind::ContainerStop && e.scope.container_id() == Some(id.as_str())
        })
        .await;
    assert!(stop.seq > start.seq);
    match &stop.record.detail {
        Detail::Container(c) => {
            assert_eq!(c.source, "docker");
            assert!(
                matches!(&c.change, Change::Stopped { exit_code: Some(3), reason, finished_ns }
                    if reason == "exited" && *finished_ns > 0),
                "{:?}",
                c.change
            );
        }
        other => panic!("{other:?}"),
    }

    // Gone from docker, still named by the agent (tombstone).
    docker.remove(&id)?;
    let mine = listed_container(&cap.socket(), &id).await;
    assert!(!mine.running);
    let info = mine.info.as_ref().expect("info");
    assert_eq!(
        (info.name.as_str(), info.image.as_str()),
        (name.as_str(), Docker::IMAGE)
    );
    // The exec event, read now, is named too.
    let mut client = fdr_cli::client::connect_unix(&cap.socket()).await?;
    let events = client
        .query_events(pb::QueryEventsRequest {
            scope: format!("container:{id}"),
            kinds: vec![pb::EventKind::Exec as i32],
            ..Default::default()
        })
        .await?
        .into_inner()
        .events;
    let named = events
        .iter()
        .find(|e| e.seq == exec.seq)
        .and_then(|e| e.container.as_ref())
        .expect("the exec, with its container");
    assert_eq!(named.name, name);
    cap.stop().await;
    Ok(())
}
