//! Process events from the real probes: fork, exec and exit of a child the
//! test runs, and cgroup attribution.

use std::process::Command;

use fdr_agent::{
    event::wire::Enrich,
    event::{Detail, EventKind, ExitStatus},
};
use fdr_tests::{unique, Capture, Cgroup};

fn argv_of(ev: &fdr_agent::event::Event) -> Option<&[String]> {
    match &ev.record.detail {
        Detail::Exec { argv, .. } => Some(argv),
        _ => None,
    }
}

/// Runs `/bin/true <marker>` inside `cg` and returns its exec event.
async fn exec_in(
    cap: &mut Capture,
    cg: &Cgroup,
    tag: &str,
) -> std::sync::Arc<fdr_agent::event::Event> {
    let marker = unique(tag);
    let script = format!(
        "echo $$ > {} && exec /bin/true {marker}",
        cg.procs_file().display()
    );
    let status = Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .expect("run sh");
    assert!(status.success());
    cap.wait_for("exec inside the cgroup", |e| {
        argv_of(e).is_some_and(|a| a.last() == Some(&marker))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_exec_exit_of_a_child() {
    let mut cap = Capture::start("proc").await;
    let marker = unique("exit7");
    let me = std::process::id();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let status = Command::new("/bin/sh")
        .args(["-c", "exit 7", &marker])
        .status()
        .expect("run sh");
    assert_eq!(status.code(), Some(7));

    let exec = cap
        .wait_for("exec of the child", |e| {
            argv_of(e).is_some_and(|a| a.last() == Some(&marker))
        })
        .await;
    let pid = exec.record.task.pid;
    assert_eq!(exec.record.task.ppid, me, "parent is the test process");
    assert_eq!(exec.record.task.uid, uid);
    assert_eq!(exec.record.task.tid, pid);
    assert_eq!(exec.record.task.comm, "sh");
    match &exec.record.detail {
        Detail::Exec {
            filename,
            exe,
            exe_incomplete,
            argv,
            argv_truncated,
            ..
        } => {
            assert_eq!(filename, "/bin/sh");
            assert_eq!(
                exe,
                std::fs::canonicalize("/bin/sh").unwrap().to_str().unwrap()
            );
            assert!(!exe_incomplete);
            assert_eq!(argv, &["/bin/sh", "-c", "exit 7", marker.as_str()]);
            assert!(!argv_truncated);
        }
        other => panic!("not an exec: {other:?}"),
    }
    // The process's executable is the real file, symlinks resolved, as in /proc.
    let real_sh = std::fs::canonicalize("/bin/sh").unwrap();
    assert_eq!(exec.exe(), real_sh.to_str().unwrap());

    // The fork came before the exec, so it is in the buffer.
    let fork = cap
        .recorded(|e| matches!(e.record.detail, Detail::Fork { .. }) && e.record.task.pid == pid)
        .pop()
        .expect("fork event of the child in the buffer");
    assert_eq!(fork.record.task.ppid, me);
    assert!(fork.seq < exec.seq);
    assert!(fork.record.boot_ns <= exec.record.boot_ns);
    match fork.record.detail {
        Detail::Fork { parent_tid } => {
            let test_threads: Vec<u32> = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            assert!(
                test_threads.contains(&parent_tid),
                "forked by a thread of the test"
            );
        }
        _ => unreachable!(),
    }

    let exit = cap
        .wait_for("exit of the child", |e| {
            e.record.task.pid == pid && matches!(e.record.detail, Detail::Exit { .. })
        })
        .await;
    match exit.record.detail {
        Detail::Exit { status } => {
            assert_eq!(ExitStatus::from_wait_status(status).code, Some(7));
        }
        _ => unreachable!(),
    }
    assert_eq!(exit.argv(), &["/bin/sh", "-c", "exit 7", marker.as_str()]);
    // Wall-clock time within a few seconds of now.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        now_ns.abs_diff(exit.time_ns) < 30_000_000_000,
        "time {}",
        exit.time_ns
    );
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_in_a_cgroup_carries_its_id() {
    let mut cap = Capture::start("cgroup").await;
    let cg = Cgroup::create(&unique("cg"));
    let exec = exec_in(&mut cap, &cg, "incg").await;
    assert_eq!(exec.record.task.cgroup_id, cg.id());
    assert_ne!(exec.record.task.cgroup_id, 0);
    match &exec.record.detail {
        Detail::Exec { filename, .. } => assert_eq!(filename, "/bin/true"),
        _ => unreachable!(),
    }
    cap.stop().await;
    drop(cg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_process_is_attributed_to_its_systemd_service() {
    let mut cap = Capture::start("unit").await;
    let unit = format!("{}.service", unique("svc"));
    let cg = Cgroup::create(&format!("{}/system.slice/{unit}", unique("units")));
    let exec = exec_in(&mut cap, &cg, "insvc").await;
    assert_eq!(exec.scope, fdr_agent::attribution::scope::Scope::Host);
    assert_eq!(exec.unit.as_deref(), Some(unit.as_str()));
    let state = &cap.agent.as_ref().expect("running").state;
    let pb = state.with_enrich(0, |en| fdr_agent::event::wire::event_to_pb(&exec, en));
    assert_eq!(pb.service, unit);
    assert_eq!(pb.scope, "host");
    // The node name (NODE_NAME, else /etc/hostname, else the kernel's).
    let node = fdr_agent::util::host::NodeName::resolve("", &Default::default());
    assert!(!node.name.is_empty());
    assert_eq!(pb.hostname, node.name);
    cap.stop().await;
    drop(cg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_in_a_kubepods_systemd_scope_is_attributed_to_its_container() {
    let mut cap = Capture::start_with("kubepods", |c| {
        c.attribution.runtime_endpoints.clear();
        c.attribution.runtime_poll = std::time::Duration::from_millis(200);
    })
    .await;
    let id = format!("{:0>64x}", std::process::id());
    let path = format!(
        "{}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b7e6f5d_1111_2222_3333_444455556666.slice/cri-containerd-{id}.scope",
        unique("k8s")
    );
    let cg = Cgroup::create(&path);
    let exec = exec_in(&mut cap, &cg, "inpod").await;
    assert_eq!(
        exec.scope,
        fdr_agent::attribution::scope::Scope::Container(id.as_str().into())
    );
    assert_eq!(exec.unit, None);
    assert_eq!(
        fdr_agent::event::wire::event_to_pb(&exec, &Enrich::BARE).container_id,
        id
    );
    // No runtime knows this container: its start and stop come from its
    // cgroup appearing and going away.
    let start = cap
        .wait_for("container start from the cgroup", |e| {
            e.kind() == EventKind::ContainerStart && e.scope == exec.scope
        })
        .await;
    match &start.record.detail {
        Detail::Container(c) => {
            assert_eq!(&*c.id, id.as_str());
            assert_eq!(c.source, "cgroup");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(start.record.task.cgroup_id, cg.id());
    drop(cg);
    let stop = cap
        .wait_for("container stop when the cgroup is removed", |e| {
            e.kind() == EventKind::ContainerStop && e.scope == exec.scope
        })
        .await;
    assert!(
        matches!(&stop.record.detail, Detail::Container(c) if c.change
        == fdr_agent::attribution::containers::Change::Stopped {
            exit_code: None,
            reason: "cgroup removed".into(),
            finished_ns: 0
        }),
        "{:?}",
        stop.record.detail
    );
    assert!(stop.seq > start.seq);
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ancestry_lists_the_shells_in_order() {
    let mut cap = Capture::start("ancestry").await;
    let marker = unique("anc");
    let inner = format!("exec /bin/true {marker}");
    let outer = format!("sh -c \"{inner}\"");
    let status = Command::new("/bin/sh")
        .args(["-c", &outer])
        .status()
        .expect("run sh");
    assert!(status.success());
    let exec = cap
        .wait_for("exec of true", |e| {
            argv_of(e).is_some_and(|a| a.last() == Some(&marker))
        })
        .await;
    let chain: Vec<(u32, Vec<String>)> = exec
        .image
        .ancestors(8)
        .map(|a| (a.pid, a.argv.to_vec()))
        .collect();
    assert!(chain.len() >= 3, "{chain:?}");
    assert_eq!(chain[0].1, ["sh", "-c", inner.as_str()], "{chain:?}");
    assert_eq!(chain[1].1, ["/bin/sh", "-c", outer.as_str()], "{chain:?}");
    assert_eq!(chain[2].0, std::process::id(), "then the test: {chain:?}");
    // The same through the API, at the configured depth.
    let depth = Enrich {
        ancestry_depth: 2,
        ..Enrich::BARE
    };
    let pb = fdr_agent::event::wire::event_to_pb(&exec, &depth);
    let argvs: Vec<&[String]> = pb.ancestry.iter().map(|a| &a.argv[..]).collect();
    assert_eq!(argvs, [&chain[0].1[..], &chain[1].1[..]]);
    let sh = std::fs::canonicalize("/bin/sh").expect("resolve /bin/sh");
    assert_eq!(pb.ancestry[1].exe, sh.to_string_lossy());
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_command_line_is_truncated_and_flagged() {
    let mut cap = Capture::start("longargv").await;
    let marker = unique("long");
    let long = "x".repeat(3000);
    let status = Command::new("/bin/true")
        .args([marker.as_str(), &long, &long])
        .status()
        .expect("run true");
    assert!(status.success());
    let exec = cap
        .wait_for("exec with a long argv", |e| {
            argv_of(e).is_some_and(|a| a.get(1) == Some(&marker))
        })
        .await;
    match &exec.record.detail {
        Detail::Exec {
            argv,
            argv_truncated,
            ..
        } => {
            assert!(argv_truncated);
            let total: usize = argv.iter().map(|a| a.len() + 1).sum();
            assert!(total <= fdr_common::ARGV_MAX + 1, "kept {total} bytes");
            assert_eq!(argv[2], long, "second argument whole");
            assert!(argv[3].len() < 3000 && argv[3].chars().all(|c| c == 'x'));
        }
        _ => unreachable!(),
    }
    cap.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_exec_path_is_made_absolute() {
    let mut cap = Capture::start("relexec").await;
    let marker = unique("rel");
    let status = Command::new("./true")
        .current_dir("/bin")
        .arg(&marker)
        .status()
        .expect("run ./true");
    assert!(status.success());
    let exec = cap
        .wait_for("exec of ./true", |e| {
            argv_of(e).is_some_and(|a| a.last() == Some(&marker))
        })
        .await;
    match &exec.record.detail {
        Detail::Exec { filename, exe, .. } => {
            let real = std::fs::canonicalize("/bin/true").unwrap();
            assert_eq!(filename, real.to_str().unwrap(), "made absolute");
            assert_eq!(exe, filename);
        }
        _ => unreachable!(),
    }
    cap.stop().await;
}
