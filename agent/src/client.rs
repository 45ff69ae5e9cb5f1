//! Connecting to an agent: over its unix socket, or over TCP with an
//! optional bearer token. Used by `fdrctl` and the tests.

use std::path::{Path, PathBuf};

use fdr_proto::v1::flight_recorder_client::FlightRecorderClient;
use hyper_util::rt::TokioIo;
use tonic::{
    metadata::MetadataValue,
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Channel, Endpoint},
    Request, Status,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the fdr agent at {target}: {reason}\n\
         Is fdr-agent running? (`cargo xtask run` starts one; --socket or FDR_SOCKET selects another)"
    )]
    Unreachable { target: String, reason: String },
    #[error("invalid API token: {0}")]
    BadToken(String),
}

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = FlightRecorderClient<InterceptedService<Channel, Token>>;

/// Where the agent is.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    /// `http://host:port`
    Tcp {
        url: String,
        token: Option<String>,
    },
}

pub async fn connect(target: &Target) -> Result<Client, ClientError> {
    match target {
        Target::Unix(path) => connect_unix(path).await,
        Target::Tcp { url, token } => {
            let unreachable = |reason: String| ClientError::Unreachable {
                target: url.clone(),
                reason,
            };
            let channel = Endpoint::from_shared(url.clone())
                .map_err(|e| unreachable(e.to_string()))?
                .connect()
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let token = token
                .as_ref()
                .map(|t| {
                    format!("Bearer {t}")
                        .parse()
                        .map_err(|_| ClientError::BadToken("not ASCII".into()))
                })
                .transpose()?;
            Ok(FlightRecorderClient::with_interceptor(
                channel,
                Token(token),
            ))
        }
    }
}

pub async fn connect_unix(path: &Path) -> Result<Client, ClientError> {
    connect_unix_with(path, unix_endpoint()).await
}

/// The endpoint [`connect_unix`] uses; callers may tune it (flow-control
/// windows, timeouts) and pass it to [`connect_unix_with`].
pub fn unix_endpoint() -> Endpoint {
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://fdr-agent.invalid")
}

pub async fn connect_unix_with(path: &Path, endpoint: Endpoint) -> Result<Client, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        target: path.display().to_string(),
        reason,
    };
    if !path.exists() {
        return Err(unreachable("no such socket".into()));
    }
    let channel = unix_channel(path, endpoint)
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    Ok(FlightRecorderClient::with_interceptor(channel, Token(None)))
}

/// A gRPC channel to a unix socket (the agent's, a container runtime's).
/// The endpoint's URI is required but unused: the connector dials the
/// socket.
pub async fn unix_channel(
    path: &Path,
    endpoint: Endpoint,
) -> Result<Channel, tonic::transport::Error> {
    let socket = path.to_path_buf();
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
