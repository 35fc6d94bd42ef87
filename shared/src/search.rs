//! The search use case: a query (text, or an indexed image) in, the nearest images out, each
//! with a presigned GET URL; with filters, a score threshold, paging and near-duplicate collapsing.
//!
//! Paging is by offset into the ranking. Each page is read at the index's consistency level
//! (strong on Milvus Lite, the collection's level elsewhere); between pages, uploads and deletions
//! can shift the ranking, so an image may repeat or be skipped. A cursor is bound to the
//! parameters it was issued for.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::embedder::{cosine, InferenceError, TextEmbedError, TextEmbedder, TextError};
use crate::index::{ImageHit, IndexError, SearchFilter, SearchQuery, VectorIndex, MAX_SEARCH_WINDOW};
use crate::store::{ObjectStore, StoreError};

/// Limits of the API, in one place.
pub const DEFAULT_K: usize = 10;
pub const MAX_K: usize = 100;
pub const MAX_QUERY_CHARS: usize = 1000;
pub const MAX_KEY_BYTES: usize = 1024;
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

/// Which images may be returned, in the API's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub prefix: Option<String>,
    /// Lower case, e.g. `image/jpeg`.
    pub content_type: Option<String>,
    /// Milliseconds since the epoch, inclusive.
    pub uploaded_after_ms: Option<i64>,
    /// Milliseconds since the epoch, exclusive.
    pub uploaded_before_ms: Option<i64>,
}

/// A validated search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub by: SearchBy,
    /// Results per page.
    pub k: usize,
    pub min_score: Option<f32>,
    pub filters: Filters,
    pub dedup: bool,
    /// Results to skip (0 for the first page; decoded from a cursor after that).
    pub offset: usize,
}

impl SearchRequest {
    /// The first page of a plain text search.
    pub fn text(q: impl Into<String>, k: usize) -> Self {
        SearchRequest {
            by: SearchBy::Text(q.into()),
            k,
            min_score: None,
            filters: Filters::default(),
            dedup: false,
            offset: 0,
        }
    }

    /// Identifies everything but the page position, so a cursor cannot be replayed with other parameters.
    fn fingerprint(&self) -> String {
        let canonical = serde_json::json!([
            match &self.by {
                SearchBy::Text(q) => ["q", q],
                SearchBy::SimilarTo(key) => ["similar_to", key],
            },
            self.min_score.map(f32::to_bits),
            self.filters.prefix,
            self.filters.content_type,
            self.filters.uploaded_after_ms,
            self.filters.uploaded_before_ms,
            self.dedup,
        ]);
        hex::encode(&Sha256::digest(canonical.to_string().as_bytes())[..8])
    }

    /// The opaque cursor of the page that starts at `offset`.
    pub fn cursor_at(&self, offset: usize) -> String {
        let json = serde_json::to_vec(&CursorData { offset, fingerprint: self.fingerprint() }).expect("plain data");
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a cursor issued for this request's parameters.
    pub fn offset_from_cursor(&self, cursor: &str) -> Result<usize, CursorError> {
        let json = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| CursorError::Malformed)?;
        let data: CursorData = serde_json::from_slice(&json).map_err(|_| CursorError::Malformed)?;
        if data.fingerprint != self.fingerprint() {
            return Err(CursorError::OtherParameters);
        }
        if data.offset >= MAX_SEARCH_WINDOW {
            return Err(CursorError::Malformed);
        }
        Ok(data.offset)
    }
}

#[derive(Serialize, Deserialize)]
struct CursorData {
    #[serde(rename = "o")]
    offset: usize,
    #[serde(rename = "f")]
    fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("`cursor` is not one this API issued; pass `next_cursor` from the previous page unchanged")]
    Malformed,
    #[error("`cursor` belongs to a search with other parameters; repeat the same q/similar_to, filters, min_score and dedup")]
    OtherParameters,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchResult {
    pub key: String,
    /// Cosine similarity to the query: higher is better.
    pub score: f32,
    pub url: String,
    /// RFC 3339, when `url` stops working.
    pub expires_at: String,
    pub size: i64,
    pub content_type: String,
    /// RFC 3339, as S3 reported it when the object was indexed.
    pub last_modified: Option<String>,
    pub width: i64,
    pub height: i64,
    /// With `dedup`: the keys collapsed into this result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similar_to: Option<String>,
    pub results: Vec<SearchResult>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// What `GET /health` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub model: String,
    pub dim: usize,
    pub collection: String,
    pub milvus: MilvusHealth,
}

#[derive(Debug, Clone, Serialize)]
pub struct MilvusHealth {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
}

pub struct Searcher {
    pub embedder: Arc<dyn TextEmbedder>,
    pub index: Arc<dyn VectorIndex>,
    pub store: Arc<dyn ObjectStore>,
    pub url_ttl: Duration,
    pub model_name: String,
    pub collection: String,
}

/// A ranked hit and, with dedup, the keys collapsed into it.
struct Ranked {
    hit: ImageHit,
    duplicates: Vec<String>,
}

impl Searcher {
    pub async fn search(&self, request: &SearchRequest) -> Result<SearchResponse, SearchError> {
        let mut filter = SearchFilter {
            key_prefix: request.filters.prefix.clone(),
            content_type: request.filters.content_type.clone(),
            modified_from_ms: request.filters.uploaded_after_ms,
            modified_until_ms: request.filters.uploaded_before_ms,
            exclude_id: None,
        };
        let vector = match &request.by {
            SearchBy::Text(q) => self.embed_text(q).await?,
            SearchBy::SimilarTo(key) => {
                let records = self.index.records_with_key(key).await?;
                let record = records.into_iter().next().ok_or_else(|| SearchError::NotIndexed(key.clone()))?;
                filter.exclude_id = Some(record.id);
                record.vector
            }
        };
        let (ranked, has_more) = match request.dedup {
            false => self.page(&vector, &filter, request).await?,
            true => self.deduplicated_page(&vector, &filter, request).await?,
        };
        let mut results = Vec::with_capacity(ranked.len());
        for Ranked { hit, duplicates } in ranked {
            let url = self.store.presign_get(&hit.bucket, &hit.key, self.url_ttl).await?;
            results.push(SearchResult {
                key: hit.key,
                score: hit.score,
                url: url.url,
                expires_at: rfc3339(url.expires_at),
                size: hit.size,
                content_type: hit.content_type,
                last_modified: (hit.last_modified_ms > 0)
                    .then(|| rfc3339(UNIX_EPOCH + Duration::from_millis(hit.last_modified_ms as u64))),
                width: hit.width,
                height: hit.height,
                duplicates: (request.dedup && !duplicates.is_empty()).then_some(duplicates),
            });
        }
        let next_offset = request.offset + request.k;
        let next_cursor =
            (has_more && next_offset + request.k <= MAX_SEARCH_WINDOW).then(|| request.cursor_at(next_offset));
        let (query, similar_to) = match &request.by {
            SearchBy::Text(q) => (Some(q.clone()), None),
            SearchBy::SimilarTo(key) => (None, Some(key.clone())),
        };
        Ok(SearchResponse { query, similar_to, results, next_cursor })
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
        let limit = (request.k + 1).min(MAX_SEARCH_WINDOW.saturating_sub(request.offset));
        let query = SearchQuery { vector, filter, offset: request.offset, limit, with_vectors: false };
        let mut hits = above(self.index.search(&query).await?, request.min_score);
        let has_more = hits.len() > request.k;
        hits.truncate(request.k);
        Ok((hits.into_iter().map(|hit| Ranked { hit, duplicates: Vec::new() }).collect(), has_more))
    }

    /// With dedup, a page counts collapsed results, so the ranking is read from the top in a
    /// growing window until it holds this page and one more result (or runs out).
    async fn deduplicated_page(
        &self,
        vector: &[f32],
        filter: &SearchFilter,
        request: &SearchRequest,
    ) -> Result<(Vec<Ranked>, bool), SearchError> {
        let wanted = request.offset + request.k + 1;
        let mut window = (4 * wanted).clamp(64, MAX_SEARCH_WINDOW);
        loop {
            let query = SearchQuery { vector, filter, offset: 0, limit: window, with_vectors: true };
            let hits = self.index.search(&query).await?;
            let exhausted = hits.len() < window || window == MAX_SEARCH_WINDOW;
            let groups = collapse_duplicates(above(hits, request.min_score));
            if groups.len() >= wanted || exhausted {
                let has_more = groups.len() > request.offset + request.k;
                let page = groups.into_iter().skip(request.offset).take(request.k).collect();
                return Ok((page, has_more));
            }
            window = (window * 4).min(MAX_SEARCH_WINDOW);
        }
    }

    pub async fn health(&self) -> Health {
        let milvus = match self.index.count().await {
            Ok(n) => MilvusHealth { ok: true, images: Some(n), error: None },
            Err(e) => MilvusHealth { ok: false, images: None, error: Some(e.to_string()) },
        };
        Health {
            status: if milvus.ok { "ok" } else { "degraded" },
            model: self.model_name.clone(),
            dim: self.embedder.dim(),
            collection: self.collection.clone(),
            milvus,
        }
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
            (other.etag == hit.etag && other.size == hit.size && !hit.etag.is_empty())
                || matches!((&other.vector, &hit.vector), (Some(a), Some(b)) if cosine(a, b) >= DEDUP_MIN_COSINE)
        };
        match kept.iter_mut().find(|r| same(&r.hit)) {
            Some(representative) => representative.duplicates.push(hit.key),
            None => kept.push(Ranked { hit, duplicates: Vec::new() }),
        }
    }
    kept
}

/// `2026-11-26T17:00:00Z`
pub fn rfc3339(t: SystemTime) -> String {
    aws_sdk_s3::primitives::DateTime::from(t)
        .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::memory::MemoryIndex;
    use crate::index::ImageRecord;
    use crate::store::PresignedUrl;

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
        async fn list(&self, _: &str, _: &str) -> Result<Vec<crate::store::ListedObject>, StoreError> {
            Ok(Vec::new())
        }
        async fn presign_get(&self, bucket: &str, key: &str, ttl: Duration) -> Result<PresignedUrl, StoreError> {
            Ok(PresignedUrl { url: format!("https://s3/{bucket}/{key}"), expires_at: UNIX_EPOCH + ttl })
        }
    }

    fn record(key: &str, etag: &str, vector: [f32; 2]) -> ImageRecord {
        ImageRecord {
            id: crate::index::record_id("b", key),
            bucket: "b".into(),
            key: key.into(),
            size: 10,
            etag: etag.into(),
            content_type: "image/jpeg".into(),
            last_modified_ms: 1000,
            width: 1,
            height: 1,
            indexed_at_ms: 0,
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
        }
    }

    fn keys(response: &SearchResponse) -> Vec<&str> {
        response.results.iter().map(|r| r.key.as_str()).collect()
    }

    #[tokio::test]
    async fn pages_follow_the_ranking_and_the_last_has_no_cursor() {
        let s = searcher();
        let first = SearchRequest::text("x", 2);
        let page1 = s.search(&first).await.unwrap();
        assert_eq!(keys(&page1), ["a", "a-copy"]);
        let offset = first.offset_from_cursor(page1.next_cursor.as_ref().unwrap()).unwrap();
        let page2 = s.search(&SearchRequest { offset, ..first.clone() }).await.unwrap();
        assert_eq!(keys(&page2), ["b", "c"]);
        let offset = first.offset_from_cursor(page2.next_cursor.as_ref().unwrap()).unwrap();
        let page3 = s.search(&SearchRequest { offset, ..first.clone() }).await.unwrap();
        assert_eq!((keys(&page3), page3.next_cursor.as_deref()), (vec!["d"], None));
    }

    #[tokio::test]
    async fn min_score_drops_and_ends_paging() {
        let s = searcher();
        let request = SearchRequest { min_score: Some(0.9), ..SearchRequest::text("x", 3) };
        let page = s.search(&request).await.unwrap();
        assert_eq!((keys(&page), page.next_cursor.is_some()), (vec!["a", "a-copy", "b"], false));
    }

    #[tokio::test]
    async fn dedup_collapses_same_content_and_near_vectors_keeping_the_best() {
        let s = searcher();
        let request = SearchRequest { dedup: true, ..SearchRequest::text("x", 2) };
        let page = s.search(&request).await.unwrap();
        assert_eq!(keys(&page), ["a", "c"]);
        assert_eq!(page.results[0].duplicates.as_deref(), Some(&["a-copy".to_string(), "b".to_string()][..]));
        assert_eq!(page.results[1].duplicates, None);
        let offset = request.offset_from_cursor(page.next_cursor.as_ref().unwrap()).unwrap();
        let page2 = s.search(&SearchRequest { offset, ..request }).await.unwrap();
        assert_eq!((keys(&page2), page2.next_cursor.as_deref()), (vec!["d"], None));
    }

    #[tokio::test]
    async fn similar_to_uses_the_stored_vector_and_leaves_the_object_out() {
        let s = searcher();
        let request = SearchRequest { by: SearchBy::SimilarTo("c".into()), ..SearchRequest::text("", 2) };
        let page = s.search(&request).await.unwrap();
        assert_eq!(keys(&page), ["d", "b"]);
        assert_eq!((page.query, page.similar_to.as_deref()), (None, Some("c")));
        let missing = SearchRequest { by: SearchBy::SimilarTo("nope".into()), ..request };
        assert!(matches!(s.search(&missing).await, Err(SearchError::NotIndexed(k)) if k == "nope"));
    }

    #[test]
    fn cursors_are_bound_to_their_parameters() {
        let request = SearchRequest::text("cat", 10);
        let cursor = request.cursor_at(10);
        assert_eq!(request.offset_from_cursor(&cursor), Ok(10));
        assert_eq!(SearchRequest { k: 20, ..request.clone() }.offset_from_cursor(&cursor), Ok(10));
        let other = SearchRequest::text("dog", 10);
        assert_eq!(other.offset_from_cursor(&cursor), Err(CursorError::OtherParameters));
        assert_eq!(request.offset_from_cursor("not a cursor!"), Err(CursorError::Malformed));
        assert_eq!(request.offset_from_cursor(&URL_SAFE_NO_PAD.encode("{}")), Err(CursorError::Malformed));
    }
}
