//! The search use case: a query (text, or an indexed image) in, the nearest images out, each
//! with a presigned GET URL; with filters, a score threshold, paging and near-duplicate collapsing.
//!
//! Paging is by offset into the ranking. Each page is read at the index's consistency level
//! (strong on Milvus Lite, the collection's level elsewhere); between pages, uploads and deletions
//! can shift the ranking, so an image may repeat or be skipped.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::domain::record::{ImageHit, ImageRecord, SearchFilter};
use crate::domain::retry::Transient;
use crate::domain::scope::{Access, OwnerError};
use crate::embedder::{cosine, InferenceError, TextEmbedError, TextEmbedder, TextError};
use crate::index::{IndexError, SearchQuery, VectorIndex, MAX_RESULT_WINDOW};
use crate::store::{ObjectStore, PresignedUrl, StoreError};

/// Limits of the API, in one place.
pub const DEFAULT_K: usize = 10;
pub const MAX_K: usize = 100;
pub const MAX_QUERY_CHARS: usize = 1000;
pub const MAX_KEY_BYTES: usize = 1024;
/// With `dedup`, only the best this many matches are read and collapsed: each carries its vector
/// (2 KB at 512 dimensions), and collapsing is quadratic in the window.
pub const MAX_DEDUP_WINDOW: usize = 2_048;
/// Hits per index request while reading the dedup window: with vectors and keys of up to 1 KB a
/// response stays under 2 MB, within gRPC's 4 MiB default message limit.
const DEDUP_FETCH: usize = 512;

/// Two images at least this similar count as duplicates when `dedup` is on.
pub const DEDUP_MIN_COSINE: f32 = 0.98;

/// What to search with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SearchBy {
    /// Text, embedded with the text tower.
    Text(String),
    /// The stored vector of an indexed object, by key; the object itself is left out.
    SimilarTo(String),
}

/// A validated search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub by: SearchBy,
    /// Results per page.
    pub k: usize,
    pub min_score: Option<f32>,
    /// Which images may be returned; `exclude_id` is the use case's own and stays `None` here.
    pub filter: SearchFilter,
    pub dedup: bool,
    /// Results to skip (0 for the first page).
    pub offset: usize,
}

impl SearchRequest {
    /// The first page of a plain text search.
    pub fn text(q: impl Into<String>, k: usize) -> Self {
        SearchRequest {
            by: SearchBy::Text(q.into()),
            k,
            min_score: None,
            filter: SearchFilter::default(),
            dedup: false,
            offset: 0,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub results: Vec<Found>,
    /// Where the next page starts; `None` on the last page, or where the next would pass [`MAX_RESULT_WINDOW`].
    pub next_offset: Option<usize>,
}

/// A hit with its presigned URL and, with dedup, the keys collapsed into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub hit: ImageHit,
    pub url: PresignedUrl,
    pub duplicates: Vec<String>,
}

/// What `GET /health` reports: generic states only. Hosts, collection names, dimensions and
/// Milvus's own error text go to the log, never to a caller.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub model: String,
    pub milvus: MilvusHealth,
}

#[derive(Debug, Clone, Serialize)]
pub struct MilvusHealth {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<u64>,
    /// When not ok: `unavailable` (it may pass) or `misconfigured` (it needs a fix); the log says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    BadQuery(#[from] TextError),
    #[error("{0:?} is not indexed; `similar_to` takes the key of an indexed image")]
    NotIndexed(String),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "this deployment shows each user only their own images, and the request carries no verified identity: \
         call the API with a token its authorizer accepts"
    )]
    Unauthenticated,
    #[error("the verified identity cannot own images here: {0}")]
    Forbidden(#[from] OwnerError),
}

pub struct Searcher {
    pub embedder: Arc<dyn TextEmbedder>,
    pub index: Arc<dyn VectorIndex>,
    pub store: Arc<dyn ObjectStore>,
    pub url_ttl: Duration,
    pub model_name: String,
    pub collection: String,
    /// What may be returned: with an owner template, only the caller's images (the request's
    /// `filter.owner`, required); always only objects of the served bucket and key scope.
    pub access: Access,
}

/// A ranked hit and, with dedup, the keys collapsed into it.
struct Ranked {
    hit: ImageHit,
    duplicates: Vec<String>,
}

impl Searcher {
    pub async fn search(&self, request: &SearchRequest) -> Result<SearchPage, SearchError> {
        let mut filter = request.filter.clone();
        let owner_prefix = self.owner_prefix(&filter)?;
        let vector = match &request.by {
            SearchBy::Text(q) => self.embed_text(q).await?,
            SearchBy::SimilarTo(key) => {
                // Another owner's image, or one outside the scope, is "not indexed": the answer
                // does not tell whether it exists.
                let records = self.index.records_with_key(key).await?;
                let record = records
                    .into_iter()
                    .find(|r| filter.matches_owner(r) && self.may_return(r, owner_prefix.as_deref()))
                    .ok_or_else(|| SearchError::NotIndexed(key.clone()))?;
                filter.exclude_id = Some(record.id);
                record.vector
            }
        };
        let (ranked, has_more) = match request.dedup {
            false => self.page(&vector, &filter, request).await?,
            true => self.deduplicated_page(&vector, &filter, request).await?,
        };
        let mut results = Vec::with_capacity(ranked.len());
        for Ranked { mut hit, duplicates } in ranked {
            // The index filter already applied the owner: this is the second lock on the door,
            // so a wrong filter or a record stored under the wrong owner still presigns nothing.
            if !self.may_return(&hit.record, owner_prefix.as_deref()) {
                tracing::error!(key = %hit.record.key, bucket = %hit.record.bucket, "the index returned an object this caller may not see; left out");
                continue;
            }
            let duplicates = duplicates
                .into_iter()
                .filter(|key| owner_prefix.as_deref().is_none_or(|p| key.starts_with(p)))
                .collect();
            let url = self.store.presign_get(&hit.record.bucket, &hit.record.key, self.url_ttl).await?;
            hit.record.vector = Vec::new();
            results.push(Found { hit, url, duplicates });
        }
        let next_offset = request.offset + request.k;
        let next_offset = (has_more && next_offset + request.k <= MAX_RESULT_WINDOW).then_some(next_offset);
        Ok(SearchPage { results, next_offset })
    }

    /// With an owner template, the caller's key prefix: the request must name its owner (from a
    /// verified identity), and the owner must be one that can own keys.
    fn owner_prefix(&self, filter: &SearchFilter) -> Result<Option<String>, SearchError> {
        let Some(template) = &self.access.owners else { return Ok(None) };
        let owner = filter.owner.as_deref().ok_or(SearchError::Unauthenticated)?;
        Ok(Some(template.key_prefix(owner)?))
    }

    /// Whether a record may be returned and presigned: an object of the served bucket and key
    /// scope and, with isolation, under the caller's prefix.
    fn may_return(&self, record: &ImageRecord, owner_prefix: Option<&str>) -> bool {
        self.access.serves(&record.bucket, &record.key) && owner_prefix.is_none_or(|p| record.key.starts_with(p))
    }

    async fn embed_text(&self, q: &str) -> Result<Vec<f32>, SearchError> {
        let embedder = Arc::clone(&self.embedder);
        let q = q.to_string();
        tokio::task::spawn_blocking(move || embedder.embed_text(&q))
            .await
            .map_err(|e| InferenceError(format!("embedding task failed: {e}")))?
            .map_err(|e| match e {
                TextEmbedError::Text(e) => SearchError::BadQuery(e),
                TextEmbedError::Inference(e) => SearchError::Inference(e),
            })
    }

    /// One page of the ranking; one more hit is read to learn whether a next page exists.
    async fn page(
        &self,
        vector: &[f32],
        filter: &SearchFilter,
        request: &SearchRequest,
    ) -> Result<(Vec<Ranked>, bool), SearchError> {
        let limit = (request.k + 1).min(MAX_RESULT_WINDOW.saturating_sub(request.offset));
        let query = SearchQuery { vector, filter, offset: request.offset, limit, with_vectors: false };
        let mut hits = above(self.index.search(&query).await?, request.min_score);
        let has_more = hits.len() > request.k;
        hits.truncate(request.k);
        Ok((hits.into_iter().map(|hit| Ranked { hit, duplicates: Vec::new() }).collect(), has_more))
    }

    /// With dedup, a page counts collapsed results, so the ranking is read from the top in a
    /// growing window until it holds this page and one more result (or runs out). The window
    /// stops at [`MAX_DEDUP_WINDOW`] hits, read in requests of [`DEDUP_FETCH`] hits.
    async fn deduplicated_page(
        &self,
        vector: &[f32],
        filter: &SearchFilter,
        request: &SearchRequest,
    ) -> Result<(Vec<Ranked>, bool), SearchError> {
        let wanted = request.offset + request.k + 1;
        let mut window = (4 * wanted).clamp(64, MAX_DEDUP_WINDOW);
        let mut hits: Vec<ImageHit> = Vec::new();
        loop {
            let mut exhausted = false;
            while hits.len() < window {
                let limit = DEDUP_FETCH.min(window - hits.len());
                let query = SearchQuery { vector, filter, offset: hits.len(), limit, with_vectors: true };
                let chunk = self.index.search(&query).await?;
                exhausted = chunk.len() < limit;
                hits.extend(chunk);
                if exhausted {
                    break;
                }
            }
            let exhausted = exhausted || window == MAX_DEDUP_WINDOW;
            // Up to MAX_DEDUP_WINDOW² / 2 (2 M) vector comparisons when nothing collapses: CPU
            // work, kept off the async threads that serve other requests.
            let candidates = above(hits.clone(), request.min_score);
            let groups = tokio::task::spawn_blocking(move || collapse_duplicates(candidates))
                .await
                .map_err(|e| InferenceError(format!("collapsing duplicates failed: {e}")))?;
            if groups.len() >= wanted || exhausted {
                let has_more = groups.len() > request.offset + request.k;
                let page = groups.into_iter().skip(request.offset).take(request.k).collect();
                return Ok((page, has_more));
            }
            window = (window * 4).min(MAX_DEDUP_WINDOW);
        }
    }

    pub async fn health(&self) -> Health {
        let milvus = match self.index.count().await {
            // With isolation, the number of images is everyone's: not for any one user.
            Ok(n) => MilvusHealth { ok: true, images: self.access.owners.is_none().then_some(n), state: None },
            Err(e) => {
                tracing::error!(collection = %self.collection, error = %e, "health check: Milvus is not usable");
                let state = if e.is_transient() { "unavailable" } else { "misconfigured" };
                MilvusHealth { ok: false, images: None, state: Some(state) }
            }
        };
        Health { status: if milvus.ok { "ok" } else { "degraded" }, model: self.model_name.clone(), milvus }
    }
}

/// Hits at or above the threshold; hits are sorted, so this is a prefix.
fn above(mut hits: Vec<ImageHit>, min_score: Option<f32>) -> Vec<ImageHit> {
    if let Some(min) = min_score {
        hits.retain(|h| h.score >= min);
    }
    hits
}

/// Greedy, best score first: a hit joins the first kept result that has the same content
/// (ETag and size) or an embedding at least [`DEDUP_MIN_COSINE`] similar; otherwise it is kept.
fn collapse_duplicates(hits: Vec<ImageHit>) -> Vec<Ranked> {
    let mut kept: Vec<Ranked> = Vec::new();
    for hit in hits {
        let same = |other: &ImageHit| {
            let (a, b) = (&other.record, &hit.record);
            (a.etag == b.etag && a.size == b.size && !b.etag.is_empty())
                || (!a.vector.is_empty() && !b.vector.is_empty() && cosine(&a.vector, &b.vector) >= DEDUP_MIN_COSINE)
        };
        match kept.iter_mut().find(|r| same(&r.hit)) {
            Some(representative) => representative.duplicates.push(hit.record.key),
            None => kept.push(Ranked { hit, duplicates: Vec::new() }),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    use crate::domain::record::{record_id, ImageRecord};
    use crate::index::memory::MemoryIndex;

    struct FixedText(Vec<f32>);
    impl TextEmbedder for FixedText {
        fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, TextEmbedError> {
            Ok(texts.iter().map(|_| self.0.clone()).collect())
        }
        fn dim(&self) -> usize {
            self.0.len()
        }
    }

    struct Presigner;
    #[async_trait::async_trait]
    impl ObjectStore for Presigner {
        async fn get(&self, bucket: &str, key: &str, _: u64) -> Result<crate::store::StoredObject, StoreError> {
            Err(StoreError::NotFound { bucket: bucket.into(), key: key.into() })
        }
        async fn head(&self, _: &str, _: &str) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        async fn list(&self, _: &str, _: &str) -> Result<Vec<crate::store::ListedObject>, StoreError> {
            Ok(Vec::new())
        }
        async fn presign_get(&self, bucket: &str, key: &str, ttl: Duration) -> Result<PresignedUrl, StoreError> {
            Ok(PresignedUrl { url: format!("https://s3/{bucket}/{key}"), expires_at: UNIX_EPOCH + ttl })
        }
    }

    fn record(key: &str, etag: &str, vector: [f32; 2]) -> ImageRecord {
        ImageRecord {
            id: record_id("b", key),
            bucket: "b".into(),
            key: key.into(),
            owner: String::new(),
            size: 10,
            etag: etag.into(),
            content_type: "image/jpeg".into(),
            last_modified_ms: 1000,
            width: 1,
            height: 1,
            indexed_at_ms: 0,
            sequencer: None,
            vector: vector.to_vec(),
        }
    }

    /// Scores against the query [1, 0] fall with the angle: a 1.0, a-copy 1.0 (same etag), b 0.99, c 0.8, d 0.6.
    fn searcher() -> Searcher {
        let index = MemoryIndex::default();
        for r in [
            record("a", "e1", [1.0, 0.0]),
            record("a-copy", "e1", [1.0, 0.0]),
            record("b", "e2", [0.99, 0.141]),
            record("c", "e3", [0.8, 0.6]),
            record("d", "e4", [0.6, 0.8]),
        ] {
            index.records.lock().unwrap().insert(r.id.clone(), r);
        }
        Searcher {
            embedder: Arc::new(FixedText(vec![1.0, 0.0])),
            index: Arc::new(index),
            store: Arc::new(Presigner),
            url_ttl: Duration::from_secs(60),
            model_name: "m".into(),
            collection: "c".into(),
            access: Access::default(),
        }
    }

    fn keys(page: &SearchPage) -> Vec<&str> {
        page.results.iter().map(|r| r.hit.record.key.as_str()).collect()
    }

    #[tokio::test]
    async fn pages_follow_the_ranking_and_the_last_has_no_cursor() {
        let s = searcher();
        let first = SearchRequest::text("x", 2);
        let page1 = s.search(&first).await.unwrap();
        assert_eq!(keys(&page1), ["a", "a-copy"]);
        assert_eq!(page1.next_offset, Some(2));
        let page2 = s.search(&SearchRequest { offset: 2, ..first.clone() }).await.unwrap();
        assert_eq!((keys(&page2), page2.next_offset), (vec!["b", "c"], Some(4)));
        let page3 = s.search(&SearchRequest { offset: 4, ..first.clone() }).await.unwrap();
        assert_eq!((keys(&page3), page3.next_offset), (vec!["d"], None));
        assert_eq!(page3.results[0].url.url, "https://s3/b/d");
        assert!(page3.results[0].hit.record.vector.is_empty(), "vectors stay inside the use case");
    }

    #[tokio::test]
    async fn min_score_drops_and_ends_paging() {
        let s = searcher();
        let request = SearchRequest { min_score: Some(0.9), ..SearchRequest::text("x", 3) };
        let page = s.search(&request).await.unwrap();
        assert_eq!((keys(&page), page.next_offset), (vec!["a", "a-copy", "b"], None));
    }

    #[tokio::test]
    async fn dedup_collapses_same_content_and_near_vectors_keeping_the_best() {
        let s = searcher();
        let request = SearchRequest { dedup: true, ..SearchRequest::text("x", 2) };
        let page = s.search(&request).await.unwrap();
        assert_eq!(keys(&page), ["a", "c"]);
        assert_eq!(page.results[0].duplicates, ["a-copy", "b"]);
        assert!(page.results[1].duplicates.is_empty());
        assert_eq!(page.next_offset, Some(2));
        let page2 = s.search(&SearchRequest { offset: 2, ..request }).await.unwrap();
        assert_eq!((keys(&page2), page2.next_offset), (vec!["d"], None));
    }

    #[tokio::test]
    async fn similar_to_uses_the_stored_vector_and_leaves_the_object_out() {
        let s = searcher();
        let request = SearchRequest { by: SearchBy::SimilarTo("c".into()), ..SearchRequest::text("", 2) };
        let page = s.search(&request).await.unwrap();
        assert_eq!(keys(&page), ["d", "b"]);
        let missing = SearchRequest { by: SearchBy::SimilarTo("nope".into()), ..request };
        assert!(matches!(s.search(&missing).await, Err(SearchError::NotIndexed(k)) if k == "nope"));
    }

    /// Alice's and Bob's images under `users/{sub}/`, with one record stored under the wrong owner.
    fn isolated() -> Searcher {
        let mut s = searcher();
        s.access.owners = Some(crate::domain::scope::OwnerTemplate::parse("users/{sub}/").unwrap());
        let index = MemoryIndex::default();
        let owned = |key: &str, owner: &str, vector| ImageRecord { owner: owner.into(), ..record(key, key, vector) };
        for r in [
            owned("users/alice/a.jpg", "alice", [1.0, 0.0]),
            owned("users/bob/b.jpg", "bob", [1.0, 0.01]),
            owned("users/bob/misfiled.jpg", "alice", [0.9, 0.1]),
        ] {
            index.records.lock().unwrap().insert(r.id.clone(), r);
        }
        s.index = Arc::new(index);
        s
    }

    fn as_owner(owner: Option<&str>, request: SearchRequest) -> SearchRequest {
        let mut request = request;
        request.filter.owner = owner.map(str::to_string);
        request
    }

    #[tokio::test]
    async fn with_isolation_a_caller_finds_only_their_own_images() {
        let s = isolated();
        let page = s.search(&as_owner(Some("alice"), SearchRequest::text("x", 10))).await.unwrap();
        assert_eq!(keys(&page), ["users/alice/a.jpg"], "bob's image and the misfiled one stay out");
        let page = s.search(&as_owner(Some("bob"), SearchRequest::text("x", 10))).await.unwrap();
        assert_eq!(keys(&page), ["users/bob/b.jpg"]);
        let with_prefix = SearchRequest {
            filter: SearchFilter { prefix: Some("users/bob/".into()), ..Default::default() },
            ..SearchRequest::text("x", 10)
        };
        assert!(s.search(&as_owner(Some("alice"), with_prefix)).await.unwrap().results.is_empty());
        let dedup = SearchRequest { dedup: true, ..SearchRequest::text("x", 10) };
        let page = s.search(&as_owner(Some("alice"), dedup)).await.unwrap();
        assert_eq!(keys(&page), ["users/alice/a.jpg"]);
        assert!(page.results[0].duplicates.is_empty(), "bob's near-identical image is not named as a duplicate");
    }

    #[tokio::test]
    async fn with_isolation_another_owners_image_is_not_indexed_and_no_owner_is_refused() {
        let s = isolated();
        let similar = |key: &str| SearchRequest { by: SearchBy::SimilarTo(key.into()), ..SearchRequest::text("", 5) };
        let refused = s.search(&as_owner(Some("alice"), similar("users/bob/b.jpg"))).await;
        assert!(matches!(refused, Err(SearchError::NotIndexed(_))), "{refused:?}");
        assert!(s.search(&as_owner(Some("alice"), similar("users/alice/a.jpg"))).await.unwrap().results.is_empty());
        assert!(matches!(s.search(&SearchRequest::text("x", 5)).await, Err(SearchError::Unauthenticated)));
        let slash = s.search(&as_owner(Some("bob/../alice"), SearchRequest::text("x", 5))).await;
        assert!(matches!(slash, Err(SearchError::Forbidden(_))), "{slash:?}");
        assert_eq!(s.health().await.milvus.images, None, "the total is everyone's");
    }

    #[tokio::test]
    async fn only_the_served_bucket_and_keys_are_presigned() {
        let mut s = searcher();
        s.access.keys = crate::domain::scope::KeyScope { prefix: String::new(), suffix: "a".into() };
        let page = s.search(&SearchRequest::text("x", 10)).await.unwrap();
        assert_eq!(keys(&page), ["a"]);
        s.access.keys = Default::default();
        s.access.bucket = Some("other".into());
        assert!(s.search(&SearchRequest::text("x", 10)).await.unwrap().results.is_empty());
    }
}
