//! The `[live]` section: how live streams (`StreamEvents --follow`) wait
//! for a new container's name.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration_serde, ConfigError};

/// Bounds of the `[live]` values.
pub mod bounds {
    use std::time::Duration;

    pub const NAME_WAIT: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(10));
    pub const NAME_WAIT_EVENTS: (u64, u64) = (1, 1 << 20);
    pub const NAME_WAIT_BYTES: (u64, u64) = (4096, 1 << 30);
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// How long a live subscriber holds the events of a new container
    /// whose runtime metadata is still being looked up, so that they
    /// arrive named (pod, namespace, image). Events of other scopes are not
    /// held; a container's held events are never overtaken by its later
    /// ones. Past it they are sent unnamed (counted in `GetStats`). `0s`:
    /// never hold (a container's first events then arrive unnamed; they are
    /// named when read back). Default 500ms (Tetragon's event cache waits
    /// about as long); at most 10s.
    #[serde(with = "duration_serde")]
    pub name_wait: Duration,
    /// Events one subscriber holds at most over all containers; beyond
    /// it, the container held longest is sent unnamed at once. Default
    /// 4096; between 1 and 1048576.
    pub name_wait_events: usize,
    /// Bytes of events one subscriber holds at most (their in-memory
    /// size; the events are shared with the buffers), with
    /// `name_wait_events`. Default 4 MiB; between 4096 and 1 GiB.
    pub name_wait_bytes: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            name_wait: Duration::from_millis(500),
            name_wait_events: 4096,
            name_wait_bytes: 4 << 20,
        }
    }
}

impl LiveConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let (lo, hi) = bounds::NAME_WAIT;
        if self.name_wait < lo || self.name_wait > hi {
            return Err(ConfigError::Invalid(format!(
                "live.name_wait = {:?}: must be at most {}",
                humantime::format_duration(self.name_wait).to_string(),
                humantime::format_duration(hi)
            )));
        }
        for (key, v, (lo, hi)) in [
            (
                "live.name_wait_events",
                self.name_wait_events as u64,
                bounds::NAME_WAIT_EVENTS,
            ),
            (
                "live.name_wait_bytes",
                self.name_wait_bytes,
                bounds::NAME_WAIT_BYTES,
            ),
        ] {
            if v < lo || v > hi {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {v}: must be between {lo} and {hi}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_bounds_values_name_their_key() {
        LiveConfig::default()
            .validate()
            .expect("defaults are valid");
        let mut c = LiveConfig {
            name_wait: Duration::from_secs(11),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("live.name_wait"));
        c.name_wait = Duration::ZERO;
        c.validate().expect("0s: never hold");
        c.name_wait_events = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("live.name_wait_events"));
        c.name_wait_events = 1;
        c.name_wait_bytes = 10;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("live.name_wait_bytes"));
    }
}
