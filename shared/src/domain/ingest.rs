//! The ingest use case: S3 object changes in, vectors upserted or deleted in the index.
//!
//! Each object is fetched (several at once), checked (size, content type, magic bytes), embedded
//! in one batch with the other objects of the event, and upserted under [`record_id`]. An object whose ETag
//! is already indexed is not embedded again (S3 delivers events at least once). A bad object
//! is logged and skipped; a transient S3 or Milvus failure is retried, then returned as an
//! error so Lambda's retries and the on-failure destination keep the event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::config::IngestConfig;
use crate::domain::record::{record_id, ImageRecord, NotIndexed};
use crate::domain::retry::{retry, RetryPolicy, Transient};
use crate::embedder::{ImageEmbedder, ImageError, InferenceError};
use crate::index::{IndexError, VectorIndex};
use crate::store::{normalize_etag, ObjectStore, StoreError};

/// What happened to an object, as the use case sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectChange {
    Created { bucket: String, key: String, etag: Option<String> },
    Removed { bucket: String, key: String },
}

impl ObjectChange {
    fn location(&self) -> (&str, &str) {
        match self {
            ObjectChange::Created { bucket, key, .. } | ObjectChange::Removed { bucket, key } => (bucket, key),
        }
    }
}

/// The outcome of one event, returned by the Lambda and logged.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IngestReport {
    pub indexed: Vec<String>,
    /// Already indexed with the same ETag: not embedded again.
    pub unchanged: Vec<String>,
    pub deleted: Vec<String>,
    pub skipped: Vec<NotIndexed>,
    /// Skipped objects that overwrote an indexed image: their old record was removed, so search
    /// never hands out a URL to content that is no longer that image.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unindexed: Vec<String>,
}

/// The event could not be processed completely. Lambda retries the event and, after its
/// retries, sends it to the on-failure destination, so nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("S3 failed for {key}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("the index failed")]
    Index(#[from] IndexError),
    #[error("inference failed")]
    Inference(#[from] InferenceError),
}

impl IngestError {
    /// Whether a later attempt can succeed as it is: an outage or a failed inference may pass;
    /// a collection that does not fit the model or a refused request needs a fix first (the
    /// event still fails, so it waits in the failure queue for a replay after the fix).
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Store { source, .. } => source.is_transient(),
            IngestError::Index(e) => e.is_transient(),
            IngestError::Inference(_) => true,
        }
    }
}

/// Content types that cannot be images. Anything else (image/*, octet-stream, none) goes on to the magic-byte check.
fn refused_content_type(content_type: Option<&str>) -> Option<String> {
    let ct = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    let plausible = ct.is_empty()
        || ct.starts_with("image/")
        || matches!(ct.as_str(), "application/octet-stream" | "binary/octet-stream");
    (!plausible).then(|| format!("content type {ct} is not an image"))
}

/// The uploader's image type in the form search filters compare with: lower case, no parameters
/// (`Image/JPEG; q=1` → `image/jpeg`). `None` when it is not an image type (the sniffed format is used).
fn stored_content_type(content_type: Option<&str>) -> Option<String> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    let token = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    (kind == "image" && token(subtype) && essence.len() <= MAX_CONTENT_TYPE_LEN).then_some(essence)
}

/// The longest content type stored (the collection's field holds 255 characters); a longer or
/// malformed one is replaced by the type sniffed from the bytes.
const MAX_CONTENT_TYPE_LEN: usize = 128;

/// Objects of one batch downloaded at once: S3 latency, not bandwidth, bounds a single GET, and
/// every fetched object is held in memory until the batch is embedded anyway.
const CONCURRENT_GETS: usize = 8;

pub struct Ingestor {
    pub embedder: Arc<dyn ImageEmbedder>,
    pub store: Arc<dyn ObjectStore>,
    pub index: Arc<dyn VectorIndex>,
    pub config: IngestConfig,
    pub retry: RetryPolicy,
}

impl Ingestor {
    /// Applies changes; for several changes of one object, the last wins.
    pub async fn apply(&self, changes: Vec<ObjectChange>) -> Result<IngestReport, IngestError> {
        self.apply_with(changes, &self.retry).await
    }

    /// Like [`Ingestor::apply`], but no retry starts after `deadline` (the invocation's deadline
    /// less a reserve): a retry budget from the time left, not only a count.
    pub async fn apply_before(
        &self,
        changes: Vec<ObjectChange>,
        deadline: tokio::time::Instant,
    ) -> Result<IngestReport, IngestError> {
        self.apply_with(changes, &self.retry.until(deadline)).await
    }

    async fn apply_with(&self, changes: Vec<ObjectChange>, policy: &RetryPolicy) -> Result<IngestReport, IngestError> {
        let mut last: HashMap<String, ObjectChange> = HashMap::new();
        let mut order = Vec::new();
        for change in changes {
            let (bucket, key) = change.location();
            let id = record_id(bucket, key);
            if last.insert(id.clone(), change).is_none() {
                order.push(id);
            }
        }
        let mut report = IngestReport::default();
        let mut removed = Vec::new();
        let mut created = Vec::new();
        for id in order {
            match last.remove(&id).expect("every id was inserted") {
                ObjectChange::Removed { key, .. } => removed.push((id, key)),
                ObjectChange::Created { bucket, key, etag } => created.push((id, bucket, key, etag)),
            }
        }

        if !removed.is_empty() {
            let ids: Vec<String> = removed.iter().map(|(id, _)| id.clone()).collect();
            retry(policy, "delete", || self.index.delete(&ids)).await?;
            for (_, key) in removed {
                tracing::info!(key = %key, "deleted from the index");
                report.deleted.push(key);
            }
        }
        if created.is_empty() {
            return Ok(report);
        }

        let ids: Vec<String> = created.iter().map(|(id, ..)| id.clone()).collect();
        let indexed = retry(policy, "etag lookup", || self.index.etags(&ids)).await?;
        let mut to_fetch = Vec::new();
        for (id, bucket, key, event_etag) in created {
            let known = indexed.get(&id);
            let event_etag = event_etag.map(|e| normalize_etag(&e)).filter(|e| !e.is_empty());
            if event_etag.is_some() && known == event_etag.as_ref() {
                tracing::info!(key = %key, "already indexed with this ETag, not embedded again");
                report.unchanged.push(key);
            } else {
                to_fetch.push((id, bucket, key, known));
            }
        }
        let max = self.config.max_object_bytes;
        let downloads: Vec<_> = stream::iter(to_fetch)
            .map(|(id, bucket, key, known)| async move {
                let got = retry(policy, "get object", || self.store.get(&bucket, &key, max)).await;
                (id, bucket, key, known, got)
            })
            .buffered(CONCURRENT_GETS)
            .collect()
            .await;
        let mut fetched = Vec::new();
        let mut first_failure = None;
        // Records of objects now skipped: the old image was overwritten (or is gone), so its
        // record would hand out a URL to what is no longer that image.
        let mut stale = Vec::new();
        for (id, bucket, key, known, got) in downloads {
            match got {
                Ok(object) if known == Some(&object.etag) => {
                    tracing::info!(key = %key, "already indexed with this ETag, not embedded again");
                    report.unchanged.push(key);
                }
                Ok(object) => match refused_content_type(object.content_type.as_deref()) {
                    Some(reason) => {
                        if known.is_some() {
                            stale.push((id, key.clone()));
                        }
                        skip(&mut report, key, reason)
                    }
                    None => fetched.push((id, bucket, key, known.is_some(), object)),
                },
                Err(e @ (StoreError::NotFound { .. } | StoreError::TooLarge { .. })) => {
                    if known.is_some() {
                        stale.push((id, key.clone()));
                    }
                    skip(&mut report, key, e.to_string())
                }
                Err(e @ (StoreError::Unavailable(_) | StoreError::Refused(_))) => {
                    // Not the object's fault: the event must fail so that it is retried or kept.
                    tracing::error!(key = %key, error = %e, "S3 failed");
                    first_failure.get_or_insert(IngestError::Store { key, source: e });
                }
            }
        }

        if !fetched.is_empty() {
            let embedder = Arc::clone(&self.embedder);
            let bytes: Vec<Vec<u8>> = fetched.iter_mut().map(|(.., o)| std::mem::take(&mut o.bytes)).collect();
            let results = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                embedder.embed_images(&refs)
            })
            .await
            .map_err(|e| InferenceError(format!("embedding task failed: {e}")))??;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            let mut records = Vec::new();
            let mut keys = Vec::new();
            for ((id, bucket, key, was_indexed, object), result) in fetched.into_iter().zip(results) {
                match result {
                    Ok(embedding) => {
                        records.push(ImageRecord {
                            id,
                            bucket,
                            key: key.clone(),
                            size: object.size as i64,
                            etag: object.etag,
                            content_type: stored_content_type(object.content_type.as_deref())
                                .unwrap_or_else(|| embedding.format.mime_type().to_string()),
                            last_modified_ms: object.last_modified_ms.unwrap_or(0),
                            width: embedding.width as i64,
                            height: embedding.height as i64,
                            indexed_at_ms: now,
                            vector: embedding.vector,
                        });
                        keys.push(key);
                    }
                    Err(e) => {
                        if let ImageError::Panicked { .. } = e {
                            // A bug, not a bad upload: logged at error level, and still only this image is lost.
                            tracing::error!(key = %key, error = %e, "image preparation panicked");
                        }
                        if was_indexed {
                            stale.push((id, key.clone()));
                        }
                        skip(&mut report, key, e.to_string())
                    }
                }
            }
            if !records.is_empty() {
                retry(policy, "upsert", || self.index.upsert(&records)).await?;
                for key in keys {
                    tracing::info!(key = %key, "indexed");
                    report.indexed.push(key);
                }
            }
        }
        if !stale.is_empty() {
            let ids: Vec<String> = stale.iter().map(|(id, _)| id.clone()).collect();
            retry(policy, "delete", || self.index.delete(&ids)).await?;
            for (_, key) in stale {
                tracing::warn!(key = %key, "the new object was skipped; its old record was removed from the index");
                report.unindexed.push(key);
            }
        }
        match first_failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

fn skip(report: &mut IngestReport, key: String, reason: String) {
    tracing::warn!(key = %key, reason = %reason, "object skipped");
    report.skipped.push(NotIndexed { key, reason });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedder::{ImageEmbedding, ImageError, SupportedFormat};
    use crate::index::memory::MemoryIndex;
    use crate::store::{ListedObject, PresignedUrl, StoredObject};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Embeds any byte string starting with "img" as a 2-d vector; anything else is corrupt.
    #[derive(Default)]
    struct FakeEmbedder {
        calls: AtomicUsize,
    }
    impl ImageEmbedder for FakeEmbedder {
        fn dim(&self) -> usize {
            2
        }
        fn embed_images(&self, images: &[&[u8]]) -> Result<Vec<Result<ImageEmbedding, ImageError>>, InferenceError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(images
                .iter()
                .map(|b| {
                    if b.starts_with(b"img") {
                        Ok(ImageEmbedding { vector: vec![1.0, 0.0], width: 4, height: 3, format: SupportedFormat::Png })
                    } else {
                        Err(ImageError::UnknownFormat)
                    }
                })
                .collect())
        }
    }

    #[derive(Default)]
    struct FakeStore {
        objects: Mutex<HashMap<String, StoredObject>>,
        /// How many more GETs of a key answer 503.
        unavailable: Mutex<HashMap<String, u32>>,
        gets: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        /// Keys whose GET takes four times as long.
        slow: Mutex<Vec<String>>,
        /// Keys whose GET is denied (a policy mistake).
        denied: Mutex<Vec<String>>,
    }
    impl FakeStore {
        fn put(&self, key: &str, bytes: &[u8], etag: &str, content_type: &str) {
            let object = StoredObject {
                bytes: bytes.to_vec(),
                size: bytes.len() as u64,
                etag: etag.into(),
                content_type: Some(content_type.into()),
                last_modified_ms: Some(1),
            };
            self.objects.lock().unwrap().insert(key.to_string(), object);
        }
    }
    #[async_trait::async_trait]
    impl ObjectStore for FakeStore {
        async fn get(&self, bucket: &str, key: &str, max: u64) -> Result<StoredObject, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let slow = self.slow.lock().unwrap().iter().any(|k| k == key);
            tokio::time::sleep(Duration::from_millis(if slow { 20 } else { 5 })).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some(left @ 1..) = self.unavailable.lock().unwrap().get_mut(key) {
                *left -= 1;
                return Err(StoreError::Unavailable("503 SlowDown".into()));
            }
            if self.denied.lock().unwrap().iter().any(|k| k == key) {
                return Err(StoreError::Refused("AccessDenied (HTTP 403): Access Denied".into()));
            }
            let object = self.objects.lock().unwrap().get(key).cloned();
            let object = object.ok_or(StoreError::NotFound { bucket: bucket.into(), key: key.into() })?;
            if object.size > max {
                return Err(StoreError::TooLarge { size: object.size, max });
            }
            Ok(object)
        }
        async fn list(&self, _: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
            let objects = self.objects.lock().unwrap();
            let mut listed: Vec<ListedObject> = objects
                .iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .map(|(key, o)| ListedObject { key: key.clone(), etag: o.etag.clone(), size: o.size })
                .collect();
            listed.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(listed)
        }
        async fn presign_get(&self, _: &str, key: &str, ttl: Duration) -> Result<PresignedUrl, StoreError> {
            Ok(PresignedUrl { url: format!("https://example/{key}"), expires_at: SystemTime::now() + ttl })
        }
    }

    struct Fixture {
        ingestor: Ingestor,
        store: Arc<FakeStore>,
        index: Arc<MemoryIndex>,
        embedder: Arc<FakeEmbedder>,
    }

    fn fixture() -> Fixture {
        let store = Arc::new(FakeStore::default());
        let index = Arc::new(MemoryIndex::default());
        let embedder = Arc::new(FakeEmbedder::default());
        let ingestor = Ingestor {
            embedder: embedder.clone(),
            store: store.clone(),
            index: index.clone(),
            config: IngestConfig { max_object_bytes: 100, retry_attempts: 3 },
            retry: RetryPolicy {
                attempts: 3,
                first_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
                deadline: None,
            },
        };
        Fixture { ingestor, store, index, embedder }
    }

    fn created(key: &str, etag: Option<&str>) -> ObjectChange {
        ObjectChange::Created { bucket: "b".into(), key: key.into(), etag: etag.map(str::to_string) }
    }

    #[test]
    fn stored_content_types_are_lower_case_without_parameters() {
        assert_eq!(stored_content_type(Some("Image/PNG")).as_deref(), Some("image/png"));
        assert_eq!(stored_content_type(Some("image/jpeg; charset=binary")).as_deref(), Some("image/jpeg"));
        assert_eq!(stored_content_type(Some("application/octet-stream")), None);
        assert_eq!(stored_content_type(None), None);
        // Malformed or too long for the collection's field: the sniffed type is stored instead.
        assert_eq!(stored_content_type(Some(&format!("image/{}", "x".repeat(300)))), None);
        assert_eq!(stored_content_type(Some("image/")), None);
        assert_eq!(stored_content_type(Some("image/png\"; x=\"")), None);
        assert_eq!(stored_content_type(Some("image/png png")), None);
        assert_eq!(stored_content_type(Some("image/svg+xml")).as_deref(), Some("image/svg+xml"));
    }

    #[tokio::test]
    async fn an_overwrite_with_an_object_that_is_skipped_removes_the_old_record() {
        let f = fixture();
        for key in ["corrupt.png", "text.png", "huge.png", "gone.png", "fine.png"] {
            f.store.put(key, b"img-old", "old", "image/png");
        }
        let keys = ["corrupt.png", "text.png", "huge.png", "gone.png", "fine.png"];
        let report = f.ingestor.apply(keys.iter().map(|k| created(k, None)).collect()).await.unwrap();
        assert_eq!(report.indexed.len(), 5);
        f.store.put("corrupt.png", b"garbage", "new1", "image/png");
        f.store.put("text.png", b"img but text", "new2", "text/plain");
        f.store.put("huge.png", &[b'i'; 200], "new3", "image/png");
        f.store.objects.lock().unwrap().remove("gone.png");
        f.store.put("fine.png", b"img-new", "new5", "image/png");
        let report = f.ingestor.apply(keys.iter().map(|k| created(k, None)).collect()).await.unwrap();
        assert_eq!(report.indexed, vec!["fine.png"]);
        let mut unindexed = report.unindexed.clone();
        unindexed.sort();
        assert_eq!(unindexed, vec!["corrupt.png", "gone.png", "huge.png", "text.png"]);
        let ids: Vec<String> = keys.iter().map(|k| record_id("b", k)).collect();
        let left = f.index.etags(&ids).await.unwrap();
        assert_eq!(left.len(), 1, "only fine.png keeps a record: {left:?}");
        assert_eq!(left.get(&record_id("b", "fine.png")).map(String::as_str), Some("new5"));
    }

    #[tokio::test]
    async fn good_objects_are_indexed_in_one_batch_and_bad_ones_skipped() {
        let f = fixture();
        f.store.put("a.png", b"img-a", "e1", "image/png");
        f.store.put("b.png", b"img-b", "e2", "binary/octet-stream");
        f.store.put("corrupt.jpg", b"garbage", "e3", "image/jpeg");
        f.store.put("notes.txt", b"img-ish text", "e4", "text/plain");
        f.store.put("huge.png", &[b'i'; 200], "e5", "image/png");
        let changes = ["a.png", "b.png", "corrupt.jpg", "notes.txt", "huge.png", "gone.png"]
            .iter()
            .map(|k| created(k, None))
            .collect();
        let report = f.ingestor.apply(changes).await.unwrap();
        assert_eq!(report.indexed, vec!["a.png", "b.png"]);
        let skipped: Vec<&str> = report.skipped.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(skipped, vec!["notes.txt", "huge.png", "gone.png", "corrupt.jpg"]);
        assert!(report.skipped[0].reason.contains("text/plain"));
        assert_eq!(f.embedder.calls.load(Ordering::SeqCst), 1, "one batch for the whole event");
        let records = f.index.records.lock().unwrap();
        assert_eq!(records.len(), 2);
        let b = &records[&record_id("b", "b.png")];
        assert_eq!((b.content_type.as_str(), b.width, b.height, b.etag.as_str()), ("image/png", 4, 3, "e2"));
    }

    #[tokio::test]
    async fn the_objects_of_a_batch_are_downloaded_at_once_and_reported_in_event_order() {
        let f = fixture();
        let keys: Vec<String> = (0..12).map(|i| format!("{i:02}.png")).collect();
        for key in &keys {
            f.store.put(key, b"img", key, "image/png");
        }
        f.store.slow.lock().unwrap().push(keys[0].clone());
        let report = f.ingestor.apply(keys.iter().map(|k| created(k, None)).collect()).await.unwrap();
        assert_eq!(report.indexed, keys);
        let most = f.store.most_in_flight.load(Ordering::SeqCst);
        assert!(most > 1 && most <= CONCURRENT_GETS, "GETs overlap, up to the limit: {most} at once");
    }

    #[tokio::test]
    async fn an_indexed_etag_is_not_embedded_again_and_a_new_one_replaces_the_entity() {
        let f = fixture();
        f.store.put("a.png", b"img-a", "e1", "image/png");
        f.ingestor.apply(vec![created("a.png", Some("e1"))]).await.unwrap();
        let report = f.ingestor.apply(vec![created("a.png", Some("\"e1\""))]).await.unwrap();
        assert_eq!(report.unchanged, vec!["a.png"]);
        assert_eq!(f.store.gets.load(Ordering::SeqCst), 1, "no download for a known ETag");
        // An event without an ETag still avoids the embedding.
        let report = f.ingestor.apply(vec![created("a.png", None)]).await.unwrap();
        assert_eq!(report.unchanged, vec!["a.png"]);
        assert_eq!(f.embedder.calls.load(Ordering::SeqCst), 1);
        f.store.put("a.png", b"img-a2", "e2", "image/png");
        let report = f.ingestor.apply(vec![created("a.png", Some("e2"))]).await.unwrap();
        assert_eq!(report.indexed, vec!["a.png"]);
        assert_eq!(f.index.records.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn removed_objects_are_deleted_and_the_last_change_of_a_key_wins() {
        let f = fixture();
        f.store.put("a.png", b"img-a", "e1", "image/png");
        f.ingestor.apply(vec![created("a.png", None)]).await.unwrap();
        let removed = ObjectChange::Removed { bucket: "b".into(), key: "a.png".into() };
        let report = f.ingestor.apply(vec![created("a.png", None), removed]).await.unwrap();
        assert_eq!(report.deleted, vec!["a.png"]);
        assert!(report.indexed.is_empty());
        assert!(f.index.records.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_surfaced_after_saving_the_rest() {
        let f = fixture();
        f.store.put("a.png", b"img-a", "e1", "image/png");
        *f.index.failures_left.lock().unwrap() = 2;
        f.store.unavailable.lock().unwrap().insert("a.png".into(), 2);
        let report = f.ingestor.apply(vec![created("a.png", None)]).await.unwrap();
        assert_eq!(report.indexed, vec!["a.png"], "two failures fit in three attempts");

        f.store.put("b.png", b"img-b", "e2", "image/png");
        f.store.put("c.png", b"img-c", "e3", "image/png");
        f.store.unavailable.lock().unwrap().insert("b.png".into(), 3);
        let err = f.ingestor.apply(vec![created("b.png", None), created("c.png", None)]).await.unwrap_err();
        assert!(matches!(err, IngestError::Store { ref key, .. } if key == "b.png"), "{err}");
        assert!(f.index.records.lock().unwrap().contains_key(&record_id("b", "c.png")), "c.png was still indexed");

        *f.index.failures_left.lock().unwrap() = 10;
        let err = f.ingestor.apply(vec![created("a.png", None)]).await.unwrap_err();
        assert!(matches!(err, IngestError::Index(IndexError::Unavailable(_))), "{err}");
    }

    #[tokio::test]
    async fn a_denied_get_fails_the_event_for_a_fix_instead_of_skipping_the_object() {
        let f = fixture();
        f.store.put("a.png", b"img-a", "e1", "image/png");
        f.store.put("b.png", b"img-b", "e2", "image/png");
        f.store.denied.lock().unwrap().push("a.png".into());
        let err = f.ingestor.apply(vec![created("a.png", None), created("b.png", None)]).await.unwrap_err();
        assert!(matches!(err, IngestError::Store { ref key, .. } if key == "a.png"), "{err}");
        assert!(!err.is_retryable(), "a denied request needs a fix; the event waits in the failure queue");
        assert_eq!(f.store.gets.load(Ordering::SeqCst), 2, "a denial is not retried");
        assert!(f.index.records.lock().unwrap().contains_key(&record_id("b", "b.png")), "b.png was still indexed");
    }
}
