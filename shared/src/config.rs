//! Configuration read once from the environment, with defaults that work out of the box.
//! Every variable is documented in the README's configuration table.

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::scope::{Access, KeyScope, OwnerTemplate};
use crate::embedder::onnx::RuntimeOptions;

/// Default cap on decoded pixels: 100 megapixels, far above any camera, far below a bomb.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 100_000_000;
/// Default `IMAGE_DECODE_TIMEOUT_MS`: a 100 MP progressive JPEG decodes in about 3 s on one Lambda vCPU.
pub const DEFAULT_DECODE_DEADLINE: Duration = Duration::from_secs(20);
/// Default `DECODE_MEMORY_BUDGET_MB`: what decoding may hold at once, over all images and
/// threads of the process. It must hold one image of the pixel cap (1.1 GB at 100 MP).
pub const DEFAULT_DECODE_BUDGET_MB: u64 = 1536;
/// Default cap on an object's size: 50 MiB.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 50 * 1024 * 1024;
/// Presigned URLs live 15 minutes unless configured; S3 caps SigV4 presigning at 7 days.
pub const DEFAULT_URL_TTL: Duration = Duration::from_secs(900);
pub const MAX_URL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_COLLECTION: &str = "clip_images";
/// Default `MODEL_DOWNLOAD_CONCURRENCY`: ranged GETs of the model in flight at init.
pub const DEFAULT_MODEL_DOWNLOAD_CONCURRENCY: u64 = 8;

/// Settings of the embedder.
#[derive(Debug, Clone)]
pub struct Config {
    /// Model bundle in immich's layout (`config.json`, `visual/`, `textual/`).
    pub model_dir: PathBuf,
    /// Where a model bundle too large for the deployment package is fetched from at init (`s3://bucket/prefix`).
    pub model_s3_uri: Option<String>,
    /// The model's name as recorded in the collection: `MODEL_NAME`, else the last part of
    /// `MODEL_S3_URI`, else the bundle folder's name (`ViT-B-32__openai` in all three for immich's bundles).
    pub model_name: Option<String>,
    /// Ranged GETs in flight when the model is fetched from `MODEL_S3_URI` (`MODEL_DOWNLOAD_CONCURRENCY`;
    /// 1 fetches one whole file after another).
    pub model_download_concurrency: usize,
    /// SHA-256 pins of model files (`MODEL_SHA256`: `visual/model.onnx=HEX,…`), checked before loading.
    pub model_pins: Vec<(String, String)>,
    /// ONNX Runtime library and session settings.
    pub runtime: RuntimeOptions,
    /// Images whose header declares more pixels than this are refused before decoding.
    pub max_image_pixels: u64,
    /// Wall time allowed for decoding one image.
    pub decode_deadline: Duration,
    /// Bytes that decoding may hold at once in this process (see [`crate::embedder::decode::peak_bytes`]).
    pub decode_budget_bytes: u64,
    /// Decode large JPEGs at reduced scale (DCT scaling); `false` reproduces the reference exactly.
    pub reduced_jpeg_decode: bool,
}

/// Where the vectors live.
#[derive(Debug, Clone)]
pub struct MilvusConfig {
    pub uri: String,
    /// `user:password` or an API key; `None` for an open server.
    pub token: Option<String>,
    /// A Secrets Manager secret holding the token (plain string or JSON `{"token": ...}`).
    pub token_secret_arn: Option<String>,
    pub collection: String,
    /// Time allowed for one Milvus call before it counts as a transient failure.
    pub timeout: Duration,
    /// Whether the adapter asks Milvus to flush what it wrote (see [`FlushMode`]).
    pub flush: FlushMode,
    /// With flushing on: flush after this long without a write from this process (`None`: only
    /// when a bulk run ends).
    pub idle_flush: Option<Duration>,
}

/// Whether the Milvus adapter flushes: Milvus Lite searches the rows it has not flushed by brute
/// force, while Milvus 2.6+ and Zilliz Cloud flush by themselves (docs/milvus.md#flushing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Flush when the server is Milvus Lite, never otherwise (the default).
    Auto,
    On,
    Off,
}

/// Default `MILVUS_IDLE_FLUSH_SECONDS`: longer than the gaps between the batches of a burst
/// (the queue's batching window is 1 s), so a burst is flushed once, when it ends.
pub const DEFAULT_IDLE_FLUSH: Duration = Duration::from_secs(5);

/// Settings of the ingest function.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Objects larger than this are skipped (logged), never downloaded.
    pub max_object_bytes: u64,
    /// Attempts for a transient S3 or Milvus failure before the event fails.
    pub retry_attempts: u32,
}

/// Settings of the search function.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub url_ttl: Duration,
    /// The secret that signs paging cursors (`CURSOR_SIGNING_KEY`).
    pub cursor_secret: Option<String>,
    /// A Secrets Manager secret holding it (`CURSOR_SIGNING_KEY_SECRET_ARN`), preferred.
    pub cursor_secret_arn: Option<String>,
}

/// S3 client settings beyond the standard AWS environment (region, credentials, `AWS_ENDPOINT_URL_S3`).
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Path-style URLs (`http://host/bucket/key`), needed by S3-compatible servers on an IP address.
    pub force_path_style: bool,
}

/// Settings of the local event bridge (SeaweedFS webhook → S3 event → ingest), local stack only.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub listen: String,
    pub invoke_url: String,
    pub region: String,
    /// Deliveries of one event before it goes to the failure folder (Lambda's asynchronous
    /// invocation makes 3: the first and 2 retries).
    pub attempts: u32,
    /// Wait before the first redelivery; it doubles for each further one.
    pub retry_delay: Duration,
    /// The local failure queue: events that failed every delivery, one JSON file each.
    pub failed_dir: PathBuf,
    /// How often the parked events are replayed by themselves (`None`: only on `POST /replay`).
    pub replay_interval: Option<Duration>,
    /// Invocations in flight at once; further events wait their turn in the bridge, as they do
    /// in Lambda's asynchronous queue when a function is at its concurrency limit.
    pub concurrency: usize,
    /// `BRIDGE_TRIGGER=queue`: events go through an SQS queue, read as an event source mapping
    /// reads it (the template's `IngestTrigger=Queue`); `None` invokes ingest directly.
    pub queue: Option<BridgeQueueConfig>,
}

/// The local event source mapping: the queue and how it is read.
#[derive(Debug, Clone)]
pub struct BridgeQueueConfig {
    /// `INGEST_QUEUE_NAME`; its failure queue is `NAME-failed`.
    pub name: String,
    pub batch_size: usize,
    pub window: Duration,
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
}

/// Whether an http(s) URI names this machine (`localhost`, `127.x.x.x`, `[::1]`), where plain
/// http never leaves the host.
fn is_loopback(uri: &str) -> bool {
    let authority = uri.split_once("://").map_or(uri, |(_, rest)| rest).split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("{name}={value:?} is not valid: {expected}")]
    Invalid { name: &'static str, value: String, expected: &'static str },
    #[error("{0}")]
    Conflict(String),
}

/// Reads variables through a lookup function so tests need no process environment.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl Env<fn(&str) -> Option<String>> {
    pub fn process() -> Self {
        Env(|name| std::env::var(name).ok())
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn number(&self, name: &'static str, default: u64, expected: &'static str) -> Result<u64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(ConfigError::Invalid { name, value: v, expected }),
            },
        }
    }

    pub fn embedder(&self) -> Result<Config, ConfigError> {
        let model_dir = self.get("MODEL_DIR").ok_or(ConfigError::Missing {
            name: "MODEL_DIR",
            hint: "point it at a model bundle in immich's layout, e.g. tests/fixtures/tiny-clip",
        })?;
        let intra_threads = match self.get("ORT_INTRA_THREADS") {
            None => None,
            Some(_) => Some(self.number("ORT_INTRA_THREADS", 1, "a whole number of threads, at least 1")? as usize),
        };
        let model_s3_uri = self.get("MODEL_S3_URI");
        if let Some(uri) = &model_s3_uri {
            if !uri.starts_with("s3://") || uri.len() <= 5 {
                return Err(ConfigError::Invalid {
                    name: "MODEL_S3_URI",
                    value: uri.clone(),
                    expected: "s3://bucket/prefix of a model bundle",
                });
            }
        }
        let max_image_pixels =
            self.number("MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, "a whole number of pixels, at least 1")?;
        let decode_budget_bytes = self
            .number("DECODE_MEMORY_BUDGET_MB", DEFAULT_DECODE_BUDGET_MB, "a whole number of MiB, at least 1")?
            .saturating_mul(1 << 20);
        let one_image = crate::embedder::decode::peak_bytes(max_image_pixels, 0);
        if decode_budget_bytes < one_image {
            return Err(ConfigError::Conflict(format!(
                "DECODE_MEMORY_BUDGET_MB={} cannot hold one image of MAX_IMAGE_PIXELS={max_image_pixels} \
                 (up to {} MiB to decode): raise the budget or lower the pixel cap",
                decode_budget_bytes >> 20,
                one_image.div_ceil(1 << 20)
            )));
        }
        let model_name = self.get("MODEL_NAME").or_else(|| {
            let path = model_s3_uri.as_deref()?.trim_start_matches("s3://").trim_end_matches('/');
            path.split_once('/').and_then(|(_, prefix)| prefix.rsplit('/').next()).map(str::to_string)
        });
        let mut model_pins = Vec::new();
        for pin in self.get("MODEL_SHA256").unwrap_or_default().split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match pin.split_once('=') {
                Some((file, hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    model_pins.push((file.trim().to_string(), hex.to_ascii_lowercase()))
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "MODEL_SHA256",
                        value: pin.to_string(),
                        expected: "comma-separated FILE=SHA256 pairs, e.g. visual/model.onnx=<64 hex digits>",
                    })
                }
            }
        }
        let model_download_concurrency = self.number(
            "MODEL_DOWNLOAD_CONCURRENCY",
            DEFAULT_MODEL_DOWNLOAD_CONCURRENCY,
            "a whole number of requests, at least 1",
        )? as usize;
        Ok(Config {
            model_dir: PathBuf::from(model_dir),
            model_s3_uri,
            model_download_concurrency,
            model_name,
            model_pins,
            runtime: RuntimeOptions { dylib_path: self.get("ORT_DYLIB_PATH").map(PathBuf::from), intra_threads },
            max_image_pixels,
            reduced_jpeg_decode: self.flag("JPEG_REDUCED_DECODE", true)?,
            decode_deadline: Duration::from_millis(self.number(
                "IMAGE_DECODE_TIMEOUT_MS",
                DEFAULT_DECODE_DEADLINE.as_millis() as u64,
                "a whole number of milliseconds, at least 1",
            )?),
            decode_budget_bytes,
        })
    }

    pub fn milvus(&self) -> Result<MilvusConfig, ConfigError> {
        let uri = self.get("MILVUS_URI").ok_or(ConfigError::Missing {
            name: "MILVUS_URI",
            hint: "the Milvus endpoint, e.g. http://127.0.0.1:19530 or a Zilliz Cloud https URI",
        })?;
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                name: "MILVUS_URI",
                value: uri,
                expected: "an http:// or https:// URI",
            });
        }
        if uri.starts_with("http://") && !is_loopback(&uri) && !self.flag("MILVUS_ALLOW_INSECURE", false)? {
            return Err(ConfigError::Conflict(format!(
                "MILVUS_URI={uri} sends the Milvus token unencrypted over the network: use https:// (Zilliz Cloud \
                 and TLS-enabled Milvus), or set MILVUS_ALLOW_INSECURE=true for a private network you trust"
            )));
        }
        let collection = self.get("MILVUS_COLLECTION").unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
        let valid_name = collection.len() <= 255
            && collection.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && collection.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(ConfigError::Invalid {
                name: "MILVUS_COLLECTION",
                value: collection,
                expected: "letters, digits and underscores, starting with a letter or underscore",
            });
        }
        Ok(MilvusConfig {
            uri,
            token: self.get("MILVUS_TOKEN"),
            token_secret_arn: self.get("MILVUS_TOKEN_SECRET_ARN"),
            collection,
            timeout: Duration::from_secs(self.number("MILVUS_TIMEOUT_SECONDS", 10, "a whole number of seconds")?),
            flush: match self.get("MILVUS_FLUSH").as_deref() {
                None | Some("auto") => FlushMode::Auto,
                Some("on") => FlushMode::On,
                Some("off") => FlushMode::Off,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "MILVUS_FLUSH",
                        value: other.to_string(),
                        expected: "auto, on or off",
                    })
                }
            },
            idle_flush: match self.get("MILVUS_IDLE_FLUSH_SECONDS") {
                None => Some(DEFAULT_IDLE_FLUSH),
                Some(v) => match v.parse::<u64>() {
                    Ok(0) => None,
                    Ok(seconds) => Some(Duration::from_secs(seconds)),
                    Err(_) => {
                        return Err(ConfigError::Invalid {
                            name: "MILVUS_IDLE_FLUSH_SECONDS",
                            value: v,
                            expected: "a whole number of seconds (0: no idle flush)",
                        })
                    }
                },
            },
        })
    }

    pub fn ingest(&self) -> Result<IngestConfig, ConfigError> {
        Ok(IngestConfig {
            max_object_bytes: self.number("MAX_OBJECT_BYTES", DEFAULT_MAX_OBJECT_BYTES, "a whole number of bytes")?,
            retry_attempts: self.number("RETRY_ATTEMPTS", 4, "a whole number of attempts, at least 1")? as u32,
        })
    }

    pub fn search(&self) -> Result<SearchConfig, ConfigError> {
        let ttl = self.number("URL_TTL_SECONDS", DEFAULT_URL_TTL.as_secs(), "a whole number of seconds")?;
        let cursor_secret = self.get("CURSOR_SIGNING_KEY");
        if let Some(secret) = &cursor_secret {
            if secret.len() < 32 {
                return Err(ConfigError::Invalid {
                    name: "CURSOR_SIGNING_KEY",
                    value: "(hidden)".into(),
                    expected: "a secret of at least 32 characters, e.g. `openssl rand -hex 32`",
                });
            }
        }
        Ok(SearchConfig {
            url_ttl: Duration::from_secs(ttl).min(MAX_URL_TTL),
            cursor_secret,
            cursor_secret_arn: self.get("CURSOR_SIGNING_KEY_SECRET_ARN"),
        })
    }

    pub fn bridge(&self) -> Result<BridgeConfig, ConfigError> {
        Ok(BridgeConfig {
            listen: self.get("BRIDGE_LISTEN").unwrap_or_else(|| "127.0.0.1:9100".into()),
            invoke_url: self
                .get("INGEST_INVOKE_URL")
                .unwrap_or_else(|| "http://127.0.0.1:9000/2015-03-31/functions/ingest/invocations".into()),
            region: self.get("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            attempts: self.number("BRIDGE_ATTEMPTS", 3, "a whole number of deliveries, at least 1")?.min(100) as u32,
            retry_delay: Duration::from_millis(self.number(
                "BRIDGE_RETRY_DELAY_MS",
                1_000,
                "a whole number of milliseconds, at least 1",
            )?),
            failed_dir: PathBuf::from(self.get("BRIDGE_FAILED_DIR").unwrap_or_else(|| ".local/failed-events".into())),
            concurrency: self.number("BRIDGE_CONCURRENCY", 4, "a whole number of invocations, at least 1")?.min(256)
                as usize,
            queue: match self.get("BRIDGE_TRIGGER").as_deref() {
                None | Some("direct") => None,
                Some("queue") => Some(BridgeQueueConfig {
                    name: self.get("INGEST_QUEUE_NAME").unwrap_or_else(|| "ingest".into()),
                    batch_size: self
                        .number("BRIDGE_BATCH_SIZE", 10, "a whole number of messages, 1 to 10000")?
                        .min(10_000) as usize,
                    window: Duration::from_millis(self.number(
                        "BRIDGE_BATCH_WINDOW_MS",
                        1_000,
                        "a whole number of milliseconds, at least 1",
                    )?),
                    visibility_timeout: Duration::from_secs(self.number(
                        "BRIDGE_VISIBILITY_TIMEOUT_S",
                        30,
                        "a whole number of seconds, at least 1",
                    )?),
                    max_receive_count: self
                        .number("BRIDGE_MAX_RECEIVE_COUNT", 3, "a whole number of deliveries")?
                        .min(1000) as u32,
                }),
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "BRIDGE_TRIGGER",
                        value: other.to_string(),
                        expected: "direct (invoke ingest per event) or queue (through SQS, as IngestTrigger=Queue)",
                    })
                }
            },
            replay_interval: match self.get("BRIDGE_REPLAY_INTERVAL_S").as_deref() {
                Some("0") => None,
                _ => Some(Duration::from_secs(self.number(
                    "BRIDGE_REPLAY_INTERVAL_S",
                    30,
                    "a whole number of seconds (0 turns automatic replays off)",
                )?)),
            },
        })
    }

    pub fn access(&self) -> Result<Access, ConfigError> {
        let owners = match self.get("OWNER_KEY_TEMPLATE") {
            None => None,
            Some(text) => Some(OwnerTemplate::parse(&text).map_err(|e| ConfigError::Conflict(e.to_string()))?),
        };
        let scope = KeyScope {
            prefix: self.get("KEY_PREFIX").unwrap_or_default(),
            suffix: self.get("KEY_SUFFIX").unwrap_or_default(),
        };
        Ok(Access { owners, keys: scope, bucket: self.get("UPLOADS_BUCKET") })
    }

    pub fn s3(&self) -> Result<S3Config, ConfigError> {
        Ok(S3Config { force_path_style: self.flag("S3_FORCE_PATH_STYLE", false)? })
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref() {
            None => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => Err(ConfigError::Invalid { name, value: other.to_string(), expected: "true or false" }),
        }
    }
}

impl Config {
    /// Reads `MODEL_DIR` (required), `MODEL_S3_URI`, `ORT_DYLIB_PATH`, `ORT_INTRA_THREADS` and `MAX_IMAGE_PIXELS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Env::process().embedder()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env(move |name: &str| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_required_values_are_given() {
        let e = env(&[("MODEL_DIR", "/models/clip"), ("MILVUS_URI", "http://127.0.0.1:19530")]);
        let c = e.embedder().unwrap();
        assert_eq!(c.model_dir, PathBuf::from("/models/clip"));
        assert_eq!(c.max_image_pixels, DEFAULT_MAX_IMAGE_PIXELS);
        assert_eq!(c.runtime.intra_threads, None);
        assert_eq!(c.model_download_concurrency, DEFAULT_MODEL_DOWNLOAD_CONCURRENCY as usize);
        let m = e.milvus().unwrap();
        assert_eq!(m.collection, DEFAULT_COLLECTION);
        assert_eq!(m.token, None);
        assert_eq!((m.flush, m.idle_flush), (FlushMode::Auto, Some(DEFAULT_IDLE_FLUSH)));
        assert_eq!(e.search().unwrap().url_ttl, DEFAULT_URL_TTL);
        assert_eq!(e.ingest().unwrap().max_object_bytes, DEFAULT_MAX_OBJECT_BYTES);
        assert!(!e.s3().unwrap().force_path_style);
        assert_eq!(c.model_name, None, "the bundle folder names the model");
        assert_eq!(e.search().unwrap().cursor_secret, None, "a random key per container");
    }

    #[test]
    fn plain_http_to_milvus_is_only_for_this_machine_unless_allowed() {
        let milvus = |vars: &[(&str, &str)]| env(vars).milvus().map(|m| m.uri).map_err(|e| e.to_string());
        for local in ["http://127.0.0.1:19530", "http://localhost:19530", "http://[::1]:19530", "http://127.8.0.1"] {
            assert!(milvus(&[("MILVUS_URI", local)]).is_ok(), "{local}");
        }
        for remote in ["http://10.0.0.5:19530", "http://milvus.internal:19530", "http://127.0.0.1.evil.com:19530"] {
            let err = milvus(&[("MILVUS_URI", remote)]).unwrap_err();
            assert!(err.contains("https://") && err.contains("MILVUS_ALLOW_INSECURE"), "{remote}: {err}");
            assert!(milvus(&[("MILVUS_URI", remote), ("MILVUS_ALLOW_INSECURE", "true")]).is_ok(), "{remote}");
        }
        assert!(milvus(&[("MILVUS_URI", "https://in01-x.zillizcloud.com:19530")]).is_ok());
    }

    #[test]
    fn a_short_cursor_key_is_refused_without_showing_it() {
        let err = env(&[("CURSOR_SIGNING_KEY", "short-secret")]).search().unwrap_err().to_string();
        assert!(err.contains("at least 32 characters") && !err.contains("short-secret"), "{err}");
        let long = "x".repeat(32);
        assert_eq!(env(&[("CURSOR_SIGNING_KEY", &long)]).search().unwrap().cursor_secret, Some(long));
    }

    #[test]
    fn model_pins_are_file_and_sha256_pairs() {
        let hex = "AB".repeat(32);
        let pins = env(&[("MODEL_DIR", "m"), ("MODEL_SHA256", &format!("visual/model.onnx={hex}, config.json={hex}"))])
            .embedder()
            .unwrap()
            .model_pins;
        assert_eq!(pins, vec![("visual/model.onnx".into(), "ab".repeat(32)), ("config.json".into(), "ab".repeat(32))]);
        for bad in ["visual/model.onnx", "x=abc", &format!("x={}", "g".repeat(64))] {
            assert!(env(&[("MODEL_DIR", "m"), ("MODEL_SHA256", bad)]).embedder().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_model_name_comes_from_model_name_or_the_s3_prefix() {
        let name = |vars: &[(&str, &str)]| env(vars).embedder().unwrap().model_name;
        let uri = ("MODEL_S3_URI", "s3://models/clip/ViT-B-32__openai/");
        assert_eq!(name(&[("MODEL_DIR", "/tmp/model"), uri]).as_deref(), Some("ViT-B-32__openai"));
        assert_eq!(name(&[("MODEL_DIR", "/tmp/model"), uri, ("MODEL_NAME", "mine")]).as_deref(), Some("mine"));
        assert_eq!(name(&[("MODEL_DIR", "/tmp/model"), ("MODEL_S3_URI", "s3://bucket")]), None);
    }

    #[test]
    fn missing_values_say_what_to_set() {
        let err = env(&[]).embedder().unwrap_err().to_string();
        assert!(err.contains("MODEL_DIR is not set"), "{err}");
        let err = env(&[]).milvus().unwrap_err().to_string();
        assert!(err.contains("MILVUS_URI is not set"), "{err}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = env(&[("MODEL_DIR", "m"), ("ORT_INTRA_THREADS", "zero")]).embedder().unwrap_err().to_string();
        assert!(err.contains("ORT_INTRA_THREADS=\"zero\""), "{err}");
        let err = env(&[("MODEL_DIR", "m"), ("MAX_IMAGE_PIXELS", "0")]).embedder().unwrap_err().to_string();
        assert!(err.contains("MAX_IMAGE_PIXELS"), "{err}");
        let err = env(&[("MODEL_DIR", "m"), ("MODEL_DOWNLOAD_CONCURRENCY", "0")]).embedder().unwrap_err().to_string();
        assert!(err.contains("MODEL_DOWNLOAD_CONCURRENCY"), "{err}");
        let err = env(&[("MILVUS_URI", "localhost:19530")]).milvus().unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let err =
            env(&[("MILVUS_URI", "http://localhost"), ("MILVUS_COLLECTION", "a-b")]).milvus().unwrap_err().to_string();
        assert!(err.contains("MILVUS_COLLECTION"), "{err}");
        let milvus = |name, value| env(&[("MILVUS_URI", "http://localhost"), (name, value)]).milvus();
        let err = milvus("MILVUS_FLUSH", "always").unwrap_err().to_string();
        assert!(err.contains("MILVUS_FLUSH") && err.contains("auto, on or off"), "{err}");
        assert!(milvus("MILVUS_IDLE_FLUSH_SECONDS", "-1")
            .unwrap_err()
            .to_string()
            .contains("MILVUS_IDLE_FLUSH_SECONDS"));
        let off = milvus("MILVUS_IDLE_FLUSH_SECONDS", "0").unwrap();
        assert_eq!((off.flush, off.idle_flush), (FlushMode::Auto, None));
        assert_eq!(milvus("MILVUS_FLUSH", "on").unwrap().flush, FlushMode::On);
        assert!(env(&[("S3_FORCE_PATH_STYLE", "yes")]).s3().is_err());
        let err = env(&[("OWNER_KEY_TEMPLATE", "users/")]).access().unwrap_err().to_string();
        assert!(err.contains("OWNER_KEY_TEMPLATE") && err.contains("users/{sub}/"), "{err}");
    }

    /// Every variable read through `Env` has a row in the README's configuration table.
    #[test]
    fn every_variable_the_code_reads_is_in_the_readme() {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let recording = Env(|name: &str| {
            read.borrow_mut().insert(name.to_string());
            match name {
                "MODEL_DIR" => Some("m".to_string()),
                "MILVUS_URI" => Some("http://127.0.0.1:19530".to_string()),
                _ => None,
            }
        });
        recording.embedder().unwrap();
        recording.milvus().unwrap();
        recording.ingest().unwrap();
        recording.search().unwrap();
        recording.s3().unwrap();
        recording.bridge().unwrap();
        let readme = include_str!("../../README.md");
        let table: Vec<&str> = readme
            .split("## Configuration")
            .nth(1)
            .expect("the README has a Configuration section")
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .collect();
        let missing: Vec<String> = read
            .into_inner()
            .into_iter()
            .filter(|name| !table.iter().any(|row| row.contains(&format!("`{name}`"))))
            .collect();
        assert!(missing.is_empty(), "variables the code reads but the README's configuration table lacks: {missing:?}");
    }

    #[test]
    fn url_ttl_is_capped_at_seven_days() {
        assert_eq!(env(&[("URL_TTL_SECONDS", "99999999")]).search().unwrap().url_ttl, MAX_URL_TTL);
        assert!(env(&[("URL_TTL_SECONDS", "-5")]).search().is_err());
    }
}
