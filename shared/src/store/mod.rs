//! The object store port: what the use cases need from S3, and its S3 adapter.

mod s3;

use std::time::{Duration, SystemTime};

pub use s3::{S3Store, Transfer};

use crate::domain::retry::Transient;

/// An object's bytes and the metadata stored with its vector.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub bytes: Vec<u8>,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub content_type: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: Option<i64>,
}

/// One entry of a bucket listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    /// Without quotes.
    pub etag: String,
    pub size: u64,
}

/// A time-limited GET URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    pub url: String,
    pub expires_at: SystemTime,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("object s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    /// `size` is what the headers declared, or what was read before the limit was passed.
    #[error("object is {size} bytes or more, over the limit of {max} (MAX_OBJECT_BYTES)")]
    TooLarge { size: u64, max: u64 },
    #[error("S3 is unavailable: {0}")]
    Unavailable(String),
    #[error("S3 refused the request: {0}")]
    Refused(String),
}

impl Transient for StoreError {
    fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Downloads an object, refusing (before reading the body) one larger than `max_bytes`.
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<StoredObject, StoreError>;
    /// The object's current ETag (without quotes), or `None` when it does not exist: the bucket is
    /// the judge whenever events may have arrived out of order.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<String>, StoreError>;
    /// Every object under `prefix` (folder markers ending in `/` left out), in key order.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError>;
    /// A GET URL valid for `ttl`, signed locally (no request is made).
    async fn presign_get(&self, bucket: &str, key: &str, ttl: Duration) -> Result<PresignedUrl, StoreError>;
}

/// S3 ETags arrive quoted from GetObject and bare in events; compare them bare.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}
