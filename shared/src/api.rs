//! The search HTTP API behind API Gateway (HTTP API v2 or REST v1, via `lambda_http`):
//! routing, request validation, and turning use-case errors into JSON responses.
//!
//! `GET /search?q=TEXT&k=N`, `POST /search {"q": "...", "k": N}`, `GET /health`.
//! Errors are `{"error": {"code", "message"}}` with a message that says what to fix;
//! server-side failures add a `request_id` and never carry internal details.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::{json, Value};

use crate::index::IndexError;
use crate::search::{SearchError, SearchRequest, Searcher, DEFAULT_K, MAX_K, MAX_QUERY_CHARS};

/// An error response: status, machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }
}

/// Handles one API Gateway request.
pub async fn handle(searcher: &Searcher, request: Request) -> Response<Body> {
    let request_id = request.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_default();
    let path = request.raw_http_path().to_string();
    let route = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
    match (route.as_str(), request.method()) {
        ("search", &Method::GET) | ("search", &Method::POST) => {
            let parsed = if request.method() == Method::GET { from_query(&request) } else { from_json(request.body()) };
            match parsed {
                Err(e) => error_response(&e, None),
                Ok(search) => match searcher.search(&search).await {
                    Ok(response) => json_response(StatusCode::OK, &response),
                    Err(e) => {
                        let api = classify(&e);
                        if api.status.is_server_error() {
                            tracing::error!(request_id = %request_id, error = %e, "search failed");
                            error_response(&api, Some(&request_id))
                        } else {
                            error_response(&api, None)
                        }
                    }
                },
            }
        }
        ("health", &Method::GET) => {
            let health = searcher.health().await;
            let status = if health.milvus.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json_response(status, &health)
        }
        ("search", _) | ("health", _) => {
            let allow = if route == "search" { "GET, POST" } else { "GET" };
            let error = ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: format!("{} is not allowed on /{route}; use {allow}", request.method()),
            };
            let mut response = error_response(&error, None);
            response.headers_mut().insert("allow", allow.parse().expect("static header value"));
            response
        }
        _ => error_response(
            &ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!("no such path {path:?}; the API has GET/POST /search and GET /health"),
            },
            None,
        ),
    }
}

fn from_query(request: &Request) -> Result<SearchRequest, ApiError> {
    let params = request.query_string_parameters();
    validate(params.first("q").map(str::to_string), params.first("k").map(|k| Value::String(k.to_string())))
}

fn from_json(body: &Body) -> Result<SearchRequest, ApiError> {
    let bytes: &[u8] = body.as_ref();
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
    let Value::Object(mut object) = value else {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the request body must be a JSON object like {\"q\": \"red bicycle\"}",
        ));
    };
    let q = match object.remove("q") {
        None | Some(Value::Null) => None,
        Some(Value::String(q)) => Some(q),
        Some(other) => {
            return Err(ApiError::bad_request("invalid_query", format!("`q` must be a string, got {other}")))
        }
    };
    validate(q, object.remove("k").filter(|k| !k.is_null()))
}

/// The rules for `q` and `k`, shared by GET and POST.
fn validate(q: Option<String>, k: Option<Value>) -> Result<SearchRequest, ApiError> {
    let q = q.ok_or_else(|| {
        ApiError::bad_request("missing_query", "`q` is required: the text to search for, e.g. /search?q=red+bicycle")
    })?;
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
    let k = match k {
        None => DEFAULT_K,
        Some(value) => {
            let parsed = match &value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match parsed {
                Some(k) if (1..=MAX_K as u64).contains(&k) => k as usize,
                _ => {
                    let shown = match &value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    return Err(ApiError::bad_request(
                        "invalid_k",
                        format!("`k` must be a whole number from 1 to {MAX_K} (default {DEFAULT_K}); got {shown:?}"),
                    ));
                }
            }
        }
    };
    Ok(SearchRequest { q, k })
}

fn classify(error: &SearchError) -> ApiError {
    match error {
        SearchError::BadQuery(e) => ApiError::bad_request("invalid_query", e.to_string()),
        SearchError::Index(IndexError::Unavailable(_)) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "index_unavailable",
            message: "the search index is not answering; try again shortly".into(),
        },
        SearchError::Index(_) | SearchError::Inference(_) | SearchError::Store(_) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error",
            message: "the search failed on the server; the request id identifies it in the logs".into(),
        },
    }
}

fn error_response(error: &ApiError, request_id: Option<&str>) -> Response<Body> {
    let mut body = json!({"error": {"code": error.code, "message": error.message}});
    if let Some(id) = request_id {
        body["error"]["request_id"] = Value::String(id.to_string());
    }
    json_response(error.status, &body)
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_string());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(text))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: Value) -> Result<SearchRequest, ApiError> {
        validate(Some("cat".into()), Some(v))
    }

    #[test]
    fn k_defaults_and_bounds() {
        assert_eq!(validate(Some("cat".into()), None).unwrap().k, DEFAULT_K);
        assert_eq!(k(json!(1)).unwrap().k, 1);
        assert_eq!(k(json!("100")).unwrap().k, 100);
        for bad in [json!(0), json!(101), json!(-1), json!(2.5), json!("ten"), json!(true), json!("")] {
            assert_eq!(k(bad.clone()).unwrap_err().code, "invalid_k", "{bad}");
        }
    }

    #[test]
    fn q_rules() {
        assert_eq!(validate(None, None).unwrap_err().code, "missing_query");
        assert_eq!(validate(Some("  \t".into()), None).unwrap_err().code, "empty_query");
        assert_eq!(validate(Some("é".repeat(1000)), None).unwrap().q.chars().count(), 1000);
        assert_eq!(validate(Some("é".repeat(1001)), None).unwrap_err().code, "query_too_long");
    }

    #[test]
    fn json_bodies() {
        assert_eq!(from_json(&Body::from(r#"{"q": "cat", "k": 3}"#)).unwrap(), SearchRequest { q: "cat".into(), k: 3 });
        assert_eq!(from_json(&Body::from("{oops")).unwrap_err().code, "malformed_json");
        assert_eq!(from_json(&Body::from("[1]")).unwrap_err().code, "malformed_json");
        assert_eq!(from_json(&Body::Empty).unwrap_err().code, "malformed_json");
        assert_eq!(from_json(&Body::from(r#"{"q": 5}"#)).unwrap_err().code, "invalid_query");
        assert_eq!(from_json(&Body::from(r#"{"k": 5}"#)).unwrap_err().code, "missing_query");
    }
}
