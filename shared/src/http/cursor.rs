//! The opaque paging cursor: the offset of the next page, bound to the parameters it was issued
//! for by a fingerprint, so it cannot be replayed with other ones.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::search::{SearchBy, SearchRequest};
use crate::index::MAX_RESULT_WINDOW;

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

/// Identifies everything but the page position and size.
fn fingerprint(request: &SearchRequest) -> String {
    let filter = &request.filter;
    let canonical = serde_json::json!([
        match &request.by {
            SearchBy::Text(q) => ["q", q],
            SearchBy::SimilarTo(key) => ["similar_to", key],
        },
        request.min_score.map(f32::to_bits),
        filter.prefix,
        filter.content_type,
        filter.uploaded_after_ms,
        filter.uploaded_before_ms,
        request.dedup,
    ]);
    hex::encode(&Sha256::digest(canonical.to_string().as_bytes())[..8])
}

/// The cursor of the page of `request` that starts at `offset`.
pub fn at(request: &SearchRequest, offset: usize) -> String {
    let data = CursorData { offset, fingerprint: fingerprint(request) };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&data).expect("plain data"))
}

/// The offset a cursor issued for `request`'s parameters points at.
pub fn offset(request: &SearchRequest, cursor: &str) -> Result<usize, CursorError> {
    let json = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| CursorError::Malformed)?;
    let data: CursorData = serde_json::from_slice(&json).map_err(|_| CursorError::Malformed)?;
    if data.fingerprint != fingerprint(request) {
        return Err(CursorError::OtherParameters);
    }
    if data.offset >= MAX_RESULT_WINDOW {
        return Err(CursorError::Malformed);
    }
    Ok(data.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bound_to_their_parameters() {
        let request = SearchRequest::text("cat", 10);
        let cursor = at(&request, 10);
        assert_eq!(offset(&request, &cursor), Ok(10));
        assert_eq!(offset(&SearchRequest { k: 20, ..request.clone() }, &cursor), Ok(10));
        assert_eq!(offset(&SearchRequest::text("dog", 10), &cursor), Err(CursorError::OtherParameters));
        assert_eq!(offset(&request, "not a cursor!"), Err(CursorError::Malformed));
        assert_eq!(offset(&request, &URL_SAFE_NO_PAD.encode("{}")), Err(CursorError::Malformed));
        assert_eq!(offset(&request, &at(&request, MAX_RESULT_WINDOW)), Err(CursorError::Malformed));
    }
}
