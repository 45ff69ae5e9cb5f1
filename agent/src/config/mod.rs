//! Foundation: agent configuration, a TOML file with documented defaults;
//! command-line flags override it. `fdr-agent --print-default-config`
//! prints the defaults. Values are checked here ([`validate`]); the rules'
//! own vocabulary is checked by the stage that owns them
//! (`analysis::model::rules::check`). Imports: `util`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

mod analysis;
mod export;
mod host;
mod live;
mod observe;
mod validate;

pub use analysis::{AnalysisConfig, RuleAction, RuleConfig};
pub use export::ExportConfig;
pub use host::HostConfig;
pub use live::LiveConfig;
pub use observe::{HealthConfig, MetricsConfig};
pub use validate::{bounds, total_ram};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `at`: the key (`section.key`) and line where the parser stopped.
    #[error("parsing config {path}: {at}: {message}")]
    Parse {
        path: String,
        at: String,
        message: String,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub probes: ProbesConfig,
    pub capture: CaptureConfig,
    pub recorder: RecorderConfig,
    pub attribution: AttributionConfig,
    pub analysis: AnalysisConfig,
    pub api: ApiConfig,
    pub live: LiveConfig,
    pub log: LogConfig,
    pub host: HostConfig,
    pub health: HealthConfig,
    pub metrics: MetricsConfig,
    pub export: ExportConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProbesConfig {
    /// Size of the kernel → agent ring buffer of all but the critical kinds,
    /// in bytes, rounded up to a power of two. Default 4 MiB: about 21k file
    /// records, over 100 ms of the busiest flood this agent was measured to
    /// produce while it reads at least as fast (see the README's
    /// Benchmarks). Between the page size and 1 GiB; with
    /// `recorder.budget_bytes` and `critical_ring_buffer_bytes`, the rings
    /// must fit in half the machine's RAM. Both rings are resident memory of
    /// the agent (twice their size: the kernel maps their data twice).
    pub ring_buffer_bytes: u32,
    /// Size of the ring of the critical kinds (exec, privilege and account
    /// changes, critical files, listen/bind, sensitive reads), which floods
    /// of other kinds cannot fill. Default 2 MiB: about 3 300 exec records
    /// of a short command line.
    /// Same bounds as `ring_buffer_bytes`.
    pub critical_ring_buffer_bytes: u32,
    /// How often the agent drains the rings while records arrive. The
    /// kernel wakes it earlier only when an eighth of a ring is pending: a
    /// wake-up per event would cost more than the probes themselves. After
    /// 10 polls that found nothing the agent sleeps until the next record
    /// wakes it. Default 10ms; between 1ms and 1s.
    #[serde(with = "duration_serde")]
    pub poll_interval: std::time::Duration,
    /// Debugging and benchmarks: append every raw kernel record to this
    /// file (each prefixed by its length, u32 little-endian), to be
    /// replayed later. Default: off. An absolute path.
    pub record_raw: Option<PathBuf>,
}

/// What is captured, and what never leaves the kernel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Event kinds switched off (dropped in the kernel), by name, e.g.
    /// `["write"]`. Default: none. Unknown names are an error.
    pub disabled_kinds: Vec<String>,
    /// Files whose read-only opens are reported (`sensitive-read`). `*`
    /// matches within one path component. Resolved on the host and inside
    /// each running container's root (its own `/etc/shadow`, service-account
    /// token, cloud credentials), again every `watch_refresh` and when a
    /// container starts. Absolute paths (at most 4096 bytes each, 4096
    /// entries); a container's matches count at most 64 keys.
    pub sensitive_files: Vec<String>,
    /// Files and directories whose changes travel in the critical ring
    /// (directories: their whole subtree), and absolute-path prefixes
    /// routed there. Absolute paths; with `excluded_paths` and
    /// `recorder.data_dir`, at most 8 distinct entries without wildcards,
    /// each at most 64 bytes (the kernel compares those prefixes).
    pub critical_paths: Vec<String>,
    /// Directories never reported (their subtree), e.g. the agent's own
    /// data. `/proc` and `/sys` are pseudo filesystems, excluded anyway.
    /// Absolute paths; see `critical_paths` for the limits.
    pub excluded_paths: Vec<String>,
    /// Files whose changes are account modifications. A name ending in `/`
    /// is a directory (every file in it); `*` matches within a component.
    /// Absolute paths.
    pub account_files: Vec<String>,
    /// Programs (file names) that change accounts: 1 to 255 bytes, no `/`.
    pub account_tools: Vec<String>,
    /// How often the watched files are resolved again (files get replaced).
    /// Default 10s; between 1s and 1h.
    #[serde(with = "duration_serde")]
    pub watch_refresh: std::time::Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// Where the agent keeps its data; never itself recorded. Default
    /// `/var/lib/fdr`. An absolute path.
    pub data_dir: PathBuf,
    /// Memory one scope's buffer (a container's, or the host's) may use;
    /// its oldest events go first beyond it. Default 16 MiB; at least 4096
    /// and at most `budget_bytes`.
    pub scope_quota_bytes: u64,
    /// Memory all buffers together may use; beyond it the largest scope
    /// loses its oldest events. Default 128 MiB; at least
    /// `scope_quota_bytes`, and with the two kernel rings at most half the
    /// machine's RAM (`MemTotal`).
    pub budget_bytes: u64,
    /// How long a gone container's buffer is kept after its last event.
    /// Default 10 minutes; at most 7 days.
    #[serde(with = "duration_serde")]
    pub exited_container_grace: std::time::Duration,
    /// History a snapshot keeps before its moment. Default 5 minutes;
    /// between 1s and 1 day.
    #[serde(with = "duration_serde")]
    pub snapshot_before: std::time::Duration,
    /// History a snapshot keeps after its moment. Default 60 seconds; at
    /// most 1h.
    #[serde(with = "duration_serde")]
    pub snapshot_after: std::time::Duration,
    /// Snapshots kept on disk. Over this or `max_snapshot_bytes`, snapshots
    /// of no incident are evicted first, then incident ones, oldest first.
    /// Default 100; between 1 and 1 000 000.
    pub max_snapshots: usize,
    /// Bytes of snapshots kept on disk. Default 1 GiB; between 1 MiB and
    /// 1 PiB.
    pub max_snapshot_bytes: u64,
    /// How long an exited process stays in the process table, so that late
    /// events and queries still find it. Default 5 minutes; between 1s and
    /// 1 day.
    #[serde(with = "duration_serde")]
    pub exited_process_grace: std::time::Duration,
    /// Share (percent) of each scope's quota, and of the open snapshots'
    /// limits, reserved for critical kinds (exec, listen, bind, privilege
    /// and account changes, sensitive reads, written binaries, container
    /// starts and stops, model items, audits): under memory pressure bulk
    /// kinds (writes, unlinks, connects, accepts, forks, exits, …) are
    /// evicted or refused first, and never from this share. 0–90.
    /// Default 25.
    pub critical_reserve_percent: u8,
    /// Memory one open snapshot may hold (its before-part and its
    /// after-part so far); beyond it, events of its window are counted as
    /// a gap instead of kept. Charged to `budget_bytes`. Default 32 MiB.
    pub snapshot_max_bytes: u64,
    /// Memory all open snapshots together may hold; charged to
    /// `budget_bytes` (the buffers shrink while snapshots are open). Both
    /// limits are clamped to half of `budget_bytes`. Default 64 MiB.
    pub snapshots_open_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AttributionConfig {
    /// CRI sockets of container runtimes, tried in order; the first that
    /// exists is used for container, pod and image metadata. Default:
    /// containerd's and CRI-O's usual sockets. Empty: no runtime (events
    /// are still attributed to container ids from cgroup paths).
    /// Absolute paths.
    pub runtime_endpoints: Vec<PathBuf>,
    /// Docker Engine API sockets (dockerd, or podman's compatible
    /// service), tried in order: they name containers no CRI runtime knows
    /// (`docker run`, `podman run`). Default: docker's and podman's usual
    /// sockets. Empty: none. Absolute paths.
    pub engine_endpoints: Vec<PathBuf>,
    /// How often the runtime's container list is read for starts and
    /// stops (a container the kernel shows first is looked up at once).
    /// Default 2s; between 100ms and 1h.
    #[serde(with = "duration_serde")]
    pub runtime_poll: std::time::Duration,
    /// How long a stopped container's metadata is kept (its tombstone),
    /// so events and queries still name its pod. Default 1h; between 1s
    /// and 7 days.
    #[serde(with = "duration_serde")]
    pub tombstone_ttl: std::time::Duration,
    /// Ancestors listed with an event (nearest first). Default 16; at most
    /// 64.
    pub ancestry_depth: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket of the gRPC API, created with mode 0600 (root only).
    /// Default `/run/fdr/fdr.sock`; an absolute path of at most 100 bytes. The agent refuses to
    /// start when another agent answers on it, and never replaces a file
    /// that is not a socket.
    pub socket: PathBuf,
    /// Optional TCP listener (e.g. `127.0.0.1:7077`). Off when empty. A
    /// non-loopback address requires TLS (`tls_cert_file`, `tls_key_file`)
    /// and client authentication (`tcp_token_file`, `tls_client_ca_file`
    /// or both): forensic data never crosses a network in the clear, nor
    /// to an unauthenticated client.
    pub tcp_listen: Option<SocketAddr>,
    /// File holding a bearer token TCP clients must send
    /// (`authorization: Bearer <token>`). Default: none. Absolute paths
    /// for this and the TLS files.
    pub tcp_token_file: Option<PathBuf>,
    /// PEM certificate (chain) of the TCP listener: serves TLS. Default:
    /// none (plain HTTP/2, loopback only).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): TCP clients must present a certificate
    /// signed by one of them (mutual TLS). Default: none.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Events queued per `StreamEvents` client before it starts losing
    /// events (capture never waits for a client). Default 4096; between 1
    /// and 1048576.
    pub stream_queue: usize,
    /// Bytes of events queued for one `StreamEvents` client (with
    /// `stream_queue` events at most); beyond either, events are skipped
    /// for that client, counted per kind and announced to it. Default 8 MiB.
    pub stream_queue_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `fdr_agent=debug`; checked at
    /// start, applied again on SIGHUP. `--log-level` overrides it and
    /// `RUST_LOG` overrides both. Default `info`.
    pub level: String,
    /// `text` (one line per event, for a terminal or journald) or `json`
    /// (one JSON object per line, for log pipelines). `--log-format`
    /// overrides it. Default `text`.
    pub format: LogFormat,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        ProbesConfig {
            ring_buffer_bytes: 4 << 20,
            critical_ring_buffer_bytes: 2 << 20,
            poll_interval: std::time::Duration::from_millis(10),
            record_raw: None,
        }
    }
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            runtime_endpoints: [
                "/run/containerd/containerd.sock",
                "/var/run/containerd/containerd.sock",
                "/run/crio/crio.sock",
                "/var/run/crio/crio.sock",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            engine_endpoints: ["/run/docker.sock", "/run/podman/podman.sock"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            runtime_poll: std::time::Duration::from_secs(2),
            tombstone_ttl: std::time::Duration::from_secs(3600),
            ancestry_depth: 16,
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            disabled_kinds: Vec::new(),
            sensitive_files: strings(&[
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/passwd",
                "/etc/sudoers",
                "/root/.ssh/id_*",
                "/home/*/.ssh/id_*",
                "/root/.ssh/authorized_keys",
                "/home/*/.ssh/authorized_keys",
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
                "/run/secrets/kubernetes.io/serviceaccount/token",
                "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
                "/run/secrets/eks.amazonaws.com/serviceaccount/token",
                "/var/lib/kubelet/pods/*/volumes/kubernetes.io~projected/*/token",
                "/root/.aws/credentials",
                "/home/*/.aws/credentials",
                "/root/.config/gcloud/*.db",
                "/home/*/.config/gcloud/*.db",
                "/root/.config/gcloud/*.json",
                "/home/*/.config/gcloud/*.json",
                "/root/.azure/*.json",
                "/home/*/.azure/*.json",
                "/root/.kube/config",
                "/home/*/.kube/config",
                "/root/.docker/config.json",
                "/home/*/.docker/config.json",
            ]),
            critical_paths: strings(&["/etc/", "/root/.ssh/", "/home/*/.ssh/"]),
            excluded_paths: strings(&["/proc/", "/sys/", "/var/lib/fdr/"]),
            account_files: strings(&[
                "/etc/passwd",
                "/etc/shadow",
                "/etc/group",
                "/etc/gshadow",
                "/etc/sudoers",
                "/etc/sudoers.d/",
                "/etc/subuid",
                "/etc/subgid",
                "/root/.ssh/authorized_keys",
                "/home/*/.ssh/authorized_keys",
            ]),
            account_tools: strings(&[
                "useradd", "adduser", "usermod", "userdel", "deluser", "passwd", "chpasswd",
                "chage", "chsh", "chfn", "groupadd", "addgroup", "groupmod", "groupdel",
                "delgroup", "gpasswd", "newusers", "vipw", "vigr", "visudo",
            ]),
            watch_refresh: std::time::Duration::from_secs(10),
        }
    }
}

impl CaptureConfig {
    /// The kinds to capture.
    pub fn kinds(&self) -> Result<Vec<fdr_common::EventKind>, ConfigError> {
        for name in &self.disabled_kinds {
            if fdr_common::EventKind::from_name(name).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "capture.disabled_kinds: unknown kind {name:?}"
                )));
            }
        }
        Ok(fdr_common::EventKind::ALL
            .into_iter()
            .filter(|k| !self.disabled_kinds.iter().any(|d| d == k.name()))
            .collect())
    }
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            data_dir: PathBuf::from("/var/lib/fdr"),
            scope_quota_bytes: 16 << 20,
            budget_bytes: 128 << 20,
            exited_container_grace: std::time::Duration::from_secs(600),
            snapshot_before: std::time::Duration::from_secs(300),
            snapshot_after: std::time::Duration::from_secs(60),
            max_snapshots: 100,
            max_snapshot_bytes: 1 << 30,
            exited_process_grace: std::time::Duration::from_secs(300),
            critical_reserve_percent: 25,
            snapshot_max_bytes: 32 << 20,
            snapshots_open_bytes: 64 << 20,
        }
    }
}

impl ApiConfig {
    /// Whether the TCP listener serves TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_values()?;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return invalid("api.tls_cert_file and api.tls_key_file go together".into());
        }
        if self.tls_client_ca_file.is_some() && !self.tls() {
            return invalid(
                "api.tls_client_ca_file needs api.tls_cert_file and api.tls_key_file".into(),
            );
        }
        let Some(addr) = self.tcp_listen else {
            if self.tls() || self.tcp_token_file.is_some() {
                return invalid("api TLS and token settings need api.tcp_listen".into());
            }
            return Ok(());
        };
        if addr.ip().is_loopback() {
            return Ok(());
        }
        if !self.tls() {
            return invalid(format!(
                "api.tcp_listen = {addr} is not a loopback address: set api.tls_cert_file and \
                 api.tls_key_file, so that forensic data never crosses the network in the clear"
            ));
        }
        if self.tcp_token_file.is_none() && self.tls_client_ca_file.is_none() {
            return invalid(format!(
                "api.tcp_listen = {addr} is not a loopback address: set api.tcp_token_file, \
                 api.tls_client_ca_file or both, so that clients must authenticate"
            ));
        }
        Ok(())
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from("/run/fdr/fdr.sock"),
            tcp_listen: None,
            tcp_token_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            stream_queue: 4096,
            stream_queue_bytes: 8 << 20,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            at: parse_error_place(&text, e.span()),
            message: crate::util::clip_to(e.message().trim(), 1024).into_owned(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults as a commented TOML document.
    pub fn default_toml() -> String {
        include_str!("../../../deploy/fdr.toml").to_owned()
    }
}

/// Where a parse error is, for its message: the dotted key of the line it
/// is on (after the last `[section]` header above it) and the line number;
/// never the line itself, which may be huge.
fn parse_error_place(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(start) = span.map(|s| s.start.min(text.len())) else {
        return "somewhere".into();
    };
    let before = text.get(..start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let dotted = match (section, key) {
        (Some(s), Some(k)) => format!("{}.{}", crate::util::clip(s), crate::util::clip(k)),
        (None, Some(k)) => crate::util::clip(k).into_owned(),
        (Some(s), None) => format!("[{}]", crate::util::clip(s)),
        (None, None) => String::new(),
    };
    if dotted.is_empty() {
        format!("line {line_no}")
    } else {
        format!("{dotted} (line {line_no})")
    }
}

/// Durations written as `"5m"`, `"30s"`, `"1h 30m"` (shared with the
/// export's section).
use fdr_export::config::duration_serde;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_the_default() {
        let parsed: Config = toml::from_str(&Config::default_toml()).expect("parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let cfg: Config = toml::from_str("[api]\nsocket = \"/tmp/x.sock\"\n").unwrap();
        assert_eq!(cfg.api.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(cfg.recorder, RecorderConfig::default());
        assert_eq!(cfg.probes.ring_buffer_bytes, 4 << 20);
        assert_eq!(cfg.probes.critical_ring_buffer_bytes, 2 << 20);
    }

    #[test]
    fn rejects_unknown_keys_and_unauthenticated_remote_tcp() {
        assert!(toml::from_str::<Config>("[api]\nsockt = \"/x\"\n").is_err());
        let mut cfg = Config::default();
        cfg.api.tcp_listen = Some("0.0.0.0:7077".parse().unwrap());
        assert!(cfg.validate().is_err());
        cfg.api.tcp_listen = Some("127.0.0.1:7077".parse().unwrap());
        assert!(cfg.validate().is_ok());
        cfg.api.tcp_listen = Some("0.0.0.0:7077".parse().unwrap());
        cfg.api.tcp_token_file = Some("/etc/fdr/token".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("in the clear"),
            "a token alone, over plain TCP: {err}"
        );
        cfg.api.tls_cert_file = Some("/etc/fdr/tls.crt".into());
        assert!(cfg.validate().is_err(), "a certificate without its key");
        cfg.api.tls_key_file = Some("/etc/fdr/tls.key".into());
        assert!(cfg.validate().is_ok(), "TLS and a token");
        cfg.api.tcp_token_file = None;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("authenticate"),
            "TLS without client auth: {err}"
        );
        cfg.api.tls_client_ca_file = Some("/etc/fdr/clients-ca.crt".into());
        assert!(cfg.validate().is_ok(), "mutual TLS");
        cfg.api.tcp_listen = None;
        assert!(cfg.validate().is_err(), "TLS settings without a listener");
    }

    #[test]
    fn defaults_are_valid_and_out_of_bounds_values_name_their_key() {
        Config::default().validate().expect("defaults are valid");
        type Tweak = fn(&mut Config);
        let cases: [(&str, Tweak); 8] = [
            ("attribution.runtime_poll", |c| {
                c.attribution.runtime_poll = std::time::Duration::ZERO
            }),
            ("capture.watch_refresh", |c| {
                c.capture.watch_refresh = std::time::Duration::ZERO
            }),
            ("api.stream_queue", |c| c.api.stream_queue = usize::MAX),
            ("recorder.data_dir", |c| c.recorder.data_dir = "".into()),
            ("recorder.data_dir", |c| c.recorder.data_dir = "rel".into()),
            ("recorder.max_snapshots", |c| c.recorder.max_snapshots = 0),
            ("attribution.ancestry_depth", |c| {
                c.attribution.ancestry_depth = 65
            }),
            ("recorder.budget_bytes", |c| {
                c.recorder.budget_bytes = u64::MAX
            }),
        ];
        for (key, tweak) in cases {
            let mut cfg = Config::default();
            tweak(&mut cfg);
            let err = cfg.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn parse_errors_name_the_key_without_echoing_the_line() {
        let dir = std::env::temp_dir().join(format!("fdr-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        let huge = "9".repeat(100_000);
        std::fs::write(&file, format!("[api]\n\nstream_queue = {huge}\n")).unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("api.stream_queue (line 3)"), "{err}");
        assert!(err.len() < 2000, "{} bytes", err.len());
    }

    #[test]
    fn durations_are_human_readable() {
        let cfg: Config = toml::from_str("[recorder]\nexited_process_grace = \"90s\"\n").unwrap();
        assert_eq!(cfg.recorder.exited_process_grace.as_secs(), 90);
    }
}
