//! Ingest Lambda: loads the CLIP visual tower once at init, then embeds the images it is sent.
//! (S3 events and the Milvus upsert arrive with the functions issue.)

use base64::Engine;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::{Deserialize, Serialize};
use shared::embedder::{ClipImageEncoder, ImageEmbedder, ModelBundle};
use shared::Config;

#[derive(Deserialize)]
struct EmbedImage {
    image_base64: String,
}

#[derive(Serialize)]
struct Embedded {
    dim: usize,
    width: u32,
    height: u32,
    embedding: Vec<f32>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let config = Config::from_env()?;
    let encoder =
        ClipImageEncoder::load(&ModelBundle::open(&config.model_dir)?, &config.runtime, config.max_image_pixels)?;
    let encoder = &encoder;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EmbedImage>| async move {
        let bytes = base64::engine::general_purpose::STANDARD.decode(event.payload.image_base64.trim())?;
        let embedded = encoder.embed_images(&[&bytes])?.remove(0)?;
        Ok::<_, Error>(Embedded {
            dim: encoder.dim(),
            width: embedded.width,
            height: embedded.height,
            embedding: embedded.vector,
        })
    }))
    .await
}
