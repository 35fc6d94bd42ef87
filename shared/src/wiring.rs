//! Wiring: building the adapters once per Lambda container, from the environment. The binaries call
//! these at init so warm invocations pay nothing for clients, sessions or model loading.

use std::sync::Arc;

use crate::config::{Env, MilvusConfig};
use crate::domain::ingest::Ingestor;
use crate::domain::retry::RetryPolicy;
use crate::domain::scope::Access;
use crate::domain::search::Searcher;
use crate::embedder::{
    ClipImageEncoder, ClipTextEncoder, ModelBundle, ModelError, Tower, DEFAULT_JPEG_REDUCTION_MARGIN,
};
use crate::http::CursorKey;
use crate::index::{CollectionSpec, IndexError, MilvusIndex, SchemaRole};
use crate::store::{S3Store, StoreError, Transfer};
use crate::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("fetching the model from {uri}: {source}")]
    ModelDownload { uri: String, source: StoreError },
    #[error("reading the Milvus token from Secrets Manager ({arn}): {message}")]
    Secret { arn: String, message: String },
    #[error("Milvus: {0}")]
    Index(#[from] IndexError),
}

/// JSON logs (one object per line, as CloudWatch Logs Insights likes them); `RUST_LOG` sets the level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_target(false).without_time().try_init();
}

/// Readable logs on stderr for the command line, at `filter` (a `RUST_LOG` directive).
pub fn init_cli_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "warn".into());
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).try_init();
}

async fn open_bundle(
    env: &Env<impl Fn(&str) -> Option<String>>,
    store: &S3Store,
    tower: Tower,
) -> Result<(ModelBundle, crate::Config), SetupError> {
    let config = env.embedder()?;
    if let Some(uri) = &config.model_s3_uri {
        let (bucket, prefix) =
            uri.trim_start_matches("s3://").split_once('/').unwrap_or((uri.trim_start_matches("s3://"), ""));
        let transfer = Transfer::with_concurrency(config.model_download_concurrency);
        let started = std::time::Instant::now();
        let copied = store
            .download_prefix(bucket, prefix, &config.model_dir, |rel| tower.needs(rel), transfer)
            .await
            .map_err(|source| SetupError::ModelDownload { uri: uri.clone(), source })?;
        tracing::info!(uri = %uri, files = copied, dir = %config.model_dir.display(), ms = started.elapsed().as_millis() as u64,
            concurrency = transfer.concurrency, "model fetched from S3");
    }
    verify_pins(&config.model_dir, &config.model_pins, |rel| tower.needs(rel))?;
    Ok((ModelBundle::open(&config.model_dir)?, config))
}

/// Checks the SHA-256 of each pinned file this tower uses (`MODEL_SHA256`), before anything loads it.
fn verify_pins(
    dir: &std::path::Path,
    pins: &[(String, String)],
    needed: impl Fn(&str) -> bool,
) -> Result<(), SetupError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    for (file, want) in pins.iter().filter(|(file, _)| needed(file)) {
        let path = dir.join(file);
        let invalid = |problem: String| ModelError::Invalid { path: path.clone(), problem };
        let mut reader =
            std::fs::File::open(&path).map_err(|e| invalid(format!("pinned by MODEL_SHA256 but unreadable: {e}")))?;
        let mut hash = Sha256::new();
        let mut buffer = vec![0; 1 << 20];
        loop {
            let n = reader.read(&mut buffer).map_err(|e| invalid(format!("reading it failed: {e}")))?;
            if n == 0 {
                break;
            }
            hash.update(&buffer[..n]);
        }
        let got = hex::encode(hash.finalize());
        if got != *want {
            return Err(invalid(format!("its SHA-256 is {got}, not {want} as MODEL_SHA256 pins it")).into());
        }
    }
    Ok(())
}

/// The index for this bundle's model: its dimension and identity, and the owner template, go with
/// every collection check.
async fn milvus(
    env: &Env<impl Fn(&str) -> Option<String>>,
    bundle: &ModelBundle,
    model: &crate::Config,
    access: &Access,
    role: SchemaRole,
) -> Result<(MilvusIndex, MilvusConfig), SetupError> {
    let config = env.milvus()?;
    let token = match &config.token_secret_arn {
        Some(arn) => Some(secret_token(arn).await?),
        None => config.token.clone(),
    };
    let spec = CollectionSpec {
        dim: bundle.model_config()?.embed_dim,
        model: bundle.identity(model.model_name.as_deref())?,
        owner_template: access.owners.as_ref().map(|t| t.as_str().to_string()),
    };
    Ok((MilvusIndex::new(&config, token, spec, role).await?, config))
}

/// The secret is the token itself, or JSON with a `token` field (or `username` and `password`).
async fn secret_token(arn: &str) -> Result<String, SetupError> {
    let raw = secret_string(arn).await?;
    token_from_secret(&raw).ok_or_else(|| SetupError::Secret {
        arn: arn.into(),
        message: "expected the token, or JSON with `token` or `username` and `password`".into(),
    })
}

/// A Secrets Manager secret's string value.
async fn secret_string(arn: &str) -> Result<String, SetupError> {
    let shared = aws_config::load_from_env().await;
    let client = aws_sdk_secretsmanager::Client::new(&shared);
    let output = client.get_secret_value().secret_id(arn).send().await.map_err(|e| SetupError::Secret {
        arn: arn.into(),
        message: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
    })?;
    output
        .secret_string()
        .map(str::to_string)
        .ok_or_else(|| SetupError::Secret { arn: arn.into(), message: "the secret has no string value".into() })
}

/// The key that signs paging cursors: from the Secrets Manager secret, else `CURSOR_SIGNING_KEY`,
/// else random for this container (its cursors are then refused by the others, and after a cold start).
pub async fn cursor_key_from_env() -> Result<CursorKey, SetupError> {
    let config = Env::process().search()?;
    if let Some(arn) = &config.cursor_secret_arn {
        return Ok(CursorKey::from_secret(secret_string(arn).await?.trim()));
    }
    Ok(match &config.cursor_secret {
        Some(secret) => CursorKey::from_secret(secret),
        None => {
            tracing::info!("no CURSOR_SIGNING_KEY: cursors are signed with a key of this container only");
            CursorKey::random()
        }
    })
}

fn token_from_secret(raw: &str) -> Option<String> {
    let raw = raw.trim();
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(o)) => match (o.get("token"), o.get("username"), o.get("password")) {
            (Some(serde_json::Value::String(t)), _, _) => Some(t.clone()),
            (_, Some(serde_json::Value::String(u)), Some(serde_json::Value::String(p))) => Some(format!("{u}:{p}")),
            _ => None,
        },
        _ if !raw.is_empty() => Some(raw.to_string()),
        _ => None,
    }
}

/// The visual tower as the ingest function loads it (model from MODEL_DIR or MODEL_S3_URI).
pub async fn image_encoder_from_env() -> Result<ClipImageEncoder, SetupError> {
    let env = Env::process();
    let store = S3Store::from_env(&env.s3()?).await;
    let (bundle, config) = open_bundle(&env, &store, Tower::Visual).await?;
    load_image_encoder(bundle, config).await
}

async fn load_image_encoder(bundle: ModelBundle, config: crate::Config) -> Result<ClipImageEncoder, SetupError> {
    load_blocking(move || {
        let margin = config.reduced_jpeg_decode.then_some(DEFAULT_JPEG_REDUCTION_MARGIN);
        Ok(ClipImageEncoder::load(&bundle, &config.runtime, config.max_image_pixels)?
            .with_reduced_jpeg(margin)
            .with_decode_deadline(config.decode_deadline)
            .with_decode_budget(config.decode_budget_bytes))
    })
    .await
}

/// Both towers of the bundle in `dir`, with this process's runtime settings (`ORT_*`,
/// `MAX_IMAGE_PIXELS`, …) but not its `MODEL_DIR`: for comparing two bundles.
pub async fn encoders_from_dir(dir: &std::path::Path) -> Result<(ClipImageEncoder, ClipTextEncoder), SetupError> {
    let dir = dir.to_string_lossy().into_owned();
    let env = Env(move |name: &str| if name == "MODEL_DIR" { Some(dir.clone()) } else { std::env::var(name).ok() });
    let config = env.embedder()?;
    let bundle = ModelBundle::open(&config.model_dir)?;
    let image = load_image_encoder(bundle.clone(), config.clone()).await?;
    let (text, _) = load_text_encoder(bundle, config).await?;
    Ok((image, text))
}

/// The textual tower and the model's name, as the search function loads them.
pub async fn text_encoder_from_env() -> Result<(ClipTextEncoder, String), SetupError> {
    let env = Env::process();
    let store = S3Store::from_env(&env.s3()?).await;
    let (bundle, config) = open_bundle(&env, &store, Tower::Textual).await?;
    load_text_encoder(bundle, config).await
}

async fn load_text_encoder(
    bundle: ModelBundle,
    config: crate::Config,
) -> Result<(ClipTextEncoder, String), SetupError> {
    let model_name = config.model_name.clone().unwrap_or_else(|| bundle.name());
    Ok((load_blocking(move || ClipTextEncoder::load(&bundle, &config.runtime)).await?, model_name))
}

/// Everything the ingest function needs: visual tower, S3, Milvus. Milvus connects in the
/// background while the model loads (CPU, about a second): init never waits for the network,
/// and the first request usually finds the connection ready.
pub async fn ingestor_from_env() -> Result<Ingestor, SetupError> {
    let env = Env::process();
    let store = S3Store::from_env(&env.s3()?).await;
    let (bundle, config) = open_bundle(&env, &store, Tower::Visual).await?;
    let access = env.access()?;
    let (index, _) = milvus(&env, &bundle, &config, &access, SchemaRole::Owner).await?;
    let index = warm_up_in_background(index);
    let embedder = load_image_encoder(bundle, config).await?;
    let ingest = env.ingest()?;
    Ok(Ingestor {
        embedder: Arc::new(embedder),
        store: Arc::new(store),
        index,
        retry: RetryPolicy::new(ingest.retry_attempts),
        config: ingest,
        access,
    })
}

/// Everything the search function needs: textual tower, Milvus, S3 (for presigning); Milvus
/// connects while the model loads, as in [`ingestor_from_env`].
pub async fn searcher_from_env() -> Result<Searcher, SetupError> {
    let env = Env::process();
    let store = S3Store::from_env(&env.s3()?).await;
    let (bundle, config) = open_bundle(&env, &store, Tower::Textual).await?;
    let access = env.access()?;
    // Search only reads: it never creates or alters the collection, so its credential may be read-only.
    let (index, milvus) = milvus(&env, &bundle, &config, &access, SchemaRole::Reader).await?;
    let index = warm_up_in_background(index);
    let (embedder, model_name) = load_text_encoder(bundle, config).await?;
    Ok(Searcher {
        embedder: Arc::new(embedder),
        index,
        store: Arc::new(store),
        url_ttl: env.search()?.url_ttl,
        model_name,
        collection: milvus.collection,
        access,
    })
}

/// Starts connecting to Milvus without waiting for it; a request that comes first waits for
/// the same connection attempt, and a failed attempt is made again by the next call.
fn warm_up_in_background(index: MilvusIndex) -> Arc<MilvusIndex> {
    let index = Arc::new(index);
    let warming = Arc::clone(&index);
    tokio::spawn(async move { warming.warm_up().await });
    index
}

async fn load_blocking<T: Send + 'static>(
    load: impl FnOnce() -> Result<T, ModelError> + Send + 'static,
) -> Result<T, SetupError> {
    Ok(tokio::task::spawn_blocking(load).await.expect("model loading does not panic")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_model_files_must_match_their_sha256() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        // sha256("{}"), computed independently: printf '{}' | sha256sum
        let right = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".to_string();
        let all = |_: &str| true;
        assert!(verify_pins(dir.path(), &[("config.json".into(), right.clone())], all).is_ok());
        let wrong = "0".repeat(64);
        let err = verify_pins(dir.path(), &[("config.json".into(), wrong.clone())], all).unwrap_err().to_string();
        assert!(err.contains(&right) && err.contains(&wrong), "{err}");
        // A pin of the other tower's file is not checked; a missing pinned file of this one fails.
        assert!(verify_pins(dir.path(), &[("textual/model.onnx".into(), wrong.clone())], |f| f.starts_with("visual/"))
            .is_ok());
        assert!(verify_pins(dir.path(), &[("visual/model.onnx".into(), wrong)], all).is_err());
    }

    #[test]
    fn secrets_may_be_plain_or_json() {
        assert_eq!(token_from_secret("abc123").as_deref(), Some("abc123"));
        assert_eq!(token_from_secret(r#"{"token": "t"}"#).as_deref(), Some("t"));
        assert_eq!(token_from_secret(r#"{"username": "u", "password": "p"}"#).as_deref(), Some("u:p"));
        assert_eq!(token_from_secret(r#"{"other": 1}"#), None);
        assert_eq!(token_from_secret("  "), None);
    }
}
