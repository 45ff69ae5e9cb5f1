//! Snapshots by content: each stored as the object named by the SHA-256
//! of its encoding (`fdr.v1.Snapshot`), in a local directory or an
//! S3-compatible store, through `object_store`. The object holds the
//! encoding compressed (one zstd frame: an agent's snapshot is 10–20 times
//! smaller so). A read decompresses and checks the hash again: an object
//! changed after it was written is reported as corrupt, never served.

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
    #[error("compressing a snapshot: {0}")]
    Compress(String),
}

/// zstd level: fast, and most of the gain (the encoding repeats itself).
const LEVEL: i32 = 3;

/// The most an object may expand to when read (a damaged or hostile
/// object must not take the console's memory).
const MAX_RAW_BYTES: u64 = 512 << 20;

/// Decompresses `data`, at most [`MAX_RAW_BYTES`]; `None` when it is not
/// one whole zstd frame within that.
fn expand(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let dec = zstd::stream::read::Decoder::new(data).ok()?;
    dec.take(MAX_RAW_BYTES + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= MAX_RAW_BYTES).then_some(out)
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

    /// Stores `data` (compressed) under its hash; returns the hash and the
    /// bytes stored. Storing the same content again is harmless (same
    /// name, same content).
    pub async fn put(&self, data: Bytes) -> Result<(String, u64), EvidenceError> {
        let (sha, packed) = tokio::task::spawn_blocking(move || {
            let sha = sha256_hex(&data);
            zstd::bulk::compress(&data, LEVEL).map(|p| (sha, p))
        })
        .await
        .map_err(|e| EvidenceError::Compress(e.to_string()))?
        .map_err(|e| EvidenceError::Compress(e.to_string()))?;
        let n = packed.len() as u64;
        self.store
            .put(
                &self.path(&sha),
                PutPayload::from_bytes(Bytes::from(packed)),
            )
            .await?;
        Ok((sha, n))
    }

    /// The encoding named `sha`, decompressed and checked against its
    /// name.
    pub async fn get(&self, sha: &str) -> Result<Bytes, EvidenceError> {
        let got = match self.store.get(&self.path(sha)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(EvidenceError::Missing(self.key(sha)))
            }
            Err(e) => return Err(e.into()),
        };
        let packed = got.bytes().await?;
        let name = self.key(sha);
        let want = sha.to_owned();
        tokio::task::spawn_blocking(move || {
            let Some(data) = expand(&packed) else {
                return Err(EvidenceError::Corrupt {
                    name,
                    actual: "(not a compressed snapshot)".into(),
                });
            };
            let actual = sha256_hex(&data);
            if actual != want {
                return Err(EvidenceError::Corrupt { name, actual });
            }
            Ok(Bytes::from(data))
        })
        .await
        .map_err(|e| EvidenceError::Compress(e.to_string()))?
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
        let (sha, _) = ev.put(Bytes::from_static(b"evidence")).await.unwrap();
        assert_eq!(sha, sha256_hex(b"evidence"));
        assert_eq!(&ev.get(&sha).await.unwrap()[..], b"evidence");
        assert_eq!(ev.list().await.unwrap(), vec![sha.clone()]);
        let file = dir.path().join("objects").join(ev.key(&sha));
        std::fs::write(&file, b"tampered").unwrap();
        let err = ev.get(&sha).await.unwrap_err();
        assert!(matches!(err, EvidenceError::Corrupt { .. }), "{err}");
        // Another valid object under this name: its content does not hash
        // to it.
        std::fs::write(&file, zstd::bulk::compress(b"other", 3).unwrap()).unwrap();
        let err = ev.get(&sha).await.unwrap_err();
        assert!(err.to_string().contains(&sha256_hex(b"other")), "{err}");
        ev.delete(&sha).await.unwrap();
        assert!(matches!(
            ev.get(&sha).await.unwrap_err(),
            EvidenceError::Missing(_)
        ));
    }
}
