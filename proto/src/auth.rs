//! The server side of the TCP API's authentication, the same for the
//! agent and the console: TLS (optionally mutual: a client certificate
//! from a given CA) and a bearer token compared in constant time.

use std::{path::Path, sync::Arc, time::Duration};

use tonic::{
    service::Interceptor,
    transport::{Certificate, Identity, ServerTlsConfig},
    Request, Status,
};

/// A client that has not finished its TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("API token file {0} is empty (or not UTF-8)")]
    EmptyToken(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|source| AuthError::ReadFile {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The server's TLS: its certificate and key, and the CA client
/// certificates must come from (clients without one fail the handshake).
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, AuthError> {
    let identity = Identity::from_pem(
        read("TLS certificate", cert)?,
        read("TLS private key", key)?,
    );
    let mut tls = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("TLS client CA", ca)?));
    }
    Ok(tls)
}

/// Requires `authorization: Bearer <token>` on every call.
#[derive(Clone)]
pub struct BearerAuth {
    expected: Arc<str>,
}

impl BearerAuth {
    pub fn new(token: &str) -> Self {
        BearerAuth {
            expected: Arc::from(token),
        }
    }

    /// The token in `path` (surrounding white space trimmed; empty is an
    /// error).
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = String::from_utf8(read("API token file", path)?)
            .map_err(|_| AuthError::EmptyToken(path.display().to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(AuthError::EmptyToken(path.display().to_string()));
        }
        Ok(Self::new(token))
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), self.expected.as_bytes()) => Ok(req),
            _ => Err(Status::unauthenticated("missing or wrong bearer token")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn bearer_interceptor_rejects_missing_and_wrong_tokens() {
        let mut auth = BearerAuth::new("s3cret");
        assert_eq!(
            auth.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            auth.call(req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(auth.call(req).is_ok());
    }

    #[test]
    fn missing_tls_files_are_named() {
        let err = server_tls(
            Path::new("/nonexistent/tls.crt"),
            Path::new("/nonexistent/tls.key"),
            None,
        )
        .expect_err("an error")
        .to_string();
        assert!(
            err.contains("TLS certificate /nonexistent/tls.crt"),
            "{err}"
        );
    }
}
