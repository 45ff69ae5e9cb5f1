//! The web UI in a real browser (issue 13): one real agent (TLS API with
//! client certificates and a token), one real `fdr-console` with its web UI
//! on its own HTTPS port (a certificate of the test PKI; an admin and a
//! viewer token), a real incident (an interactive `useradd` in a private
//! mount namespace) preceded by a marker command run twice. Once the console
//! holds the incident with its snapshot, the expected CSV comes from
//! `fdrctl snapshot export --format csv` and the single-file report from
//! `fdrctl report`; then `tests/ui/console_ui.py` drives Debian's Chromium
//! with Playwright for Python through the pages, the timeline, the package
//! download, the CSRF refusals and the report opened offline, and saves
//! screenshots under `target/ui-screenshots/`.
//!
//! Nothing is skipped: without `/usr/bin/chromium` or Playwright the test
//! fails and says so (`cargo xtask setup` installs both).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use fdr_tests::{
    fleet::{self, poll, Console, Node, SLOW, TOKEN},
    TempDir,
};

const VIEWER_TOKEN: &str = "fdr-console-test-viewer-token-3b9c";
const CHROMIUM: &str = "/usr/bin/chromium";

/// The Playwright script, beside this crate's tests.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/console_ui.py")
}

/// `target/ui-screenshots/`, replaced by each run.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Chromium and Playwright are there, or the test fails saying what to do.
fn require_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} missing: the web UI test needs Debian's chromium (`cargo xtask setup` \
         installs it: apt-get install chromium)"
    );
    let out = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "Playwright for Python missing (`cargo xtask setup` installs it: python3 -m pip \
         install playwright): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows of `csv` (the header aside) with `needle` in any cell, ignoring
/// case: what the timeline's search must find.
fn rows_with(csv: &[u8], needle: &str) -> usize {
    let needle = needle.to_lowercase();
    let mut r = ::csv::Reader::from_reader(csv);
    r.records()
        .map(|rec| rec.expect("a CSV record"))
        .filter(|rec| rec.iter().any(|c| c.to_lowercase().contains(&needle)))
        .count()
}

/// The console's `[web]` section: HTTPS on `port` with `cert`, an admin
/// and a viewer token file.
fn web_settings(
    cfg: &mut fdr_console::config::Config,
    port: u16,
    cert: &fdr_tests::pki::Pair,
    admin: &Path,
    viewer: &Path,
) {
    cfg.web.enabled = true;
    cfg.web.listen = format!("127.0.0.1:{port}").parse().expect("address");
    cfg.web.tls_cert_file = Some(cert.cert.clone());
    cfg.web.tls_key_file = Some(cert.key.clone());
    cfg.web.admin_token_file = Some(admin.to_path_buf());
    cfg.web.token_file = Some(viewer.to_path_buf());
}

#[test]
fn the_web_ui_in_chromium_shows_the_incident_and_its_timeline() {
    require_browser();
    let _one = fleet::serial();
    let dir = TempDir::new("ui");
    let pki = fleet::pki(dir.path());
    let web_cert = pki.ca.server("console-web");
    let viewer = dir.path().join("viewer-token");
    std::fs::write(&viewer, format!("{VIEWER_TOKEN}\n")).expect("viewer token");
    let node_name = format!("ui-node-{}", std::process::id());
    let node = Node::start(dir.path(), &node_name, &pki);
    let web_port = fleet::free_port();
    let mut console = Console::new(dir.path(), &[node.url()], &pki, 100, |cfg| {
        web_settings(cfg, web_port, &web_cert, &pki.token, &viewer)
    });
    console.start();
    // A web UI that fails to start leaves the console running: its log
    // says why.
    let deadline = Instant::now() + SLOW;
    while std::net::TcpStream::connect(("127.0.0.1", web_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the console's web UI never listened on {web_port}:\n{}",
            console.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    poll("the agent reachable", SLOW, || {
        let out = console.ctl(&["agents", "--json"]);
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|a| a["node"] == node_name.as_str() && a["reachable"] == true)
    });

    // The marker, twice, then the incident: both in its before-window.
    let marker = fdr_tests::unique("ui-marker");
    for _ in 0..2 {
        let st = Command::new("/bin/sh")
            .args(["-c", &format!("true {marker}")])
            .status()
            .expect("sh");
        assert!(st.success());
    }
    let user = fleet::interactive_useradd(dir.path());
    let inc = console.wait_incident(&node_name, &user);
    let id = inc.snapshot_id.to_string();
    let serial = inc.serial.to_string();

    let csv = console.ctl(&["snapshot", "export", &id, "--format", "csv"]);
    let expected_csv = dir.path().join("expected.csv");
    std::fs::write(&expected_csv, &csv).expect("write CSV");
    let marker_rows = rows_with(&csv, &marker);
    assert!(
        marker_rows >= 2,
        "the snapshot holds {marker_rows} rows of the marker command run twice"
    );
    let list = console.ctl(&["snapshot", "list", "--json"]);
    let sha256 = String::from_utf8_lossy(&list)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|s| s["id"].as_u64() == Some(inc.snapshot_id))
        .and_then(|s| s["sha256"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("snapshot {id} listed with its sha256"));
    let report = dir.path().join(format!("incident-{serial}.html"));
    let report_arg = report.to_string_lossy().into_owned();
    console.ctl(&["report", &serial, "-o", &report_arg]);
    assert!(report.is_file(), "fdrctl report wrote {}", report.display());

    let shots = screenshot_dir();
    let out = Command::new("python3")
        .arg(script())
        .args(["--url", &format!("https://127.0.0.1:{web_port}")])
        .args(["--token", TOKEN, "--viewer-token", VIEWER_TOKEN])
        .arg("--ca-file")
        .arg(&pki.ca.cert)
        .args(["--serial", &serial, "--snapshot", &id, "--sha256", &sha256])
        .args(["--node", &node_name, "--user", &user, "--marker", &marker])
        .args(["--marker-rows", &marker_rows.to_string()])
        .arg("--expected-csv")
        .arg(&expected_csv)
        .arg("--report")
        .arg(&report)
        .arg("--screenshots")
        .arg(&shots)
        .output()
        .expect("run python3 (tests/ui/console_ui.py)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{text}\nconsole log:\n{}",
        out.status,
        console.log()
    );
    for name in [
        "incident-1280x800.png",
        "timeline-1280x800.png",
        "timeline-420x800.png",
    ] {
        assert!(shots.join(name).is_file(), "screenshot {name} saved");
    }
    console.stop();
    drop(node);
}
