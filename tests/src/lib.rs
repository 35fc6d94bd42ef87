//! The test kit: the one copy of what the integration tests (`tests/tests/integration/`), the CLI's
//! tests (`cli/tests/`) and the benchmarks (`bench/`) share.
//!
//! - Fixtures and golden files: [`fixtures`], [`tiny_model`], [`golden_images`], [`golden_texts`], …
//! - ONNX Runtime: [`runtime`] finds the pinned library (`ORT_DYLIB_PATH`, else `.local/onnxruntime/`).
//! - The local stack: [`Stack`] reads `.local/stack.env`; [`Stack::milvus`] gives a [`TestCollection`]
//!   that drops its collection when it goes out of scope, even when the test fails; a [`Sandbox`] is a
//!   test's own bucket and collection.
//! - The use cases and the HTTP API wired to the stack: [`ingestor`], [`searcher`], [`ingest`], [`call`],
//!   [`call_json`].
//! - Requests and objects: [`apigw_request`], [`with_query`], [`s3_event`], [`put`], [`unique`].

pub mod fault_proxy;
pub mod hostile;

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::http::HeaderMap;
use lambda_http::RequestExt;
use serde::Deserialize;
use serde_json::Value;
use shared::config::{Env, IngestConfig, MilvusConfig};
use shared::domain::ingest::{IngestError, IngestReport, Ingestor};
use shared::domain::retry::RetryPolicy;
use shared::domain::scope::Access;
use shared::domain::search::Searcher;
use shared::embedder::onnx::{RuntimeOptions, ORT_LIBRARY, ORT_LOCAL_DIR};
use shared::embedder::{ClipImageEncoder, ClipTextEncoder, ModelBundle, ModelIdentity};
use shared::events::S3Event;
use shared::index::{CollectionSpec, MilvusIndex, SchemaRole};
use shared::store::S3Store;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// `tests/fixtures/` of this repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The committed tiny CLIP model (random weights, real architecture and vocabulary).
pub fn tiny_model() -> ModelBundle {
    ModelBundle::open(fixtures().join("tiny-clip")).expect("tiny model bundle")
}

/// The tiny model's identity as the functions record it (the bundle folder names it).
/// What a collection of the tiny model's vectors (of `dim`) records, with an owner template or none.
pub fn tiny_spec(dim: usize, owner_template: Option<&str>) -> CollectionSpec {
    CollectionSpec { dim, model: tiny_model_identity(), owner_template: owner_template.map(str::to_string) }
}

pub fn tiny_model_identity() -> ModelIdentity {
    tiny_model().identity(None).expect("tiny model config")
}

// ---------------------------------------------------------------------------------------------------------
// ONNX Runtime.

/// The ONNX Runtime library to load: `ORT_DYLIB_PATH` when set, else the version pinned in
/// `onnxruntime.version` where `scripts/install-onnxruntime` puts it, when it is there.
pub fn onnxruntime_library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    Some(repo_root().join(ORT_LOCAL_DIR).join(ORT_LIBRARY)).filter(|p| p.is_file())
}

/// Runtime options for the tests: the library of [`onnxruntime_library`] (panics, saying how to
/// install it, when there is none) and `ORT_INTRA_THREADS` when set.
pub fn runtime() -> RuntimeOptions {
    let Some(library) = onnxruntime_library() else {
        panic!(
            "ONNX Runtime not found: ORT_DYLIB_PATH is not set and {} does not exist; run bash scripts/install-onnxruntime",
            repo_root().join(ORT_LOCAL_DIR).join(ORT_LIBRARY).display()
        )
    };
    let threads = std::env::var("ORT_INTRA_THREADS").ok().and_then(|v| v.parse().ok());
    RuntimeOptions { dylib_path: Some(library), intra_threads: threads }
}

pub fn image_encoder() -> ClipImageEncoder {
    CLIP.image_encoder()
}

pub fn text_encoder() -> ClipTextEncoder {
    CLIP.text_encoder()
}

// ---------------------------------------------------------------------------------------------------------
// Model families: a committed tiny bundle each, and golden files from that family's own Python.

/// A tiny random-weight bundle in immich's layout and the golden files its family's Python
/// reference made from it (tests/reference/: `golden.py` for CLIP, `golden_family.py` for the others).
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    /// Folder under `tests/fixtures/` with the bundle.
    pub bundle: &'static str,
    /// Folder under `tests/fixtures/` with `images.json`, `texts.json` and the tensors or pixels.
    pub golden: &'static str,
}

/// OpenAI CLIP: BPE tokenizer, EOT pooling, shortest-side resize and center crop.
pub const CLIP: Family = Family { name: "clip", bundle: "tiny-clip", golden: "golden" };
/// SigLIP: T5-style Unigram tokenizer, canonicalized text, last-token pooling, squash resize.
pub const SIGLIP: Family = Family { name: "siglip", bundle: "tiny-siglip", golden: "golden-siglip" };
/// SigLIP2: as SigLIP but a Gemma-style byte-fallback BPE tokenizer.
pub const SIGLIP2: Family = Family { name: "siglip2", bundle: "tiny-siglip2", golden: "golden-siglip2" };
/// XLM-R multilingual: Unigram tokenizer with `<s>`/`</s>`/`<pad>`, `input_ids` + `attention_mask`, mean pooling.
pub const XLMR: Family = Family { name: "xlmr", bundle: "tiny-xlmr", golden: "golden-xlmr" };

/// Every family the parity and ranking tests run over.
pub const FAMILIES: [Family; 4] = [CLIP, SIGLIP, SIGLIP2, XLMR];

impl Family {
    pub fn model(&self) -> ModelBundle {
        ModelBundle::open(fixtures().join(self.bundle)).unwrap_or_else(|e| panic!("{} bundle: {e}", self.name))
    }

    pub fn image_encoder(&self) -> ClipImageEncoder {
        ClipImageEncoder::load(&self.model(), &runtime(), shared::config::DEFAULT_MAX_IMAGE_PIXELS)
            .unwrap_or_else(|e| panic!("{} visual tower: {e}", self.name))
    }

    pub fn text_encoder(&self) -> ClipTextEncoder {
        ClipTextEncoder::load(&self.model(), &runtime()).unwrap_or_else(|e| panic!("{} textual tower: {e}", self.name))
    }

    fn golden_dir(&self) -> PathBuf {
        fixtures().join(self.golden)
    }

    /// Per fixture image: decoded size, the reference's tensor (or pixels) and embedding; at least 14.
    pub fn golden_images(&self) -> Vec<GoldenImage> {
        let path = self.golden_dir().join("images.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file: ImagesFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut images = at_least(14, "fixture images", file.images);
        for image in &mut images {
            image.golden_dir = self.golden_dir();
            image.normalize = file.meta.as_ref().and_then(|m| Some((m.mean.clone()?, m.std.clone()?)));
        }
        images
    }

    /// Per query: token ids and embedding from the reference; at least 20.
    pub fn golden_texts(&self) -> Vec<GoldenText> {
        let path = self.golden_dir().join("texts.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file: TextsFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        at_least(20, "golden queries", file.texts)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Golden files and fixtures.

#[derive(Debug, Deserialize)]
pub struct GoldenImage {
    pub file: String,
    pub width: u32,
    pub height: u32,
    /// The reference's float32 tensor (CLIP's goldens).
    pub tensor: Option<String>,
    /// The reference's 8-bit pixels, CHW, that normalise exactly to its tensor (the other families).
    pub pixels: Option<String>,
    pub embedding: Vec<f32>,
    #[serde(skip)]
    golden_dir: PathBuf,
    /// The mean and std the pixels are normalised with (the golden file's `meta`).
    #[serde(skip)]
    normalize: Option<(Vec<f32>, Vec<f32>)>,
}

#[derive(Debug, Deserialize)]
pub struct GoldenText {
    pub text: String,
    #[serde(default)]
    pub ids: Vec<u32>,
    #[serde(default)]
    pub embedding: Vec<f32>,
    /// Cleaning leaves nothing (a SigLIP query of only punctuation): the embedder must refuse it.
    #[serde(default)]
    pub empty: bool,
}

#[derive(Deserialize)]
struct GoldenMeta {
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
}

#[derive(Deserialize)]
struct ImagesFile {
    meta: Option<GoldenMeta>,
    images: Vec<GoldenImage>,
}

#[derive(Deserialize)]
struct TextsFile {
    texts: Vec<GoldenText>,
}

/// CLIP's golden images (tests/reference/golden.py).
pub fn golden_images() -> Vec<GoldenImage> {
    CLIP.golden_images()
}

/// CLIP's golden queries.
pub fn golden_texts() -> Vec<GoldenText> {
    CLIP.golden_texts()
}

/// So that a parity test cannot pass by comparing (almost) nothing.
fn at_least<T>(n: usize, what: &str, items: Vec<T>) -> Vec<T> {
    assert!(items.len() >= n, "expected at least {n} {what}, found {}", items.len());
    items
}

/// The reference's preprocessed tensor, CHW: read from its float32 file, or normalised from its
/// pixels as `(v / 255 - mean) / std` in f32, which is how the reference computed it.
pub fn golden_tensor(golden: &GoldenImage) -> Vec<f32> {
    let read = |name: &str| {
        let path = golden.golden_dir.join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    if let Some(tensor) = &golden.tensor {
        return read(tensor).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    }
    let pixels = read(golden.pixels.as_deref().expect("a golden image has a tensor or pixels"));
    let (mean, std) = golden.normalize.as_ref().expect("golden pixels come with mean and std in meta");
    let plane = pixels.len() / 3;
    pixels.iter().enumerate().map(|(i, &v)| (v as f32 / 255.0 - mean[i / plane]) / std[i / plane]).collect()
}

pub fn fixture_image(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("images").join(name)).unwrap_or_else(|e| panic!("fixture image {name}: {e}"))
}

pub fn bad_input(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("bad").join(name)).unwrap_or_else(|e| panic!("bad input {name}: {e}"))
}

// ---------------------------------------------------------------------------------------------------------
// The local stack.

/// The running local stack (`bash scripts/stack up`), read from `.local/stack.env` or `$STACK_ENV`.
pub struct Stack {
    vars: HashMap<String, String>,
}

impl Stack {
    /// `$STACK_ENV`, else `.local/stack.env` in the repository (written by `scripts/stack up`).
    pub fn env_path() -> PathBuf {
        std::env::var_os("STACK_ENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".local/stack.env"))
    }

    /// A `clip-search` command (`binary`, the CLI tests' `CARGO_BIN_EXE_clip-search`) with the
    /// stack's settings, run against `collection`, quiet, with no stdin.
    pub fn cli(binary: &str, collection: &str, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(binary);
        command
            .arg("--env-file")
            .arg(Stack::env_path())
            .args(args)
            .env("MILVUS_COLLECTION", collection)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null());
        command
    }

    /// The stack of [`Stack::env_path`]. Panics, saying how to start it, when the stack is not
    /// running: these tests never skip themselves.
    pub fn load() -> Stack {
        Stack::read(&Stack::env_path())
    }

    /// The stack described by the `stack.env` at `path`; panics, saying how to start it, when there is none.
    pub fn read(path: &Path) -> Stack {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
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

    /// The stack's settings through the reader every program uses (`shared::config::Env`).
    pub fn env(&self) -> Env<impl Fn(&str) -> Option<String> + '_> {
        Env(|name: &str| self.vars.get(name).cloned())
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

    /// A client of the stack's SQS server (moto), which the bridge's queue path uses.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::from(&self.aws().await)
            .endpoint_url(self.get("AWS_ENDPOINT_URL_SQS"))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    pub async fn s3(&self) -> S3Store {
        let settings = self.env().s3().expect("stack.env has valid S3 settings");
        S3Store::from_sdk_config(&self.aws().await, &settings)
    }

    /// A Milvus index on a collection of its own (created on first use), dropped with the guard.
    pub async fn milvus(&self, collection: &str, dim: usize) -> TestCollection {
        self.milvus_with_timeout(collection, dim, Duration::from_secs(10)).await
    }

    /// [`Stack::milvus`] with another RPC timeout (the benchmarks insert large batches).
    pub async fn milvus_with_timeout(&self, collection: &str, dim: usize, timeout: Duration) -> TestCollection {
        TestCollection { index: Arc::new(self.milvus_client(self.get("MILVUS_URI"), collection, dim, timeout).await) }
    }

    /// An index whose Milvus does not answer (nothing listens on port 1): nothing is created, so
    /// there is nothing to drop.
    pub async fn unreachable_milvus(&self, dim: usize) -> Arc<MilvusIndex> {
        Arc::new(self.milvus_client("http://127.0.0.1:1", "unreachable", dim, Duration::from_secs(10)).await)
    }

    /// A client of `collection` that says its vectors come from `model` (the tiny model elsewhere).
    pub async fn milvus_of_model(&self, collection: &str, dim: usize, model: ModelIdentity) -> MilvusIndex {
        self.milvus_at(self.get("MILVUS_URI"), collection, dim, Duration::from_secs(10), model).await
    }

    /// A collection of its own (dropped with its guard) that records `family`'s bundle as its model.
    pub async fn milvus_of_family(&self, collection: &str, dim: usize, family: &Family) -> TestCollection {
        let model = family.model().identity(None).expect("the bundle's config.json");
        let index = self.milvus_at(self.get("MILVUS_URI"), collection, dim, Duration::from_secs(10), model).await;
        TestCollection { index: Arc::new(index) }
    }

    /// A reader of `collection`, as the search function opens it: it never creates anything.
    pub async fn milvus_reader(&self, collection: &str, dim: usize) -> MilvusIndex {
        let config = MilvusConfig {
            collection: collection.to_string(),
            ..self.env().milvus().expect("stack.env has valid Milvus settings")
        };
        MilvusIndex::new(&config, config.token.clone(), tiny_spec(dim, None), SchemaRole::Reader)
            .await
            .expect("milvus client")
    }

    /// A client of `collection` through another address (a [`fault_proxy::FaultProxy`]), not dropped.
    pub async fn milvus_via(&self, uri: &str, collection: &str, dim: usize, timeout: Duration) -> MilvusIndex {
        self.milvus_at(uri, collection, dim, timeout, tiny_model_identity()).await
    }

    async fn milvus_client(&self, uri: &str, collection: &str, dim: usize, timeout: Duration) -> MilvusIndex {
        self.milvus_at(uri, collection, dim, timeout, tiny_model_identity()).await
    }

    /// A collection of its own (dropped with its guard) through Milvus settings that `edit`
    /// changes from the stack's (the flush policy, say).
    pub async fn milvus_configured(
        &self,
        collection: &str,
        dim: usize,
        edit: impl FnOnce(&mut MilvusConfig),
    ) -> TestCollection {
        let mut config = MilvusConfig {
            collection: collection.to_string(),
            ..self.env().milvus().expect("stack.env has valid Milvus settings")
        };
        edit(&mut config);
        let index = MilvusIndex::new(&config, config.token.clone(), tiny_spec(dim, None), SchemaRole::Owner)
            .await
            .expect("milvus client");
        TestCollection { index: Arc::new(index) }
    }

    /// A collection (dropped with its guard) whose owners follow `template` (`OWNER_KEY_TEMPLATE`).
    pub async fn milvus_with_owners(&self, collection: &str, dim: usize, template: &str) -> TestCollection {
        let config = MilvusConfig {
            collection: collection.to_string(),
            ..self.env().milvus().expect("stack.env has valid Milvus settings")
        };
        let spec = tiny_spec(dim, Some(template));
        let index =
            MilvusIndex::new(&config, config.token.clone(), spec, SchemaRole::Owner).await.expect("milvus client");
        TestCollection { index: Arc::new(index) }
    }

    async fn milvus_at(
        &self,
        uri: &str,
        collection: &str,
        dim: usize,
        timeout: Duration,
        model: ModelIdentity,
    ) -> MilvusIndex {
        let config = MilvusConfig {
            uri: uri.to_string(),
            collection: collection.to_string(),
            timeout,
            ..self.env().milvus().expect("stack.env has valid Milvus settings")
        };
        let spec = CollectionSpec { model, ..tiny_spec(dim, None) };
        MilvusIndex::new(&config, config.token.clone(), spec, SchemaRole::Owner).await.expect("milvus client")
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

/// A Milvus collection of one test (or benchmark): derefs to its `Arc<MilvusIndex>`, and drops the
/// collection when it goes out of scope, also when the test panics.
pub struct TestCollection {
    index: Arc<MilvusIndex>,
}

impl Deref for TestCollection {
    type Target = Arc<MilvusIndex>;

    fn deref(&self) -> &Arc<MilvusIndex> {
        &self.index
    }
}

impl Drop for TestCollection {
    /// `Drop` is synchronous and may run inside a test's runtime: the drop request runs on a thread
    /// of its own with its own runtime. Errors (Milvus gone, the collection never created) are
    /// ignored: a leftover collection must not hide the test's own outcome.
    fn drop(&mut self) {
        let index = self.index.clone();
        let dropping = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = runtime.block_on(index.drop_collection());
            }
        });
        let _ = dropping.join();
    }
}

/// What most stack tests start with: the stack, its S3, and a new bucket and a Milvus collection
/// of the test's own, both named after `name` (the collection is dropped with [`Sandbox::index`]).
pub struct Sandbox {
    pub stack: Stack,
    pub s3: S3Store,
    pub bucket: String,
    pub index: TestCollection,
}

impl Sandbox {
    /// Panics, saying how to start it, when the stack is not running.
    pub async fn new(name: &str, dim: usize) -> Sandbox {
        let stack = Stack::load();
        let s3 = stack.s3().await;
        let bucket = stack.bucket(&s3, name).await;
        let index = stack.milvus(&unique(&format!("t_{name}")).replace('-', "_"), dim).await;
        Sandbox { stack, s3, bucket, index }
    }
}

/// A deterministic unit vector (xorshift) of `dim` dimensions: runs index the same data.
pub fn random_unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    shared::embedder::l2_normalize(&mut v);
    v
}

/// A name no other test (or earlier run) uses: `prefix_<ms>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() % 1_000_000_000;
    format!("{prefix}_{ms}_{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Puts `bytes` at `bucket/key`; returns the object's ETag (unquoted), as its event carries it.
pub async fn put(s3: &S3Store, bucket: &str, key: &str, bytes: Vec<u8>, content_type: &str) -> String {
    let output = s3
        .client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(bytes.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    output.e_tag().unwrap_or_default().trim_matches('"').to_string()
}

// ---------------------------------------------------------------------------------------------------------
// The use cases and the HTTP API.

/// The ingest use case wired to the stack's S3, a fresh Milvus collection and the tiny model.
pub fn ingestor(s3: &S3Store, index: Arc<MilvusIndex>) -> Ingestor {
    ingestor_of(&CLIP, s3, index)
}

/// [`ingestor`] with the image tower of `family`'s bundle.
pub fn ingestor_of(family: &Family, s3: &S3Store, index: Arc<MilvusIndex>) -> Ingestor {
    Ingestor {
        access: Default::default(),
        embedder: Arc::new(family.image_encoder()),
        store: Arc::new(s3.clone()),
        index,
        config: IngestConfig { max_object_bytes: 50 * 1024 * 1024, retry_attempts: 2 },
        retry: RetryPolicy::new(2),
    }
}

/// The search use case over `index`, serving what `access` allows (per-user isolation, scope).
pub fn searcher_with_access(s3: &S3Store, index: Arc<MilvusIndex>, access: Access) -> Arc<Searcher> {
    let mut searcher = Arc::into_inner(searcher(s3, index)).expect("a new searcher has one owner");
    searcher.access = access;
    Arc::new(searcher)
}

/// The search use case over `index`, with the tiny model's text tower.
pub fn searcher(s3: &S3Store, index: Arc<MilvusIndex>) -> Arc<Searcher> {
    searcher_of(&CLIP, s3, index)
}

/// [`searcher`] with the text tower of `family`'s bundle.
pub fn searcher_of(family: &Family, s3: &S3Store, index: Arc<MilvusIndex>) -> Arc<Searcher> {
    Arc::new(Searcher {
        embedder: Arc::new(family.text_encoder()),
        collection: index.collection().to_string(),
        index,
        store: Arc::new(s3.clone()),
        url_ttl: Duration::from_secs(900),
        model_name: family.bundle.into(),
        access: Default::default(),
    })
}

/// The real S3 adapter, except that reading a key with `flaky` in it fails as an outage would:
/// a fault injected into one message of a batch.
pub struct FlakyStore(pub S3Store);

#[async_trait::async_trait]
impl shared::store::ObjectStore for FlakyStore {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<shared::store::StoredObject, shared::store::StoreError> {
        if key.contains("flaky") {
            return Err(shared::store::StoreError::Unavailable("injected: connection reset".into()));
        }
        self.0.get(bucket, key, max_bytes).await
    }
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<String>, shared::store::StoreError> {
        self.0.head(bucket, key).await
    }
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<shared::store::ListedObject>, shared::store::StoreError> {
        self.0.list(bucket, prefix).await
    }
    async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<shared::store::PresignedUrl, shared::store::StoreError> {
        self.0.presign_get(bucket, key, ttl).await
    }
}

/// A Lambda invocation context whose deadline is `timeout` from now.
pub fn lambda_context(timeout: Duration) -> lambda_http::lambda_runtime::Context {
    let mut context = lambda_http::lambda_runtime::Context::default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
    context.deadline = (now + timeout).as_millis() as u64;
    context
}

/// The ingest function's work on an S3 event, as the Lambda does it.
pub async fn ingest(ingestor: &Ingestor, event: &S3Event) -> Result<IngestReport, IngestError> {
    shared::events::s3::ingest(ingestor, event).await
}

/// A committed S3 event with its bucket name replaced.
pub fn s3_event(name: &str, bucket: &str) -> S3Event {
    let text = std::fs::read_to_string(fixtures().join("events").join(name)).expect("event fixture");
    let mut event: Value = serde_json::from_str(&text).expect("event JSON");
    for record in event["Records"].as_array_mut().expect("Records") {
        record["s3"]["bucket"]["name"] = Value::String(bucket.to_string());
        record["s3"]["bucket"]["arn"] = Value::String(format!("arn:aws:s3:::{bucket}"));
    }
    serde_json::from_value(event).expect("a valid S3 event")
}

/// One S3 event with an `ObjectCreated:Put` record for each key, as AWS would send it (built by the
/// local bridge, without ETags so that every object is fetched).
pub fn s3_put_event(bucket: &str, keys: &[String]) -> S3Event {
    let records: Vec<Value> = keys
        .iter()
        .map(|key| {
            let change = bridge::Change::Created {
                bucket: bucket.to_string(),
                key: key.clone(),
                size: 0,
                etag: String::new(),
                mtime: 0,
            };
            let mut event = bridge::s3_event(&change, "us-east-1");
            let mut record = event["Records"][0].take();
            record["s3"]["object"].as_object_mut().expect("object").remove("eTag");
            record
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("a valid S3 event")
}

/// An S3 event of one record with the sequencer given: `Some(etag)` is an `ObjectCreated:Put`
/// of that version, `None` an `ObjectRemoved:Delete` (for tests that deliver events out of order).
pub fn s3_change_event(bucket: &str, key: &str, created: Option<&str>, sequencer: u64) -> S3Event {
    let change = match created {
        Some(etag) => bridge::Change::Created {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: 0,
            etag: etag.to_string(),
            mtime: 0,
        },
        None => bridge::Change::Removed { bucket: bucket.to_string(), key: key.to_string(), mtime: 0 },
    };
    let mut event = bridge::s3_event(&change, "us-east-1");
    event["Records"][0]["s3"]["object"]["sequencer"] = Value::String(format!("{sequencer:016X}"));
    serde_json::from_value(event).expect("a valid S3 event")
}

/// A committed API Gateway request, edited by `edit`.
pub fn apigw_request(name: &str, edit: impl FnOnce(&mut Value)) -> lambda_http::Request {
    let text = std::fs::read_to_string(fixtures().join("apigw").join(name)).expect("request fixture");
    let mut json: Value = serde_json::from_str(&text).expect("request JSON");
    edit(&mut json);
    lambda_http::request::from_str(&json.to_string()).expect("a valid API Gateway request")
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
pub fn with_query(json: &mut Value, params: &[(&str, &str)]) {
    use serde_json::{json, Map};
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

/// The Lambda request id [`call`] gives every request (server errors must report it).
pub const REQUEST_ID: &str = "test-request-id";

/// What the API answered.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON; asserts that it is served as `application/json`.
    pub fn json(&self) -> Value {
        assert_eq!(self.headers["content-type"], "application/json", "status {}: {}", self.status, self.text);
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// The key that signs the cursors of [`call`]: one for every test, as one deployment shares one.
pub fn test_cursor_key() -> shared::http::CursorKey {
    shared::http::CursorKey::from_secret("the tests' cursor signing key, 32+ characters")
}

/// Sends `request` through the search API as the Lambda serves it ([`shared::http::service`]),
/// with a Lambda context whose request id is [`REQUEST_ID`].
pub async fn call(searcher: &Arc<Searcher>, request: lambda_http::Request) -> Reply {
    use tower::ServiceExt;
    let mut context = lambda_http::Context::default();
    context.request_id = REQUEST_ID.into();
    let service = shared::http::service::<lambda_http::Body>(searcher.clone(), test_cursor_key());
    let Ok(response) = service.oneshot(request.with_lambda_context(context)).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("the response body reads");
    let text = String::from_utf8(bytes.to_vec()).expect("a UTF-8 body");
    Reply { status: parts.status.as_u16(), headers: parts.headers, text }
}

/// [`call`] for an answer that must be JSON: status, body (asserting `content-type: application/json`) and headers.
pub async fn call_json(searcher: &Arc<Searcher>, request: lambda_http::Request) -> (u16, Value, HeaderMap) {
    let reply = call(searcher, request).await;
    (reply.status, reply.json(), reply.headers)
}

#[cfg(test)]
mod kit {
    use super::*;

    /// A stack whose Milvus is gone (nothing listens on port 1).
    fn stack_without_milvus() -> Stack {
        let vars = [("MILVUS_URI", "http://127.0.0.1:1"), ("MILVUS_TOKEN", "root:Milvus")];
        Stack { vars: vars.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[tokio::test]
    async fn a_collection_guard_drops_quietly_inside_a_runtime_when_milvus_is_gone() {
        let collection = stack_without_milvus().milvus_with_timeout("t_gone", 4, Duration::from_secs(1)).await;
        assert_eq!(collection.collection(), "t_gone");
        let start = std::time::Instant::now();
        drop(collection);
        assert!(start.elapsed() < Duration::from_secs(60), "the drop gives up: {:?}", start.elapsed());
    }

    #[test]
    fn a_collection_guard_drops_quietly_during_a_panic() {
        let stack = stack_without_milvus();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {
                let _collection = stack.milvus_with_timeout("t_failing", 4, Duration::from_secs(1)).await;
                panic!("the test fails");
            })
        }));
        let message = outcome.expect_err("the test's own panic comes through");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"the test fails"));
    }

    #[test]
    fn stack_env_is_read_without_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.env");
        std::fs::write(
            &path,
            "# written by scripts/stack\nMILVUS_URI=http://127.0.0.1:19530\nSEARCH_URL = http://x/search\n",
        )
        .unwrap();
        let stack = Stack::read(&path);
        assert_eq!((stack.get("MILVUS_URI"), stack.get("SEARCH_URL")), ("http://127.0.0.1:19530", "http://x/search"));
        assert_eq!(stack.vars.len(), 2);
    }

    #[test]
    fn no_stack_env_says_how_to_start_the_stack() {
        let missing = std::panic::catch_unwind(|| Stack::read(Path::new("/nowhere/stack.env"))).err().unwrap();
        let message = missing.downcast_ref::<String>().unwrap();
        assert!(message.contains("bash scripts/stack up"), "{message}");
    }
}
