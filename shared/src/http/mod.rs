//! The search HTTP API: one axum [`Router`] for API Gateway (run under `lambda_http`),
//! `clip-search serve` and the tests.
//!
//! `GET /` (the web page), `GET /openapi.json`, `GET /health`, and `GET /search?q=TEXT&k=N`
//! or `POST /search {"q": "...", "k": N}` with the parameters in [`PARAMETERS`].
//! Errors are `{"error": {"code", "message"}}` with a message that says what to fix;
//! server-side failures add a `request_id` and never carry internals.

mod cursor;
mod params;
mod wire;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use serde::Serialize;
use serde_json::{json, Value};
use tower::util::MapRequest;

pub use cursor::{at as cursor_at, CursorError, CursorKey};
pub use params::{ApiError, PARAMETERS};
pub use wire::{SearchResponse, SearchResult};

use crate::domain::scope::{Access, OwnerError};
use crate::domain::search::{SearchError, Searcher};
use crate::index::IndexError;

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");
/// The search page, self-contained (no CDN), served at `/`.
pub const PAGE_HTML: &str = include_str!("../../web/index.html");
/// The page loads thumbnails from S3 and talks only to this API.
const PAGE_CSP: &str = "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; \
                        script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'self'";

/// What every handler shares: the search use case and the key that signs cursors.
struct Api {
    searcher: Arc<Searcher>,
    cursors: CursorKey,
}

type ApiState = Arc<Api>;

/// The API's routes. Serve it through [`service`], which routes by the last path segment.
pub fn router(searcher: Arc<Searcher>, cursors: CursorKey) -> Router {
    Router::new()
        .route("/", page())
        .route("/index.html", page())
        .route(
            "/openapi.json",
            only_get("openapi.json", get(|| async { text_response("application/json", OPENAPI_JSON) })),
        )
        .route("/health", only_get("health", get(health)))
        .route(
            "/search",
            get(search)
                .post(search)
                // axum would answer HEAD with the GET handler; a search is not a resource to HEAD.
                .head(|| async { method_not_allowed(&Method::HEAD, "search", "GET, POST") })
                .fallback(|method: Method| async move { method_not_allowed(&method, "search", "GET, POST") }),
        )
        .fallback(|uri: Uri| async move {
            let message = format!(
                "no such path {:?}; the API has GET / (the page), GET /openapi.json, GET /health and GET/POST /search",
                uri.path()
            );
            error_response(&ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message }, None)
        })
        .with_state(Arc::new(Api { searcher, cursors }))
}

/// The router as API Gateway and the local server call it. A route is the last segment of the
/// path: API Gateway puts a REST API's stage in front (`/prod/search`), `cargo lambda watch` its
/// function URL prefix, and a trailing slash is allowed.
pub fn service<B>(searcher: Arc<Searcher>, cursors: CursorKey) -> Service<B> {
    MapRequest::new(router(searcher, cursors), route_by_last_segment::<B>)
}

/// What [`service`] returns: the router behind the path rewrite, for requests with bodies of type `B`.
pub type Service<B> = MapRequest<Router, fn(Request<B>) -> Request<B>>;

fn route_by_last_segment<B>(mut request: Request<B>) -> Request<B> {
    let raw = request.raw_http_path();
    let path = if raw.is_empty() { request.uri().path() } else { raw };
    let route = format!("/{}", path.trim_end_matches('/').rsplit('/').next().unwrap_or_default());
    let uri = match request.uri().query() {
        Some(query) => format!("{route}?{query}"),
        None => route,
    };
    if let Ok(uri) = uri.parse() {
        *request.uri_mut() = uri;
    }
    request
}

fn page() -> MethodRouter<ApiState> {
    only_get(
        "",
        get(|| async {
            let mut page = text_response("text/html; charset=utf-8", PAGE_HTML);
            page.headers_mut().insert("content-security-policy", PAGE_CSP.parse().expect("static header value"));
            page
        }),
    )
}

/// GET (and so HEAD, which axum answers without the body); any other method is a JSON 405.
fn only_get(route: &'static str, router: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    router.fallback(move |method: Method| async move { method_not_allowed(&method, route, "GET, HEAD") })
}

fn method_not_allowed(method: &Method, route: &str, allowed: &'static str) -> Response {
    let error = ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{method} is not allowed on /{route}; use {allowed}"),
    };
    let mut response = error_response(&error, None);
    response.headers_mut().insert("allow", allowed.parse().expect("static header value"));
    response
}

async fn health(State(api): State<ApiState>) -> Response {
    let health = api.searcher.health().await;
    let status = if health.milvus.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &health)
}

async fn search(
    State(api): State<ApiState>,
    method: Method,
    RawQuery(query): RawQuery,
    request: Request<Body>,
) -> Response {
    let request_id = request.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_default();
    let owner = match caller(&request, &api.searcher.access) {
        Ok(owner) => owner,
        Err(e) => return error_response(&classify(&e), None),
    };
    let owner = owner.as_deref();
    let parsed = if method == Method::POST {
        match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
            Ok(bytes) => parse_search_request(SearchInput::JsonBody(&bytes), &api.cursors, owner),
            Err(_) => Err(ApiError::bad_request(
                "malformed_json",
                format!("the request body is over {MAX_BODY_BYTES} bytes; send JSON like {{\"q\": \"red bicycle\", \"k\": 10}}"),
            )),
        }
    } else {
        parse_search_request(SearchInput::Query(query.as_deref()), &api.cursors, owner)
    };
    let request = match parsed {
        Ok(request) => request,
        Err(e) => return error_response(&e, None),
    };
    match api.searcher.search(&request).await {
        Ok(page) => {
            let mut response = json_response(StatusCode::OK, &SearchResponse::new(&request, page, &api.cursors));
            // Presigned URLs are bearer credentials: no shared or browser cache may keep them.
            response.headers_mut().insert("cache-control", "no-store".parse().expect("static header value"));
            response
        }
        Err(e) => {
            let api = classify(&e);
            if api.status.is_server_error() {
                tracing::error!(request_id = %request_id, error = %e, "search failed");
                error_response(&api, Some(&request_id))
            } else {
                error_response(&api, None)
            }
        }
    }
}

/// Where a search request's parameters come from.
pub enum SearchInput<'a> {
    /// `GET /search?…`: the raw query string.
    Query(Option<&'a str>),
    /// `POST /search`: the JSON body.
    JsonBody(&'a [u8]),
}

/// Parses and validates a search request (parameters, filters and a cursor signed with `cursors`),
/// or says what to fix. `owner` is the caller's, from [`caller`]: it restricts the search and
/// binds the cursor, so one owner's cursor is refused for another.
pub fn parse_search_request(
    input: SearchInput<'_>,
    cursors: &CursorKey,
    owner: Option<&str>,
) -> Result<crate::domain::search::SearchRequest, ApiError> {
    let params = match input {
        SearchInput::Query(query) => params::from_query(query),
        SearchInput::JsonBody(bytes) => params::from_json(bytes)?,
    };
    params::validate(params, cursors, owner)
}

/// The owner a local server vouches for (`clip-search serve --as-user`), as a request extension:
/// nothing from the network can set one.
#[derive(Debug, Clone)]
pub struct VerifiedOwner(pub String);

/// The caller's owner when the deployment isolates users (`OWNER_KEY_TEMPLATE`): the template's
/// claim from the identity API Gateway verified (its JWT authorizer puts the claims in the request
/// context), or a [`VerifiedOwner`] extension. Headers, parameters and unverified tokens are never
/// read, so on an open API nobody can claim an identity.
pub fn caller<B>(request: &Request<B>, access: &Access) -> Result<Option<String>, SearchError> {
    let Some(template) = &access.owners else { return Ok(None) };
    if let Some(VerifiedOwner(owner)) = request.extensions().get::<VerifiedOwner>() {
        return Ok(Some(owner.clone()));
    }
    let claims = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => {
            context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|jwt| &jwt.claims)
        }
        _ => None,
    };
    let claims = claims.ok_or(SearchError::Unauthenticated)?;
    match claims.get(template.claim()) {
        Some(owner) => Ok(Some(owner.clone())),
        None => Err(SearchError::Forbidden(OwnerError::MissingClaim(template.claim().to_string()))),
    }
}

/// Larger than any valid request: a query is at most 1000 characters.
const MAX_BODY_BYTES: usize = 64 * 1024;

fn classify(error: &SearchError) -> ApiError {
    match error {
        SearchError::BadQuery(e) => ApiError::bad_request("invalid_query", e.to_string()),
        SearchError::NotIndexed(_) => {
            ApiError { status: StatusCode::NOT_FOUND, code: "not_indexed", message: error.to_string() }
        }
        SearchError::Index(IndexError::Unavailable(_)) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "index_unavailable",
            message: "the search index is not answering; try again shortly".into(),
        },
        SearchError::Unauthenticated => {
            ApiError { status: StatusCode::UNAUTHORIZED, code: "unauthenticated", message: error.to_string() }
        }
        SearchError::Forbidden(_) => {
            ApiError { status: StatusCode::FORBIDDEN, code: "forbidden", message: error.to_string() }
        }
        SearchError::Index(_) | SearchError::Inference(_) | SearchError::Store(_) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error",
            message: "the search failed on the server; the request id identifies it in the logs".into(),
        },
    }
}

fn error_response(error: &ApiError, request_id: Option<&str>) -> Response {
    let mut body = json!({"error": {"code": error.code, "message": error.message}});
    if let Some(id) = request_id {
        body["error"]["request_id"] = Value::String(id.to_string());
    }
    json_response(error.status, &body)
}

fn text_response(content_type: &'static str, text: &'static str) -> Response {
    ([("content-type", content_type), ("x-content-type-options", "nosniff")], text).into_response()
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_string());
    (status, [("content-type", "application/json")], Bytes::from(text)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(uri: &str) -> String {
        route_by_last_segment(Request::builder().uri(uri).body(()).unwrap()).uri().to_string()
    }

    #[test]
    fn a_route_is_the_last_path_segment_with_the_query_kept() {
        assert_eq!(routed("/search?q=red+bicycle&k=3"), "/search?q=red+bicycle&k=3");
        assert_eq!(routed("/prod/search"), "/search", "a REST API stage in front");
        assert_eq!(routed("/lambda-url/search/health/"), "/health", "a function URL prefix and a trailing slash");
        assert_eq!(routed("/"), "/");
        assert_eq!(routed("/prod/admin"), "/admin");
    }
}
