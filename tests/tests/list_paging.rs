//! Paging of the list calls against the real agent binary: `ListSnapshots`
//! with a small limit and near the byte cap, `ListContainers`,
//! `ListModels` and `GetModel`; `fdrctl` following the cursor lists every
//! entry exactly once and writes the same text as one page would.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use fdr_cli::client::{self, Client};
use fdr_proto::v1 as pb;
use fdr_tests::{fdrctl_binary, unique, AgentProcess, Cgroup, TempDir, DEADLINE};
use prost::Message;

/// The server's cap of encoded entry bytes per page (see
/// `ListSnapshotsRequest.limit`).
const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// What a response holds besides its entries: the cursor, field tags.
const SLACK: usize = 64 * 1024;

fn start(dir: &TempDir) -> (AgentProcess, PathBuf) {
    let config = dir.path().join("fdr.toml");
    std::fs::write(
        &config,
        format!(
            "[recorder]\ndata_dir = \"{}\"\nsnapshot_before = \"1s\"\nsnapshot_after = \"1s\"\nmax_snapshots = 1000\n",
            dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let socket = dir.path().join("fdr.sock");
    let agent = AgentProcess::start(&socket, &["--config".as_ref(), config.as_os_str()]);
    (agent, socket)
}

/// Runs `fdrctl --socket SOCKET args…` and returns its standard output.
async fn fdrctl(socket: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(fdrctl_binary());
    cmd.arg("--socket").arg(socket).args(args);
    let what = format!("fdrctl {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run fdrctl");
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Every `ListSnapshots` page: ids increasing over all pages, each page
/// within `limit` and the byte cap. Returns the snapshots and the pages'
/// sizes.
async fn list_all(c: &mut Client, limit: u32) -> (Vec<pb::SnapshotInfo>, Vec<usize>) {
    let mut req = pb::ListSnapshotsRequest {
        limit,
        ..Default::default()
    };
    let mut all: Vec<pb::SnapshotInfo> = Vec::new();
    let mut pages = Vec::new();
    let deadline = Instant::now() + 3 * DEADLINE;
    loop {
        let resp = c
            .list_snapshots(req.clone())
            .await
            .expect("ListSnapshots")
            .into_inner();
        if limit > 0 {
            assert!(
                resp.snapshots.len() <= limit as usize,
                "{}",
                resp.snapshots.len()
            );
        }
        assert!(
            resp.encoded_len() <= MAX_PAGE_BYTES + SLACK || resp.snapshots.len() == 1,
            "{} bytes",
            resp.encoded_len()
        );
        for s in &resp.snapshots {
            if let Some(prev) = all.last() {
                assert!(s.id > prev.id, "id {} after {}", s.id, prev.id);
            }
        }
        pages.push(resp.snapshots.len());
        all.extend(resp.snapshots);
        if resp.next_cursor.is_empty() {
            return (all, pages);
        }
        assert!(Instant::now() < deadline, "paging never ended");
        req.cursor = resp.next_cursor;
    }
}

async fn create(c: &mut Client, reason: String) -> u64 {
    c.create_snapshot(pb::CreateSnapshotRequest {
        scope: "host".into(),
        reason,
    })
    .await
    .expect("CreateSnapshot")
    .into_inner()
    .id
}

/// The ids of `fdrctl snapshot list --json` lines, each line a JSON object.
fn json_ids(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["id"].as_u64().expect("id")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_listed_once_across_pages() {
    const SMALL: usize = 45;
    const LARGE: usize = 24;
    let dir = TempDir::new("lpage");
    let (_agent, socket) = start(&dir);
    let mut c = client::connect_unix(&socket).await.expect("connect");
    let tag = unique("lpage");
    let mut created = BTreeSet::new();
    for i in 0..SMALL {
        created.insert(create(&mut c, format!("{tag}-{i}")).await);
    }

    // Pages of 7 over the API: open, pending and stored ones alike, once.
    let (all, pages) = list_all(&mut c, 7).await;
    let ids: Vec<u64> = all.iter().map(|s| s.id).collect();
    let listed: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(listed.len(), ids.len(), "no snapshot twice: {ids:?}");
    assert!(created.is_subset(&listed), "{created:?} in {ids:?}");
    assert!(pages.len() >= SMALL / 7, "{pages:?}");

    // fdrctl with the same page size: JSON lines, and a table with one
    // header.
    let text = fdrctl(&socket, &["snapshot", "list", "--json", "--page-size", "7"]).await;
    let ids = json_ids(&text);
    let listed: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(listed.len(), ids.len(), "no snapshot twice: {ids:?}");
    assert!(created.is_subset(&listed));
    let table = fdrctl(&socket, &["snapshot", "list", "--page-size", "4"]).await;
    assert_eq!(table.lines().filter(|l| l.contains("REASON")).count(), 1);
    for i in 0..SMALL {
        let reason = format!("{tag}-{i}");
        let rows = table.lines().filter(|l| l.ends_with(&format!(" {reason}")));
        assert_eq!(rows.count(), 1, "{reason} once in\n{table}");
    }

    // Near the cap: about 6 MiB of summaries (long reasons) is more than
    // one response may hold, and each page stays under the cap.
    let big = "x".repeat(256 * 1024);
    for i in 0..LARGE {
        created.insert(create(&mut c, format!("{tag}-big-{i}-{big}")).await);
    }
    let (all, pages) = list_all(&mut c, 0).await;
    let ids: Vec<u64> = all.iter().map(|s| s.id).collect();
    let listed: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(listed.len(), ids.len());
    assert!(created.is_subset(&listed));
    println!("snapshots per page near the cap: {pages:?}");
    assert!(pages.len() >= 2, "cut by bytes: {pages:?}");
    let text = fdrctl(&socket, &["snapshot", "list", "--json"]).await;
    let ids = json_ids(&text);
    let listed: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(listed.len(), ids.len());
    assert!(created.is_subset(&listed));
}

/// Runs `script` in `cg` with `sh` and waits for it.
fn run_in(cg: &Cgroup, script: &str) {
    let full = format!("echo $$ > {} && {script}", cg.procs_file().display());
    let ok = Command::new("/bin/sh")
        .args(["-c", &full])
        .status()
        .expect("sh")
        .success();
    assert!(ok, "{script}");
}

/// Polls `f` until it gives a value, within the deadline.
async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + 2 * DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_and_models_page() {
    const CONTAINERS: usize = 5;
    let dir = TempDir::new("lpage-m");
    let (_agent, socket) = start(&dir);
    let base = unique("lpage-cg");
    let ids: Vec<String> = (0..CONTAINERS)
        .map(|i| {
            // Distinct in the 12 characters a table shows.
            let n = (std::process::id() << 8 | i as u32) ^ 0xa000_0000;
            format!("{n:08x}{}", "e".repeat(56))
        })
        .collect();
    let groups: Vec<Cgroup> = ids
        .iter()
        .map(|id| Cgroup::create(&format!("{base}/docker/{id}")))
        .collect();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // Each container does a few different things: its model learns them.
    for cg in &groups {
        run_in(
            cg,
            &format!(
                "cd {} && /bin/true && /bin/ls >/dev/null && /bin/cat /dev/null && : > a-$$ && /bin/date >/dev/null",
                work.display()
            ),
        );
    }

    // Containers: pages of 2 over fdrctl, each of ours once.
    let text = poll("the containers listed", || {
        let socket = socket.clone();
        let ids = ids.clone();
        async move {
            let text = fdrctl(&socket, &["containers", "--json", "--page-size", "2"]).await;
            let mut count: HashMap<String, usize> = HashMap::new();
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                let id = v["container"]["id"].as_str().unwrap_or_default().to_owned();
                *count.entry(id).or_default() += 1;
            }
            ids.iter()
                .all(|id| count.contains_key(id))
                .then_some((text, count))
        }
    })
    .await;
    for id in &ids {
        assert_eq!(text.1[id], 1, "{id} once in\n{}", text.0);
    }
    let table = fdrctl(&socket, &["containers", "--page-size", "1"]).await;
    assert_eq!(
        table.lines().filter(|l| l.starts_with("CONTAINER")).count(),
        1
    );
    for id in &ids {
        assert_eq!(
            table.lines().filter(|l| l.starts_with(&id[..12])).count(),
            1
        );
    }

    // Models: one per container; pages of 1 list each once, by key.
    let mut c = client::connect_unix(&socket).await.expect("connect");
    let key_of = |id: &str| format!("container:{id}");
    let models = poll("the models", || {
        let mut c = c.clone();
        let keys: Vec<String> = ids.iter().map(|i| key_of(i)).collect();
        async move {
            let mut req = pb::ListModelsRequest {
                limit: 1,
                ..Default::default()
            };
            let mut all = Vec::new();
            loop {
                let page = c.list_models(req.clone()).await.ok()?.into_inner();
                assert!(page.models.len() <= 1);
                all.extend(page.models);
                if page.next_cursor.is_empty() {
                    break;
                }
                req.cursor = page.next_cursor;
            }
            let listed: Vec<&str> = all.iter().map(|m| m.key.as_str()).collect();
            (keys.iter().all(|k| listed.contains(&k.as_str()))
                && all
                    .iter()
                    .filter(|m| keys.contains(&m.key))
                    .all(|m| m.item_count >= 3))
            .then_some(all)
        }
    })
    .await;
    let keys: Vec<&str> = models.iter().map(|m| m.key.as_str()).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "by key, once: {keys:?}"
    );
    let text = fdrctl(&socket, &["model", "list", "--json", "--page-size", "1"]).await;
    let listed: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["key"].as_str().expect("key").to_owned()
        })
        .collect();
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "{listed:?}");
    for id in &ids {
        assert!(listed.contains(&key_of(id)));
    }

    // A model's items page by page: the same text as in one page, once
    // what it learned has settled.
    let key = key_of(&ids[0]);
    let m = c
        .get_model(pb::GetModelRequest {
            key: key.clone(),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("GetModel")
        .into_inner();
    let items: usize = m.sections.iter().map(|s| s.items.len()).sum();
    assert!(items <= 1, "{items}");
    assert!(!m.next_cursor.is_empty(), "more items follow");
    for format in ["yaml", "json"] {
        let (paged, whole) = poll("a settled model", || {
            let socket = socket.clone();
            let key = key.clone();
            async move {
                let whole = fdrctl(&socket, &["model", "show", &key, "--format", format]).await;
                let paged = fdrctl(
                    &socket,
                    &[
                        "model",
                        "show",
                        &key,
                        "--format",
                        format,
                        "--page-size",
                        "1",
                    ],
                )
                .await;
                let again = fdrctl(&socket, &["model", "show", &key, "--format", format]).await;
                (whole == again).then_some((paged, whole))
            }
        })
        .await;
        assert_eq!(paged, whole, "{format}");
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&paged).expect("one JSON document");
            assert_eq!(v["key"], key.as_str());
        }
    }
    drop(c);
    drop(groups);
}
