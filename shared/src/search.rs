//! The search use case: query text in, the nearest images out, each with a presigned GET URL.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::embedder::{InferenceError, TextEmbedError, TextEmbedder, TextError};
use crate::index::{IndexError, VectorIndex};
use crate::store::{ObjectStore, StoreError};

/// Limits of the API, in one place.
pub const DEFAULT_K: usize = 10;
pub const MAX_K: usize = 100;
pub const MAX_QUERY_CHARS: usize = 1000;

/// A validated search request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub q: String,
    pub k: usize,
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
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchResponse {
    pub query: String,
    pub results: Vec<SearchResult>,
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

impl Searcher {
    pub async fn search(&self, request: &SearchRequest) -> Result<SearchResponse, SearchError> {
        let embedder = Arc::clone(&self.embedder);
        let q = request.q.clone();
        let vector = tokio::task::spawn_blocking(move || embedder.embed_text(&q))
            .await
            .map_err(|e| InferenceError(format!("embedding task failed: {e}")))?
            .map_err(|e| match e {
                TextEmbedError::Text(e) => SearchError::BadQuery(e),
                TextEmbedError::Inference(e) => SearchError::Inference(e),
            })?;
        let hits = self.index.search(&vector, request.k).await?;
        let mut results = Vec::with_capacity(hits.len());
        for hit in hits {
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
            });
        }
        Ok(SearchResponse { query: request.q.clone(), results })
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

/// `2026-11-26T17:00:00Z`
pub fn rfc3339(t: SystemTime) -> String {
    aws_sdk_s3::primitives::DateTime::from(t)
        .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
