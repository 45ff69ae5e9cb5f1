//! Bounds of every configuration value, checked before anything starts: a
//! bad value is a clear error naming its key, never a panic later on.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{ApiConfig, Config, ConfigError};
use crate::util::clip;

const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Bounds of the values, shared by the checks and their doc comments.
pub mod bounds {
    use super::*;

    pub const RING_MAX: u64 = GIB;
    pub const POLL_INTERVAL: (Duration, Duration) = (Duration::from_millis(1), SEC);
    pub const WATCH_REFRESH: (Duration, Duration) = (SEC, HOUR);
    pub const SCOPE_QUOTA_MIN: u64 = 4096;
    pub const EXITED_CONTAINER_GRACE: (Duration, Duration) =
        (Duration::ZERO, DAY.saturating_mul(7));
    pub const SNAPSHOT_BEFORE: (Duration, Duration) = (SEC, DAY);
    pub const SNAPSHOT_AFTER: (Duration, Duration) = (Duration::ZERO, HOUR);
    pub const MAX_SNAPSHOTS: (u64, u64) = (1, 1_000_000);
    pub const MAX_SNAPSHOT_BYTES: (u64, u64) = (MIB, 1 << 50);
    pub const EXITED_PROCESS_GRACE: (Duration, Duration) = (SEC, DAY);
    pub const RUNTIME_POLL: (Duration, Duration) = (Duration::from_millis(100), HOUR);
    pub const TOMBSTONE_TTL: (Duration, Duration) = (SEC, DAY.saturating_mul(7));
    pub const ANCESTRY_DEPTH: (u64, u64) = (0, 64);
    pub const LEARNING_PERIOD: (Duration, Duration) = (SEC, DAY.saturating_mul(365));
    pub const INCIDENT_WINDOW: (Duration, Duration) = (SEC, DAY.saturating_mul(365));
    pub const MAX_ITEMS_PER_SECTION: (u64, u64) = (1, 1_000_000);
    pub const MAX_MODELS: (u64, u64) = (1, 1_000_000);
    pub const MAX_TOTAL_ITEMS: (u64, u64) = (1, 10_000_000);
    pub const SCAN_THRESHOLD: (u64, u64) = (2, 65_536);
    pub const SCAN_WINDOW: (Duration, Duration) = (SEC, DAY);
    pub const EXFIL_WINDOW: (Duration, Duration) = (SEC, DAY);
    pub const MAX_AUDITS_PER_INCIDENT: (u64, u64) = (1, 100_000);
    pub const SOCKET_PATH_MAX: usize = 100;
    pub const STREAM_QUEUE: (u64, u64) = (1, 1 << 20);
    /// Patterns per capture list.
    pub const LIST_MAX: usize = 4096;
    /// Bytes of a path or pattern (Linux's PATH_MAX).
    pub const PATH_MAX: usize = 4096;
}

fn invalid(key: &str, shown: impl std::fmt::Display, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{key} = {shown}: {why}"))
}

fn duration(key: &str, d: Duration, (lo, hi): (Duration, Duration)) -> Result<(), ConfigError> {
    if d < lo || d > hi {
        let f = |d: Duration| humantime::format_duration(d).to_string();
        let shown = format!("{:?}", f(d));
        return Err(if lo.is_zero() {
            invalid(key, shown, format_args!("must be at most {}", f(hi)))
        } else {
            invalid(
                key,
                shown,
                format_args!("must be between {} and {}", f(lo), f(hi)),
            )
        });
    }
    Ok(())
}

fn int(key: &str, v: u64, (lo, hi): (u64, u64)) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(
            key,
            v,
            format_args!("must be between {lo} and {hi}"),
        ));
    }
    Ok(())
}

/// A path the agent opens: absolute, no NUL byte, at most PATH_MAX bytes.
fn path(key: &str, p: &Path) -> Result<(), ConfigError> {
    let text = p.to_string_lossy();
    let shown = format!("{:?}", clip(&text));
    if text.is_empty() {
        return Err(invalid(key, shown, "must not be empty"));
    }
    if !p.is_absolute() {
        return Err(invalid(key, shown, "must be an absolute path"));
    }
    if text.len() > bounds::PATH_MAX || text.contains('\0') {
        return Err(invalid(
            key,
            shown,
            format_args!("must be at most {} bytes, without NUL", bounds::PATH_MAX),
        ));
    }
    Ok(())
}

fn paths(key: &str, ps: &[PathBuf]) -> Result<(), ConfigError> {
    if ps.len() > bounds::LIST_MAX {
        return Err(invalid(
            key,
            format!("[{} entries]", ps.len()),
            format_args!("at most {} entries", bounds::LIST_MAX),
        ));
    }
    ps.iter().try_for_each(|p| path(key, p))
}

/// Patterns of absolute paths (`*` within a component).
fn patterns(key: &str, ps: &[String]) -> Result<(), ConfigError> {
    if ps.len() > bounds::LIST_MAX {
        return Err(invalid(
            key,
            format!("[{} entries]", ps.len()),
            format_args!("at most {} entries", bounds::LIST_MAX),
        ));
    }
    ps.iter().try_for_each(|p| path(key, Path::new(p)))
}

/// The machine's RAM in bytes (`MemTotal`), when it can be read.
pub fn total_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

impl Config {
    /// Checks every value against its documented bounds; the first one out
    /// of bounds is the error, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.probes;
        let page = page_size();
        for (key, bytes) in [
            ("probes.ring_buffer_bytes", p.ring_buffer_bytes),
            (
                "probes.critical_ring_buffer_bytes",
                p.critical_ring_buffer_bytes,
            ),
        ] {
            let ring = u64::from(bytes);
            if ring < page || ring > bounds::RING_MAX {
                return Err(invalid(
                    key,
                    ring,
                    format_args!("must be between the page size ({page}) and 1 GiB"),
                ));
            }
        }
        duration(
            "probes.poll_interval",
            p.poll_interval,
            bounds::POLL_INTERVAL,
        )?;
        if let Some(raw) = &p.record_raw {
            path("probes.record_raw", raw)?;
        }

        let c = &self.capture;
        c.kinds()?;
        patterns("capture.sensitive_files", &c.sensitive_files)?;
        patterns("capture.critical_paths", &c.critical_paths)?;
        patterns("capture.excluded_paths", &c.excluded_paths)?;
        patterns("capture.account_files", &c.account_files)?;
        if c.account_tools.len() > bounds::LIST_MAX {
            return Err(invalid(
                "capture.account_tools",
                format!("[{} entries]", c.account_tools.len()),
                format_args!("at most {} entries", bounds::LIST_MAX),
            ));
        }
        for t in &c.account_tools {
            if t.is_empty() || t.contains('/') || t.contains('\0') || t.len() > 255 {
                return Err(invalid(
                    "capture.account_tools",
                    format!("{:?}", clip(t)),
                    "must be a file name (1 to 255 bytes, no '/')",
                ));
            }
        }
        duration(
            "capture.watch_refresh",
            c.watch_refresh,
            bounds::WATCH_REFRESH,
        )?;

        let r = &self.recorder;
        path("recorder.data_dir", &r.data_dir)?;
        let data_prefix = format!("{}/", r.data_dir.to_string_lossy().trim_end_matches('/'));
        let mut prefixes: Vec<&str> = c
            .critical_paths
            .iter()
            .chain(&c.excluded_paths)
            .map(String::as_str)
            .chain(std::iter::once(data_prefix.as_str()))
            .filter(|p| !p.contains('*'))
            .collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        if prefixes.len() > fdr_common::MAX_PREFIXES {
            return Err(ConfigError::Invalid(format!(
                "capture.critical_paths, capture.excluded_paths: at most {} paths without \
                 wildcards, recorder.data_dir included (there are {})",
                fdr_common::MAX_PREFIXES,
                prefixes.len()
            )));
        }
        if let Some(long) = prefixes.iter().find(|p| p.len() > fdr_common::PREFIX_LEN) {
            return Err(ConfigError::Invalid(format!(
                "capture.critical_paths, capture.excluded_paths, recorder.data_dir: {:?} is \
                 longer than {} bytes (the kernel compares at most that many)",
                clip(long),
                fdr_common::PREFIX_LEN
            )));
        }
        if r.scope_quota_bytes < bounds::SCOPE_QUOTA_MIN {
            return Err(invalid(
                "recorder.scope_quota_bytes",
                r.scope_quota_bytes,
                format_args!("must be at least {}", bounds::SCOPE_QUOTA_MIN),
            ));
        }
        if r.budget_bytes < r.scope_quota_bytes {
            return Err(invalid(
                "recorder.budget_bytes",
                r.budget_bytes,
                format_args!(
                    "must be at least recorder.scope_quota_bytes ({})",
                    r.scope_quota_bytes
                ),
            ));
        }
        if let Some(ram) = total_ram() {
            // The buffers plus both kernel rings within half the RAM.
            let rounded = |b: u32| u64::from(b).next_power_of_two().max(page);
            let rings =
                rounded(p.ring_buffer_bytes).saturating_add(rounded(p.critical_ring_buffer_bytes));
            let half = ram / 2;
            if r.budget_bytes.saturating_add(rings) > half {
                return Err(invalid(
                    "recorder.budget_bytes",
                    r.budget_bytes,
                    format_args!(
                        "with the two kernel rings (probes.ring_buffer_bytes + \
                         probes.critical_ring_buffer_bytes = {rings}) \
                         must fit in half of this machine's RAM ({half} of {ram} bytes)"
                    ),
                ));
            }
        }
        duration(
            "recorder.exited_container_grace",
            r.exited_container_grace,
            bounds::EXITED_CONTAINER_GRACE,
        )?;
        duration(
            "recorder.snapshot_before",
            r.snapshot_before,
            bounds::SNAPSHOT_BEFORE,
        )?;
        duration(
            "recorder.snapshot_after",
            r.snapshot_after,
            bounds::SNAPSHOT_AFTER,
        )?;
        int(
            "recorder.max_snapshots",
            r.max_snapshots as u64,
            bounds::MAX_SNAPSHOTS,
        )?;
        int(
            "recorder.max_snapshot_bytes",
            r.max_snapshot_bytes,
            bounds::MAX_SNAPSHOT_BYTES,
        )?;
        duration(
            "recorder.exited_process_grace",
            r.exited_process_grace,
            bounds::EXITED_PROCESS_GRACE,
        )?;
        int(
            "recorder.critical_reserve_percent",
            u64::from(r.critical_reserve_percent),
            (0, 90),
        )?;
        int(
            "recorder.snapshots_open_bytes",
            r.snapshots_open_bytes,
            (bounds::SCOPE_QUOTA_MIN, 1 << 40),
        )?;
        int(
            "recorder.snapshot_max_bytes",
            r.snapshot_max_bytes,
            (
                bounds::SCOPE_QUOTA_MIN,
                r.snapshots_open_bytes.max(bounds::SCOPE_QUOTA_MIN),
            ),
        )?;

        let a = &self.attribution;
        paths("attribution.runtime_endpoints", &a.runtime_endpoints)?;
        paths("attribution.engine_endpoints", &a.engine_endpoints)?;
        duration(
            "attribution.runtime_poll",
            a.runtime_poll,
            bounds::RUNTIME_POLL,
        )?;
        duration(
            "attribution.tombstone_ttl",
            a.tombstone_ttl,
            bounds::TOMBSTONE_TTL,
        )?;
        int(
            "attribution.ancestry_depth",
            a.ancestry_depth as u64,
            bounds::ANCESTRY_DEPTH,
        )?;

        self.analysis.validate()?;
        self.api.validate()?;
        self.live.validate()?;
        self.host.validate()?;
        self.health.validate()?;
        self.metrics.validate()?;
        self.export.validate()?;

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid(
                "log.level",
                format!("{:?}", clip(&self.log.level)),
                format_args!("not a tracing filter: {}", clip(&e.to_string())),
            ));
        }
        Ok(())
    }
}

impl super::AnalysisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        duration(
            "analysis.learning_period",
            self.learning_period,
            bounds::LEARNING_PERIOD,
        )?;
        duration(
            "analysis.incident_window",
            self.incident_window,
            bounds::INCIDENT_WINDOW,
        )?;
        int(
            "analysis.max_items_per_section",
            self.max_items_per_section as u64,
            bounds::MAX_ITEMS_PER_SECTION,
        )?;
        int(
            "analysis.max_models",
            self.max_models as u64,
            bounds::MAX_MODELS,
        )?;
        int(
            "analysis.max_total_items",
            self.max_total_items as u64,
            bounds::MAX_TOTAL_ITEMS,
        )?;
        int(
            "analysis.scan_threshold",
            self.scan_threshold as u64,
            bounds::SCAN_THRESHOLD,
        )?;
        duration(
            "analysis.scan_window",
            self.scan_window,
            bounds::SCAN_WINDOW,
        )?;
        duration(
            "analysis.exfil_window",
            self.exfil_window,
            bounds::EXFIL_WINDOW,
        )?;
        int(
            "analysis.max_audits_per_incident",
            self.max_audits_per_incident as u64,
            bounds::MAX_AUDITS_PER_INCIDENT,
        )?;
        // The rules themselves are checked by the stage that owns them
        // (`analysis::model::rules::check`), right after this.
        Ok(())
    }
}

impl ApiConfig {
    pub(super) fn validate_values(&self) -> Result<(), ConfigError> {
        path("api.socket", &self.socket)?;
        // The kernel's limit is 107 bytes; binding goes through a slightly
        // longer temporary name next to it.
        let len = self.socket.as_os_str().len();
        if len > bounds::SOCKET_PATH_MAX {
            return Err(invalid(
                "api.socket",
                format!("{:?}", clip(&self.socket.to_string_lossy())),
                format_args!(
                    "must be at most {} bytes (a unix socket path), not {len}",
                    bounds::SOCKET_PATH_MAX
                ),
            ));
        }
        for (key, p) in [
            ("api.tcp_token_file", &self.tcp_token_file),
            ("api.tls_cert_file", &self.tls_cert_file),
            ("api.tls_key_file", &self.tls_key_file),
            ("api.tls_client_ca_file", &self.tls_client_ca_file),
        ] {
            if let Some(p) = p {
                path(key, p)?;
            }
        }
        int(
            "api.stream_queue",
            self.stream_queue as u64,
            bounds::STREAM_QUEUE,
        )?;
        int(
            "api.stream_queue_bytes",
            self.stream_queue_bytes,
            (64 << 10, 1 << 30),
        )
    }
}
