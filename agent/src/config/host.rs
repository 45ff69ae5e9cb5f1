//! The `[host]` section: where the host's filesystem is seen and what the
//! node is called.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Where the host's filesystem is seen. Every host path the agent
    /// resolves is taken under it: the watch lists (`capture.*`), `/proc`,
    /// the cgroup2 mount, the runtime sockets (`attribution.*_endpoints`),
    /// `/etc/passwd` and `/etc/hostname`; events still name the host's own
    /// paths. In a pod that mounts the host's `/` read-only at `/host`:
    /// `/host`. The environment's `HOST_ROOT` and `--host-root` override
    /// it. Default `/` (the agent's own root). An absolute path.
    pub root: PathBuf,
    /// The node's name, carried by every event, account record, incident
    /// and snapshot. Empty: the environment's `NODE_NAME` (Kubernetes'
    /// `spec.nodeName`), else the first line of `<root>/etc/hostname`,
    /// else the kernel's host name. `--node-name` overrides it. Default
    /// empty; at most 255 bytes, no control characters.
    pub node_name: String,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            root: PathBuf::from("/"),
            node_name: String::new(),
        }
    }
}

impl HostConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let root = self.root.to_string_lossy();
        if !self.root.is_absolute() || root.len() > 4096 || root.contains('\0') {
            return Err(ConfigError::Invalid(format!(
                "host.root = {:?}: must be an absolute path of at most 4096 bytes",
                crate::util::clip(&root)
            )));
        }
        if self.node_name.len() > 255 || self.node_name.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(format!(
                "host.node_name = {:?}: at most 255 bytes, no control characters",
                crate::util::clip(&self.node_name)
            )));
        }
        Ok(())
    }

    /// The root as the agent uses it.
    pub fn host_root(&self) -> crate::util::host::HostRoot {
        crate::util::host::HostRoot::new(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        HostConfig::default().validate().expect("defaults");
        let c = HostConfig {
            root: "host".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("host.root"));
        let c = HostConfig {
            node_name: "a\nb".into(),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("host.node_name"));
    }
}
