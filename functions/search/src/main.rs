//! Search Lambda behind API Gateway: query text → nearest images with presigned URLs.
//! Resources are built once at init; requests go to the router of [`shared::http`].

use std::sync::Arc;

use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::wiring::init_tracing();
    let searcher = shared::wiring::searcher_from_env().await?;
    let cursors = shared::wiring::cursor_key_from_env().await?;
    lambda_http::run(shared::http::service(Arc::new(searcher), cursors)).await
}
