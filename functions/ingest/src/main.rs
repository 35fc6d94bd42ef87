//! Ingest Lambda: S3 `ObjectCreated:*` / `ObjectRemoved:*` events → CLIP image vectors in Milvus.
//! Resources are built once at init; each event goes to [`shared::ingest::Ingestor`].

use lambda_runtime::{service_fn, Error, LambdaEvent};
use shared::ingest::S3Event;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::setup::init_tracing();
    let ingestor = shared::setup::ingestor_from_env().await?;
    let ingestor = &ingestor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<S3Event>| async move {
        Ok::<_, Error>(ingestor.handle_event(&event.payload).await?)
    }))
    .await
}
