//! The local event bridge: `POST /webhook` from the SeaweedFS filer → S3 event → ingest Lambda.
//!
//! Settings: `BRIDGE_LISTEN`, `INGEST_INVOKE_URL` and `AWS_REGION`, read by
//! [`shared::config::Env::bridge`] (defaults in the README's configuration table).
//! When the function fails, the webhook gets a 502 so SeaweedFS retries it, as Lambda's async
//! invocation would.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

struct Bridge {
    client: reqwest::Client,
    invoke_url: String,
    region: String,
}

async fn webhook(State(bridge): State<Arc<Bridge>>, Json(payload): Json<Value>) -> (StatusCode, String) {
    let Some(change) = bridge::change_from_webhook(&payload) else {
        return (StatusCode::OK, "ignored".into());
    };
    let event = bridge::s3_event(&change, &bridge.region);
    let key = event["Records"][0]["s3"]["object"]["key"].as_str().unwrap_or_default().to_string();
    let name = event["Records"][0]["eventName"].as_str().unwrap_or_default().to_string();
    match bridge.client.post(&bridge.invoke_url).json(&event).send().await {
        Ok(response) => {
            let status = response.status();
            let function_error = response.headers().get("x-amz-function-error").is_some();
            let body = response.text().await.unwrap_or_default();
            if status.is_success() && !function_error && !body.contains("\"errorType\"") {
                tracing::info!(event = %name, key = %key, response = %body, "ingest invoked");
                (StatusCode::OK, body)
            } else {
                tracing::error!(event = %name, key = %key, status = status.as_u16(), response = %body, "ingest failed");
                (StatusCode::BAD_GATEWAY, body)
            }
        }
        Err(e) => {
            tracing::error!(event = %name, key = %key, error = %e, "cannot reach the ingest function");
            (StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().json().with_target(false).init();
    let config = shared::config::Env::process().bridge();
    let listen = config.listen;
    let bridge = Arc::new(Bridge {
        // Ingest may compile on its first call under `cargo lambda watch`; allow for it.
        client: reqwest::Client::builder().timeout(std::time::Duration::from_secs(900)).build()?,
        invoke_url: config.invoke_url,
        region: config.region,
    });
    let app = Router::new()
        .route("/webhook", post(webhook))
        .route("/health", get(|| async { "ok" }))
        .with_state(bridge.clone());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(listen = %listen, invoke = %bridge.invoke_url, "bridge ready");
    axum::serve(listener, app).await?;
    Ok(())
}
