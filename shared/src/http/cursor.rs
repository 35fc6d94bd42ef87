//! The opaque paging cursor: the offset of the next page, bound to the parameters it was issued
//! for by a fingerprint, and signed (HMAC-SHA-256) so that a client cannot make one up: a forged
//! cursor could otherwise ask for any offset, such as the deepest dedup window, for free.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::search::{SearchBy, SearchRequest};
use crate::index::MAX_RESULT_WINDOW;

/// The secret that signs cursors. From `CURSOR_SIGNING_KEY` (or its Secrets Manager secret), so
/// that every container accepts the others' cursors; else random per container, and a cursor is
/// then only accepted by the container that issued it (another answers `invalid_cursor`).
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    /// The key derived from a configured secret (any length; SHA-256 of its bytes).
    pub fn from_secret(secret: &str) -> Self {
        CursorKey(Sha256::digest(secret.as_bytes()).into())
    }

    /// A key of this process alone, from the operating system's random source.
    pub fn random() -> Self {
        let mut key = [0; 32];
        getrandom::fill(&mut key).expect("the operating system's random source works");
        CursorKey(key)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(…)")
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

/// Bytes of the MAC kept in a cursor: 128 bits, far beyond guessing.
const MAC_BYTES: usize = 16;

/// Identifies everything but the page position and size.
fn fingerprint(request: &SearchRequest) -> String {
    let filter = &request.filter;
    let canonical = serde_json::json!([
        match &request.by {
            SearchBy::Text(q) => ["q", q],
            SearchBy::SimilarTo(key) => ["similar_to", key],
        },
        request.min_score.map(f32::to_bits),
        filter.owner,
        filter.prefix,
        filter.content_type,
        filter.uploaded_after_ms,
        filter.uploaded_before_ms,
        request.dedup,
    ]);
    hex::encode(&Sha256::digest(canonical.to_string().as_bytes())[..8])
}

/// The cursor of the page of `request` that starts at `offset`: `PAYLOAD.MAC`, both base64url.
pub fn at(request: &SearchRequest, offset: usize, key: &CursorKey) -> String {
    let data = CursorData { offset, fingerprint: fingerprint(request) };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&data).expect("plain data"));
    let tag = key.mac(&payload).finalize().into_bytes();
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES]))
}

/// The offset a cursor issued (and signed with `key`) for `request`'s parameters points at.
pub fn offset(request: &SearchRequest, cursor: &str, key: &CursorKey) -> Result<usize, CursorError> {
    let (payload, tag) = cursor.trim().split_once('.').ok_or(CursorError::Malformed)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| CursorError::Malformed)?;
    if tag.len() != MAC_BYTES {
        return Err(CursorError::Malformed);
    }
    // Constant time: the comparison says nothing about how much of a guess was right.
    key.mac(payload).verify_truncated_left(&tag).map_err(|_| CursorError::Malformed)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| CursorError::Malformed)?;
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
        let key = CursorKey::from_secret("test");
        let request = SearchRequest::text("cat", 10);
        let cursor = at(&request, 10, &key);
        assert_eq!(offset(&request, &cursor, &key), Ok(10));
        assert_eq!(offset(&SearchRequest { k: 20, ..request.clone() }, &cursor, &key), Ok(10));
        assert_eq!(offset(&SearchRequest::text("dog", 10), &cursor, &key), Err(CursorError::OtherParameters));
        assert_eq!(offset(&request, "not a cursor!", &key), Err(CursorError::Malformed));
        assert_eq!(offset(&request, &URL_SAFE_NO_PAD.encode("{}"), &key), Err(CursorError::Malformed));
        assert_eq!(offset(&request, &at(&request, MAX_RESULT_WINDOW, &key), &key), Err(CursorError::Malformed));
    }

    #[test]
    fn a_cursor_made_up_or_signed_with_another_key_is_refused() {
        let key = CursorKey::from_secret("deployment secret");
        let request = SearchRequest { dedup: true, ..SearchRequest::text("cat", 10) };
        // The old, unsigned form, with the fingerprint computed from public parameters.
        let data = CursorData { offset: 16_383, fingerprint: fingerprint(&request) };
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&data).unwrap());
        assert_eq!(offset(&request, &forged, &key), Err(CursorError::Malformed));
        assert_eq!(offset(&request, &format!("{forged}.AAAAAAAAAAAAAAAAAAAAAA"), &key), Err(CursorError::Malformed));
        // A genuine cursor with its offset changed: the signature no longer matches.
        let genuine = at(&request, 10, &key);
        let (payload, tag) = genuine.split_once('.').unwrap();
        let deeper = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&data).unwrap());
        assert_ne!(payload, deeper);
        assert_eq!(offset(&request, &format!("{deeper}.{tag}"), &key), Err(CursorError::Malformed));
        // Another deployment's (or container's) key.
        assert_eq!(offset(&request, &genuine, &CursorKey::random()), Err(CursorError::Malformed));
        assert_eq!(offset(&request, &genuine, &key), Ok(10));
    }
}
