//! The Docker Engine API, on dockerd's unix socket or podman's compatible
//! service: it names containers no CRI runtime knows (`docker run`,
//! `podman run`, compose), with their image (and its digest), labels and,
//! once they stop, their exit code.

use std::{collections::BTreeMap, path::Path, path::PathBuf, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::{body::Bytes, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::ContainerMeta;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// API version asked for: Docker 19.03 and later, podman 3 and later.
const API: &str = "/v1.40";
/// Answers larger than this are refused (an inspect is a few KiB).
const MAX_BODY: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no Docker Engine API socket among {0:?}")]
    NoSocket(Vec<PathBuf>),
    #[error("Docker Engine API at {socket}: GET {path}: {source}")]
    Call {
        socket: String,
        path: String,
        #[source]
        source: CallError,
    },
}

/// Why one call to the Engine API failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[source] hyper::http::Error),
    #[error("sending the request: {0}")]
    Send(#[source] hyper::Error),
    #[error("reading the answer: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("decoding the answer: {0}")]
    Decode(#[source] serde_json::Error),
}

/// A client of one Engine API socket.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
    /// `docker 20.10.24`, `podman 4.3.1`.
    pub runtime: String,
}

/// What the engine says of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineContainer {
    pub meta: ContainerMeta,
    pub running: bool,
    pub exit_code: i32,
    /// The engine's reason when it failed to run it, else `exited`.
    pub reason: String,
    /// Wall-clock ns it finished (0 while running or unknown).
    pub finished_ns: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Version {
    version: String,
    components: Vec<Component>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Component {
    name: String,
    version: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Inspect {
    id: String,
    /// `/web`
    name: String,
    /// The image id (`sha256:…` of its config).
    image: String,
    state: InspectState,
    config: InspectConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct InspectState {
    running: bool,
    pid: u32,
    exit_code: i32,
    error: String,
    started_at: String,
    finished_at: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct InspectConfig {
    /// As the user named it (`nginx:1.27`).
    image: String,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ImageInspect {
    id: String,
    repo_digests: Option<Vec<String>>,
}

impl Engine {
    /// The first socket of `endpoints` that exists and answers `/version`.
    pub async fn connect(endpoints: &[PathBuf]) -> Result<Engine, EngineError> {
        let mut last = None;
        for socket in endpoints.iter().filter(|p| p.exists()) {
            let mut e = Engine {
                socket: socket.clone(),
                runtime: String::new(),
            };
            match e.get::<Version>("/version").await {
                Ok(Some(v)) => {
                    e.runtime = runtime_name(&v);
                    return Ok(e);
                }
                Ok(None) => {}
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| EngineError::NoSocket(endpoints.to_vec())))
    }

    pub fn endpoint(&self) -> &Path {
        &self.socket
    }

    /// The container `id`; `None` when the engine does not know it.
    pub async fn lookup(&self, id: &str) -> Result<Option<EngineContainer>, EngineError> {
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None); // never a path of ours
        }
        let Some(c) = self
            .get::<Inspect>(&format!("/containers/{id}/json"))
            .await?
        else {
            return Ok(None);
        };
        // The repo digest when the image came from a registry, else the
        // image id (a loaded or locally built image).
        let digest = match self
            .get::<ImageInspect>(&format!("/images/{}/json", c.image))
            .await
        {
            Ok(Some(i)) => repo_digest(&i).unwrap_or(i.id),
            _ => c.image.clone(),
        };
        Ok(Some(self.container(c, digest)))
    }

    fn container(&self, c: Inspect, digest: String) -> EngineContainer {
        let running = c.state.running;
        let reason = if c.state.error.is_empty() {
            "exited".to_owned()
        } else {
            c.state.error
        };
        EngineContainer {
            meta: ContainerMeta {
                id: Arc::from(c.id.as_str()),
                name: c.name.trim_start_matches('/').to_owned(),
                image: c.config.image,
                image_digest: digest,
                labels: c.config.labels.unwrap_or_default(),
                runtime: self.runtime.clone(),
                pid: (c.state.pid > 0).then_some(c.state.pid),
                started_ns: rfc3339_ns(&c.state.started_at),
                ..Default::default()
            },
            running,
            exit_code: c.state.exit_code,
            reason,
            finished_ns: if running {
                0
            } else {
                rfc3339_ns(&c.state.finished_at)
            },
        }
    }

    /// `GET {API}{path}`, decoded; `None` on 404.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, EngineError> {
        let err = |source: CallError| EngineError::Call {
            socket: self.socket.display().to_string(),
            path: path.to_owned(),
            source,
        };
        let body =
            tokio::time::timeout(CALL_TIMEOUT, get_raw(&self.socket, &format!("{API}{path}")))
                .await
                .map_err(|_| err(CallError::TimedOut(CALL_TIMEOUT)))?
                .map_err(err)?;
        match body {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| err(CallError::Decode(e))),
        }
    }
}

/// One HTTP/1.1 GET over the unix socket; `None` on 404.
async fn get_raw(socket: &Path, uri: &str) -> Result<Option<Bytes>, CallError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(CallError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(CallError::Handshake)?;
    // Driven alongside the request; ends when the sender is dropped.
    let conn = tokio::spawn(conn);
    let req = Request::get(uri)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(CallError::Request)?;
    let resp = sender.send_request(req).await.map_err(CallError::Send)?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(CallError::Body)?
        .to_bytes();
    drop(sender);
    conn.abort();
    match status {
        StatusCode::NOT_FOUND => Ok(None),
        s if s.is_success() => Ok(Some(body)),
        status => Err(CallError::Status {
            status,
            body: crate::util::clip(String::from_utf8_lossy(&body).trim()).into_owned(),
        }),
    }
}

fn runtime_name(v: &Version) -> String {
    match v.components.iter().find(|c| c.name.contains("Podman")) {
        Some(p) => format!("podman {}", p.version),
        None => format!("docker {}", v.version),
    }
}

/// The digest of the image's first repo digest (`repo@sha256:…`).
fn repo_digest(i: &ImageInspect) -> Option<String> {
    i.repo_digests
        .as_ref()?
        .iter()
        .find_map(|d| d.split_once('@').map(|(_, digest)| digest.to_owned()))
}

/// Wall-clock ns of an RFC 3339 UTC time; 0 for the engine's "never"
/// (`0001-01-01T00:00:00Z`) or anything it cannot read.
fn rfc3339_ns(s: &str) -> u64 {
    humantime::parse_rfc3339(s)
        .ok()
        .map_or(0, crate::util::unix_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSPECT: &str = r#"{
        "Id": "4f2a9c0e1d7b",
        "Created": "2026-11-22T04:49:04.1Z",
        "Name": "/web",
        "Image": "sha256:0a1b",
        "State": {"Status": "exited", "Running": false, "Pid": 0, "ExitCode": 3,
                  "Error": "", "StartedAt": "2026-11-22T04:49:05.5Z",
                  "FinishedAt": "2026-11-22T04:49:07Z"},
        "Config": {"Image": "nginx:1.27", "Labels": {"tier": "front"}, "Cmd": ["nginx"]},
        "HostConfig": {"NetworkMode": "none"}
    }"#;

    fn engine() -> Engine {
        Engine {
            socket: "/run/docker.sock".into(),
            runtime: "docker 20.10.24".into(),
        }
    }

    #[test]
    fn inspect_maps_to_metadata_and_exit() {
        let i: Inspect = serde_json::from_str(INSPECT).unwrap();
        let c = engine().container(i, "sha256:feed".into());
        assert_eq!(&*c.meta.id, "4f2a9c0e1d7b");
        assert_eq!(c.meta.name, "web");
        assert_eq!(c.meta.image, "nginx:1.27");
        assert_eq!(c.meta.image_digest, "sha256:feed");
        assert_eq!(c.meta.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(c.meta.runtime, "docker 20.10.24");
        assert_eq!(c.meta.pid, None);
        assert!(!c.running);
        assert_eq!((c.exit_code, c.reason.as_str()), (3, "exited"));
        assert_eq!(c.finished_ns, 1_795_322_947_000_000_000);
        assert_eq!(c.meta.started_ns, 1_795_322_945_500_000_000);
    }

    #[test]
    fn never_is_zero_and_podman_is_named() {
        assert_eq!(rfc3339_ns("0001-01-01T00:00:00Z"), 0);
        assert_eq!(rfc3339_ns("garbage"), 0);
        let v: Version = serde_json::from_str(
            r#"{"Version": "4.3.1", "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}"#,
        )
        .unwrap();
        assert_eq!(runtime_name(&v), "podman 4.3.1");
        let v: Version = serde_json::from_str(r#"{"Version": "20.10.24+dfsg1"}"#).unwrap();
        assert_eq!(runtime_name(&v), "docker 20.10.24+dfsg1");
    }

    #[test]
    fn repo_digest_is_preferred() {
        let i = ImageInspect {
            id: "sha256:0a1b".into(),
            repo_digests: Some(vec!["nginx@sha256:feed".into()]),
        };
        assert_eq!(repo_digest(&i).as_deref(), Some("sha256:feed"));
        assert_eq!(repo_digest(&ImageInspect::default()), None);
    }
}
