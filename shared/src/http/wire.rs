//! The JSON the API answers with. The use case speaks in records and system times; the wire
//! speaks in RFC 3339 and opaque cursors.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::cursor::{self, CursorKey};
use crate::domain::search::{SearchBy, SearchPage, SearchRequest};
use crate::time::rfc3339;

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

impl SearchResponse {
    pub fn new(request: &SearchRequest, page: SearchPage, cursors: &CursorKey) -> Self {
        let results = page
            .results
            .into_iter()
            .map(|found| {
                let record = found.hit.record;
                SearchResult {
                    key: record.key,
                    score: found.hit.score,
                    url: found.url.url,
                    expires_at: rfc3339(found.url.expires_at),
                    size: record.size,
                    content_type: record.content_type,
                    last_modified: (record.last_modified_ms > 0)
                        .then(|| rfc3339(UNIX_EPOCH + Duration::from_millis(record.last_modified_ms as u64))),
                    width: record.width,
                    height: record.height,
                    duplicates: (request.dedup && !found.duplicates.is_empty()).then_some(found.duplicates),
                }
            })
            .collect();
        let (query, similar_to) = match &request.by {
            SearchBy::Text(q) => (Some(q.clone()), None),
            SearchBy::SimilarTo(key) => (None, Some(key.clone())),
        };
        SearchResponse {
            query,
            similar_to,
            results,
            next_cursor: page.next_offset.map(|o| cursor::at(request, o, cursors)),
        }
    }
}
