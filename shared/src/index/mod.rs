//! The vector index port: what the use cases need from Milvus, and its Milvus adapter.

mod milvus;

use std::collections::HashMap;

pub use milvus::{CollectionSpec, MilvusIndex, SchemaRole};

use crate::domain::record::{ImageHit, ImageRecord, SearchFilter, Sequencer};
use crate::domain::retry::Transient;

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
            owner: None,
            prefix: None,
            content_type: None,
            uploaded_after_ms: None,
            uploaded_before_ms: None,
            exclude_id: None,
        };
        SearchQuery { vector, filter: &EVERYTHING, offset: 0, limit, with_vectors: false }
    }
}

/// The most rows one search (`offset + limit`) or one query may return: Milvus's default
/// `maxQueryResultWindow`. Paging, dedup windows and listing all stay inside it.
pub const MAX_RESULT_WINDOW: usize = 16_384;

/// What the index holds for one object (reconciling compares it with the bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedObject {
    pub id: String,
    pub key: String,
    pub etag: String,
}

/// The version of an object the index holds: what ingest compares an event with before it downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedVersion {
    pub etag: String,
    pub sequencer: Option<Sequencer>,
}

/// A record to delete, but only if it is still the version the caller decided on: Milvus has no
/// transactions, so each condition is part of the delete itself and a record written meanwhile
/// by a newer event survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: String,
    /// Only if the record still has this ETag.
    pub etag: Option<String>,
    /// Only if the record's sequencer is not newer than this (a record without one counts as oldest).
    pub not_newer_than: Option<Sequencer>,
}

impl Deletion {
    /// Deletes the record whatever it holds.
    pub fn any(id: impl Into<String>) -> Self {
        Deletion { id: id.into(), etag: None, not_newer_than: None }
    }

    /// Whether a record with this ETag and sequencer meets the conditions.
    pub fn applies_to(&self, etag: &str, sequencer: Option<&Sequencer>) -> bool {
        self.etag.as_deref().is_none_or(|e| e == etag)
            && self.not_newer_than.as_ref().is_none_or(|limit| sequencer.is_none_or(|s| s <= limit))
    }
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
    /// Deletes each record that meets its [`Deletion`]'s conditions; the others stay.
    async fn delete_if(&self, deletions: &[Deletion]) -> Result<(), IndexError>;
    /// The version stored for each id that is indexed (read strongly: a duplicate event right
    /// after the first must see its upsert).
    async fn versions(&self, ids: &[String]) -> Result<HashMap<String, IndexedVersion>, IndexError>;

    /// Deletes these records whatever they hold (tools and tests; ingest deletes conditionally).
    async fn delete(&self, ids: &[String]) -> Result<(), IndexError> {
        self.delete_if(&ids.iter().map(Deletion::any).collect::<Vec<_>>()).await
    }
    /// The ETag stored for each id that is indexed.
    async fn etags(&self, ids: &[String]) -> Result<HashMap<String, String>, IndexError> {
        Ok(self.versions(ids).await?.into_iter().map(|(id, v)| (id, v.etag)).collect())
    }
    /// The records most similar (cosine) to the query vector that pass its filter, best first.
    async fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<ImageHit>, IndexError>;
    /// The records of `key` (one per bucket that holds it), with their vectors.
    async fn records_with_key(&self, key: &str) -> Result<Vec<ImageRecord>, IndexError>;
    /// Every record of `bucket` whose key starts with `prefix`.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<IndexedObject>, IndexError>;
    /// Number of indexed records (also the health check: it needs a working server).
    async fn count(&self) -> Result<u64, IndexError>;
    /// Makes what this process has written searchable through the index proper, where the server
    /// needs telling: Milvus Lite searches the rows it has not flushed by brute force. Bulk runs
    /// call it when they end; a no-op for servers that flush by themselves.
    async fn flush(&self) -> Result<(), IndexError> {
        Ok(())
    }
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
        /// How many times [`VectorIndex::flush`] was called.
        pub flushes: Mutex<u32>,
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
        async fn delete_if(&self, deletions: &[Deletion]) -> Result<(), IndexError> {
            self.check()?;
            let mut map = self.records.lock().unwrap();
            for deletion in deletions {
                if map.get(&deletion.id).is_some_and(|r| deletion.applies_to(&r.etag, r.sequencer.as_ref())) {
                    map.remove(&deletion.id);
                }
            }
            Ok(())
        }
        async fn versions(&self, ids: &[String]) -> Result<HashMap<String, IndexedVersion>, IndexError> {
            self.check()?;
            let map = self.records.lock().unwrap();
            Ok(ids
                .iter()
                .filter_map(|id| {
                    let r = map.get(id)?;
                    Some((id.clone(), IndexedVersion { etag: r.etag.clone(), sequencer: r.sequencer.clone() }))
                })
                .collect())
        }
        async fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<ImageHit>, IndexError> {
            self.check()?;
            let map = self.records.lock().unwrap();
            let mut hits: Vec<ImageHit> = map
                .values()
                .filter(|r| query.filter.matches(r))
                .map(|r| ImageHit {
                    score: crate::embedder::cosine(query.vector, &r.vector),
                    record: ImageRecord {
                        vector: if query.with_vectors { r.vector.clone() } else { Vec::new() },
                        ..r.clone()
                    },
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.record.key.cmp(&b.record.key)));
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
        async fn flush(&self) -> Result<(), IndexError> {
            *self.flushes.lock().unwrap() += 1;
            Ok(())
        }
    }
}
