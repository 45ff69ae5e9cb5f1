//! What is known of a container: the runtime's metadata, and its starts
//! and stops. [`crate::attribution::containers`] keeps them.

use std::{collections::BTreeMap, sync::Arc};

/// What the runtime tells of a container and its pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerMeta {
    pub id: Arc<str>,
    /// Container name (Kubernetes: the container's name in the pod spec).
    pub name: String,
    /// Image as named by the user (`registry/repo:tag`).
    pub image: String,
    /// Image digest (`sha256:…`), the repo digest when the runtime has one.
    pub image_digest: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// The runtime's pod sandbox id.
    pub pod_id: String,
    pub labels: BTreeMap<String, String>,
    /// `containerd 1.6.20`, `cri-o 1.28`, or empty when only the cgroup
    /// named the container.
    pub runtime: String,
    /// The container's first process, when the runtime said.
    pub pid: Option<u32>,
    /// Wall-clock ns the runtime started it (0 when unknown).
    pub started_ns: u64,
    /// A pod's sandbox ("pause") container, not one of its workloads: it
    /// has no runtime model of its own.
    pub sandbox: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Started,
    Stopped {
        exit_code: Option<i32>,
        reason: String,
        /// Wall-clock ns the runtime saw it finish (0 when unknown).
        finished_ns: u64,
    },
}

/// Container metadata by container id (the attribution stage's registry).
pub trait ContainerLookup {
    fn meta(&self, id: &str) -> Option<Arc<ContainerMeta>>;
}
