//! gRPC plumbing both sides use: a channel to a unix socket (the agent's,
//! a container runtime's) and an error with its causes on one line.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// The largest gRPC message either side accepts or sends (`fdr.v1`), set
/// explicitly on the agent's servers and on clients: 4 times tonic's
/// default. Responses that can grow are paged well below it (about 4 MiB
/// a page), so the margin is for one oversized item, never a normal page.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

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

/// The error's text and its causes', joined by `: `.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connecting")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_joins_causes() {
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "connecting: refused");
    }

    #[tokio::test]
    async fn unix_channel_to_a_missing_socket_fails() {
        let dir = std::env::temp_dir().join(format!("fdr-proto-{}", std::process::id()));
        let err = unix_channel(
            &dir.join("none.sock"),
            Endpoint::from_static("http://x.invalid"),
        )
        .await
        .expect_err("no socket there");
        assert!(
            error_chain(&err).contains("No such file"),
            "{}",
            error_chain(&err)
        );
    }
}
