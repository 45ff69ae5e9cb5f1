//! Snapshots by content: each stored as the object named by the SHA-256
//! of its encoding (`fdr.v1.Snapshot`), in a local directory or an
//! S3-compatible store, through `object_store`. A read checks the hash
//! again: an object changed after it was written is reported as corrupt,
//! never served.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{path::Path as ObjectPath, ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::config::EvidenceConfig;

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence store: {0}")]
    Store(#[from] object_store::Error),
    #[error("evidence store setup: {0}")]
    Setup(String),
    #[error(
        "snapshot object {name} is corrupt: its content hashes to {actual} (changed or \
         damaged after it was stored); not served"
    )]
    Corrupt { name: String, actual: String },
    #[error("snapshot object {0} is missing from the evidence store")]
    Missing(String),
}

/// The SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Where snapshots are kept.
#[derive(Clone)]
pub struct Evidence {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// "dir:/var/lib/fdr-console/objects" or "s3://bucket/prefix".
    pub describe: String,
}

impl Evidence {
    pub fn open(cfg: &EvidenceConfig) -> Result<Evidence, EvidenceError> {
        match &cfg.s3 {
            None => {
                let dir = cfg.dir.join("objects");
                std::fs::create_dir_all(&dir).map_err(|e| {
                    EvidenceError::Setup(format!("creating {}: {e}", dir.display()))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                Ok(Evidence {
                    store: Arc::new(fs),
                    prefix: String::new(),
                    describe: format!("dir:{}", dir.display()),
                })
            }
            Some(s3) => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http)
                    .with_virtual_hosted_style_request(!s3.path_style);
                if !s3.endpoint.is_empty() {
                    b = b.with_endpoint(&s3.endpoint);
                }
                if let Some(id) = &s3.access_key_id {
                    b = b.with_access_key_id(id);
                }
                if let Some(f) = &s3.secret_access_key_file {
                    let key = std::fs::read_to_string(f).map_err(|e| {
                        EvidenceError::Setup(format!(
                            "reading evidence.s3.secret_access_key_file {}: {e}",
                            f.display()
                        ))
                    })?;
                    b = b.with_secret_access_key(key.trim());
                }
                let store = b.build()?;
                Ok(Evidence {
                    store: Arc::new(store),
                    prefix: s3.prefix.trim_matches('/').to_owned(),
                    describe: format!("s3://{}/{}", s3.bucket, s3.prefix.trim_matches('/')),
                })
            }
        }
    }

    /// The object's name: `<prefix>/<aa>/<sha256>` (a directory per first
    /// byte keeps local directories small).
    fn path(&self, sha: &str) -> ObjectPath {
        let fan = sha.get(..2).unwrap_or("00");
        if self.prefix.is_empty() {
            ObjectPath::from(format!("{fan}/{sha}"))
        } else {
            ObjectPath::from(format!("{}/{fan}/{sha}", self.prefix))
        }
    }

    /// The object's key as the store shows it (for operators and tests).
    pub fn key(&self, sha: &str) -> String {
        self.path(sha).to_string()
    }

    /// Stores `data` under its hash; returns the hash. Storing the same
    /// content again is harmless (same name, same bytes).
    pub async fn put(&self, data: Bytes) -> Result<String, EvidenceError> {
        let sha = sha256_hex(&data);
        self.store
            .put(&self.path(&sha), PutPayload::from_bytes(data))
            .await?;
        Ok(sha)
    }

    /// The object named `sha`, checked against its name.
    pub async fn get(&self, sha: &str) -> Result<Bytes, EvidenceError> {
        let got = match self.store.get(&self.path(sha)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(EvidenceError::Missing(self.key(sha)))
            }
            Err(e) => return Err(e.into()),
        };
        let data = got.bytes().await?;
        let actual = sha256_hex(&data);
        if actual != sha {
            return Err(EvidenceError::Corrupt {
                name: self.key(sha),
                actual,
            });
        }
        Ok(data)
    }

    /// Whether the object is there (without reading it).
    pub async fn exists(&self, sha: &str) -> Result<bool, EvidenceError> {
        match self.store.head(&self.path(sha)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, sha: &str) -> Result<(), EvidenceError> {
        match self.store.delete(&self.path(sha)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object's hash (names that are not a hash are skipped).
    pub async fn list(&self) -> Result<Vec<String>, EvidenceError> {
        use futures::TryStreamExt;
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let metas: Vec<_> = self.store.list(prefix.as_ref()).try_collect().await?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_owned();
                (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_are_named_by_hash_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EvidenceConfig {
            dir: dir.path().to_path_buf(),
            s3: None,
        };
        let ev = Evidence::open(&cfg).unwrap();
        let sha = ev.put(Bytes::from_static(b"evidence")).await.unwrap();
        assert_eq!(sha, sha256_hex(b"evidence"));
        assert_eq!(&ev.get(&sha).await.unwrap()[..], b"evidence");
        assert_eq!(ev.list().await.unwrap(), vec![sha.clone()]);
        let file = dir.path().join("objects").join(ev.key(&sha));
        std::fs::write(&file, b"tampered").unwrap();
        let err = ev.get(&sha).await.unwrap_err();
        assert!(matches!(err, EvidenceError::Corrupt { .. }), "{err}");
        ev.delete(&sha).await.unwrap();
        assert!(matches!(
            ev.get(&sha).await.unwrap_err(),
            EvidenceError::Missing(_)
        ));
    }
}
