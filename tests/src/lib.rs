//! Fixtures, golden files and the local stack's settings, shared by the integration tests in `tests/tests/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use shared::config::{IngestConfig, MilvusConfig, S3Config};
use shared::embedder::onnx::RuntimeOptions;
use shared::embedder::{ClipImageEncoder, ClipTextEncoder, ModelBundle};
use shared::index::MilvusIndex;
use shared::ingest::Ingestor;
use shared::retry::RetryPolicy;
use shared::search::Searcher;
use shared::store::S3Store;

/// `tests/fixtures/` of this repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The committed tiny CLIP model (random weights, real architecture and vocabulary).
pub fn tiny_model() -> ModelBundle {
    ModelBundle::open(fixtures().join("tiny-clip")).expect("tiny model bundle")
}

/// Runtime options from the environment (ORT_DYLIB_PATH, ORT_INTRA_THREADS), defaults otherwise.
pub fn runtime() -> RuntimeOptions {
    let threads = std::env::var("ORT_INTRA_THREADS").ok().and_then(|v| v.parse().ok());
    RuntimeOptions { dylib_path: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from), intra_threads: threads }
}

pub fn image_encoder() -> ClipImageEncoder {
    ClipImageEncoder::load(&tiny_model(), &runtime(), shared::config::DEFAULT_MAX_IMAGE_PIXELS)
        .expect("visual tower loads")
}

pub fn text_encoder() -> ClipTextEncoder {
    ClipTextEncoder::load(&tiny_model(), &runtime()).expect("textual tower loads")
}

#[derive(Debug, Deserialize)]
pub struct GoldenImage {
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub tensor: String,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub struct GoldenText {
    pub text: String,
    pub ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ImagesFile {
    images: Vec<GoldenImage>,
}

#[derive(Deserialize)]
struct TextsFile {
    texts: Vec<GoldenText>,
}

fn golden_dir() -> PathBuf {
    fixtures().join("golden")
}

/// Per fixture image: decoded size, reference tensor file and embedding (tests/reference/golden.py).
pub fn golden_images() -> Vec<GoldenImage> {
    let text = std::fs::read_to_string(golden_dir().join("images.json")).expect("golden/images.json");
    serde_json::from_str::<ImagesFile>(&text).expect("golden images parse").images
}

/// Per query: token ids and embedding from the reference.
pub fn golden_texts() -> Vec<GoldenText> {
    let text = std::fs::read_to_string(golden_dir().join("texts.json")).expect("golden/texts.json");
    serde_json::from_str::<TextsFile>(&text).expect("golden texts parse").texts
}

/// The reference's preprocessed tensor (little-endian f32, CHW).
pub fn golden_tensor(golden: &GoldenImage) -> Vec<f32> {
    let bytes = std::fs::read(golden_dir().join(&golden.tensor)).expect("golden tensor");
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub fn fixture_image(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("images").join(name)).unwrap_or_else(|e| panic!("fixture image {name}: {e}"))
}

pub fn bad_input(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("bad").join(name)).unwrap_or_else(|e| panic!("bad input {name}: {e}"))
}

/// The running local stack (`bash scripts/stack up`), read from `.local/stack.env` or `$STACK_ENV`.
pub struct Stack {
    vars: HashMap<String, String>,
}

impl Stack {
    /// Panics, saying how to start it, when the stack is not running: these tests never skip themselves.
    pub fn load() -> Stack {
        let path = std::env::var_os("STACK_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/stack.env"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the local stack is not running ({}: {e}); start it with `bash scripts/stack up --detach --no-demo`",
                path.display()
            )
        });
        let vars = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Stack { vars }
    }

    pub fn get(&self, name: &str) -> &str {
        self.vars.get(name).unwrap_or_else(|| panic!("{name} missing from stack.env"))
    }

    /// AWS configuration for the stack's S3, without touching the process environment.
    pub async fn aws(&self) -> aws_config::SdkConfig {
        let credentials = aws_sdk_s3::config::Credentials::new(
            self.get("AWS_ACCESS_KEY_ID"),
            self.get("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "stack",
        );
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.get("AWS_REGION").to_string()))
            .credentials_provider(credentials)
            .endpoint_url(self.get("AWS_ENDPOINT_URL_S3"))
            .load()
            .await
    }

    pub async fn s3(&self) -> S3Store {
        S3Store::from_sdk_config(&self.aws().await, &S3Config { force_path_style: true })
    }

    /// A Milvus index on a collection of its own.
    pub async fn milvus(&self, collection: &str, dim: usize) -> MilvusIndex {
        self.milvus_at(self.get("MILVUS_URI"), collection, dim).await
    }

    pub async fn milvus_at(&self, uri: &str, collection: &str, dim: usize) -> MilvusIndex {
        let config = MilvusConfig {
            uri: uri.to_string(),
            token: Some(self.get("MILVUS_TOKEN").to_string()),
            token_secret_arn: None,
            collection: collection.to_string(),
            timeout: Duration::from_secs(10),
        };
        MilvusIndex::new(&config, config.token.clone(), dim).await.expect("milvus client")
    }

    /// A new, empty bucket.
    pub async fn bucket(&self, s3: &S3Store, prefix: &str) -> String {
        let name = unique(prefix).replace('_', "-");
        s3.client()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
        name
    }
}

/// A name no other test (or earlier run) uses: `prefix_<ms>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() % 1_000_000_000;
    format!("{prefix}_{ms}_{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The ingest use case wired to the stack's S3, a fresh Milvus collection and the tiny model.
pub fn ingestor(s3: &S3Store, index: Arc<MilvusIndex>) -> Ingestor {
    Ingestor {
        embedder: Arc::new(image_encoder()),
        store: Arc::new(s3.clone()),
        index,
        config: IngestConfig { max_object_bytes: 50 * 1024 * 1024, retry_attempts: 2 },
        retry: RetryPolicy::new(2),
    }
}

pub fn searcher(s3: &S3Store, index: Arc<MilvusIndex>) -> Searcher {
    Searcher {
        embedder: Arc::new(text_encoder()),
        collection: index.collection().to_string(),
        index,
        store: Arc::new(s3.clone()),
        url_ttl: Duration::from_secs(900),
        model_name: "tiny-clip".into(),
    }
}

/// A committed S3 event with its bucket name replaced.
pub fn s3_event(name: &str, bucket: &str) -> shared::ingest::S3Event {
    let text = std::fs::read_to_string(fixtures().join("events").join(name)).expect("event fixture");
    let mut event: serde_json::Value = serde_json::from_str(&text).expect("event JSON");
    for record in event["Records"].as_array_mut().expect("Records") {
        record["s3"]["bucket"]["name"] = serde_json::Value::String(bucket.to_string());
        record["s3"]["bucket"]["arn"] = serde_json::Value::String(format!("arn:aws:s3:::{bucket}"));
    }
    serde_json::from_value(event).expect("a valid S3 event")
}

/// A committed API Gateway request, edited by `edit`.
pub fn apigw_request(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> lambda_http::Request {
    let text = std::fs::read_to_string(fixtures().join("apigw").join(name)).expect("request fixture");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("request JSON");
    edit(&mut json);
    lambda_http::request::from_str(&json.to_string()).expect("a valid API Gateway request")
}

/// Puts `bytes` at `bucket/key`.
pub async fn put(s3: &S3Store, bucket: &str, key: &str, bytes: Vec<u8>, content_type: &str) {
    s3.client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(bytes.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// `application/x-www-form-urlencoded`, as a browser sends a query string.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Replaces an API Gateway request fixture's query string (v2: `rawQueryString`, percent-encoded; v1: the decoded maps).
pub fn with_query(json: &mut serde_json::Value, params: &[(&str, &str)]) {
    use serde_json::{json, Map, Value};
    let map: Map<String, Value> = params.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let raw: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))).collect();
    json["queryStringParameters"] = Value::Object(map);
    if json.get("rawQueryString").is_some() {
        json["rawQueryString"] = json!(raw.join("&"));
    }
    if json.get("multiValueQueryStringParameters").is_some() {
        json["multiValueQueryStringParameters"] =
            params.iter().map(|(k, v)| (k.to_string(), json!([v]))).collect::<Map<_, _>>().into();
    }
}
