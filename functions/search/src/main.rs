//! Search Lambda (API Gateway): loads the CLIP text tower once at init, then embeds queries.
//! (The Milvus search and presigned URLs arrive with the functions issue.)

use lambda_http::{service_fn, Body, Error, Request, RequestExt, Response};
use serde_json::json;
use shared::embedder::{ClipTextEncoder, ModelBundle, TextEmbedError, TextEmbedder};
use shared::Config;

fn reply(status: u16, body: serde_json::Value) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let config = Config::from_env()?;
    let bundle = ModelBundle::open(&config.model_dir)?;
    let encoder = ClipTextEncoder::load(&bundle, &config.runtime)?;
    let (encoder, model) = (&encoder, bundle.name());
    let model = &model;
    lambda_http::run(service_fn(move |request: Request| async move {
        let path = request.raw_http_path().to_string();
        match path.trim_end_matches('/').rsplit('/').next().unwrap_or_default() {
            "health" => reply(200, json!({"model": model, "dim": encoder.dim()})),
            "embed" => {
                let query = request.query_string_parameters().first("q").unwrap_or_default().to_string();
                match encoder.embed_text(&query) {
                    Ok(embedding) => reply(200, json!({"query": query, "dim": embedding.len(), "embedding": embedding})),
                    Err(TextEmbedError::Text(e)) => reply(400, json!({"error": {"code": "invalid_query", "message": e.to_string()}})),
                    Err(e) => reply(503, json!({"error": {"code": "inference_failed", "message": e.to_string()}})),
                }
            }
            _ => reply(404, json!({"error": {"code": "not_found", "message": format!("no route {path}; try GET /embed?q=TEXT or GET /health")}})),
        }
    }))
    .await
}
