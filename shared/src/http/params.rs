//! The `/search` parameters: read from a query string or a JSON body, then validated by one set
//! of rules into a [`SearchRequest`]. Every message says what to fix.

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::cursor::{self, CursorKey};
use crate::domain::record::SearchFilter;
use crate::domain::search::{SearchBy, SearchRequest, DEFAULT_K, MAX_K, MAX_KEY_BYTES, MAX_QUERY_CHARS};
use crate::time::parse_rfc3339_ms;

/// Every `/search` parameter; anything else is refused, so a typo is not silently ignored.
pub const PARAMETERS: [&str; 10] = [
    "q",
    "similar_to",
    "k",
    "min_score",
    "prefix",
    "content_type",
    "uploaded_after",
    "uploaded_before",
    "cursor",
    "dedup",
];

/// An error response: status, machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(super) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }
}

/// Query-string parameters as JSON strings (the first value of a repeated one).
pub(super) fn from_query(query: Option<&str>) -> Map<String, Value> {
    let mut params = Map::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        params.entry(name.into_owned()).or_insert(Value::String(value.into_owned()));
    }
    params
}

pub(super) fn from_json(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the request body is empty; send JSON like {\"q\": \"red bicycle\", \"k\": 10}",
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("the request body is not valid JSON ({e}); send {{\"q\": \"red bicycle\", \"k\": 10}}"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the request body must be a JSON object like {\"q\": \"red bicycle\"}",
        ));
    };
    Ok(object.into_iter().filter(|(_, v)| !v.is_null()).collect())
}

/// The rules for every parameter, shared by GET and POST. Optional parameters given as ""
/// count as absent, so an HTML form can send its empty fields.
pub(super) fn validate(
    mut params: Map<String, Value>,
    cursors: &CursorKey,
    owner: Option<&str>,
) -> Result<SearchRequest, ApiError> {
    if let Some(unknown) = params.keys().find(|name| !PARAMETERS.contains(&name.as_str())) {
        return Err(ApiError::bad_request(
            "unknown_parameter",
            format!("unknown parameter {unknown:?}; /search takes {}", PARAMETERS.join(", ")),
        ));
    }
    let by = match (params.remove("q"), optional_text(&mut params, "similar_to")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "conflicting_parameters",
                "give either `q` (search by text) or `similar_to` (search by an image), not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_query",
                "`q` is required: the text to search for, e.g. /search?q=red+bicycle (or `similar_to=KEY` for images like KEY)",
            ))
        }
        (Some(q), None) => SearchBy::Text(validate_q(q)?),
        (None, Some(key)) if key.len() > MAX_KEY_BYTES => {
            return Err(ApiError::bad_request(
                "invalid_similar_to",
                format!("`similar_to` is {} bytes; S3 keys have at most {MAX_KEY_BYTES}", key.len()),
            ))
        }
        (None, Some(key)) => SearchBy::SimilarTo(key),
    };
    let k = validate_k(params.remove("k"))?;
    let min_score = match params.remove("min_score").filter(|v| v != "") {
        None => None,
        Some(value) => match number(&value) {
            Some(score) if (-1.0..=1.0).contains(&score) => Some(score as f32),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_min_score",
                    format!(
                        "`min_score` must be a number from -1 to 1 (scores are cosine similarities); got {}",
                        shown(&value)
                    ),
                ))
            }
        },
    };
    let prefix = optional_text(&mut params, "prefix")?;
    if let Some(prefix) = prefix.as_ref().filter(|p| p.len() > MAX_KEY_BYTES) {
        return Err(ApiError::bad_request(
            "invalid_prefix",
            format!("`prefix` is {} bytes; S3 keys have at most {MAX_KEY_BYTES}", prefix.len()),
        ));
    }
    let content_type = optional_text(&mut params, "content_type")?.map(|c| c.to_ascii_lowercase());
    if let Some(content_type) = content_type.as_ref().filter(|c| !is_mime_type(c)) {
        return Err(ApiError::bad_request(
            "invalid_content_type",
            format!("`content_type` must be a MIME type like image/jpeg; got {content_type:?}"),
        ));
    }
    let uploaded_after_ms = time(&mut params, "uploaded_after")?;
    let uploaded_before_ms = time(&mut params, "uploaded_before")?;
    if let (Some(after), Some(before)) = (uploaded_after_ms, uploaded_before_ms) {
        if after >= before {
            return Err(ApiError::bad_request(
                "invalid_time_range",
                "`uploaded_after` must be earlier than `uploaded_before`",
            ));
        }
    }
    let dedup = match params.remove("dedup") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) if s.is_empty() => false,
        Some(Value::String(s)) if ["true", "1"].contains(&s.to_ascii_lowercase().as_str()) => true,
        Some(Value::String(s)) if ["false", "0"].contains(&s.to_ascii_lowercase().as_str()) => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_dedup",
                format!("`dedup` must be true or false; got {}", shown(&other)),
            ))
        }
    };
    let owner = owner.map(str::to_string);
    let filter = SearchFilter { owner, prefix, content_type, uploaded_after_ms, uploaded_before_ms, exclude_id: None };
    let mut search = SearchRequest { by, k, min_score, filter, dedup, offset: 0 };
    if let Some(text) = optional_text(&mut params, "cursor")? {
        search.offset = cursor::offset(&search, &text, cursors)
            .map_err(|e| ApiError::bad_request("invalid_cursor", e.to_string()))?;
    }
    Ok(search)
}

fn validate_q(q: Value) -> Result<String, ApiError> {
    let Value::String(q) = q else {
        return Err(ApiError::bad_request("invalid_query", format!("`q` must be a string, got {q}")));
    };
    if q.trim().is_empty() {
        return Err(ApiError::bad_request("empty_query", "`q` is empty; give a few words describing the picture"));
    }
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "query_too_long",
            format!("`q` is {chars} characters; the limit is {MAX_QUERY_CHARS}"),
        ));
    }
    Ok(q)
}

fn validate_k(k: Option<Value>) -> Result<usize, ApiError> {
    let Some(value) = k else { return Ok(DEFAULT_K) };
    let parsed = match &value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match parsed {
        Some(k) if (1..=MAX_K as u64).contains(&k) => Ok(k as usize),
        _ => Err(ApiError::bad_request(
            "invalid_k",
            format!("`k` must be a whole number from 1 to {MAX_K} (default {DEFAULT_K}); got {}", shown(&value)),
        )),
    }
}

/// An optional string parameter; "" counts as absent.
fn optional_text(params: &mut Map<String, Value>, name: &'static str) -> Result<Option<String>, ApiError> {
    match params.remove(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s).filter(|s| !s.is_empty())),
        Some(other) => Err(ApiError::bad_request(
            if name == "similar_to" { "invalid_similar_to" } else { invalid_code(name) },
            format!("`{name}` must be a string, got {other}"),
        )),
    }
}

fn invalid_code(name: &str) -> &'static str {
    match name {
        "prefix" => "invalid_prefix",
        "content_type" => "invalid_content_type",
        "cursor" => "invalid_cursor",
        _ => "invalid_time",
    }
}

/// An RFC 3339 time as milliseconds since the epoch.
fn time(params: &mut Map<String, Value>, name: &'static str) -> Result<Option<i64>, ApiError> {
    let Some(text) = optional_text(params, name)? else { return Ok(None) };
    parse_rfc3339_ms(text.trim()).map(Some).map_err(|e| {
        ApiError::bad_request(
            "invalid_time",
            format!("`{name}` must be an RFC 3339 date-time like 2024-05-01T00:00:00Z; got {text:?} ({e})"),
        )
    })
}

fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    n.filter(|n| n.is_finite())
}

/// `type/subtype` with the characters RFC 6838 allows.
fn is_mime_type(text: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 127
            && t.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
            && t.starts_with(|c: char| c.is_ascii_alphanumeric())
    };
    matches!(text.split_once('/'), Some((kind, subtype)) if token(kind) && token(subtype))
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn check(pairs: &[(&str, Value)]) -> Result<SearchRequest, ApiError> {
        let mut all = params(pairs);
        if !all.contains_key("similar_to") {
            all.entry("q").or_insert(json!("cat"));
        }
        validate(all, &key(), None)
    }

    fn key() -> CursorKey {
        CursorKey::from_secret("test")
    }

    fn code(pairs: &[(&str, Value)]) -> &'static str {
        check(pairs).unwrap_err().code
    }

    #[test]
    fn k_defaults_and_bounds() {
        assert_eq!(check(&[]).unwrap().k, DEFAULT_K);
        assert_eq!(check(&[("k", json!(1))]).unwrap().k, 1);
        assert_eq!(check(&[("k", json!("100"))]).unwrap().k, 100);
        for bad in [json!(0), json!(101), json!(-1), json!(2.5), json!("ten"), json!(true), json!("")] {
            assert_eq!(code(&[("k", bad.clone())]), "invalid_k", "{bad}");
        }
    }

    #[test]
    fn q_rules() {
        assert_eq!(validate(Map::new(), &key(), None).unwrap_err().code, "missing_query");
        assert_eq!(code(&[("q", json!("  \t"))]), "empty_query");
        assert_eq!(code(&[("q", json!(""))]), "empty_query");
        assert_eq!(code(&[("q", json!(5))]), "invalid_query");
        assert!(
            matches!(check(&[("q", json!("é".repeat(1000)))]).unwrap().by, SearchBy::Text(q) if q.chars().count() == 1000)
        );
        assert_eq!(code(&[("q", json!("é".repeat(1001)))]), "query_too_long");
        assert_eq!(code(&[("similar_to", json!("a.jpg")), ("q", json!("cat"))]), "conflicting_parameters");
        assert_eq!(check(&[("similar_to", json!("a.jpg"))]).unwrap().by, SearchBy::SimilarTo("a.jpg".into()));
        assert_eq!(code(&[("similar_to", json!("x".repeat(1025)))]), "invalid_similar_to");
        assert_eq!(code(&[("similar_to", json!(3))]), "invalid_similar_to");
        assert_eq!(code(&[("kk", json!(3))]), "unknown_parameter");
    }

    #[test]
    fn min_score_bounds() {
        assert_eq!(check(&[("min_score", json!("-1"))]).unwrap().min_score, Some(-1.0));
        assert_eq!(check(&[("min_score", json!(1))]).unwrap().min_score, Some(1.0));
        assert_eq!(check(&[("min_score", json!(""))]).unwrap().min_score, None);
        for bad in [json!(1.01), json!("-1.5"), json!("NaN"), json!("inf"), json!("high"), json!(true)] {
            assert_eq!(code(&[("min_score", bad.clone())]), "invalid_min_score", "{bad}");
        }
    }

    #[test]
    fn filters() {
        let f = check(&[
            ("prefix", json!("a\"b\\ or ")),
            ("content_type", json!("Image/JPEG")),
            ("uploaded_after", json!("2024-05-01T00:00:00Z")),
            ("uploaded_before", json!("2024-05-01T02:00:00+02:00")),
        ])
        .unwrap_err();
        assert_eq!(f.code, "invalid_time_range", "the same instant is an empty range");
        let ok = check(&[
            ("prefix", json!("a\"b\\ or ")),
            ("content_type", json!("Image/JPEG")),
            ("uploaded_after", json!("2024-05-01T00:00:00Z")),
            ("uploaded_before", json!("2024-05-01T00:00:00.001Z")),
        ])
        .unwrap();
        assert_eq!(ok.filter.prefix.as_deref(), Some("a\"b\\ or "));
        assert_eq!(ok.filter.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(ok.filter.uploaded_after_ms, Some(1_714_521_600_000));
        assert_eq!(ok.filter.uploaded_before_ms, Some(1_714_521_600_001));
        assert_eq!(check(&[("prefix", json!(""))]).unwrap().filter.prefix, None);
        assert_eq!(check(&[("prefix", json!("x".repeat(1024)))]).unwrap().filter.prefix.unwrap().len(), 1024);
        assert_eq!(code(&[("prefix", json!("x".repeat(1025)))]), "invalid_prefix");
        assert_eq!(code(&[("prefix", json!(["a"]))]), "invalid_prefix");
        for bad in ["jpeg", "image/", "/jpeg", "image/jpeg\" or 1", "image/jp eg"] {
            assert_eq!(code(&[("content_type", json!(bad))]), "invalid_content_type", "{bad}");
        }
        for bad in ["2024-05-01", "yesterday", "2024-13-01T00:00:00Z", "2024-05-01T00:00:00"] {
            assert_eq!(code(&[("uploaded_after", json!(bad))]), "invalid_time", "{bad}");
        }
    }

    #[test]
    fn dedup_and_cursor() {
        assert!(check(&[("dedup", json!("TRUE"))]).unwrap().dedup);
        assert!(check(&[("dedup", json!(true))]).unwrap().dedup);
        assert!(!check(&[("dedup", json!("0"))]).unwrap().dedup);
        assert_eq!(code(&[("dedup", json!("yes"))]), "invalid_dedup");
        let first = check(&[]).unwrap();
        assert_eq!(check(&[("cursor", json!(cursor::at(&first, 10, &key())))]).unwrap().offset, 10);
        assert_eq!(code(&[("cursor", json!("garbage"))]), "invalid_cursor");
        assert_eq!(
            code(&[("cursor", json!(cursor::at(&first, 10, &key()))), ("prefix", json!("x/"))]),
            "invalid_cursor"
        );
        assert_eq!(
            code(&[("cursor", json!(cursor::at(&first, 10, &CursorKey::from_secret("other"))))]),
            "invalid_cursor"
        );
        // One owner's cursor is refused for another, and an owner's for an anonymous search.
        let q = || params(&[("q", json!("cat"))]);
        let alices = validate(q(), &key(), Some("alice")).unwrap();
        assert_eq!(alices.filter.owner.as_deref(), Some("alice"));
        let cursor = || json!(cursor::at(&alices, 10, &key()));
        let with_cursor = || params(&[("q", json!("cat")), ("cursor", cursor())]);
        assert_eq!(validate(with_cursor(), &key(), Some("alice")).unwrap().offset, 10);
        assert_eq!(validate(with_cursor(), &key(), Some("bob")).unwrap_err().code, "invalid_cursor");
        assert_eq!(validate(with_cursor(), &key(), None).unwrap_err().code, "invalid_cursor");
    }

    #[test]
    fn json_bodies() {
        let body = from_json(br#"{"q": "cat", "k": 3, "dedup": null}"#).unwrap();
        assert_eq!(validate(body, &key(), None).unwrap(), SearchRequest::text("cat", 3));
        assert_eq!(from_json(b"{oops").unwrap_err().code, "malformed_json");
        assert_eq!(from_json(b"[1]").unwrap_err().code, "malformed_json");
        assert_eq!(from_json(b"").unwrap_err().code, "malformed_json");
    }

    #[test]
    fn query_strings_are_form_decoded_and_the_first_value_wins() {
        let params = from_query(Some("q=red+bicycle&k=3&k=5&prefix=a%2Fb%20c"));
        assert_eq!(params["q"], "red bicycle");
        assert_eq!(params["k"], "3");
        assert_eq!(params["prefix"], "a/b c");
        assert!(from_query(None).is_empty());
    }

    #[test]
    fn mime_types() {
        assert!(is_mime_type("image/jpeg") && is_mime_type("image/svg+xml") && is_mime_type("image/vnd.ms-photo"));
        assert!(!is_mime_type("image") && !is_mime_type("image/jpeg/x") && !is_mime_type("-a/b"));
    }
}
