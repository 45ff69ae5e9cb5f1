//! Connecting to an agent: over its unix socket, or over TCP (TLS for
//! `https://` URLs, with an optional client certificate) with an optional
//! bearer token. Used by `fdrctl` and the tests. The same channel serves
//! an agent's `fdr.v1.FlightRecorder` ([`connect`]) and a console's
//! `fdr.v1.Console` ([`connect_console`]).

use std::path::{Path, PathBuf};

use fdr_proto::{
    transport::{error_chain, unix_channel, MAX_MESSAGE_BYTES},
    v1::{console_client::ConsoleClient, flight_recorder_client::FlightRecorderClient},
};
use tonic::{
    metadata::MetadataValue,
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
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
    #[error("reading {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
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

/// A client of a console's `fdr.v1.Console` service.
pub type Console = ConsoleClient<InterceptedService<Channel, Token>>;

/// Where the agent is.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    /// `http://host:port` (loopback only) or `https://host:port`.
    Tcp {
        url: String,
        token: Option<String>,
        tls: ClientTls,
    },
}

/// TLS settings of an `https://` target.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA certificate(s) the agent's certificate must chain to;
    /// default: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for an agent that requires them.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name to check the agent's certificate against, when it is not
    /// the URL's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some()
    }

    fn config(&self) -> Result<ClientTlsConfig, ClientError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| ClientError::ReadFile {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        let mut c = ClientTlsConfig::new();
        c = match &self.ca_file {
            Some(ca) => c.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?)),
            None => c.with_native_roots(),
        };
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                c = c.identity(Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::Tls(
                    "a client certificate and its key go together".into(),
                ))
            }
        }
        if let Some(name) = &self.server_name {
            c = c.domain_name(name.clone());
        }
        Ok(c)
    }
}

/// A client of the agent (or console) at `target`.
pub async fn connect(target: &Target) -> Result<Client, ClientError> {
    let (channel, token) = channel(target).await?;
    Ok(client(channel, token))
}

/// A client of the `fdr.v1.Console` service at `target` (a console; an
/// agent answers its calls UNIMPLEMENTED).
pub async fn connect_console(target: &Target) -> Result<Console, ClientError> {
    let (channel, token) = channel(target).await?;
    Ok(ConsoleClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// The channel to `target`, and what each call on it carries.
async fn channel(target: &Target) -> Result<(Channel, Token), ClientError> {
    match target {
        Target::Unix(path) => Ok((unix_connect(path, unix_endpoint()).await?, Token(None))),
        Target::Tcp { url, token, tls } => {
            let unreachable = |reason: String| ClientError::Unreachable {
                target: url.clone(),
                reason,
            };
            let mut endpoint =
                Endpoint::from_shared(url.clone()).map_err(|e| unreachable(e.to_string()))?;
            if url.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(tls.config()?)
                    .map_err(|e| ClientError::Tls(error_chain(&e)))?;
            } else if tls.is_set() {
                return Err(ClientError::Tls(format!(
                    "TLS options given for {url}: use an https:// URL"
                )));
            }
            let channel = endpoint
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
            Ok((channel, Token(token)))
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
    Ok(client(unix_connect(path, endpoint).await?, Token(None)))
}

async fn unix_connect(path: &Path, endpoint: Endpoint) -> Result<Channel, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        target: path.display().to_string(),
        reason,
    };
    if !path.exists() {
        return Err(unreachable("no such socket".into()));
    }
    unix_channel(path, endpoint)
        .await
        .map_err(|e| unreachable(error_chain(&e)))
}

/// A client over `channel` with the message size limit the agent has
/// ([`MAX_MESSAGE_BYTES`]) both ways.
fn client(channel: Channel, token: Token) -> Client {
    FlightRecorderClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
