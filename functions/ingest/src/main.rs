//! Ingest Lambda: S3 `ObjectCreated:*` / `ObjectRemoved:*` events → CLIP image vectors in Milvus.
//! Resources are built once at init; each event goes to [`shared::events::s3::ingest_within`],
//! which keeps its retries inside the invocation's time.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use shared::events::S3Event;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::wiring::init_tracing();
    let ingestor = shared::wiring::ingestor_from_env().await?;
    let ingestor = &ingestor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<S3Event>| async move {
        shared::events::s3::ingest_within(ingestor, &event.payload, &event.context).await
    }))
    .await
}
