//! `--only ui`: the web UI's timeline of a big snapshot, in Debian's
//! Chromium (Playwright for Python, `tests/ui/console_ui.py --bench-loads`).
//!
//! One release `fdr-agent` (buffers and snapshot limits sized for a
//! 100 000-event before-window) records a burst of file writes and removals
//! in a private directory of the host scope; an interactive `useradd` in a
//! private mount namespace right after it raises an incident whose snapshot
//! holds the burst. A release `fdr-console` (web UI on an HTTPS port of its
//! own) copies it. Measured:
//! - the timeline query API (`/api/timeline/snapshot/{id}/query`, bearer
//!   token, curl): the first query (the console decodes the snapshot), then
//!   the first page, a search and a kind filter, each `--ui-loads` times;
//! - the time from navigation to the first page of timeline rows drawn in
//!   Chromium on the snapshot's page, `--ui-loads` loads (median, range):
//!   as seen from outside (Playwright waits for the rows), and by the
//!   page's own clock (a MutationObserver installed before any script
//!   notes when the first row is in the DOM, and the animation frame after
//!   it: when the rows can be painted);
//! - `fdrctl report` of the incident: the time to write it, its size, and
//!   the time from opening the file (offline) to the first rows drawn.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use fdr_tests::fleet::{self, poll, Console, Node, SLOW, TOKEN};
use serde_json::{json, Value};

/// How much the case runs.
pub struct Opts {
    /// Events the snapshot should hold at least.
    pub events: u64,
    /// Loads (and queries) of each kind timed.
    pub loads: u32,
}

/// The agent's snapshot windows: room for the burst before the incident.
const BEFORE: Duration = Duration::from_secs(120);
const AFTER: Duration = Duration::from_secs(1);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/console_ui.py")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn summary(v: &[f64]) -> Value {
    json!({
        "median_ms": median(v) * 1e3,
        "min_ms": v.iter().copied().fold(f64::INFINITY, f64::min) * 1e3,
        "max_ms": v.iter().copied().fold(0.0, f64::max) * 1e3,
        "runs_ms": v.iter().map(|s| s * 1e3).collect::<Vec<_>>(),
    })
}

/// One GET of the web UI with the bearer token (curl, the test CA):
/// seconds, and the body's size.
fn get(ca: &Path, url: &str) -> Result<(f64, u64)> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total} %{size_download}",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(url)
        .output()
        .context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let f: Vec<&str> = text.split_whitespace().collect();
    if !out.status.success() || f.first() != Some(&"200") || f.len() != 3 {
        bail!(
            "GET {url}: {text} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((f[1].parse()?, f[2].parse()?))
}

/// Writes and removes files in `dir` until the agent at `socket` has seen
/// `events` more events; the operations done.
fn burst(rt: &tokio::runtime::Runtime, socket: &Path, dir: &Path, events: u64) -> Result<u64> {
    std::fs::create_dir_all(dir)?;
    let seen = || -> Result<u64> {
        let st = rt.block_on(crate::monitors::stats(socket))?;
        Ok(st.kinds.iter().map(|k| k.seen).sum())
    };
    let start = seen()?;
    let mut n = 0u64;
    let deadline = Instant::now() + BEFORE / 2;
    loop {
        for _ in 0..2000 {
            let f = dir.join(format!("f{}", n % 64));
            std::fs::write(&f, n.to_le_bytes())?;
            std::fs::remove_file(&f)?;
            n += 1;
        }
        if seen()? - start >= events {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!(
                "the agent saw only {} events of {events} in {:?}",
                seen()? - start,
                BEFORE / 2
            );
        }
    }
}

/// Runs the case; returns its entry of `results.json`.
pub fn run(rt: &tokio::runtime::Runtime, opts: &Opts) -> Result<Value> {
    for bin in [
        fdr_tests::agent_binary(),
        fdr_tests::console_binary(),
        fdr_tests::fdrctl_binary(),
    ] {
        ensure!(
            bin.exists(),
            "{} missing (cargo xtask bench builds it)",
            bin.display()
        );
    }
    ensure!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing: cargo xtask setup installs Debian's chromium"
    );
    let dir = fdr_tests::TempDir::new("ui-bench");
    let pki = fleet::pki(dir.path());
    let web_cert = pki.ca.server("console-web");
    let name = "ui-bench-node";
    let node = Node::start_with(dir.path(), name, &pki, |cfg| {
        cfg.recorder.snapshot_before = BEFORE;
        cfg.recorder.snapshot_after = AFTER;
        cfg.recorder.budget_bytes = 2 << 30;
        cfg.recorder.scope_quota_bytes = 1 << 30;
        cfg.recorder.snapshot_max_bytes = 768 << 20;
        cfg.recorder.snapshots_open_bytes = 768 << 20;
    });
    let socket = dir.path().join(name).join("fdr.sock");
    let web_port = fleet::free_port();
    // The viewers' token (the admins' is the API's; they must differ).
    let viewer = dir.path().join("viewer-token");
    std::fs::write(&viewer, "fdr-ui-bench-viewer-token\n")?;
    let mut console = Console::new(dir.path(), &[node.url()], &pki, 100, |cfg| {
        cfg.web.enabled = true;
        cfg.web.listen = format!("127.0.0.1:{web_port}").parse().expect("address");
        cfg.web.tls_cert_file = Some(web_cert.cert.clone());
        cfg.web.tls_key_file = Some(web_cert.key.clone());
        cfg.web.admin_token_file = Some(pki.token.clone());
        cfg.web.token_file = Some(viewer.clone());
        cfg.retention.max_snapshot_bytes = u64::MAX / 2;
    });
    console.start();
    poll("the agent reachable", SLOW, || {
        let out = console.try_ctl(&["agents", "--json"]).ok()?;
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|a| a["node"] == name && a["reachable"] == true)
    });

    // The burst, then the incident.
    let t = Instant::now();
    let ops = burst(
        rt,
        &socket,
        &dir.path().join("load"),
        opts.events + opts.events / 10,
    )?;
    let burst_s = t.elapsed().as_secs_f64();
    println!("ui bench: {ops} file writes and removals in {burst_s:.1} s");
    let user = fleet::interactive_useradd(dir.path());
    let inc = console.wait_incident(name, &user);
    let id = inc.snapshot_id;
    let list = console.ctl(&["snapshot", "list", "--json"]);
    let info = String::from_utf8_lossy(&list)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|s| s["id"].as_u64() == Some(id))
        .with_context(|| format!("snapshot {id} listed"))?;
    let events = info["event_count"].as_u64().unwrap_or(0);
    println!(
        "ui bench: snapshot {id}: {events} events, {} bytes, completeness {}",
        info["bytes"], info["completeness"]
    );
    ensure!(
        events >= opts.events,
        "the snapshot holds {events} events, fewer than {}",
        opts.events
    );

    // The query API.
    let base = format!("https://127.0.0.1:{web_port}");
    let api = format!("{base}/api/timeline/snapshot/{id}/query");
    let (first_s, first_bytes) = get(&pki.ca.cert, &format!("{api}?offset=0&limit=100"))?;
    let timed = |q: &str| -> Result<Vec<f64>> {
        (0..opts.loads)
            .map(|_| get(&pki.ca.cert, &format!("{api}?{q}")).map(|(s, _)| s))
            .collect()
    };
    let page = timed("offset=0&limit=100")?;
    let last_page = timed(&format!("offset={}&limit=100", events.saturating_sub(100)))?;
    let search = timed("q=no-such-text-anywhere")?;
    let exec_only = timed("kinds=exec")?;
    println!(
        "ui bench: query API: first {:.0} ms ({first_bytes} bytes); first page median {:.1} ms, \
         last page {:.1} ms, search {:.1} ms, exec only {:.1} ms",
        first_s * 1e3,
        median(&page) * 1e3,
        median(&last_page) * 1e3,
        median(&search) * 1e3,
        median(&exec_only) * 1e3
    );

    // The report of the same incident.
    let report = dir.path().join(format!("incident-{}.html", inc.serial));
    let report_arg = report.to_string_lossy().into_owned();
    let t = Instant::now();
    console.ctl(&["report", &inc.serial.to_string(), "-o", &report_arg]);
    let report_write_s = t.elapsed().as_secs_f64();
    let report_bytes = std::fs::metadata(&report)?.len();

    // Chromium: the snapshot's page, then the report, `loads` times each.
    let out = Command::new("python3")
        .arg(script())
        .args(["--url", &base, "--token", TOKEN])
        .arg("--ca-file")
        .arg(&pki.ca.cert)
        .args(["--bench-loads", &opts.loads.to_string()])
        .args(["--bench-page", &format!("/snapshots/{id}")])
        .arg("--report")
        .arg(&report)
        .output()
        .context("run python3 tests/ui/console_ui.py")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "the browser bench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Value = text
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .context("no BENCH line from the browser bench")
        .and_then(|l| Ok(serde_json::from_str(l)?))?;
    let secs = |k: &str| -> Vec<f64> {
        b[k].as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let console_loads = secs("console_first_rows_s");
    let report_loads = secs("report_first_rows_s");
    let console_dom = secs("console_first_rows_dom_s");
    let report_dom = secs("report_first_rows_dom_s");
    let console_frame = secs("console_first_rows_frame_s");
    let report_frame = secs("report_first_rows_frame_s");
    let range = |v: &[f64]| {
        format!(
            "median {:.0} ms ({:.0}–{:.0})",
            median(v) * 1e3,
            v.iter().copied().fold(f64::INFINITY, f64::min) * 1e3,
            v.iter().copied().fold(0.0, f64::max) * 1e3
        )
    };
    println!(
        "ui bench: Chromium, first rows of {events} events: console page {} (in the DOM {}, \
         next frame {}); report ({:.1} MB, written in {:.1} s) {} (in the DOM {}, next frame {})",
        range(&console_loads),
        range(&console_dom),
        range(&console_frame),
        report_bytes as f64 / 1e6,
        report_write_s,
        range(&report_loads),
        range(&report_dom),
        range(&report_frame),
    );
    console.stop();
    drop(node);
    Ok(json!({
        "case": "ui",
        "what": "the web UI's timeline of one incident snapshot of a release fdr-agent, copied by \
                 a release fdr-console: query API latency (curl over HTTPS), navigation to the \
                 first page of rows drawn in Debian's Chromium (Playwright), and the same for \
                 the fdrctl report file opened offline",
        "snapshot_events": events,
        "snapshot_bytes": info["bytes"],
        "snapshot_completeness": info["completeness"],
        "burst_operations": ops,
        "burst_seconds": burst_s,
        "query_api": {
            "first_query_ms": first_s * 1e3,
            "first_page_bytes": first_bytes,
            "first_page": summary(&page),
            "last_page": summary(&last_page),
            "search_no_match": summary(&search),
            "exec_only": summary(&exec_only),
        },
        "browser_console": {
            "page": format!("/snapshots/{id}"),
            "first_rows": summary(&console_loads),
            "first_rows_in_dom": summary(&console_dom),
            "first_rows_next_frame": summary(&console_frame),
            "status": b["console_status"],
        },
        "report": {
            "bytes": report_bytes,
            "write_ms": report_write_s * 1e3,
            "first_rows": summary(&report_loads),
            "first_rows_in_dom": summary(&report_dom),
            "first_rows_next_frame": summary(&report_frame),
            "status": b["report_status"],
        },
    }))
}
