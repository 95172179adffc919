//! Where snapshots live: an object-store URL, opened with `object_store`.
//!
//! `s3://bucket/prefix` (S3 and S3-compatible endpoints; `AWS_*`
//! environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
//! AWS_ENDPOINT for another endpoint, path-style unless
//! AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true, AWS_ALLOW_HTTP=true for http),
//! `gs://bucket/prefix` (GOOGLE_* environment), `az://container/prefix`
//! (AZURE_* environment) and `file:///dir`.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;

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
    /// Checks that a URL names a supported store.
    pub fn check_url(url: &str) -> Result<(), String> {
        let parsed = url::Url::parse(url.trim_end_matches('/')).map_err(|e| e.to_string())?;
        if parsed.path().split('/').any(|s| s == "..") {
            return Err("'..' is not allowed".into());
        }
        match parsed.scheme() {
            "s3" | "s3a" | "gs" | "az" | "azure" if parsed.host_str().is_some() => Ok(()),
            "file" => Ok(()),
            "s3" | "s3a" | "gs" | "az" | "azure" => Err("no bucket or container".into()),
            other => Err(format!("unsupported scheme {other:?} (s3, gs, az, file)")),
        }
    }

    /// Opens `url` with settings from the environment (AWS_*, GOOGLE_*,
    /// AZURE_*): the CLI and the Jobs.
    pub fn open(url: &str) -> Result<Location, BackupError> {
        Self::build(url, &BTreeMap::new(), true)
    }

    /// Opens `url` with explicit settings (environment-variable names such
    /// as AWS_ENDPOINT) and nothing from the environment: the operator.
    pub fn open_with(url: &str, settings: &BTreeMap<String, String>) -> Result<Location, BackupError> {
        Self::build(url, settings, false)
    }

    fn build(url: &str, settings: &BTreeMap<String, String>, env: bool) -> Result<Location, BackupError> {
        let bad = |m: String| BackupError::InvalidLocation(format!("{url}: {m}"));
        Self::check_url(url).map_err(bad)?;
        let trimmed = url.trim_end_matches('/');
        let parsed = url::Url::parse(trimmed).map_err(|e| bad(e.to_string()))?;
        let key = parsed.path().trim_start_matches('/').to_string();
        let host = parsed.host_str().unwrap_or_default().to_string();
        let setting = |k: &String| k.to_ascii_lowercase();
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut b = if env { AmazonS3Builder::from_env() } else { AmazonS3Builder::new() };
                for (k, v) in settings {
                    b = b.with_config(setting(k).parse().map_err(|e| bad(format!("{k}: {e}")))?, v);
                }
                Arc::new(b.with_bucket_name(host).with_retry(retry()).build().map_err(|e| bad(e.to_string()))?)
            }
            "gs" => {
                let mut b = if env { GoogleCloudStorageBuilder::from_env() } else { GoogleCloudStorageBuilder::new() };
                for (k, v) in settings {
                    b = b.with_config(setting(k).parse().map_err(|e| bad(format!("{k}: {e}")))?, v);
                }
                Arc::new(b.with_bucket_name(host).with_retry(retry()).build().map_err(|e| bad(e.to_string()))?)
            }
            "az" | "azure" => {
                let mut b = if env { MicrosoftAzureBuilder::from_env() } else { MicrosoftAzureBuilder::new() };
                for (k, v) in settings {
                    b = b.with_config(setting(k).parse().map_err(|e| bad(format!("{k}: {e}")))?, v);
                }
                Arc::new(b.with_container_name(host).with_retry(retry()).build().map_err(|e| bad(e.to_string()))?)
            }
            _ => {
                let root = std::path::Path::new("/");
                std::fs::create_dir_all(root.join(&key)).map_err(|e| bad(e.to_string()))?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).map_err(|e| bad(e.to_string()))?)
            }
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
