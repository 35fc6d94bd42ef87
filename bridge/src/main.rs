//! The local event bridge: `POST /webhook` from the SeaweedFS filer → S3 event → ingest Lambda.
//!
//! Settings: `BRIDGE_LISTEN`, `INGEST_INVOKE_URL`, `AWS_REGION`, `BRIDGE_ATTEMPTS`,
//! `BRIDGE_RETRY_DELAY_MS` and `BRIDGE_FAILED_DIR`, read by [`shared::config::Env::bridge`]
//! (defaults in the README's configuration table).
//!
//! As Lambda's asynchronous invocation does, the bridge takes the event at once (202), invokes
//! ingest concurrently with other events, up to `BRIDGE_CONCURRENCY` at once (so their order is
//! not guaranteed, as in AWS; the others wait their turn), retries
//! a failed invocation with backoff and, when every attempt failed, parks the event in the
//! failure folder. `POST /replay` delivers the parked events again (a DLQ redrive), and so does
//! a timer every `BRIDGE_REPLAY_INTERVAL_S`, so the local stack heals by itself once a fault ends.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bridge::delivery::{replay, FailureQueue, Redelivery};
use serde_json::Value;

struct Bridge {
    client: reqwest::Client,
    invoke_url: String,
    region: String,
    redelivery: Redelivery,
    failed: FailureQueue,
    /// One replay at a time: the timer's and `POST /replay` must not deliver the same file twice.
    replaying: tokio::sync::Mutex<()>,
    /// Invocations in flight: a burst of uploads queues here instead of flooding the function.
    in_flight: tokio::sync::Semaphore,
}

impl Bridge {
    /// One invocation of ingest; a function error counts as a failure, as it does for Lambda's retries.
    async fn invoke(&self, event: &Value) -> Result<(), String> {
        let _turn = self.in_flight.acquire().await.map_err(|e| e.to_string())?;
        let response = self.client.post(&self.invoke_url).json(event).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let function_error = response.headers().get("x-amz-function-error").is_some();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() && !function_error && !body.contains("\"errorType\"") {
            tracing::info!(key = %key_of(event), response = %body, "ingest invoked");
            Ok(())
        } else {
            Err(format!("HTTP {}: {body}", status.as_u16()))
        }
    }

    /// Delivers every parked event again.
    async fn replay(self: &Arc<Self>) -> std::io::Result<bridge::delivery::ReplayReport> {
        let _one_at_a_time = self.replaying.lock().await;
        let invoke = |event: Value| {
            let bridge = self.clone();
            async move { bridge.invoke(&event).await }
        };
        replay(&self.failed, &self.redelivery, invoke).await
    }

    /// Delivers with retries; parks the event when every attempt failed.
    async fn deliver(self: Arc<Self>, event: Value) {
        if let Err(error) = self.redelivery.deliver(|| self.invoke(&event)).await {
            match self.failed.park(&event, &error) {
                Ok(path) => {
                    tracing::error!(key = %key_of(&event), error = %error, parked = %path.display(), "ingest failed; event parked")
                }
                Err(e) => {
                    tracing::error!(key = %key_of(&event), error = %error, park_error = %e, "ingest failed and the event could not be parked")
                }
            }
        }
    }
}

fn key_of(event: &Value) -> &str {
    event["Records"][0]["s3"]["object"]["key"].as_str().unwrap_or_default()
}

async fn webhook(State(bridge): State<Arc<Bridge>>, Json(payload): Json<Value>) -> (StatusCode, &'static str) {
    let Some(change) = bridge::change_from_webhook(&payload) else {
        return (StatusCode::OK, "ignored");
    };
    let event = bridge::s3_event(&change, &bridge.region);
    tokio::spawn(bridge.clone().deliver(event));
    (StatusCode::ACCEPTED, "accepted")
}

/// Delivers the parked events again; answers with how many went through and how many still fail.
async fn replay_parked(State(bridge): State<Arc<Bridge>>) -> (StatusCode, Json<Value>) {
    match bridge.replay().await {
        Ok(report) => (StatusCode::OK, Json(serde_json::to_value(report).unwrap_or_default())),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": e.to_string()}))),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().json().with_target(false).init();
    let config = shared::config::Env::process().bridge()?;
    let listen = config.listen;
    let bridge = Arc::new(Bridge {
        // Ingest may compile on its first call under `cargo lambda watch`; allow for it.
        client: reqwest::Client::builder().timeout(std::time::Duration::from_secs(900)).build()?,
        invoke_url: config.invoke_url,
        region: config.region,
        redelivery: Redelivery { attempts: config.attempts, first_delay: config.retry_delay },
        failed: FailureQueue::new(config.failed_dir),
        replaying: tokio::sync::Mutex::new(()),
        in_flight: tokio::sync::Semaphore::new(config.concurrency),
    });
    if let Some(every) = config.replay_interval {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if bridge.failed.parked().map(|p| p.is_empty()).unwrap_or(true) {
                    continue;
                }
                match bridge.replay().await {
                    Ok(report) => tracing::info!(
                        delivered = report.delivered,
                        still_failing = report.still_failing,
                        "parked events replayed"
                    ),
                    Err(e) => tracing::error!(error = %e, "replaying the parked events failed"),
                }
            }
        });
    }
    let app = Router::new()
        .route("/webhook", post(webhook))
        .route("/replay", post(replay_parked))
        .route("/health", get(|| async { "ok" }))
        .with_state(bridge.clone());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(listen = %listen, invoke = %bridge.invoke_url, failed = %bridge.failed.dir().display(), "bridge ready");
    axum::serve(listener, app).await?;
    Ok(())
}
