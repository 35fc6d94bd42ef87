//! The vector index port: what the use cases need from Milvus, and its Milvus adapter.

mod milvus;

use std::collections::HashMap;

pub use milvus::MilvusIndex;
use sha2::{Digest, Sha256};

use crate::retry::Transient;

/// One image's vector and the metadata returned with search hits.
#[derive(Debug, Clone, PartialEq)]
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
    pub vector: Vec<f32>,
}

/// A search hit: the record's metadata, the cosine similarity to the query and, when asked for, the vector.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageHit {
    pub id: String,
    pub score: f32,
    pub bucket: String,
    pub key: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    pub last_modified_ms: i64,
    pub width: i64,
    pub height: i64,
    /// Only when [`SearchQuery::with_vectors`] is set.
    pub vector: Option<Vec<f32>>,
}

/// Which records a search may return. Plain validated values: the adapter turns them into an
/// expression with every string escaped, so user input never becomes expression syntax.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Only keys that start with it.
    pub key_prefix: Option<String>,
    pub content_type: Option<String>,
    /// S3 LastModified in ms, inclusive.
    pub modified_from_ms: Option<i64>,
    /// S3 LastModified in ms, exclusive.
    pub modified_until_ms: Option<i64>,
    /// Leave this record out (image-to-image search leaves out the query image).
    pub exclude_id: Option<String>,
}

impl SearchFilter {
    /// The same rules in Rust, for in-memory indexes and checks.
    pub fn matches(&self, id: &str, key: &str, content_type: &str, last_modified_ms: i64) -> bool {
        self.key_prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.content_type.as_deref().is_none_or(|c| c == content_type)
            && self.modified_from_ms.is_none_or(|t| last_modified_ms >= t)
            && self.modified_until_ms.is_none_or(|t| last_modified_ms < t)
            && self.exclude_id.as_deref().is_none_or(|x| x != id)
    }
}

/// A nearest-neighbour query: ranks `offset..offset + limit` of the records that pass `filter`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery<'a> {
    pub vector: &'a [f32],
    pub filter: &'a SearchFilter,
    pub offset: usize,
    pub limit: usize,
    pub with_vectors: bool,
}

impl<'a> SearchQuery<'a> {
    /// The `limit` nearest records, unfiltered, without vectors.
    pub fn top(vector: &'a [f32], limit: usize) -> Self {
        static EVERYTHING: SearchFilter = SearchFilter {
            key_prefix: None,
            content_type: None,
            modified_from_ms: None,
            modified_until_ms: None,
            exclude_id: None,
        };
        SearchQuery { vector, filter: &EVERYTHING, offset: 0, limit, with_vectors: false }
    }
}

/// Milvus caps `offset + limit` of one search at 16,384.
pub const MAX_SEARCH_WINDOW: usize = 16_384;

/// What the index holds for one object (reconciling compares it with the bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedObject {
    pub id: String,
    pub key: String,
    pub etag: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IndexError {
    #[error("Milvus is unavailable: {0}")]
    Unavailable(String),
    #[error("the collection {collection:?} does not fit this model: {problem}")]
    Incompatible { collection: String, problem: String },
    #[error("Milvus refused the request: {0}")]
    Refused(String),
}

impl Transient for IndexError {
    fn is_transient(&self) -> bool {
        matches!(self, IndexError::Unavailable(_))
    }
}

#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync {
    /// Inserts or replaces records by id.
    async fn upsert(&self, records: &[ImageRecord]) -> Result<(), IndexError>;
    async fn delete(&self, ids: &[String]) -> Result<(), IndexError>;
    /// The ETag stored for each id that is indexed.
    async fn etags(&self, ids: &[String]) -> Result<HashMap<String, String>, IndexError>;
    /// The records most similar (cosine) to the query vector that pass its filter, best first.
    async fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<ImageHit>, IndexError>;
    /// The records of `key` (one per bucket that holds it), with their vectors.
    async fn records_with_key(&self, key: &str) -> Result<Vec<ImageRecord>, IndexError>;
    /// Every record of `bucket` whose key starts with `prefix`.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<IndexedObject>, IndexError>;
    /// Number of indexed records (also the health check: it needs a working server).
    async fn count(&self) -> Result<u64, IndexError>;
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
pub(crate) mod memory {
    //! An in-memory index for unit tests of the use cases' logic (the Milvus adapter is tested against Milvus).
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct MemoryIndex {
        pub records: Mutex<HashMap<String, ImageRecord>>,
        /// Calls that fail with `Unavailable` before the index starts answering.
        pub failures_left: Mutex<u32>,
    }

    impl MemoryIndex {
        fn check(&self) -> Result<(), IndexError> {
            let mut left = self.failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(IndexError::Unavailable("connection refused".into()));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl VectorIndex for MemoryIndex {
        async fn upsert(&self, records: &[ImageRecord]) -> Result<(), IndexError> {
            self.check()?;
            let mut map = self.records.lock().unwrap();
            for r in records {
                map.insert(r.id.clone(), r.clone());
            }
            Ok(())
        }
        async fn delete(&self, ids: &[String]) -> Result<(), IndexError> {
            self.check()?;
            let mut map = self.records.lock().unwrap();
            ids.iter().for_each(|id| {
                map.remove(id);
            });
            Ok(())
        }
        async fn etags(&self, ids: &[String]) -> Result<HashMap<String, String>, IndexError> {
            self.check()?;
            let map = self.records.lock().unwrap();
            Ok(ids.iter().filter_map(|id| map.get(id).map(|r| (id.clone(), r.etag.clone()))).collect())
        }
        async fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<ImageHit>, IndexError> {
            self.check()?;
            let map = self.records.lock().unwrap();
            let mut hits: Vec<ImageHit> = map
                .values()
                .filter(|r| query.filter.matches(&r.id, &r.key, &r.content_type, r.last_modified_ms))
                .map(|r| ImageHit {
                    id: r.id.clone(),
                    score: crate::embedder::cosine(query.vector, &r.vector),
                    bucket: r.bucket.clone(),
                    key: r.key.clone(),
                    size: r.size,
                    etag: r.etag.clone(),
                    content_type: r.content_type.clone(),
                    last_modified_ms: r.last_modified_ms,
                    width: r.width,
                    height: r.height,
                    vector: query.with_vectors.then(|| r.vector.clone()),
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
            Ok(hits.into_iter().skip(query.offset).take(query.limit).collect())
        }
        async fn records_with_key(&self, key: &str) -> Result<Vec<ImageRecord>, IndexError> {
            self.check()?;
            let map = self.records.lock().unwrap();
            Ok(map.values().filter(|r| r.key == key).cloned().collect())
        }
        async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<IndexedObject>, IndexError> {
            self.check()?;
            let map = self.records.lock().unwrap();
            Ok(map
                .values()
                .filter(|r| r.bucket == bucket && r.key.starts_with(prefix))
                .map(|r| IndexedObject { id: r.id.clone(), key: r.key.clone(), etag: r.etag.clone() })
                .collect())
        }
        async fn count(&self) -> Result<u64, IndexError> {
            self.check()?;
            Ok(self.records.lock().unwrap().len() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_stable_and_distinguish_bucket_from_key() {
        assert_eq!(record_id("b", "k"), record_id("b", "k"));
        assert_ne!(record_id("ab", "c"), record_id("a", "bc"));
        assert_eq!(record_id("b", &"x".repeat(1024)).len(), 64);
    }
}
