//! containerd's own metadata API, for containers the CRI does not know:
//! those made with `ctr run`, nerdctl or buildkit, in any containerd
//! namespace. Their cgroup is `/<namespace>/<id>`; containerd names their
//! image (and its digest) and labels.

use std::{path::Path, sync::Arc, time::Duration};

use fdr_proto::containerd::services::{
    containers::v1::{containers_client::ContainersClient, GetContainerRequest},
    images::v1::{images_client::ImagesClient, GetImageRequest},
};
use tonic::{metadata::MetadataValue, transport::Channel, Request};

use super::ContainerMeta;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The request header that selects a containerd namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// nerdctl's label with the container's name.
const NERDCTL_NAME: &str = "nerdctl/name";

pub struct Native {
    containers: ContainersClient<Channel>,
    images: ImagesClient<Channel>,
    runtime: String,
}

fn in_namespace<T>(ns: &str, msg: T) -> Option<Request<T>> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(NAMESPACE_HEADER, MetadataValue::try_from(ns).ok()?);
    Some(req)
}

/// Why containerd's own API could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error(
        "connecting to containerd at {socket}: {}",
        fdr_proto::transport::error_chain(source)
    )]
    Connect {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl Native {
    /// A client on containerd's socket; `runtime` names it in metadata.
    pub async fn connect(socket: &Path, runtime: &str) -> Result<Native, NativeError> {
        let endpoint = tonic::transport::Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let channel = fdr_proto::transport::unix_channel(socket, endpoint)
            .await
            .map_err(|source| NativeError::Connect {
                socket: socket.display().to_string(),
                source,
            })?;
        Ok(Native {
            containers: ContainersClient::new(channel.clone()),
            images: ImagesClient::new(channel),
            runtime: runtime.to_owned(),
        })
    }

    /// The container `id` of containerd namespace `ns`; `None` when
    /// containerd does not know it (or the call failed: the container is
    /// then attributed by its id alone).
    pub async fn lookup(&mut self, ns: &str, id: &str) -> Option<ContainerMeta> {
        let req = in_namespace(ns, GetContainerRequest { id: id.to_owned() })?;
        let c = match self.containers.get(req).await {
            Ok(r) => r.into_inner().container?,
            Err(status) => {
                if status.code() != tonic::Code::NotFound {
                    tracing::debug!(%status, ns, id, "containerd container lookup");
                }
                return None;
            }
        };
        let digest = match in_namespace(
            ns,
            GetImageRequest {
                name: c.image.clone(),
            },
        ) {
            Some(req) if !c.image.is_empty() => self
                .images
                .get(req)
                .await
                .ok()
                .and_then(|r| r.into_inner().image)
                .and_then(|i| i.target)
                .map(|t| t.digest)
                .unwrap_or_default(),
            _ => String::new(),
        };
        let name = c
            .labels
            .get(NERDCTL_NAME)
            .cloned()
            .unwrap_or_else(|| c.id.clone());
        Some(ContainerMeta {
            id: Arc::from(c.id.as_str()),
            name,
            image: c.image,
            image_digest: digest,
            pod_namespace: String::new(),
            labels: c.labels.into_iter().collect(),
            runtime: format!("{} (namespace {ns})", self.runtime),
            started_ns: c.created_at.map_or(0, |t| {
                (t.seconds.max(0) as u64) * 1_000_000_000 + t.nanos.max(0) as u64
            }),
            ..Default::default()
        })
    }
}

/// The containerd namespace of a plain containerd cgroup path
/// (`default/<id>`, `k8s.io/<id>`).
pub fn namespace_of(cgroup_path: &Path) -> Option<String> {
    let mut comps = cgroup_path.iter();
    let ns = comps.next()?.to_str()?;
    comps.next()?;
    comps.next().is_none().then(|| ns.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_from_plain_containerd_paths() {
        assert_eq!(
            namespace_of(Path::new("default/abc")).as_deref(),
            Some("default")
        );
        assert_eq!(
            namespace_of(Path::new("k8s.io/abc")).as_deref(),
            Some("k8s.io")
        );
        assert_eq!(
            namespace_of(Path::new("kubepods/besteffort/pod1/abc")),
            None
        );
        assert_eq!(namespace_of(Path::new("abc")), None);
    }
}
