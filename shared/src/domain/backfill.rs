//! Bulk use cases over what is already in a bucket: `backfill` indexes it (S3 events only
//! cover new uploads), `reconcile` repairs the index after lost events.
//!
//! Both reuse [`Ingestor::apply`], so an object is checked, embedded and stored exactly as the
//! ingest function would. Backfill is resumable by construction: an object whose ETag is
//! already indexed is left as it is, so a rerun after Ctrl-C or a crash continues where it stopped.
//! Both end by flushing the index, so what they wrote is searched through it at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use crate::domain::ingest::{IngestError, Ingestor, ObjectChange};
use crate::domain::record::{record_id, NotIndexed};
use crate::domain::retry::retry;
use crate::domain::scope::ScopeError;
use crate::index::{Deletion, IndexError, IndexedObject, VectorIndex};
use crate::store::{ListedObject, ObjectStore, StoreError};

/// How a bulk run reports progress (a terminal bar, log lines, or nothing).
pub trait Progress: Send + Sync {
    /// The number of objects that will be looked at.
    fn start(&self, total: u64);
    /// `done` more objects were handled (indexed, unchanged or failed).
    fn advance(&self, done: u64);
    fn finish(&self);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Objects embedded together.
    pub batch_size: usize,
    /// Batches in flight: fetching and decoding one overlaps inference of another.
    pub concurrency: usize,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions { batch_size: 16, concurrency: 2 }
    }
}

/// What a backfill did, per object.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BackfillSummary {
    pub listed: usize,
    pub indexed: Vec<String>,
    /// Already indexed with the same ETag: not embedded again.
    pub unchanged: usize,
    /// Objects that were not indexed, with the reason (skipped as bad objects, or an error after retries).
    pub failed: Vec<NotIndexed>,
    /// Stopped early (Ctrl-C): rerun to continue.
    pub interrupted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("S3 failed")]
    List(#[from] StoreError),
    #[error("the index failed")]
    Index(#[from] IndexError),
    #[error("ingesting failed")]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

/// Indexes the objects under `prefix` that are not indexed with their current ETag, among those
/// the deployment serves (`KEY_PREFIX`/`KEY_SUFFIX`, as the S3 notification filter).
/// `stop` is checked between batches; batches in flight finish, so nothing is half done.
pub async fn backfill(
    ingestor: &Ingestor,
    bucket: &str,
    prefix: &str,
    options: &BackfillOptions,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<BackfillSummary, BulkError> {
    let listed = list_served(ingestor, bucket, prefix).await?;
    let mut summary = BackfillSummary { listed: listed.len(), ..Default::default() };
    progress.start(listed.len() as u64);
    let todo = not_indexed(ingestor, bucket, listed, &mut summary, progress).await?;
    let batches: Vec<Vec<ListedObject>> = todo.chunks(options.batch_size.max(1)).map(<[_]>::to_vec).collect();
    let mut outcomes = futures::stream::iter(batches)
        .map(|batch| async move {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            let changes = batch
                .iter()
                .map(|o| ObjectChange::Created {
                    bucket: bucket.to_string(),
                    key: o.key.clone(),
                    etag: Some(o.etag.clone()),
                    sequencer: None,
                })
                .collect();
            Some((batch, ingestor.apply(changes).await))
        })
        .buffered(options.concurrency.max(1));
    while let Some(outcome) = outcomes.next().await {
        let Some((batch, result)) = outcome else {
            summary.interrupted = true;
            continue;
        };
        match result {
            Ok(report) => {
                summary.unchanged += report.unchanged.len();
                summary.indexed.extend(report.indexed);
                summary.failed.extend(report.skipped);
            }
            Err(e) => {
                let reason = super::describe(&e);
                tracing::error!(error = %reason, objects = batch.len(), "batch failed after retries");
                summary.failed.extend(batch.iter().map(|o| NotIndexed {
                    key: o.key.clone(),
                    reason: reason.clone(),
                    cause: None,
                }));
            }
        }
        progress.advance(batch.len() as u64);
    }
    progress.finish();
    flush_after_bulk(ingestor.index.as_ref()).await;
    Ok(summary)
}

/// Flushes the index after bulk writes, so searches find them through the index proper instead
/// of Milvus Lite's brute-force scan of unflushed rows. A failure costs only speed (Milvus Lite
/// flushes by itself once its in-memory table fills): logged, not returned.
async fn flush_after_bulk(index: &dyn VectorIndex) {
    if let Err(e) = index.flush().await {
        tracing::warn!(error = %super::describe(&e), "could not flush the index after the bulk writes; searches stay slower until it flushes");
    }
}

/// Drops the objects already indexed with the same ETag (counted as unchanged), in pages.
async fn not_indexed(
    ingestor: &Ingestor,
    bucket: &str,
    listed: Vec<ListedObject>,
    summary: &mut BackfillSummary,
    progress: &dyn Progress,
) -> Result<Vec<ListedObject>, BulkError> {
    let mut todo = Vec::new();
    for page in listed.chunks(500) {
        let ids: Vec<String> = page.iter().map(|o| record_id(bucket, &o.key)).collect();
        let indexed = retry(&ingestor.retry, "etag lookup", || ingestor.index.etags(&ids)).await?;
        for (object, id) in page.iter().zip(&ids) {
            if indexed.get(id).is_some_and(|etag| *etag == object.etag) {
                summary.unchanged += 1;
                progress.advance(1);
            } else {
                todo.push(object.clone());
            }
        }
    }
    Ok(todo)
}

/// How the index differs from the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Differences {
    /// Indexed, but the object is gone.
    pub stale: Vec<IndexedObject>,
    /// In the bucket, not indexed.
    pub missing: Vec<ListedObject>,
    /// Indexed with another ETag: the object was overwritten and the event lost.
    pub outdated: Vec<ListedObject>,
}

/// Compares a bucket listing with the index entries of the same bucket and prefix.
pub fn differences(listed: &[ListedObject], indexed: &[IndexedObject]) -> Differences {
    let by_key: HashMap<&str, &IndexedObject> = indexed.iter().map(|o| (o.key.as_str(), o)).collect();
    let in_bucket: BTreeMap<&str, &ListedObject> = listed.iter().map(|o| (o.key.as_str(), o)).collect();
    let mut diff = Differences::default();
    for object in listed {
        match by_key.get(object.key.as_str()) {
            None => diff.missing.push(object.clone()),
            Some(entry) if entry.etag != object.etag => diff.outdated.push(object.clone()),
            Some(_) => {}
        }
    }
    diff.stale = indexed.iter().filter(|o| !in_bucket.contains_key(o.key.as_str())).cloned().collect();
    diff.stale.sort_by(|a, b| a.key.cmp(&b.key));
    diff
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReconcileReport {
    pub objects: usize,
    pub indexed_before: usize,
    /// Index entries removed because their objects are gone.
    pub removed: Vec<String>,
    /// Objects not indexed (or indexed with an old ETag).
    pub missing: Vec<String>,
    /// With `fix`: the backfill of the missing objects.
    pub fixed: Option<BackfillSummary>,
}

/// The objects under `prefix` that the deployment serves, in key order.
async fn list_served(ingestor: &Ingestor, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, BulkError> {
    let prefix = ingestor.access.keys.narrow(prefix)?;
    let mut listed = retry(&ingestor.retry, "list bucket", || ingestor.store.list(bucket, &prefix)).await?;
    listed.retain(|o| ingestor.access.serves(bucket, &o.key));
    Ok(listed)
}

/// Removes index entries whose objects are gone, reports objects missing from the index and,
/// with `fix`, indexes them.
pub async fn reconcile(
    ingestor: &Ingestor,
    bucket: &str,
    prefix: &str,
    fix: bool,
    options: &BackfillOptions,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<ReconcileReport, BulkError> {
    let index: &Arc<dyn VectorIndex> = &ingestor.index;
    let listed = list_served(ingestor, bucket, prefix).await?;
    let prefix = ingestor.access.keys.narrow(prefix)?;
    let mut indexed = retry(&ingestor.retry, "list index", || index.list(bucket, &prefix)).await?;
    // Records outside the scope are not this deployment's to judge.
    indexed.retain(|o| ingestor.access.serves(bucket, &o.key));
    let diff = differences(&listed, &indexed);
    let removed = remove_stale(ingestor, bucket, diff.stale).await?;
    let mut report = ReconcileReport {
        objects: listed.len(),
        indexed_before: indexed.len(),
        removed,
        missing: diff.missing.iter().chain(&diff.outdated).map(|o| o.key.clone()).collect(),
        fixed: None,
    };
    report.missing.sort();
    if fix && !report.missing.is_empty() {
        let summary = backfill(ingestor, bucket, &prefix, options, progress, stop).await?;
        report.fixed = Some(summary);
    }
    flush_after_bulk(index.as_ref()).await;
    Ok(report)
}

/// Deletes the records of objects that are gone. Each is checked with HEAD right before, and
/// deleted only if it still holds the ETag listed: an object uploaded (and ingested) after the
/// bucket was listed keeps its record. Returns the keys removed, in key order.
async fn remove_stale(ingestor: &Ingestor, bucket: &str, stale: Vec<IndexedObject>) -> Result<Vec<String>, BulkError> {
    let store: &Arc<dyn ObjectStore> = &ingestor.store;
    let heads: Vec<(IndexedObject, Result<Option<String>, StoreError>)> = futures::stream::iter(stale)
        .map(|object| async move {
            let head = retry(&ingestor.retry, "head object", || store.head(bucket, &object.key)).await;
            (object, head)
        })
        .buffered(CONCURRENT_HEADS)
        .collect()
        .await;
    let mut gone = Vec::new();
    for (object, head) in heads {
        match head? {
            None => gone.push(object),
            Some(_) => tracing::info!(key = %object.key, "uploaded after the listing; its record is kept"),
        }
    }
    let deletions: Vec<Deletion> =
        gone.iter().map(|o| Deletion { id: o.id.clone(), etag: Some(o.etag.clone()), not_newer_than: None }).collect();
    for chunk in deletions.chunks(500) {
        retry(&ingestor.retry, "delete", || ingestor.index.delete_if(chunk)).await?;
    }
    Ok(gone.into_iter().map(|o| o.key).collect())
}

/// HEAD requests of a reconcile at once.
const CONCURRENT_HEADS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &str, etag: &str) -> ListedObject {
        ListedObject { key: key.into(), etag: etag.into(), size: 1 }
    }

    fn indexed(key: &str, etag: &str) -> IndexedObject {
        IndexedObject { id: record_id("b", key), key: key.into(), etag: etag.into() }
    }

    /// A bucket whose listing was taken before `late` was uploaded: HEAD sees it, LIST does not.
    struct RacingStore {
        late: (String, String),
    }
    #[async_trait::async_trait]
    impl ObjectStore for RacingStore {
        async fn get(&self, bucket: &str, key: &str, _: u64) -> Result<crate::store::StoredObject, StoreError> {
            Err(StoreError::NotFound { bucket: bucket.into(), key: key.into() })
        }
        async fn head(&self, _: &str, key: &str) -> Result<Option<String>, StoreError> {
            Ok((key == self.late.0).then(|| self.late.1.clone()))
        }
        async fn list(&self, _: &str, _: &str) -> Result<Vec<ListedObject>, StoreError> {
            Ok(Vec::new())
        }
        async fn presign_get(
            &self,
            _: &str,
            _: &str,
            _: std::time::Duration,
        ) -> Result<crate::store::PresignedUrl, StoreError> {
            Err(StoreError::Refused("not needed".into()))
        }
    }

    struct NoEmbedder;
    impl crate::embedder::ImageEmbedder for NoEmbedder {
        fn dim(&self) -> usize {
            2
        }
        fn embed_images(
            &self,
            _: &[&[u8]],
        ) -> Result<
            Vec<Result<crate::embedder::ImageEmbedding, crate::embedder::ImageError>>,
            crate::embedder::InferenceError,
        > {
            unreachable!("reconcile without fix embeds nothing")
        }
    }

    #[tokio::test]
    async fn reconcile_keeps_the_record_of_an_object_uploaded_after_the_listing() {
        use crate::domain::record::ImageRecord;
        let index = Arc::new(crate::index::memory::MemoryIndex::default());
        let record = |key: &str| ImageRecord {
            id: record_id("b", key),
            bucket: "b".into(),
            key: key.into(),
            etag: "e".into(),
            ..Default::default()
        };
        index.upsert(&[record("late.png"), record("gone.png")]).await.unwrap();
        let ingestor = Ingestor {
            access: Default::default(),
            embedder: Arc::new(NoEmbedder),
            store: Arc::new(RacingStore { late: ("late.png".into(), "e".into()) }),
            index: index.clone(),
            config: crate::config::IngestConfig { max_object_bytes: 100, retry_attempts: 1 },
            retry: crate::domain::retry::RetryPolicy::new(1),
        };
        let stop = AtomicBool::new(false);
        let report = reconcile(&ingestor, "b", "", false, &BackfillOptions::default(), &Quiet, &stop).await.unwrap();
        assert_eq!(report.removed, vec!["gone.png"]);
        let left: Vec<String> = index.records.lock().unwrap().values().map(|r| r.key.clone()).collect();
        assert_eq!(left, vec!["late.png"]);
        assert_eq!(*index.flushes.lock().unwrap(), 1, "the bulk run ends with a flush");
    }

    #[test]
    fn differences_find_stale_missing_and_outdated() {
        let bucket = [listed("a", "1"), listed("b", "2"), listed("c", "3")];
        let index = [indexed("a", "1"), indexed("b", "old"), indexed("gone", "9")];
        let diff = differences(&bucket, &index);
        assert_eq!(diff.stale, vec![indexed("gone", "9")]);
        assert_eq!(diff.missing, vec![listed("c", "3")]);
        assert_eq!(diff.outdated, vec![listed("b", "2")]);
        assert_eq!(
            differences(&bucket, &[indexed("a", "1"), indexed("b", "2"), indexed("c", "3")]),
            Differences::default()
        );
    }
}
