//! Ingest Lambda: S3 `ObjectCreated:*` / `ObjectRemoved:*` / `LifecycleExpiration:*` events, sent
//! directly or through an SQS queue → CLIP image vectors in Milvus. Resources are built once at
//! init; each event goes to [`shared::events::handle`], which keeps its retries inside the
//! invocation's time.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::wiring::init_tracing();
    let ingestor = shared::wiring::ingestor_from_env().await?;
    let ingestor = &ingestor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        shared::events::handle(ingestor, event.payload, &event.context).await
    }))
    .await
}
