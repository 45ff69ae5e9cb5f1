//! Multi-call binaries in a real CRI pod (the containerd harness's busybox
//! image, where every program is `/bin/busybox`): the model names each
//! applet as it was invoked, so `nc` and `httpd` are different programs,
//! and the default rule "shell run by a web server" sees busybox's `httpd`
//! run `sh` (a CGI script, the way a command-injection CGI runs).

use std::{net::TcpListener, sync::Arc, time::Duration};

use fdr_agent::{
    analysis::model::IncidentType,
    event::{Detail, Event, EventKind},
};
use fdr_tests::{
    containerd::{pod_uid, unique_name, Containerd},
    wait_until, Capture,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The container's command: a busybox web server with a CGI shell script,
/// one request to it by `wget`, one by `nc`, then idle.
fn script(port: u16, marker: &str) -> String {
    format!(
        r#"mkdir -p /tmp/www/cgi-bin
printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho {marker}\n' > /tmp/www/cgi-bin/run
chmod +x /tmp/www/cgi-bin/run
httpd -f -p 127.0.0.1:{port} -h /tmp/www &
i=0
until wget -q -O /tmp/out http://127.0.0.1:{port}/cgi-bin/run; do
  i=$((i+1)); [ $i -gt 400 ] && break; sleep 0.05
done
printf 'GET / HTTP/1.0\r\n\r\n' | nc 127.0.0.1 {port} > /dev/null
cat /tmp/out
sleep 120"#
    )
}

fn learned_exec_items(cap: &Capture, id: &str) -> Vec<String> {
    cap.recorded(|e| e.kind() == EventKind::ModelLearned && e.scope.container_id() == Some(id))
        .iter()
        .filter_map(|e| match &e.record.detail {
            Detail::Learned(l) if l.section == "exec" => Some(l.item.clone()),
            _ => None,
        })
        .collect()
}

fn web_server_audits(cap: &Capture, id: &str) -> Vec<Arc<Event>> {
    cap.recorded(|e| {
        e.scope.container_id() == Some(id)
            && matches!(&e.record.detail, Detail::Audit(a) if a.rule == "shell-run-by-web-server")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_applets_are_distinct_programs_and_httpd_running_sh_matches_the_web_server_rule(
) -> anyhow::Result<()> {
    let containerd = Containerd::start("multicall").await?;
    let socket = containerd.socket().to_path_buf();
    let mut cap = Capture::start_with("multicall", |c| {
        c.attribution.runtime_endpoints = vec![socket.clone()];
        c.attribution.runtime_poll = Duration::from_millis(300);
    })
    .await;
    let state = cap.agent.as_ref().expect("running").state.clone();
    wait_until("the runtime connected", || {
        state.containers.lock().ok()?.runtime.clone()
    })
    .await;

    let pod = containerd
        .run_pod(&unique_name("web"), "fdr-test", &pod_uid())
        .await?;
    let port = free_port();
    let marker = unique_name("cgi");
    let id = containerd
        .run_container(&pod, "web", &["sh", "-c", &script(port, &marker)])
        .await?;

    // The CGI script ran (its output is in the container's log).
    let log = containerd.container_log(&pod, "web")?;
    wait_until("the CGI's answer in the container's log", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains(&marker))
    })
    .await;

    // The model: `nc` and `httpd` are different programs, both busybox.
    let items = wait_until("nc and httpd learned as programs", || {
        let items = learned_exec_items(&cap, &id);
        let has = |name: &str| {
            items
                .iter()
                .any(|i| i.ends_with(&format!(" -> /bin/busybox[{name}]")))
        };
        (has("nc") && has("httpd") && has("wget")).then_some(items)
    })
    .await;
    println!("learned exec items: {items:#?}");
    assert!(
        !items.iter().any(|i| i == "/bin/busybox -> /bin/busybox"),
        "no applet is just busybox: {items:?}"
    );
    // The applets run by the container's shell name it as `sh`.
    assert!(
        items
            .iter()
            .any(|i| i == "/bin/busybox[sh] -> /bin/busybox[nc]"),
        "{items:?}"
    );
    assert!(
        items
            .iter()
            .any(|i| i == "/bin/busybox[sh] -> /bin/busybox[httpd]"),
        "{items:?}"
    );

    // httpd running the CGI's shell: the default web-server rule, learning
    // or not.
    let audit = cap
        .wait_for("the web-server rule's audit", |e| {
            e.scope.container_id() == Some(id.as_str())
                && matches!(&e.record.detail, Detail::Audit(a) if a.rule == "shell-run-by-web-server")
        })
        .await;
    let Detail::Audit(a) = &audit.record.detail else {
        unreachable!("an audit")
    };
    println!("audit: {} [{}]: {}", a.rule, a.item, a.message);
    assert_eq!(a.item, "/bin/busybox[httpd] -> /bin/busybox[sh]");
    assert_eq!(a.section, "exec");
    assert!(a.incident > 0, "placed in an incident");
    let kind = state
        .incidents
        .lock()
        .expect("incidents lock")
        .get(a.incident)
        .map(|i| i.kind);
    assert_eq!(kind, Some(IncidentType::ReverseShell));
    // The trigger is the CGI's exec, by the forked httpd.
    let trigger = cap
        .recorded(|e| e.seq == a.trigger_seq)
        .into_iter()
        .next()
        .expect("the trigger in the buffer");
    assert_eq!(trigger.kind(), EventKind::Exec);
    assert_eq!(trigger.exe(), "/bin/busybox");
    let parent = trigger.image.parent.as_ref().expect("a parent image");
    assert_eq!(parent.argv.first().map(String::as_str), Some("httpd"));
    // nc's own exec matched nothing of the kind.
    assert!(web_server_audits(&cap, &id)
        .iter()
        .all(|e| matches!(&e.record.detail, Detail::Audit(a) if !a.item.contains("[nc]"))));

    containerd.remove_pod(&pod).await?;
    cap.stop().await;
    Ok(())
}
