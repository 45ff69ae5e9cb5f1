//! The `[health]` and `[metrics]` sections: the agent's own health
//! (`grpc.health.v1`) and its Prometheus metrics, each on a listener of its
//! own, off by default.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use super::{duration_serde, ConfigError};

/// Bounds of the `[health]` values.
pub mod bounds {
    use std::time::Duration;

    pub const STALL_AFTER: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(24 * 3600));
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// A plaintext gRPC listener serving only `grpc.health.v1` (kubelet
    /// gRPC probes and most load balancers speak no TLS), e.g.
    /// `0.0.0.0:6789`. Default `""`: off. The health service is also on
    /// the API's unix socket and TCP listener (there without the bearer
    /// token, over TLS when TLS is configured).
    pub listen: String,
    /// The agent reports NOT_SERVING (service names `""` and
    /// `fdr.v1.FlightRecorder`) when its pipeline has not finished a step
    /// for this long. Default 30s; between 1s and 24h.
    #[serde(with = "duration_serde")]
    pub stall_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            listen: String::new(),
            stall_after: Duration::from_secs(30),
        }
    }
}

impl HealthConfig {
    /// The health listener's address; `None` when off.
    pub fn addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("health.listen", &self.listen)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.addr()?;
        let (lo, hi) = bounds::STALL_AFTER;
        if self.stall_after < lo || self.stall_after > hi {
            return Err(ConfigError::Invalid(format!(
                "health.stall_after = {:?}: must be between {} and {}",
                humantime::format_duration(self.stall_after).to_string(),
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// HTTP listener serving `GET /metrics` in the Prometheus text format
    /// (plaintext: the figures are counts and sizes, no recorded data),
    /// e.g. `0.0.0.0:9477`. Default `""`: off.
    pub listen: String,
}

impl MetricsConfig {
    /// The metrics listener's address; `None` when off.
    pub fn addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr("metrics.listen", &self.listen)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.addr().map(drop)
    }
}

/// `""`: off; else `host:port` with a numeric host (`0.0.0.0:6789`,
/// `[::]:6789`, `127.0.0.1:0`).
fn listen_addr(key: &str, text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ConfigError::Invalid(format!(
            "{key} = {:?}: must be empty (off) or an address and port such as \
             \"0.0.0.0:9477\" or \"[::]:9477\"",
            crate::util::clip(text)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let mut h = HealthConfig::default();
        assert_eq!(h.addr().unwrap(), None);
        h.listen = "0.0.0.0:6789".into();
        assert_eq!(h.addr().unwrap(), Some("0.0.0.0:6789".parse().unwrap()));
        h.listen = "localhost:6789".into();
        let err = h.validate().unwrap_err().to_string();
        assert!(err.contains("health.listen"), "{err}");
        let m = MetricsConfig {
            listen: "9477".into(),
        };
        let err = m.validate().unwrap_err().to_string();
        assert!(err.contains("metrics.listen"), "{err}");
    }

    #[test]
    fn stall_after_must_be_positive() {
        let h = HealthConfig {
            stall_after: Duration::ZERO,
            ..HealthConfig::default()
        };
        let err = h.validate().unwrap_err().to_string();
        assert!(err.contains("health.stall_after"), "{err}");
        assert!(HealthConfig::default().validate().is_ok());
    }
}
