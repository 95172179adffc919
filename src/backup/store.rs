//! Where snapshots live: an object-store URL, opened with `object_store`.
//!
//! `s3://bucket/prefix` (S3 and S3-compatible endpoints; `AWS_*`
//! environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
//! AWS_ENDPOINT for another endpoint, path-style unless
//! AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true, AWS_ALLOW_HTTP=true for http),
//! `gs://bucket/prefix` (GOOGLE_* environment), `az://container/prefix`
//! (AZURE_* environment) and `file:///dir`.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

use super::BackupError;

/// Archive object name (with the compression's extension appended).
pub const ARCHIVE: &str = "world.tar";
/// Manifest object name; its presence marks a complete snapshot.
pub const MANIFEST: &str = "manifest.json";

/// Bounded retries: a store that stays down fails the backup within about
/// a minute instead of hanging the Job.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(200),
            max_backoff: std::time::Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: std::time::Duration::from_secs(60),
    }
}

/// An opened snapshot location: a store and the key prefix of one snapshot.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URL it was opened from (normalized, no trailing slash).
    pub url: String,
}

impl Location {
    /// Opens `url` (see the module docs for schemes and credentials).
    pub fn open(url: &str) -> Result<Location, BackupError> {
        let bad = |m: String| BackupError::InvalidLocation(format!("{url}: {m}"));
        let trimmed = url.trim_end_matches('/');
        let parsed = url::Url::parse(trimmed).map_err(|e| bad(e.to_string()))?;
        let key = parsed.path().trim_start_matches('/');
        if key.split('/').any(|s| s == "..") {
            return Err(bad("'..' is not allowed".into()));
        }
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" | "s3a" => {
                let bucket = parsed.host_str().ok_or_else(|| bad("no bucket".into()))?;
                Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .with_retry(retry())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            "gs" => {
                let bucket = parsed.host_str().ok_or_else(|| bad("no bucket".into()))?;
                Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(bucket)
                        .with_retry(retry())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            "az" | "azure" => {
                let container = parsed.host_str().ok_or_else(|| bad("no container".into()))?;
                Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_container_name(container)
                        .with_retry(retry())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            "file" => {
                let root = std::path::Path::new("/");
                std::fs::create_dir_all(root.join(key)).map_err(|e| bad(e.to_string()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(root).map_err(|e| bad(e.to_string()))?;
                Arc::new(fs)
            }
            other => return Err(bad(format!("unsupported scheme {other:?} (s3, gs, az, file)"))),
        };
        Ok(Location { store, prefix: Path::from(key), url: trimmed.to_string() })
    }

    /// Key of an object inside this snapshot.
    pub fn key(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    /// A location for a child prefix (e.g. one snapshot under a store).
    pub fn child(&self, name: &str) -> Location {
        Location { store: self.store.clone(), prefix: self.key(name), url: format!("{}/{name}", self.url) }
    }
}
