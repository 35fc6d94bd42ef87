//! What the use cases store, find and report: one record per object, a hit is a record with its
//! score, and one filter type from the API down to the index adapters.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// One image's vector and the metadata returned with search hits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageRecord {
    /// [`record_id`] of bucket and key: one entity per object, so a re-upload replaces it.
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    /// Milliseconds since the Unix epoch (0 when unknown).
    pub last_modified_ms: i64,
    pub width: i64,
    pub height: i64,
    pub indexed_at_ms: i64,
    /// Empty in a search hit unless [`crate::index::SearchQuery::with_vectors`] was set.
    pub vector: Vec<f32>,
}

/// A search hit: the record and its cosine similarity to the query (higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageHit {
    pub record: ImageRecord,
    pub score: f32,
}

/// Which records a search may return. Plain validated values: the index adapter turns them into
/// an expression with every string escaped, so user input never becomes expression syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SearchFilter {
    /// Only keys that start with it.
    pub prefix: Option<String>,
    /// Lower case, e.g. `image/jpeg`.
    pub content_type: Option<String>,
    /// S3 LastModified in milliseconds since the epoch, inclusive.
    pub uploaded_after_ms: Option<i64>,
    /// S3 LastModified in milliseconds since the epoch, exclusive.
    pub uploaded_before_ms: Option<i64>,
    /// Leave this record out (image-to-image search leaves out the query image).
    pub exclude_id: Option<String>,
}

impl SearchFilter {
    /// The same rules in Rust, for in-memory indexes and checks.
    pub fn matches(&self, record: &ImageRecord) -> bool {
        self.prefix.as_deref().is_none_or(|p| record.key.starts_with(p))
            && self.content_type.as_deref().is_none_or(|c| c == record.content_type)
            && self.uploaded_after_ms.is_none_or(|t| record.last_modified_ms >= t)
            && self.uploaded_before_ms.is_none_or(|t| record.last_modified_ms < t)
            && self.exclude_id.as_deref().is_none_or(|x| x != record.id)
    }
}

/// An object that was not indexed, and why: a bad object (ingest skips it and the event
/// succeeds), or in a bulk run also an object whose batch failed after retries.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NotIndexed {
    pub key: String,
    pub reason: String,
}

/// Primary key of an object: SHA-256 of bucket and key, hex. Keys up to 1024 bytes map to a fixed 64 characters.
pub fn record_id(bucket: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(bucket.as_bytes());
    hash.update([0u8]);
    hash.update(key.as_bytes());
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_hash_bucket_nul_key_and_distinguish_bucket_from_key() {
        // sha256(b"b\0k"), computed independently: printf 'b\0k' | sha256sum
        assert_eq!(record_id("b", "k"), "265def662ae3808168044d68d81cc945eebb382c7a3622ea0c50f92672565192");
        assert_ne!(record_id("ab", "c"), record_id("a", "bc"));
        assert_eq!(record_id("b", &"x".repeat(1024)).len(), 64);
    }

    #[test]
    fn filters_apply_every_condition() {
        let record = ImageRecord {
            id: "1".into(),
            key: "photos/cat.jpg".into(),
            content_type: "image/jpeg".into(),
            last_modified_ms: 1_000,
            ..Default::default()
        };
        assert!(SearchFilter::default().matches(&record));
        let only = |f: SearchFilter| f.matches(&record);
        assert!(only(SearchFilter { prefix: Some("photos/".into()), ..Default::default() }));
        assert!(!only(SearchFilter { prefix: Some("videos/".into()), ..Default::default() }));
        assert!(!only(SearchFilter { content_type: Some("image/png".into()), ..Default::default() }));
        assert!(only(SearchFilter { uploaded_after_ms: Some(1_000), ..Default::default() }));
        assert!(!only(SearchFilter { uploaded_before_ms: Some(1_000), ..Default::default() }));
        assert!(!only(SearchFilter { exclude_id: Some("1".into()), ..Default::default() }));
    }
}
