//! Recorder benchmarks without the kernel: ingest rate, bytes per buffered
//! event, freezing and committing a 10 000-event window, and the bytes a
//! stored snapshot takes per event (host and container, with realistic
//! ancestry, command lines and pod metadata).

use std::{path::Path, sync::Arc, time::Instant};

use anyhow::Result;
use fdr_agent::{
    attribution::scope::Scope,
    event::{Detail, Event, EventKind, FileDetail, Record, Task},
    process::table::ProcessTable,
    recorder::{
        snapshot::{Snapshots, Window},
        Limits, ScopeBuffers,
    },
    store::{Retention, Store},
};
use serde_json::{json, Value};

/// A realistic mix: exec, exit, file writes, by a few processes in a few scopes.
pub fn events(n: usize) -> Vec<Arc<Event>> {
    let scopes: Vec<Scope> = std::iter::once(Scope::Host)
        .chain((0..7).map(|i| Scope::Container(format!("{i:0>64x}").into())))
        .collect();
    let image = fdr_agent::event::lineage::Image::root(
        4242,
        0,
        Arc::from("/usr/bin/python3"),
        Arc::from(vec![
            "python3".to_string(),
            "app.py".into(),
            "--port".into(),
            "8080".into(),
        ]),
    );
    (0..n)
        .map(|i| {
            let detail = match i % 3 {
                0 => Detail::Exec {
                    filename: "/usr/bin/curl".into(),
                    exe: "/usr/bin/curl".into(),
                    exe_incomplete: false,
                    exe_dev: 1,
                    exe_ino: 2,
                    argv: vec!["curl".into(), "-s".into(), "http://10.0.0.1/health".into()],
                    old_tid: 0,
                    argv_truncated: false,
                    argv_unreadable: false,
                    filename_truncated: false,
                    stdin_socket: false,
                    not_utf8: fdr_agent::event::NotUtf8::NONE,
                },
                1 => Detail::Exit { status: 0 },
                _ => Detail::File {
                    kind: EventKind::FileWrite,
                    file: Box::new(FileDetail {
                        path: format!("/var/log/app/worker-{}.log", i % 16),
                        flags: 1,
                        mode: 0o100644,
                        syscall: "openat",
                        ..FileDetail::default()
                    }),
                },
            };
            Arc::new(Event {
                seq: i as u64 + 1,
                time_ns: 1_700_000_000_000_000_000 + i as u64 * 1000,
                record: Record {
                    boot_ns: i as u64 * 1000,
                    cpu: 0,
                    task: Task {
                        pid: 1000 + (i % 50) as u32,
                        tid: 1000 + (i % 50) as u32,
                        ppid: 1,
                        uid: 0,
                        gid: 0,
                        loginuid: None,
                        cgroup_id: 10 + (i % 8) as u64,
                        start_ns: 0,
                        comm: "python3".into(),
                        has_tty: false,
                    },
                    detail,
                },
                image: image.clone(),
                scope: scopes[i % scopes.len()].clone(),
                unit: None,
            })
        })
        .collect()
}

pub fn run() -> Result<Value> {
    // Ingest: every event into its scope's buffer, one core.
    let evs = events(1_000_000);
    let mut buffers = ScopeBuffers::new(Limits {
        scope_quota: 64 << 20,
        critical_reserve: 0,
        budget: 1 << 30,
        grace_ns: u64::MAX,
    });
    let t = Instant::now();
    for e in &evs {
        buffers.push(&**e);
    }
    let ingest = evs.len() as f64 / t.elapsed().as_secs_f64();
    let st = buffers.stats();
    let bytes_per_event = st.bytes as f64 / st.events as f64;
    // What the same events were charged as `Arc<Event>`s (before records).
    let arc_per_event = evs
        .iter()
        .map(|e| fdr_agent::recorder::buffer::charged_bytes(e))
        .sum::<usize>() as f64
        / evs.len() as f64;
    // Reading back: every scope's events decoded.
    let scopes: Vec<Scope> = buffers.scopes().into_iter().map(|(s, _)| s).collect();
    let t = Instant::now();
    let mut read = 0usize;
    for s in &scopes {
        for e in buffers.scope(s) {
            std::hint::black_box(&e);
            read += 1;
        }
    }
    let decode_ns = t.elapsed().as_secs_f64() * 1e9 / read.max(1) as f64;
    anyhow::ensure!(read == evs.len(), "{read} events read back");
    drop(buffers);
    // At the default quota, full: every push also evicts.
    let mut full = ScopeBuffers::new(Limits {
        scope_quota: 16 << 20,
        critical_reserve: (16 << 20) / 4,
        budget: 128 << 20,
        grace_ns: u64::MAX,
    });
    let host: Vec<&Arc<Event>> = evs.iter().filter(|e| e.scope == Scope::Host).collect();
    for e in host.iter().cycle().take(1_000_000) {
        full.push(&***e);
    }
    let t = Instant::now();
    let n_full = 500_000;
    for e in host.iter().cycle().take(n_full) {
        full.push(&***e);
    }
    let push_full_ns = t.elapsed().as_secs_f64() * 1e9 / n_full as f64;
    let full_st = full.stats();
    anyhow::ensure!(full_st.evicted > 0, "the full buffer evicts");
    let full_per_event = full_st.bytes as f64 / full_st.events as f64;
    drop(full);

    // Freeze and commit a 10 000-event window of one scope.
    let dir = std::env::temp_dir().join(format!("fdr-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(
        &dir,
        Retention {
            max_snapshots: 100,
            max_bytes: 1 << 30,
        },
    )?;
    let mut snaps = Snapshots::new(
        std::sync::Arc::new(store),
        Window {
            before_ns: u64::MAX / 4,
            after_ns: 0,
        },
    );
    let mut one = ScopeBuffers::new(Limits {
        scope_quota: 1 << 30,
        critical_reserve: 0,
        budget: 1 << 30,
        grace_ns: u64::MAX,
    });
    for e in evs.iter().filter(|e| e.scope == Scope::Host).take(10_000) {
        one.push(&**e);
    }
    let at = evs.last().map_or(0, |e| e.time_ns);
    let t = Instant::now();
    let info = snaps.freeze(Scope::Host, "bench", at, &one, 0)?;
    let freeze_ms = t.elapsed().as_secs_f64() * 1e3;
    let procs = ProcessTable::default();
    let t = Instant::now();
    let ids = snaps.close(at + 1, &procs, &fdr_agent::event::wire::Enrich::BARE, false)?;
    // Committed on the committer thread: the figure is close + write.
    snaps.committer().drain(std::time::Duration::from_secs(60));
    let commit_ms = t.elapsed().as_secs_f64() * 1e3;
    let stored = snaps.store().list()?;
    anyhow::ensure!(
        ids == [info.id] && info.event_count == 10_000,
        "snapshot of 10 000 events"
    );
    let full = full_store(snaps.store(), info.id)?;
    let _ = std::fs::remove_dir_all(&dir);
    let host = stored_per_event(false)?;
    let ctr = stored_per_event(true)?;
    println!(
        "recorder: stored bytes/event: host {:.0} (plain protobuf {:.0}), container {:.0} (plain protobuf {:.0})",
        host.stored, host.plain, ctr.stored, ctr.plain
    );
    println!(
        "recorder: bytes per buffered event: {:.1} (mix of 8 scopes; {:.0} events per MiB; {:.0} as Arc<Event>s), {:.1} at the default quota, full; busy service window: host {:.1} (as Arc<Event>s {:.0}), container {:.1} ({:.0})",
        bytes_per_event,
        f64::from(1 << 20) / bytes_per_event,
        arc_per_event,
        full_per_event,
        host.buffered,
        host.arc,
        ctr.buffered,
        ctr.arc
    );
    println!(
        "recorder: encode (push) {:.0} ns/event, {:.0} ns/event at quota (with eviction); decode {:.0} ns/event",
        1e9 / ingest,
        push_full_ns,
        decode_ns
    );
    println!("recorder: ingest {:.2} M events/s, {:.0} bytes/event, freeze 10k {:.2} ms, commit 10k {:.1} ms ({} bytes on disk)",
        ingest / 1e6, bytes_per_event, freeze_ms, commit_ms, stored[0].bytes);
    println!(
        "recorder: store at retention (100 x 10k events): list {:.2} ms, put with eviction {:.1} ms",
        full.list_ms, full.put_ms
    );
    Ok(json!({
        "case": "recorder",
        "ingest_events_per_s": ingest,
        "bytes_per_buffered_event": bytes_per_event,
        "buffered_events_per_mib": f64::from(1 << 20) / bytes_per_event,
        "arc_bytes_per_event": arc_per_event,
        "bytes_per_buffered_event_full_quota": full_per_event,
        "bytes_per_buffered_event_service_host": host.buffered,
        "bytes_per_buffered_event_service_container": ctr.buffered,
        "encode_ns_per_event": 1e9 / ingest,
        "push_at_quota_ns_per_event": push_full_ns,
        "decode_ns_per_event": decode_ns,
        "freeze_10k_ms": freeze_ms,
        "commit_10k_ms": commit_ms,
        "snapshot_10k_bytes_on_disk": stored[0].bytes,
        "list_100_snapshots_ms": full.list_ms,
        "put_at_retention_ms": full.put_ms,
        "stored_bytes_per_event_host": host.stored,
        "stored_bytes_per_event_container": ctr.stored,
        "plain_bytes_per_event_host": host.plain,
        "plain_bytes_per_event_container": ctr.plain,
    }))
}

struct FullStore {
    list_ms: f64,
    put_ms: f64,
}

/// Fills the store to its retention limit with copies of snapshot `id`,
/// then times a listing and one more commit (which evicts the oldest).
fn full_store(store: &Store, id: u64) -> Result<FullStore> {
    let snap = store
        .get(id)?
        .ok_or_else(|| anyhow::anyhow!("snapshot {id} stored"))?;
    for _ in 0..99 {
        let mut s = snap.clone();
        if let Some(i) = s.info.as_mut() {
            i.id = store.next_id()?;
        }
        store.put(&s)?;
    }
    let t = Instant::now();
    let n = store.list()?.len();
    let list_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(n == 100, "100 snapshots listed, not {n}");
    let mut s = snap;
    if let Some(i) = s.info.as_mut() {
        i.id = store.next_id()?;
    }
    let t = Instant::now();
    let evicted = store.put(&s)?;
    let put_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(evicted.len() == 1, "one evicted at retention");
    Ok(FullStore { list_ms, put_ms })
}

struct PerEvent {
    /// What the store holds, per event.
    stored: f64,
    /// The same snapshot as a plain `fdr.v1.Snapshot` (how it was stored
    /// before interning and compression).
    plain: f64,
    /// What the window took in the scope's buffer, per event.
    buffered: f64,
    /// What it was charged as `Arc<Event>`s, per event.
    arc: f64,
}

struct Pods(Arc<fdr_agent::event::container::ContainerMeta>);

impl fdr_agent::event::container::ContainerLookup for Pods {
    fn meta(&self, _id: &str) -> Option<Arc<fdr_agent::event::container::ContainerMeta>> {
        Some(self.0.clone())
    }
}

fn argv(a: &[&str]) -> Arc<[String]> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A 10 000-event window of one scope as a busy service makes it: workers
/// that fork and exec short commands (each with its ancestry), write logs,
/// connect out, accept, and read a sensitive file now and then; frozen,
/// committed with 16 ancestors per critical event (the default), and
/// measured on disk.
fn stored_per_event(container: bool) -> Result<PerEvent> {
    use fdr_agent::event::{lineage::Image, NetDetail};
    let id = "3f1c0d9e8b7a65544332211000ffeeddccbbaa99887766554433221100aabbcc";
    let scope = if container {
        Scope::Container(id.into())
    } else {
        Scope::Host
    };
    // The chain above the service's workers.
    let mut top: Vec<(&str, Arc<[String]>)> = if container {
        vec![
            (
                "/usr/lib/systemd/systemd",
                argv(&["/sbin/init", "--system", "--deserialize", "31"]),
            ),
            ("/usr/bin/containerd", argv(&["/usr/bin/containerd"])),
            (
                "/usr/bin/containerd-shim-runc-v2",
                argv(&[
                    "/usr/bin/containerd-shim-runc-v2",
                    "-namespace",
                    "k8s.io",
                    "-id",
                    id,
                    "-address",
                    "/run/containerd/containerd.sock",
                ]),
            ),
            (
                "/usr/bin/tini",
                argv(&["/usr/bin/tini", "--", "/docker-entrypoint.sh", "gunicorn"]),
            ),
            (
                "/bin/bash",
                argv(&[
                    "/bin/bash",
                    "/docker-entrypoint.sh",
                    "gunicorn",
                    "--config",
                    "/etc/gunicorn/conf.py",
                ]),
            ),
        ]
    } else {
        vec![
            ("/usr/lib/systemd/systemd", argv(&["/sbin/init", "splash"])),
            (
                "/usr/sbin/sshd",
                argv(&["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"]),
            ),
            ("/usr/sbin/sshd", argv(&["sshd-session: deploy [priv]"])),
            ("/usr/bin/bash", argv(&["-bash"])),
            (
                "/usr/bin/tmux",
                argv(&["tmux", "new-session", "-A", "-s", "ops"]),
            ),
            ("/usr/bin/bash", argv(&["-bash"])),
        ]
    };
    top.push((
        "/usr/local/bin/python3.12",
        argv(&[
            "/usr/local/bin/python3.12",
            "/usr/local/bin/gunicorn",
            "app.wsgi:application",
            "--bind",
            "0.0.0.0:8000",
            "--workers",
            "4",
            "--timeout",
            "120",
            "--access-logfile",
            "-",
        ]),
    ));
    let mut image: Option<Arc<Image>> = None;
    for (pid, (exe, a)) in top.iter().enumerate() {
        image = Some(Image::child_of(
            image.as_ref(),
            100 + pid as u32,
            0,
            Arc::from(*exe),
            a.clone(),
        ));
    }
    let master = image.ok_or_else(|| anyhow::anyhow!("a chain"))?;
    let workers: Vec<Arc<Image>> = (0..4)
        .map(|w| Image::forked(&master, 200 + w, 33))
        .collect();
    let commands: [(&str, Arc<[String]>); 4] = [
        (
            "/usr/bin/dash",
            argv(&[
                "sh",
                "-c",
                "convert /srv/media/upload/in.png -resize 640x480 /srv/media/cache/out.png",
            ]),
        ),
        (
            "/usr/bin/convert",
            argv(&[
                "convert",
                "/srv/media/upload/in.png",
                "-resize",
                "640x480",
                "/srv/media/cache/out.png",
            ]),
        ),
        (
            "/usr/bin/git",
            argv(&["git", "-C", "/srv/app", "rev-parse", "--short", "HEAD"]),
        ),
        (
            "/usr/bin/curl",
            argv(&[
                "curl",
                "-fsS",
                "--max-time",
                "5",
                "https://payments.internal.example.com/api/v2/health",
            ]),
        ),
    ];
    let mut buffers = ScopeBuffers::new(Limits {
        scope_quota: 1 << 30,
        critical_reserve: 0,
        budget: 1 << 30,
        grace_ns: u64::MAX,
    });
    let t0 = 1_700_000_000_000_000_000u64;
    // What varies in real traffic (times, ports, peers, file names, pids),
    // from a fixed seed: a window of identical events would compress to
    // nothing and measure nothing.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut time = t0;
    let mut next_pid = 1000u32;
    let mut cur: Vec<Arc<Image>> = workers.clone();
    let mut arc_bytes = 0usize;
    let n = 10_000usize;
    for i in 0..n {
        let w = (rnd() % workers.len() as u64) as usize;
        time += 1_000 + rnd() % 60_000;
        let r = rnd();
        // A worker now and then runs a command: fork, exec, exit; else it
        // serves (accept, connect to its database, writes).
        let (detail, img) = match r % 20 {
            0 => {
                next_pid += 1 + (r >> 8) as u32 % 7;
                cur[w] = Image::forked(&workers[w], next_pid, 33);
                (
                    Detail::Fork {
                        parent_tid: workers[w].pid,
                    },
                    cur[w].clone(),
                )
            }
            1 => {
                let (exe, a) = &commands[(r >> 8) as usize % commands.len()];
                cur[w] = Image::execed(
                    Some(&cur[w]),
                    Some(&workers[w]),
                    cur[w].pid,
                    33,
                    Arc::from(*exe),
                    a.clone(),
                );
                (
                    Detail::Exec {
                        filename: exe.to_string(),
                        exe: exe.to_string(),
                        exe_incomplete: false,
                        exe_dev: 2049,
                        exe_ino: 131_000 + (r >> 8) % 4,
                        argv: a.to_vec(),
                        old_tid: 0,
                        argv_truncated: false,
                        argv_unreadable: false,
                        filename_truncated: false,
                        stdin_socket: false,
                        not_utf8: fdr_agent::event::NotUtf8::NONE,
                    },
                    cur[w].clone(),
                )
            }
            2 => (
                Detail::Exit {
                    status: ((r >> 8) % 3) as u32 * 256,
                },
                cur[w].clone(),
            ),
            3..=5 => (
                Detail::Net {
                    kind: EventKind::NetAccept,
                    net: NetDetail {
                        protocol: 6,
                        local: "10.244.1.17:8000".parse()?,
                        remote: Some(
                            format!(
                                "10.244.{}.{}:{}",
                                (r >> 8) % 4,
                                2 + (r >> 16) % 250,
                                32_768 + (r >> 24) % 28_000
                            )
                            .parse()?,
                        ),
                        backlog: 0,
                        ret: 0,
                    },
                },
                workers[w].clone(),
            ),
            6..=8 => (
                Detail::Net {
                    kind: EventKind::NetConnect,
                    net: NetDetail {
                        protocol: 6,
                        local: format!("10.244.1.17:{}", 32_768 + (r >> 24) % 28_000).parse()?,
                        remote: Some(
                            ["10.96.0.12:5432", "10.96.4.7:6379", "10.96.0.10:53"]
                                [(r >> 8) as usize % 3]
                                .parse()?,
                        ),
                        backlog: 0,
                        ret: 0,
                    },
                },
                workers[w].clone(),
            ),
            9 if (r >> 8) % 20 == 0 => (
                Detail::File {
                    kind: EventKind::SensitiveRead,
                    file: Box::new(FileDetail {
                        path: "/etc/passwd".into(),
                        flags: 0,
                        mode: 0o100644,
                        syscall: "openat",
                        ino: 1_311,
                        ..FileDetail::default()
                    }),
                },
                workers[w].clone(),
            ),
            _ => (
                Detail::File {
                    kind: EventKind::FileWrite,
                    file: Box::new(FileDetail {
                        path: match (r >> 8) % 3 {
                            0 => "/var/log/gunicorn/access.log".into(),
                            1 => format!("/srv/media/cache/{:016x}.png", rnd()),
                            _ => format!("/tmp/wgunicorn-{:08x}", (rnd() >> 32)),
                        },
                        flags: 0o101,
                        mode: 0o100644,
                        syscall: "openat",
                        ino: 400_000 + (r >> 20) % 100_000,
                        size: Some((r >> 24) % 65_536),
                        ..FileDetail::default()
                    }),
                },
                workers[w].clone(),
            ),
        };
        let ev = Arc::new(Event {
            seq: i as u64 + 1,
            time_ns: time,
            record: Record {
                boot_ns: time - t0 + 5_000_000_000,
                cpu: (r >> 40) as u32 % 2,
                task: Task {
                    pid: img.pid,
                    tid: img.pid,
                    ppid: if img.pid == workers[w].pid {
                        master.pid
                    } else {
                        workers[w].pid
                    },
                    uid: 33,
                    gid: 33,
                    loginuid: if container { None } else { Some(1000) },
                    cgroup_id: 7_000 + u64::from(container),
                    start_ns: 1_000_000 + u64::from(img.pid),
                    comm: Path::new(&*img.exe)
                        .file_name()
                        .map_or("?".into(), |n| {
                            n.to_string_lossy().chars().take(15).collect::<String>()
                        })
                        .as_str()
                        .into(),
                    has_tty: false,
                },
                detail,
            },
            image: img,
            scope: scope.clone(),
            unit: (!container).then(|| Arc::from("gunicorn.service")),
        });
        arc_bytes += fdr_agent::recorder::buffer::charged_bytes(&ev);
        buffers.push(ev);
    }
    let buffered = {
        let st = buffers.stats();
        st.bytes as f64 / st.events.max(1) as f64
    };
    let dir = std::env::temp_dir().join(format!(
        "fdr-bench-stored-{container}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(
        &dir,
        Retention {
            max_snapshots: 10,
            max_bytes: 1 << 30,
        },
    )?;
    let mut snaps = Snapshots::new(
        Arc::new(store),
        Window {
            before_ns: u64::MAX / 4,
            after_ns: 0,
        },
    );
    let at = time + 1;
    let info = snaps.freeze(scope, "bench", at, &buffers, 1)?;
    let pods = Pods(Arc::new(fdr_agent::event::container::ContainerMeta {
        id: id.into(),
        name: "web".into(),
        image: "registry.example.com/shop/web:2.14.3".into(),
        image_digest: "sha256:9b2a6c0f4e1d8a7b3c5e2f1a0d9c8b7a6e5f4d3c2b1a09f8e7d6c5b4a3928170"
            .into(),
        pod_name: "web-7d9f8c6b5-x2k4q".into(),
        pod_namespace: "shop".into(),
        pod_uid: "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b".into(),
        pod_id: "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
        labels: [
            ("app.kubernetes.io/name", "web"),
            ("app.kubernetes.io/instance", "web-prod"),
            ("app.kubernetes.io/version", "2.14.3"),
            ("app.kubernetes.io/part-of", "shop"),
            ("pod-template-hash", "7d9f8c6b5"),
            ("io.kubernetes.container.name", "web"),
            ("io.kubernetes.pod.namespace", "shop"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        runtime: "containerd 1.7.24".into(),
        ..Default::default()
    }));
    let en = fdr_agent::event::wire::Enrich {
        containers: Some(&pods),
        ancestry_depth: 16,
        node: "bench",
    };
    let ids = snaps.close(at + 1, &ProcessTable::default(), &en, false)?;
    snaps.committer().drain(std::time::Duration::from_secs(60));
    anyhow::ensure!(ids == [info.id], "snapshot committed");
    let stored = snaps
        .store()
        .list()?
        .into_iter()
        .find(|i| i.id == info.id)
        .ok_or_else(|| anyhow::anyhow!("snapshot {} listed", info.id))?;
    let snap = snaps
        .store()
        .get(info.id)?
        .ok_or_else(|| anyhow::anyhow!("snapshot {} stored", info.id))?;
    anyhow::ensure!(
        snap.events.len() == n,
        "{} events read back",
        snap.events.len()
    );
    let plain = prost::Message::encoded_len(&snap);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(PerEvent {
        stored: stored.bytes as f64 / n as f64,
        plain: plain as f64 / n as f64,
        buffered,
        arc: arc_bytes as f64 / n as f64,
    })
}
