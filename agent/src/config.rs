//! Agent configuration: a TOML file with documented defaults; command-line
//! flags override it. `fdr-agent --print-default-config` prints the defaults.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing config {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub probes: ProbesConfig,
    pub recorder: RecorderConfig,
    pub api: ApiConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProbesConfig {
    /// Size of the kernel → agent ring buffer in bytes, rounded up to a power
    /// of two. Default 8 MiB: about 30k exec records or 100k others.
    pub ring_buffer_bytes: u32,
    /// How often the agent drains the ring buffer. The kernel wakes it
    /// earlier only when an eighth of the ring is pending: a wake-up per
    /// event would cost more than the probes themselves. Default 10ms.
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: std::time::Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// Memory the host event buffer may use, in bytes; the oldest events are
    /// evicted beyond it. Default 64 MiB.
    pub host_buffer_bytes: u64,
    /// How long an exited process stays in the process table, so that late
    /// events and queries still find it. Default 5 minutes.
    #[serde(with = "humantime_serde_compat")]
    pub exited_process_grace: std::time::Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket of the gRPC API, created with mode 0600 (root only).
    /// Default `/run/fdr/fdr.sock`.
    pub socket: PathBuf,
    /// Optional TCP listener (e.g. `127.0.0.1:7077`). Off when empty. A
    /// non-loopback address requires `tcp_token_file`.
    pub tcp_listen: Option<SocketAddr>,
    /// File holding a bearer token TCP clients must send
    /// (`authorization: Bearer <token>`). Default: none.
    pub tcp_token_file: Option<PathBuf>,
    /// Events queued per `StreamEvents` client before it starts losing
    /// events (capture never waits for a client). Default 4096.
    pub stream_queue: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `fdr_agent=debug`. `RUST_LOG` wins.
    pub level: String,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        ProbesConfig {
            ring_buffer_bytes: 8 << 20,
            poll_interval: std::time::Duration::from_millis(10),
        }
    }
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            host_buffer_bytes: 64 << 20,
            exited_process_grace: std::time::Duration::from_secs(300),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from("/run/fdr/fdr.sock"),
            tcp_listen: None,
            tcp_token_file: None,
            stream_queue: 4096,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.probes.ring_buffer_bytes < 4096 || self.probes.ring_buffer_bytes > 1 << 30 {
            return Err(ConfigError::Invalid(
                "probes.ring_buffer_bytes must be between 4096 and 1 GiB".into(),
            ));
        }
        if self.probes.poll_interval.is_zero() || self.probes.poll_interval.as_secs() > 1 {
            return Err(ConfigError::Invalid(
                "probes.poll_interval must be between 1ns and 1s".into(),
            ));
        }
        if self.recorder.host_buffer_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "recorder.host_buffer_bytes must be at least 4096".into(),
            ));
        }
        if self.api.stream_queue == 0 {
            return Err(ConfigError::Invalid("api.stream_queue must be > 0".into()));
        }
        if let Some(addr) = self.api.tcp_listen {
            if !addr.ip().is_loopback() && self.api.tcp_token_file.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "api.tcp_listen = {addr} is not a loopback address: set api.tcp_token_file \
                     so that clients must authenticate"
                )));
            }
        }
        Ok(())
    }

    /// The defaults as a commented TOML document.
    pub fn default_toml() -> String {
        include_str!("../../deploy/fdr.toml").to_owned()
    }
}

/// Durations written as `"5m"`, `"30s"`, `"1h 30m"`.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

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
        assert_eq!(cfg.probes.ring_buffer_bytes, 8 << 20);
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
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn durations_are_human_readable() {
        let cfg: Config = toml::from_str("[recorder]\nexited_process_grace = \"90s\"\n").unwrap();
        assert_eq!(cfg.recorder.exited_process_grace.as_secs(), 90);
    }
}
