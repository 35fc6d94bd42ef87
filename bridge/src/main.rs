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
//!
//! With `BRIDGE_TRIGGER=queue` (the local stack's default, as the template's `IngestTrigger=Queue`)
//! the bridge sends each event to an SQS queue instead (moto's server, `AWS_ENDPOINT_URL_SQS`) and
//! `BRIDGE_CONCURRENCY` pollers feed ingest from it in batches ([`bridge::queue`]); `POST /replay`
//! then also moves the failure queue's messages back (a DLQ redrive).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bridge::delivery::{replay, FailureQueue, Redelivery};
use bridge::queue::{Mapping, Queues};
use serde_json::{json, Value};

/// The local event source mapping, with `BRIDGE_TRIGGER=queue`.
struct Queue {
    client: aws_sdk_sqs::Client,
    queues: Queues,
    mapping: Mapping,
}

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
    queue: Option<Queue>,
}

impl Bridge {
    /// One invocation of ingest: its answer, or why it failed (a function error counts as a
    /// failure, as it does for Lambda's retries).
    async fn invoke_for(&self, event: &Value) -> Result<String, String> {
        let _turn = self.in_flight.acquire().await.map_err(|e| e.to_string())?;
        let response = self.client.post(&self.invoke_url).json(event).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let function_error = response.headers().get("x-amz-function-error").is_some();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() && !function_error && !body.contains("\"errorType\"") {
            Ok(body)
        } else {
            Err(format!("HTTP {}: {body}", status.as_u16()))
        }
    }

    async fn invoke(&self, event: &Value) -> Result<(), String> {
        let body = self.invoke_for(event).await?;
        tracing::info!(key = %key_of(event), response = %body, "ingest invoked");
        Ok(())
    }

    /// Sends an event to the queue (with retries), or parks it when SQS does not take it.
    async fn enqueue(self: Arc<Self>, event: Value) {
        let Some(queue) = &self.queue else { return };
        let sent = self.redelivery.deliver(|| bridge::queue::send(&queue.client, &queue.queues, &event)).await;
        if let Err(error) = sent {
            self.park(&event, &error);
        }
    }

    /// One poller of the local event source mapping: batch, invoke, delete what succeeded.
    async fn poll(self: Arc<Self>) {
        let Some(queue) = &self.queue else { return };
        loop {
            let invoke = |event: Value| {
                let bridge = self.clone();
                async move { bridge.invoke_for(&event).await }
            };
            match bridge::queue::poll_once(&queue.client, &queue.queues, &queue.mapping, &self.region, invoke).await {
                Ok(Some(polled)) => tracing::info!(?polled, "batch delivered"),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "polling the ingest queue failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn park(&self, event: &Value, error: &str) {
        match self.failed.park(event, error) {
            Ok(path) => {
                tracing::error!(key = %key_of(event), error = %error, parked = %path.display(), "event not delivered; parked")
            }
            Err(e) => {
                tracing::error!(key = %key_of(event), error = %error, park_error = %e, "event not delivered and could not be parked")
            }
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
            self.park(&event, &error);
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
    match bridge.queue {
        Some(_) => tokio::spawn(bridge.clone().enqueue(event)),
        None => tokio::spawn(bridge.clone().deliver(event)),
    };
    (StatusCode::ACCEPTED, "accepted")
}

/// Delivers the parked events again, and with a queue moves the failure queue's messages back;
/// answers with how many went through and how many still fail.
async fn replay_parked(State(bridge): State<Arc<Bridge>>) -> (StatusCode, Json<Value>) {
    let mut answer = match bridge.replay().await {
        Ok(report) => serde_json::to_value(report).unwrap_or_default(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))),
    };
    if let Some(queue) = &bridge.queue {
        match bridge::queue::redrive(&queue.client, &queue.queues).await {
            Ok(moved) => answer["redriven"] = json!(moved),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e}))),
        }
    }
    (StatusCode::OK, Json(answer))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().json().with_target(false).init();
    let config = shared::config::Env::process().bridge()?;
    let listen = config.listen;
    let queue = match &config.queue {
        None => None,
        Some(settings) => {
            let client = aws_sdk_sqs::Client::new(&aws_config::load_from_env().await);
            let mapping = Mapping {
                batch_size: settings.batch_size,
                window: settings.window,
                visibility_timeout: settings.visibility_timeout,
                max_receive_count: settings.max_receive_count,
            };
            let queues = bridge::queue::ensure_queues(&client, &settings.name, &mapping).await?;
            tracing::info!(queue = %queues.url, failed = %queues.failed_url, ?mapping, "feeding ingest from the queue");
            Some(Queue { client, queues, mapping })
        }
    };
    let pollers = config.concurrency;
    let bridge = Arc::new(Bridge {
        // Ingest may compile on its first call under `cargo lambda watch`; allow for it.
        client: reqwest::Client::builder().timeout(std::time::Duration::from_secs(900)).build()?,
        invoke_url: config.invoke_url,
        region: config.region,
        redelivery: Redelivery { attempts: config.attempts, first_delay: config.retry_delay },
        failed: FailureQueue::new(config.failed_dir),
        replaying: tokio::sync::Mutex::new(()),
        in_flight: tokio::sync::Semaphore::new(config.concurrency),
        queue,
    });
    if bridge.queue.is_some() {
        for _ in 0..pollers {
            tokio::spawn(bridge.clone().poll());
        }
    }
    if let Some(every) = config.replay_interval {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // With a queue, the failure queue is redriven too, so the stack heals by itself once a
                // fault ends (in AWS, a DLQ waits for a redrive someone starts).
                if let Some(queue) = &bridge.queue {
                    match bridge::queue::redrive(&queue.client, &queue.queues).await {
                        Ok(0) => {}
                        Ok(moved) => tracing::info!(moved, "failure queue redriven"),
                        Err(e) => tracing::error!(error = %e, "redriving the failure queue failed"),
                    }
                }
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
