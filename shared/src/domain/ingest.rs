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
use crate::domain::record::{record_id, ImageRecord, NotIndexed, Sequencer, SkipCause};
use crate::domain::retry::{retry, RetryPolicy, Transient};
use crate::domain::scope::Access;
use crate::embedder::{ImageEmbedder, ImageError, InferenceError};
use crate::index::{Deletion, IndexError, IndexedVersion, VectorIndex};
use crate::store::{normalize_etag, ObjectStore, StoreError};

/// What happened to an object, as the use case sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectChange {
    Created { bucket: String, key: String, etag: Option<String>, sequencer: Option<Sequencer> },
    Removed { bucket: String, key: String, sequencer: Option<Sequencer> },
}

impl ObjectChange {
    fn location(&self) -> (&str, &str) {
        match self {
            ObjectChange::Created { bucket, key, .. } | ObjectChange::Removed { bucket, key, .. } => (bucket, key),
        }
    }

    fn sequencer(&self) -> Option<&Sequencer> {
        match self {
            ObjectChange::Created { sequencer, .. } | ObjectChange::Removed { sequencer, .. } => sequencer.as_ref(),
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
    /// Events older (by S3's sequencer) than what the index already holds for their key: ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
    /// Objects outside the deployment's bucket or `KEY_PREFIX`/`KEY_SUFFIX`: ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outside_scope: Vec<String>,
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
    #[error("{key} kept changing while it was indexed ({rounds} rounds); a later attempt will settle it")]
    Unsettled { key: String, rounds: usize },
    #[error("the function received an event it does not handle: {0}")]
    UnknownEvent(String),
}

impl IngestError {
    /// Whether a later attempt can succeed as it is: an outage or a failed inference may pass;
    /// a collection that does not fit the model or a refused request needs a fix first (the
    /// event still fails, so it waits in the failure queue for a replay after the fix).
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Store { source, .. } => source.is_transient(),
            IngestError::Index(e) => e.is_transient(),
            IngestError::Inference(_) | IngestError::Unsettled { .. } => true,
            IngestError::UnknownEvent(_) => false,
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

/// Objects of one batch downloaded (or checked with HEAD) at once: S3 latency, not bandwidth,
/// bounds a single request, and every fetched object is held in memory until the batch is embedded anyway.
const CONCURRENT_GETS: usize = 8;

/// Times the objects of an event are indexed again because they changed while they were being
/// indexed, before the event fails (and Lambda retries it later).
const SETTLE_ROUNDS: usize = 3;

/// An object to bring up to date in the index: from a Created event, or a Removed event whose
/// object exists again.
#[derive(Debug, Clone)]
struct Pending {
    id: String,
    bucket: String,
    key: String,
    etag: Option<String>,
    sequencer: Option<Sequencer>,
}

/// A record this run wrote, checked against the bucket afterwards.
struct Written {
    pending: Pending,
    etag: String,
}

/// Whether an event is older than the version the index holds (both must carry a sequencer).
fn is_older(event: Option<&Sequencer>, stored: Option<&IndexedVersion>) -> bool {
    matches!((event, stored.and_then(|v| v.sequencer.as_ref())), (Some(event), Some(stored)) if event < stored)
}

pub struct Ingestor {
    pub embedder: Arc<dyn ImageEmbedder>,
    pub store: Arc<dyn ObjectStore>,
    pub index: Arc<dyn VectorIndex>,
    pub config: IngestConfig,
    pub retry: RetryPolicy,
    /// Which objects are indexed, and the owner stored with each.
    pub access: Access,
}

impl Ingestor {
    /// Applies changes so that the index matches the bucket for every key they name.
    ///
    /// Events may arrive late, twice or out of order, so an event is a hint, not an order:
    /// - one older (by S3's sequencer) than the record the index holds is ignored;
    /// - a removal deletes the record only if the object is gone (HEAD says 404) and the record is
    ///   not newer than the removal; an object that exists again is indexed instead;
    /// - a creation indexes the object as it is now, and afterwards checks that it still is: an
    ///   object overwritten or deleted meanwhile (by a change whose event may already have been
    ///   applied) is indexed again or removed, for up to [`SETTLE_ROUNDS`] rounds.
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
        let mut report = IngestReport::default();
        let (changes, outside): (Vec<_>, Vec<_>) = changes.into_iter().partition(|change| {
            let (bucket, key) = change.location();
            self.access.serves(bucket, key)
        });
        for change in outside {
            let (bucket, key) = change.location();
            tracing::info!(bucket = %bucket, key = %key, "object outside UPLOADS_BUCKET/KEY_PREFIX/KEY_SUFFIX, ignored");
            report.outside_scope.push(key.to_string());
        }
        let changes = newest_per_key(changes);
        let ids: Vec<String> = changes.iter().map(|(id, _)| id.clone()).collect();
        let stored = match ids.is_empty() {
            true => HashMap::new(),
            false => retry(policy, "version lookup", || self.index.versions(&ids)).await?,
        };
        let mut failure = None;
        let mut removed = Vec::new();
        let mut created = Vec::new();
        for (id, change) in changes {
            if is_older(change.sequencer(), stored.get(&id)) {
                let (_, key) = change.location();
                tracing::info!(key = %key, "event older than the indexed version, ignored");
                report.superseded.push(key.to_string());
                continue;
            }
            match change {
                ObjectChange::Removed { bucket, key, sequencer } => {
                    removed.push(Pending { id, bucket, key, etag: None, sequencer })
                }
                ObjectChange::Created { bucket, key, etag, sequencer } => {
                    created.push(Pending { id, bucket, key, etag, sequencer })
                }
            }
        }
        created.extend(self.remove(removed, policy, &mut report, &mut failure).await?);

        let mut stored = stored;
        for round in 1.. {
            if created.is_empty() {
                break;
            }
            if round > SETTLE_ROUNDS {
                let key = created[0].key.clone();
                failure.get_or_insert(IngestError::Unsettled { key, rounds: SETTLE_ROUNDS });
                break;
            }
            let written = self.index_objects(created, &stored, policy, &mut report, &mut failure).await?;
            created = self.recheck(written, policy, &mut report, &mut failure).await?;
            if !created.is_empty() {
                let ids: Vec<String> = created.iter().map(|p| p.id.clone()).collect();
                stored = retry(policy, "version lookup", || self.index.versions(&ids)).await?;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Removals, judged by the bucket: a removed object is deleted from the index (unless its
    /// record is newer than the removal); one that exists again is returned to be indexed.
    async fn remove(
        &self,
        removed: Vec<Pending>,
        policy: &RetryPolicy,
        report: &mut IngestReport,
        failure: &mut Option<IngestError>,
    ) -> Result<Vec<Pending>, IngestError> {
        let mut deletions = Vec::new();
        let mut gone = Vec::new();
        let mut back = Vec::new();
        for (pending, head) in self.heads(removed, policy).await {
            match head {
                Ok(None) => {
                    let not_newer_than = pending.sequencer.clone();
                    deletions.push(Deletion { id: pending.id, etag: None, not_newer_than });
                    gone.push(pending.key);
                }
                Ok(Some(etag)) => {
                    tracing::info!(key = %pending.key, "removed object exists again; indexing what is there now");
                    back.push(Pending { etag: Some(etag), ..pending });
                }
                Err(e) => store_failure(failure, pending.key, e),
            }
        }
        if !deletions.is_empty() {
            retry(policy, "delete", || self.index.delete_if(&deletions)).await?;
            for key in gone {
                tracing::info!(key = %key, "deleted from the index");
                report.deleted.push(key);
            }
        }
        Ok(back)
    }

    /// The bucket's answer to HEAD for each object, several at once, in order.
    async fn heads(
        &self,
        objects: Vec<Pending>,
        policy: &RetryPolicy,
    ) -> Vec<(Pending, Result<Option<String>, StoreError>)> {
        stream::iter(objects)
            .map(|p| async move {
                let head = retry(policy, "head object", || self.store.head(&p.bucket, &p.key)).await;
                (p, head)
            })
            .buffered(CONCURRENT_GETS)
            .collect()
            .await
    }

    /// Downloads, embeds and upserts the objects (the unchanged ones excepted); skips bad ones,
    /// removing the record of an image they overwrote. Returns what was written.
    async fn index_objects(
        &self,
        created: Vec<Pending>,
        stored: &HashMap<String, IndexedVersion>,
        policy: &RetryPolicy,
        report: &mut IngestReport,
        failure: &mut Option<IngestError>,
    ) -> Result<Vec<Written>, IngestError> {
        let mut to_fetch = Vec::new();
        for pending in created {
            let known = stored.get(&pending.id).cloned();
            let event_etag = pending.etag.as_deref().map(normalize_etag).filter(|e| !e.is_empty());
            if event_etag.is_some() && known.as_ref().map(|v| &v.etag) == event_etag.as_ref() {
                tracing::info!(key = %pending.key, "already indexed with this ETag, not embedded again");
                report.unchanged.push(pending.key);
            } else {
                to_fetch.push((pending, known));
            }
        }
        let max = self.config.max_object_bytes;
        let downloads: Vec<_> = stream::iter(to_fetch)
            .map(|(pending, known)| async move {
                let got = retry(policy, "get object", || self.store.get(&pending.bucket, &pending.key, max)).await;
                (pending, known, got)
            })
            .buffered(CONCURRENT_GETS)
            .collect()
            .await;
        let mut fetched = Vec::new();
        // Records of objects now skipped: the old image was overwritten (or is gone), so its
        // record would hand out a URL to what is no longer that image.
        let mut stale = Vec::new();
        let outdated = |pending: &Pending, known: &Option<IndexedVersion>| {
            known.as_ref().map(|v| Deletion {
                id: pending.id.clone(),
                etag: Some(v.etag.clone()),
                not_newer_than: pending.sequencer.clone(),
            })
        };
        for (pending, known, got) in downloads {
            match got {
                Ok(object) if known.as_ref().map(|v| &v.etag) == Some(&object.etag) => {
                    tracing::info!(key = %pending.key, "already indexed with this ETag, not embedded again");
                    report.unchanged.push(pending.key);
                }
                Ok(object) => match refused_content_type(object.content_type.as_deref()) {
                    Some(reason) => {
                        stale.extend(outdated(&pending, &known).map(|d| (d, pending.key.clone())));
                        skip(report, pending.key, reason, SkipCause::NotAnImage)
                    }
                    None => {
                        let sequencer =
                            pending.sequencer.clone().or_else(|| known.as_ref().and_then(|v| v.sequencer.clone()));
                        fetched.push((Pending { sequencer, ..pending }, known, object))
                    }
                },
                Err(e @ (StoreError::NotFound { .. } | StoreError::TooLarge { .. })) => {
                    let cause = match e {
                        StoreError::NotFound { .. } => SkipCause::Missing,
                        _ => SkipCause::TooLarge,
                    };
                    stale.extend(outdated(&pending, &known).map(|d| (d, pending.key.clone())));
                    skip(report, pending.key, e.to_string(), cause)
                }
                Err(e @ (StoreError::Unavailable(_) | StoreError::Refused(_))) => {
                    store_failure(failure, pending.key, e)
                }
            }
        }

        let mut written = Vec::new();
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
            for ((pending, known, object), result) in fetched.into_iter().zip(results) {
                match result {
                    Ok(embedding) => {
                        records.push(ImageRecord {
                            id: pending.id.clone(),
                            bucket: pending.bucket.clone(),
                            key: pending.key.clone(),
                            owner: self.access.owner_of(&pending.key),
                            size: object.size as i64,
                            etag: object.etag.clone(),
                            content_type: stored_content_type(object.content_type.as_deref())
                                .unwrap_or_else(|| embedding.format.mime_type().to_string()),
                            last_modified_ms: object.last_modified_ms.unwrap_or(0),
                            width: embedding.width as i64,
                            height: embedding.height as i64,
                            indexed_at_ms: now,
                            sequencer: pending.sequencer.clone(),
                            vector: embedding.vector,
                        });
                        written.push(Written { pending, etag: object.etag });
                    }
                    Err(e) => {
                        if let ImageError::Panicked { .. } = e {
                            // A bug, not a bad upload: logged at error level, and still only this image is lost.
                            tracing::error!(key = %pending.key, error = %e, "image preparation panicked");
                        }
                        stale.extend(outdated(&pending, &known).map(|d| (d, pending.key.clone())));
                        let cause = match e {
                            ImageError::UnknownFormat | ImageError::UnsupportedFormat { .. } | ImageError::Empty => {
                                SkipCause::NotAnImage
                            }
                            ImageError::TooLarge { .. } => SkipCause::TooLarge,
                            _ => SkipCause::UnreadableImage,
                        };
                        skip(report, pending.key, e.to_string(), cause)
                    }
                }
            }
            if !records.is_empty() {
                retry(policy, "upsert", || self.index.upsert(&records)).await?;
                for w in &written {
                    tracing::info!(key = %w.pending.key, "indexed");
                    report.indexed.push(w.pending.key.clone());
                }
            }
        }
        if !stale.is_empty() {
            let deletions: Vec<Deletion> = stale.iter().map(|(d, _)| d.clone()).collect();
            retry(policy, "delete", || self.index.delete_if(&deletions)).await?;
            for (_, key) in stale {
                tracing::warn!(key = %key, "the new object was skipped; its old record was removed from the index");
                report.unindexed.push(key);
            }
        }
        Ok(written)
    }

    /// Checks each written record against the bucket: an object deleted meanwhile loses its
    /// record (its removal may have been applied before the write); one overwritten meanwhile is
    /// returned to be indexed again. Without this, a slow event could leave a ghost or an old vector.
    async fn recheck(
        &self,
        written: Vec<Written>,
        policy: &RetryPolicy,
        report: &mut IngestReport,
        failure: &mut Option<IngestError>,
    ) -> Result<Vec<Pending>, IngestError> {
        let etags: HashMap<String, String> = written.iter().map(|w| (w.pending.id.clone(), w.etag.clone())).collect();
        let mut deletions = Vec::new();
        let mut again = Vec::new();
        for (pending, head) in self.heads(written.into_iter().map(|w| w.pending).collect(), policy).await {
            let etag = &etags[&pending.id];
            match head {
                Ok(Some(now)) if now == *etag => {}
                Ok(Some(_)) => {
                    tracing::info!(key = %pending.key, "overwritten while it was indexed; indexing it again");
                    report.indexed.retain(|k| *k != pending.key);
                    again.push(Pending { etag: None, ..pending });
                }
                Ok(None) => {
                    tracing::info!(key = %pending.key, "deleted while it was indexed; record removed");
                    report.indexed.retain(|k| *k != pending.key);
                    deletions.push((
                        Deletion { id: pending.id, etag: Some(etag.clone()), not_newer_than: None },
                        pending.key,
                    ));
                }
                Err(e) => store_failure(failure, pending.key, e),
            }
        }
        if !deletions.is_empty() {
            let list: Vec<Deletion> = deletions.iter().map(|(d, _)| d.clone()).collect();
            retry(policy, "delete", || self.index.delete_if(&list)).await?;
            report.deleted.extend(deletions.into_iter().map(|(_, key)| key));
        }
        Ok(again)
    }
}

/// One change per object: the newest by sequencer, else the later in the list. In first-seen order.
fn newest_per_key(changes: Vec<ObjectChange>) -> Vec<(String, ObjectChange)> {
    let mut newest: HashMap<String, ObjectChange> = HashMap::new();
    let mut order = Vec::new();
    for change in changes {
        let (bucket, key) = change.location();
        let id = record_id(bucket, key);
        match newest.get(&id) {
            None => order.push(id.clone()),
            Some(kept) if matches!((kept.sequencer(), change.sequencer()), (Some(a), Some(b)) if b < a) => continue,
            Some(_) => {}
        }
        newest.insert(id, change);
    }
    order
        .into_iter()
        .map(|id| {
            let change = newest.remove(&id).expect("every id was inserted");
            (id, change)
        })
        .collect()
}

/// An S3 failure that is not the object's fault: the event must fail so that it is retried or kept.
fn store_failure(failure: &mut Option<IngestError>, key: String, error: StoreError) {
    tracing::error!(key = %key, error = %error, "S3 failed");
    failure.get_or_insert(IngestError::Store { key, source: error });
}

fn skip(report: &mut IngestReport, key: String, reason: String, cause: SkipCause) {
    tracing::warn!(key = %key, reason = %reason, "object skipped");
    report.skipped.push(NotIndexed { key, reason, cause: Some(cause) });
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
        /// What happens to a key right after each GET of it: a race with the uploader.
        after_get: Mutex<HashMap<String, AfterGet>>,
    }

    /// A change to an object made by someone else while ingest holds its old bytes.
    #[derive(Clone)]
    enum AfterGet {
        /// Overwritten once with these bytes and this ETag.
        Overwrite(&'static [u8], &'static str),
        /// Overwritten after every GET, with a new ETag each time.
        OverwriteForever,
        Delete,
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
            let after = self.after_get.lock().unwrap().get(key).cloned();
            match after {
                Some(AfterGet::Overwrite(bytes, etag)) => {
                    self.after_get.lock().unwrap().remove(key);
                    self.put(key, bytes, etag, "image/png");
                }
                Some(AfterGet::OverwriteForever) => {
                    let etag: &'static str = Box::leak(format!("{}x", object.etag).into_boxed_str());
                    self.put(key, b"img-again", etag, "image/png");
                }
                Some(AfterGet::Delete) => {
                    self.after_get.lock().unwrap().remove(key);
                    self.objects.lock().unwrap().remove(key);
                }
                None => {}
            }
            Ok(object)
        }
        async fn head(&self, _: &str, key: &str) -> Result<Option<String>, StoreError> {
            Ok(self.objects.lock().unwrap().get(key).map(|o| o.etag.clone()))
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
            access: Default::default(),
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
        ObjectChange::Created { bucket: "b".into(), key: key.into(), etag: etag.map(str::to_string), sequencer: None }
    }

    fn seq(hex: &str) -> Option<Sequencer> {
        Some(Sequencer::parse(hex).unwrap())
    }

    fn created_at(key: &str, etag: &str, sequencer: &str) -> ObjectChange {
        ObjectChange::Created {
            bucket: "b".into(),
            key: key.into(),
            etag: Some(etag.into()),
            sequencer: seq(sequencer),
        }
    }

    fn removed_at(key: &str, sequencer: &str) -> ObjectChange {
        ObjectChange::Removed { bucket: "b".into(), key: key.into(), sequencer: seq(sequencer) }
    }

    fn indexed_etag(f: &Fixture, key: &str) -> Option<String> {
        f.index.records.lock().unwrap().get(&record_id("b", key)).map(|r| r.etag.clone())
    }

    #[tokio::test]
    async fn events_older_than_the_indexed_version_are_ignored_whatever_their_kind() {
        let f = fixture();
        f.store.put("a.png", b"img-v2", "v2", "image/png");
        f.ingestor.apply(vec![created_at("a.png", "v2", "20")]).await.unwrap();
        // A removal from before the re-upload, retried late, must not delete the new record.
        let report = f.ingestor.apply(vec![removed_at("a.png", "1F")]).await.unwrap();
        assert_eq!(report.superseded, vec!["a.png"]);
        // A creation of an older version, delivered late, must not replace it either.
        let report = f.ingestor.apply(vec![created_at("a.png", "v1", "10")]).await.unwrap();
        assert_eq!(report.superseded, vec!["a.png"]);
        assert_eq!(indexed_etag(&f, "a.png").as_deref(), Some("v2"));
        assert_eq!(f.store.gets.load(Ordering::SeqCst), 1, "ignored events download nothing");
        // A newer removal does apply.
        f.store.objects.lock().unwrap().remove("a.png");
        let report = f.ingestor.apply(vec![removed_at("a.png", "30")]).await.unwrap();
        assert_eq!(report.deleted, vec!["a.png"]);
        assert_eq!(indexed_etag(&f, "a.png"), None);
    }

    #[tokio::test]
    async fn a_removal_of_an_object_that_exists_again_indexes_it_instead() {
        let f = fixture();
        f.store.put("a.png", b"img-v1", "v1", "image/png");
        f.ingestor.apply(vec![created_at("a.png", "v1", "10")]).await.unwrap();
        // Deleted (sequencer 20) and uploaded again (30); the removal's event comes first.
        f.store.put("a.png", b"img-v3", "v3", "image/png");
        let report = f.ingestor.apply(vec![removed_at("a.png", "20")]).await.unwrap();
        assert!(report.deleted.is_empty(), "{report:?}");
        assert_eq!(report.indexed, vec!["a.png"]);
        assert_eq!(indexed_etag(&f, "a.png").as_deref(), Some("v3"));
        let report = f.ingestor.apply(vec![created_at("a.png", "v3", "30")]).await.unwrap();
        assert_eq!(report.unchanged, vec!["a.png"]);
    }

    #[tokio::test]
    async fn the_newest_change_of_a_key_wins_by_sequencer_not_by_position() {
        let f = fixture();
        f.store.put("a.png", b"img-v1", "v1", "image/png");
        let report = f.ingestor.apply(vec![created_at("a.png", "v1", "30"), removed_at("a.png", "20")]).await.unwrap();
        assert_eq!(report.indexed, vec!["a.png"]);
        assert!(report.deleted.is_empty());
    }

    #[tokio::test]
    async fn an_object_overwritten_while_it_is_indexed_converges_on_the_newest() {
        let f = fixture();
        f.store.put("a.png", b"img-v1", "v1", "image/png");
        // v2 lands right after ingest read v1, and v2's own event was already applied (or is lost):
        // the record must still end on v2, not on the v1 bytes this run holds.
        f.store.after_get.lock().unwrap().insert("a.png".into(), AfterGet::Overwrite(b"img-v2", "v2"));
        let report = f.ingestor.apply(vec![created_at("a.png", "v1", "10")]).await.unwrap();
        assert_eq!(report.indexed, vec!["a.png"]);
        assert_eq!(indexed_etag(&f, "a.png").as_deref(), Some("v2"));
        assert_eq!(f.store.gets.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_object_deleted_while_it_is_indexed_leaves_no_ghost() {
        let f = fixture();
        f.store.put("a.png", b"img-v1", "v1", "image/png");
        f.store.after_get.lock().unwrap().insert("a.png".into(), AfterGet::Delete);
        let report = f.ingestor.apply(vec![created_at("a.png", "v1", "10")]).await.unwrap();
        assert_eq!(report.deleted, vec!["a.png"]);
        assert!(report.indexed.is_empty());
        assert_eq!(indexed_etag(&f, "a.png"), None);
    }

    #[tokio::test]
    async fn an_object_that_never_settles_fails_the_event_for_a_retry() {
        let f = fixture();
        f.store.put("a.png", b"img-v1", "v1", "image/png");
        f.store.put("b.png", b"img-b", "b1", "image/png");
        f.store.after_get.lock().unwrap().insert("a.png".into(), AfterGet::OverwriteForever);
        let err = f.ingestor.apply(vec![created("a.png", None), created("b.png", None)]).await.unwrap_err();
        assert!(matches!(err, IngestError::Unsettled { ref key, rounds: SETTLE_ROUNDS } if key == "a.png"), "{err}");
        assert!(err.is_retryable());
        assert_eq!(indexed_etag(&f, "b.png").as_deref(), Some("b1"), "the other object was indexed");
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
        f.store.objects.lock().unwrap().remove("a.png");
        let removed = ObjectChange::Removed { bucket: "b".into(), key: "a.png".into(), sequencer: None };
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
