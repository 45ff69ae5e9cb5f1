//! The real `fdr-agent` binary refuses every out-of-bounds configuration
//! value with exit code 2 and a message naming the key, never a panic.

use std::process::Command;

use fdr_tests::{agent_binary, TempDir};

/// (TOML section, `key = value` line, the key the error must name).
const INVALID: &[(&str, &str, &str)] = &[
    ("probes", "ring_buffer_bytes = 0", "probes.ring_buffer_bytes"),
    ("probes", "ring_buffer_bytes = 2147483648", "probes.ring_buffer_bytes"),
    ("probes", "ring_buffer_bytes = 4294967295", "probes.ring_buffer_bytes"),
    (
        "probes",
        "critical_ring_buffer_bytes = 0",
        "probes.critical_ring_buffer_bytes",
    ),
    (
        "probes",
        "critical_ring_buffer_bytes = 2147483648",
        "probes.critical_ring_buffer_bytes",
    ),
    ("probes", "poll_interval = \"0s\"", "probes.poll_interval"),
    ("probes", "poll_interval = \"1h\"", "probes.poll_interval"),
    ("probes", "record_raw = \"raw.bin\"", "probes.record_raw"),
    ("capture", "watch_refresh = \"0s\"", "capture.watch_refresh"),
    ("capture", "watch_refresh = \"100years\"", "capture.watch_refresh"),
    ("capture", "disabled_kinds = [\"nonsense\"]", "capture.disabled_kinds"),
    ("capture", "sensitive_files = [\"etc/shadow\"]", "capture.sensitive_files"),
    ("capture", "critical_paths = [\"\"]", "capture.critical_paths"),
    (
        "capture",
        "excluded_paths = [\"/a/\", \"/b/\", \"/c/\", \"/d/\", \"/e/\", \"/f/\", \"/g/\", \"/h/\", \"/i/\"]",
        "capture.excluded_paths",
    ),
    ("capture", "account_files = [\"passwd\"]", "capture.account_files"),
    ("capture", "account_tools = [\"/usr/sbin/useradd\"]", "capture.account_tools"),
    ("recorder", "data_dir = \"\"", "recorder.data_dir"),
    ("recorder", "data_dir = \"var/lib/fdr\"", "recorder.data_dir"),
    ("recorder", "scope_quota_bytes = 0", "recorder.scope_quota_bytes"),
    ("recorder", "budget_bytes = 4096", "recorder.budget_bytes"),
    ("recorder", "budget_bytes = 9223372036854775807", "recorder.budget_bytes"),
    ("recorder", "exited_container_grace = \"1000years\"", "recorder.exited_container_grace"),
    ("recorder", "snapshot_before = \"0s\"", "recorder.snapshot_before"),
    ("recorder", "snapshot_before = \"584942417355years\"", "recorder.snapshot_before"),
    ("recorder", "snapshot_after = \"forever\"", "recorder.snapshot_after"),
    ("recorder", "snapshot_after = \"30days\"", "recorder.snapshot_after"),
    ("recorder", "max_snapshots = 0", "recorder.max_snapshots"),
    ("recorder", "max_snapshots = 18446744073709551615", "recorder.max_snapshots"),
    ("recorder", "max_snapshot_bytes = 0", "recorder.max_snapshot_bytes"),
    ("recorder", "exited_process_grace = \"0s\"", "recorder.exited_process_grace"),
    ("recorder", "critical_reserve_percent = 95", "recorder.critical_reserve_percent"),
    ("recorder", "critical_reserve_percent = 300", "recorder.critical_reserve_percent"),
    ("recorder", "snapshots_open_bytes = 0", "recorder.snapshots_open_bytes"),
    ("recorder", "snapshot_max_bytes = 0", "recorder.snapshot_max_bytes"),
    ("recorder", "snapshot_max_bytes = 1073741824", "recorder.snapshot_max_bytes"),
    ("attribution", "runtime_poll = \"0s\"", "attribution.runtime_poll"),
    ("attribution", "runtime_poll = \"1ns\"", "attribution.runtime_poll"),
    ("attribution", "tombstone_ttl = \"0s\"", "attribution.tombstone_ttl"),
    ("attribution", "tombstone_ttl = \"500000years\"", "attribution.tombstone_ttl"),
    ("attribution", "ancestry_depth = 1000000", "attribution.ancestry_depth"),
    ("attribution", "runtime_endpoints = [\"containerd.sock\"]", "attribution.runtime_endpoints"),
    ("attribution", "engine_endpoints = [\"\"]", "attribution.engine_endpoints"),
    ("analysis", "learning_period = \"0s\"", "analysis.learning_period"),
    ("analysis", "incident_window = \"1000years\"", "analysis.incident_window"),
    ("analysis", "max_items_per_section = 0", "analysis.max_items_per_section"),
    ("analysis", "max_models = 0", "analysis.max_models"),
    ("analysis", "max_total_items = 9223372036854775807", "analysis.max_total_items"),
    ("analysis", "scan_threshold = 0", "analysis.scan_threshold"),
    ("analysis", "scan_window = \"0s\"", "analysis.scan_window"),
    ("analysis", "exfil_window = \"0s\"", "analysis.exfil_window"),
    ("analysis", "max_audits_per_incident = 0", "analysis.max_audits_per_incident"),
    ("api", "socket = \"\"", "api.socket"),
    ("api", "socket = \"fdr.sock\"", "api.socket"),
    ("api", "stream_queue = 0", "api.stream_queue"),
    ("api", "stream_queue = 1000000000", "api.stream_queue"),
    ("api", "stream_queue = 9223372036854775807", "api.stream_queue"),
    ("api", "stream_queue_bytes = 0", "api.stream_queue_bytes"),
    ("api", "stream_queue_bytes = 9223372036854775807", "api.stream_queue_bytes"),
    ("api", "tcp_listen = \"0.0.0.0:7077\"", "api.tcp_listen"),
    ("health", "listen = \"localhost:6789\"", "health.listen"),
    ("health", "stall_after = \"0s\"", "health.stall_after"),
    ("metrics", "listen = \"9477\"", "metrics.listen"),
    ("log", "level = \"fdr_agent=[\"", "log.level"),
    ("log", "format = \"xml\"", "log.format"),
    ("host", "root = \"host\"", "host.root"),
    ("host", "node_name = \"a\\nb\"", "host.node_name"),
    // Parse errors name the key too.
    ("recorder", "budget_bytes = -1", "recorder.budget_bytes"),
    ("api", "stream_queue = \"many\"", "api.stream_queue"),
    ("probes", "poll_interval = \"soon\"", "probes.poll_interval"),
    ("api", "sockt = \"/run/fdr.sock\"", "sockt"),
    ("export.otlp", "enabled = true", "export.otlp.endpoint"),
    ("export.otlp", "endpoint = \"http://10.0.0.1:4317\"", "export.otlp.endpoint"),
    ("export.otlp", "endpoint = \"collector:4317\"", "export.otlp.endpoint"),
    ("export.otlp", "endpoint = \"http://[::1]@collector.example:4317\"", "export.otlp.endpoint"),
    ("export.otlp", "batch_bytes = 67108864", "export.otlp.batch_bytes"),
    ("export.otlp.resource_attributes", "\"service.instance.id\" = \"x\"", "export.otlp.resource_attributes"),
    ("export.otlp", "max_bytes = 1", "export.otlp.max_bytes"),
    ("export.otlp", "backoff_initial = \"1h\"", "export.otlp.backoff_initial"),
    ("export.otlp", "timeout = \"0s\"", "export.otlp.timeout"),
    ("export.otlp.raw_events", "kinds = [\"nonsense\"]", "export.otlp.raw_events.kinds"),
    ("export.otlp.raw_events", "per_second = 0", "export.otlp.raw_events.per_second"),
];

fn run_with(dir: &TempDir, n: usize, toml: &str) -> std::process::Output {
    let file = dir.path().join(format!("bad-{n}.toml"));
    std::fs::write(&file, toml).expect("write config");
    let mut child = Command::new(agent_binary())
        .arg("--config")
        .arg(&file)
        // Nothing may be touched even if a value slipped through.
        .arg("--socket")
        .arg(dir.path().join("never.sock"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run fdr-agent");
    // A value that slipped through starts the agent: stop it, and the row
    // fails on its exit status.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("fdr-agent output")
}

#[test]
fn every_invalid_value_is_refused_with_exit_code_2_naming_its_key() {
    let dir = TempDir::new("config");
    let mut failures = Vec::new();
    for (n, (section, line, key)) in INVALID.iter().enumerate() {
        let toml = format!("[{section}]\n{line}\n");
        let out = run_with(&dir, n, &toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ok = out.status.code() == Some(2)
            && stderr.contains(key)
            && !stderr.contains("panicked")
            && stderr.len() < 4096;
        if !ok {
            failures.push(format!(
                "[{section}] {line}: exit {:?}, stderr {stderr:?}",
                out.status.code()
            ));
        }
    }
    assert!(dir.path().read_dir().unwrap().all(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("bad-")));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_huge_value_is_not_echoed_whole() {
    let dir = TempDir::new("config-huge");
    let huge = format!("[recorder]\ndata_dir = \"{}\"\n", "x".repeat(1 << 20));
    let out = run_with(&dir, 0, &huge);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        &stderr[..stderr.len().min(500)]
    );
    assert!(stderr.contains("recorder.data_dir"), "{stderr}");
    assert!(stderr.len() < 4096, "stderr of {} bytes", stderr.len());
}

#[test]
fn the_default_config_is_valid_and_printed_verbatim() {
    let out = Command::new(agent_binary())
        .arg("--print-default-config")
        .output()
        .expect("run fdr-agent");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let cfg: fdr_agent::config::Config = toml_from(&printed);
    cfg.validate().expect("the defaults are valid");
}

fn toml_from(text: &str) -> fdr_agent::config::Config {
    let dir = TempDir::new("config-default");
    let file = dir.path().join("fdr.toml");
    std::fs::write(&file, text).expect("write");
    fdr_agent::config::Config::load(&file).expect("loads")
}
