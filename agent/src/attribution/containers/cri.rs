//! A client of the container runtime's CRI `RuntimeService` (containerd,
//! CRI-O) on its unix socket: which containers exist, in which pod, from
//! which image.

use std::{collections::HashMap, path::Path, path::PathBuf, sync::Arc, time::Duration};

use fdr_proto::cri::{self as cri, runtime_service_client::RuntimeServiceClient};
use tonic::transport::{Channel, Endpoint};

use super::ContainerMeta;

/// Longest a single runtime call may take: a hung runtime must not stall
/// attribution forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("no container runtime socket among {0:?}")]
    NoSocket(Vec<PathBuf>),
    #[error(
        "connecting to the container runtime at {endpoint}: {}",
        fdr_proto::transport::error_chain(source)
    )]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI {call} on {endpoint}: {status}")]
    Call {
        call: &'static str,
        endpoint: String,
        status: Box<tonic::Status>,
    },
}

/// A container's state as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited,
    Unknown,
}

impl State {
    fn from_raw(v: i32) -> State {
        match cri::ContainerState::try_from(v) {
            Ok(cri::ContainerState::ContainerCreated) => State::Created,
            Ok(cri::ContainerState::ContainerRunning) => State::Running,
            Ok(cri::ContainerState::ContainerExited) => State::Exited,
            _ => State::Unknown,
        }
    }
}

/// One container in the runtime's list.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: Arc<str>,
    pub state: State,
}

/// A container's full status.
#[derive(Debug, Clone)]
pub struct Status {
    pub meta: ContainerMeta,
    pub state: State,
    pub exit_code: i32,
    pub reason: String,
    /// Wall-clock ns (0: not finished).
    pub finished_ns: u64,
}

/// A connected runtime.
pub struct Cri {
    client: RuntimeServiceClient<Channel>,
    endpoint: String,
    /// `containerd 1.6.20`.
    pub runtime: String,
    /// Pod sandboxes by id, from the last list.
    pods: HashMap<String, cri::PodSandbox>,
}

impl Cri {
    /// Connects to the first of `endpoints` that exists and answers
    /// `Version`.
    pub async fn connect(endpoints: &[PathBuf]) -> Result<Cri, CriError> {
        let path = endpoints
            .iter()
            .find(|p| p.exists())
            .ok_or_else(|| CriError::NoSocket(endpoints.to_vec()))?;
        let endpoint = path.display().to_string();
        let channel = channel(path).await.map_err(|source| CriError::Connect {
            endpoint: endpoint.clone(),
            source,
        })?;
        let mut client = RuntimeServiceClient::new(channel);
        let v = client
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|status| CriError::Call {
                call: "Version",
                endpoint: endpoint.clone(),
                status: Box::new(status),
            })?
            .into_inner();
        Ok(Cri {
            client,
            runtime: format!("{} {}", v.runtime_name, v.runtime_version),
            endpoint,
            pods: HashMap::new(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn err(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> CriError + '_ {
        move |status| CriError::Call {
            call,
            endpoint: self.endpoint.clone(),
            status: Box::new(status),
        }
    }

    /// Every container the runtime knows (any state); refreshes the pods.
    pub async fn list(&mut self) -> Result<Vec<Listed>, CriError> {
        let pods = self
            .client
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await;
        let pods = pods.map_err(self.err("ListPodSandbox"))?.into_inner();
        self.pods = pods.items.into_iter().map(|p| (p.id.clone(), p)).collect();
        let list = self
            .client
            .list_containers(cri::ListContainersRequest { filter: None })
            .await;
        let list = list.map_err(self.err("ListContainers"))?.into_inner();
        Ok(list
            .containers
            .into_iter()
            .map(|c| Listed {
                id: Arc::from(c.id),
                state: State::from_raw(c.state),
            })
            .collect())
    }

    /// A container's status and metadata, `None` when the runtime does not
    /// know it.
    pub async fn status(&mut self, id: &str) -> Result<Option<Status>, CriError> {
        let resp = self
            .client
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: true,
            })
            .await;
        let resp = match resp {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(self.err("ContainerStatus")(s)),
        };
        let Some(st) = resp.status else {
            return Ok(None);
        };
        let pod_id = self
            .client
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    id: id.to_owned(),
                    ..Default::default()
                }),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().containers.into_iter().next())
            .map(|c| c.pod_sandbox_id)
            .unwrap_or_default();
        let pod = self.pods.get(&pod_id).cloned();
        let pod = match pod {
            Some(p) => Some(p),
            None if !pod_id.is_empty() => self.pod(&pod_id).await,
            None => None,
        };
        let meta = meta_from(&st, pod.as_ref(), &resp.info, &pod_id, &self.runtime);
        Ok(Some(Status {
            meta,
            state: State::from_raw(st.state),
            exit_code: st.exit_code,
            reason: st.reason,
            finished_ns: u64::try_from(st.finished_at).unwrap_or(0),
        }))
    }

    /// Ids of the pod sandboxes in the last list.
    pub fn sandbox_ids(&self) -> Vec<Arc<str>> {
        self.pods.keys().map(|id| Arc::from(id.as_str())).collect()
    }

    /// A listed pod's sandbox ("pause") container as a container of its
    /// pod: named `sandbox`, with the sandbox image the runtime reports
    /// (`pause` when it does not say), marked as a sandbox. The CRI does
    /// not list sandboxes among containers; their id is the pod's.
    pub async fn sandbox_meta(&mut self, id: &str) -> Option<ContainerMeta> {
        let pod = self.pods.get(id)?.clone();
        let info = self
            .client
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            })
            .await
            .map(|r| r.into_inner().info)
            .unwrap_or_default();
        Some(sandbox_meta_from(&pod, &info, &self.runtime))
    }

    async fn pod(&mut self, id: &str) -> Option<cri::PodSandbox> {
        let list = self
            .client
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    id: id.to_owned(),
                    ..Default::default()
                }),
            })
            .await
            .ok()?
            .into_inner();
        let pod = list.items.into_iter().next()?;
        self.pods.insert(pod.id.clone(), pod.clone());
        Some(pod)
    }
}

async fn channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_static("http://cri.invalid")
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    fdr_proto::transport::unix_channel(path, endpoint).await
}

/// Kubelet's labels on every container, used when the pod sandbox is gone.
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
/// containerd's annotation with the image name as the user gave it.
const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

fn meta_from(
    st: &cri::ContainerStatus,
    pod: Option<&cri::PodSandbox>,
    info: &HashMap<String, String>,
    pod_id: &str,
    runtime: &str,
) -> ContainerMeta {
    let label = |k: &str| st.labels.get(k).cloned().unwrap_or_default();
    let pod_meta = pod.and_then(|p| p.metadata.as_ref());
    let spec = st.image.as_ref();
    let mut image = spec
        .map(|i| {
            if i.user_specified_image.is_empty() {
                i.image.clone()
            } else {
                i.user_specified_image.clone()
            }
        })
        .unwrap_or_default();
    if image.is_empty() || image.starts_with("sha256:") {
        if let Some(name) = st.annotations.get(IMAGE_NAME) {
            image.clone_from(name);
        }
    }
    ContainerMeta {
        id: Arc::from(st.id.as_str()),
        name: st
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        image,
        image_digest: digest_of(&st.image_ref),
        pod_name: pod_meta.map_or_else(|| label(POD_NAME), |m| m.name.clone()),
        pod_namespace: pod_meta.map_or_else(|| label(POD_NAMESPACE), |m| m.namespace.clone()),
        pod_uid: pod_meta.map_or_else(|| label(POD_UID), |m| m.uid.clone()),
        pod_id: pod_id.to_owned(),
        labels: st.labels.clone().into_iter().collect(),
        runtime: runtime.to_owned(),
        pid: info.values().find_map(|v| pid_in(v)),
        started_ns: u64::try_from(st.started_at).unwrap_or(0),
        sandbox: false,
    }
}

/// The image a sandbox runs when the runtime does not name it.
const SANDBOX_IMAGE: &str = "pause";
/// containerd's label for what a containerd container is to the CRI.
const KIND_LABEL: &str = "io.cri-containerd.kind";

fn sandbox_meta_from(
    pod: &cri::PodSandbox,
    info: &HashMap<String, String>,
    runtime: &str,
) -> ContainerMeta {
    let m = pod.metadata.clone().unwrap_or_default();
    let json = |k: &str| {
        info.values().find_map(|v| {
            let v: serde_json::Value = serde_json::from_str(v).ok()?;
            v.get(k)?.as_str().map(str::to_owned)
        })
    };
    let mut labels: std::collections::BTreeMap<String, String> =
        pod.labels.clone().into_iter().collect();
    labels.insert(KIND_LABEL.into(), "sandbox".into());
    ContainerMeta {
        id: Arc::from(pod.id.as_str()),
        name: "sandbox".into(),
        image: json("image")
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| SANDBOX_IMAGE.to_owned()),
        pod_name: m.name,
        pod_namespace: m.namespace,
        pod_uid: m.uid,
        pod_id: pod.id.clone(),
        labels,
        runtime: runtime.to_owned(),
        pid: info.values().find_map(|v| pid_in(v)),
        started_ns: u64::try_from(pod.created_at).unwrap_or(0),
        sandbox: true,
        ..Default::default()
    }
}

/// `repo@sha256:…` → `sha256:…`; an image id is its own digest.
fn digest_of(image_ref: &str) -> String {
    match image_ref.rsplit_once('@') {
        Some((_, d)) => d.to_owned(),
        None if image_ref.starts_with("sha256:") => image_ref.to_owned(),
        None => String::new(),
    }
}

/// The `"pid": N` in a runtime's verbose JSON info.
fn pid_in(json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let pid = v.get("pid")?.as_u64()?;
    u32::try_from(pid).ok().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_pids() {
        assert_eq!(
            digest_of("docker.io/library/nginx@sha256:abc"),
            "sha256:abc"
        );
        assert_eq!(digest_of("sha256:def"), "sha256:def");
        assert_eq!(digest_of("nginx:1.27"), "");
        assert_eq!(pid_in(r#"{"pid": 4711, "sandboxID": "x"}"#), Some(4711));
        assert_eq!(pid_in(r#"{"pid": 0}"#), None);
        assert_eq!(pid_in("not json"), None);
    }

    #[test]
    fn sandboxes_are_named_as_their_pods_sandbox() {
        let pod = cri::PodSandbox {
            id: "p1".into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web-0".into(),
                uid: "u-1".into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            created_at: 7,
            ..Default::default()
        };
        let info = [(
            "info".to_string(),
            r#"{"pid":9,"image":"registry.k8s.io/pause:3.9"}"#.to_string(),
        )]
        .into_iter()
        .collect();
        let m = sandbox_meta_from(&pod, &info, "containerd 1.6");
        assert!(m.sandbox);
        assert_eq!(&*m.id, "p1");
        assert_eq!(m.pod_id, "p1");
        assert_eq!(
            (m.name.as_str(), m.image.as_str()),
            ("sandbox", "registry.k8s.io/pause:3.9")
        );
        assert_eq!(
            (m.pod_name.as_str(), m.pod_namespace.as_str()),
            ("web-0", "shop")
        );
        assert_eq!(m.pid, Some(9));
        assert_eq!(
            m.labels.get(KIND_LABEL).map(String::as_str),
            Some("sandbox")
        );
        let m = sandbox_meta_from(&pod, &HashMap::new(), "");
        assert_eq!(m.image, "pause");
    }

    #[test]
    fn metadata_from_status_pod_and_labels() {
        let st = cri::ContainerStatus {
            id: "c1".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "web".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "sha256:1111".into(),
                ..Default::default()
            }),
            image_ref: "docker.io/fdr/web@sha256:2222".into(),
            annotations: [(IMAGE_NAME.to_string(), "docker.io/fdr/web:1".to_string())]
                .into_iter()
                .collect(),
            labels: [(POD_NAME.to_string(), "from-label".to_string())]
                .into_iter()
                .collect(),
            started_at: 5,
            ..Default::default()
        };
        let pod = cri::PodSandbox {
            id: "p1".into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web-0".into(),
                uid: "u-1".into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let info = [("info".to_string(), r#"{"pid":42}"#.to_string())]
            .into_iter()
            .collect();
        let m = meta_from(&st, Some(&pod), &info, "p1", "containerd 1.6");
        assert_eq!(m.name, "web");
        assert_eq!(m.image, "docker.io/fdr/web:1");
        assert_eq!(m.image_digest, "sha256:2222");
        assert_eq!(
            (
                m.pod_name.as_str(),
                m.pod_namespace.as_str(),
                m.pod_uid.as_str()
            ),
            ("web-0", "shop", "u-1")
        );
        assert_eq!(m.pid, Some(42));
        assert_eq!(m.started_ns, 5);
        let m = meta_from(&st, None, &HashMap::new(), "", "");
        assert_eq!(m.pod_name, "from-label", "labels when the pod is gone");
    }
}
