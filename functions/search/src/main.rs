//! Search Lambda behind API Gateway: query text → nearest images with presigned URLs.
//! Resources are built once at init; each request goes to [`shared::api::handle`].

use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::setup::init_tracing();
    let searcher = shared::setup::searcher_from_env().await?;
    let searcher = &searcher;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(shared::api::handle(searcher, request).await)
    }))
    .await
}
