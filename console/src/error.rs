//! The error of copying from an agent (and of checking what is copied).

use fdr_cli::client;

use crate::{evidence::EvidenceError, index::IndexError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("{0}")]
    Call(String),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error("the agent sent a snapshot that does not decode: {0}")]
    BadSnapshot(String),
    #[error("{what} took longer than {secs}s")]
    Timeout { what: &'static str, secs: u64 },
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
}
