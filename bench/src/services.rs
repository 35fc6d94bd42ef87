//! Timings that need the local stack's services (Milvus Lite, SeaweedFS): the search handler end
//! to end over a collection of 10,000 vectors, and the ingest path per image, stage by stage.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::domain::ingest::{Ingestor, ObjectChange};
use shared::domain::record::{record_id, ImageRecord};
use shared::domain::retry::RetryPolicy;
use shared::domain::search::Searcher;
use shared::embedder::decode::decode_rgb_reduced;
use shared::embedder::DecodeLimits;
use shared::embedder::{
    ClipImageEncoder, ClipTextEncoder, ImageEmbedder, ModelBundle, TextEmbedder, DEFAULT_JPEG_REDUCTION_MARGIN,
};
use shared::index::{SearchQuery, VectorIndex};
use shared::store::ObjectStore;
use tests::{apigw_request, with_query, Stack};
use tower::ServiceExt;

use crate::runtime;

/// Percentiles of per-call milliseconds.
pub fn percentiles(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    json!({"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "min_ms": samples[0],
           "max_ms": samples[samples.len() - 1], "calls": samples.len()})
}

/// Milvus RPC timeout: the search benchmark upserts in batches of 1,000 vectors.
const MILVUS_TIMEOUT: Duration = Duration::from_secs(30);

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// A synthetic record of a 12 MP JPEG under `key`: the `i`th of a benchmark's collection.
pub(crate) fn synthetic_record(bucket: &str, key: String, i: usize, dim: usize) -> ImageRecord {
    ImageRecord {
        id: record_id(bucket, &key),
        bucket: bucket.into(),
        key,
        size: 100_000,
        etag: format!("{i:032x}"),
        content_type: "image/jpeg".into(),
        last_modified_ms: 1_700_000_000_000 + i as i64,
        width: 4032,
        height: 3024,
        vector: tests::random_unit(i as u64, dim),
        ..Default::default()
    }
}

/// The search handler (`shared::http::service`, as the Lambda runs it) over `vectors` indexed
/// images, `calls` queries, k = 10; each stage timed on its own for the breakdown. The vectors go
/// in as a backfill writes them, ending with its flush, and the timing starts once the stack's
/// Milvus Lite has indexed them (`stack_env`: where the stack keeps its files).
pub async fn search(
    model: &ModelBundle,
    threads: usize,
    calls: usize,
    vectors: usize,
    stack: &Stack,
    stack_env: &Path,
    queries: &[String],
) -> Value {
    let encoder = Arc::new(ClipTextEncoder::load(model, &runtime(threads)).expect("text tower"));
    let dim = encoder.dim();
    let collection = format!("bench_search_{}", std::process::id());
    let index = stack.milvus_with_timeout(&collection, dim, MILVUS_TIMEOUT).await;
    let bucket = stack.get("STACK_BUCKET").to_string();
    let started = Instant::now();
    for chunk in (0..vectors).collect::<Vec<_>>().chunks(1000) {
        let records: Vec<ImageRecord> =
            chunk.iter().map(|&i| synthetic_record(&bucket, format!("bench/{i:05}.jpg"), i, dim)).collect();
        index.upsert(&records).await.expect("upsert");
    }
    index.flush().await.expect("flush");
    let load_ms = ms(started);
    let lite = crate::lite::Server::of_stack(stack_env, stack.get("MILVUS_URI"));
    let (settle_s, settled) = crate::lite::settle(&lite, &collection).await;
    let store = Arc::new(stack.s3().await);
    let searcher = Searcher {
        embedder: encoder.clone(),
        index: index.clone(),
        store: store.clone(),
        url_ttl: Duration::from_secs(900),
        model_name: "bench".into(),
        collection: collection.clone(),
        access: Default::default(),
    };
    // Built once, as `lambda_http::run` does; each request goes to a clone (the router is shared).
    let api = shared::http::service::<lambda_http::Body>(Arc::new(searcher), tests::test_cursor_key());
    let query = |i: usize| queries[i % queries.len()].as_str();
    // Warm-up: the first search loads the collection and the first inference allocates.
    for i in 0..3 {
        let _ = api.clone().oneshot(request(query(i))).await;
    }
    let mut handler = Vec::new();
    let (mut tokenize, mut infer, mut milvus, mut presign) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..calls {
        let q = query(i);
        let request = request(q);
        let start = Instant::now();
        let Ok(response) = api.clone().oneshot(request).await;
        handler.push(ms(start));
        if response.status() != 200 {
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
            panic!("search failed: {status} {}", String::from_utf8_lossy(&body));
        }

        let start = Instant::now();
        let tokens = encoder.tokenize(q).expect("tokenize");
        tokenize.push(ms(start));
        let start = Instant::now();
        let vector = encoder.embed_tokens(&[tokens]).expect("infer").remove(0);
        infer.push(ms(start));
        let start = Instant::now();
        let hits = index.search(&SearchQuery::top(&vector, 10)).await.expect("search");
        milvus.push(ms(start));
        let start = Instant::now();
        for hit in &hits {
            store.presign_get(&hit.record.bucket, &hit.record.key, Duration::from_secs(900)).await.expect("presign");
        }
        presign.push(ms(start));
    }
    json!({
        "vectors": vectors, "k": 10, "insert_ms": load_ms, "flushed": index.flushes(), "indexing_s": settle_s,
        "indexed": settled,
        "handler": percentiles(handler), "tokenize": percentiles(tokenize), "infer": percentiles(infer),
        "milvus_search": percentiles(milvus), "presign_10": percentiles(presign),
    })
}

/// `GET /search?q=…&k=10` as API Gateway (HTTP API) delivers it.
fn request(q: &str) -> lambda_http::Request {
    apigw_request("v2-get-search.json", |json| with_query(json, &[("q", q), ("k", "10")]))
}

/// The ingest path per image: S3 GetObject, decode, preprocess (resize, crop), inference, upsert;
/// and the whole use case (`Ingestor::apply` on one object) for comparison.
pub async fn ingest(model: &ModelBundle, threads: usize, files: &[String], stack: &Stack) -> Value {
    let encoder = Arc::new(
        ClipImageEncoder::load(model, &runtime(threads), 200_000_000)
            .expect("visual tower")
            .with_reduced_jpeg(Some(DEFAULT_JPEG_REDUCTION_MARGIN)),
    );
    let store = Arc::new(stack.s3().await);
    let bucket = format!("bench-ingest-{}", std::process::id());
    store.client().create_bucket().bucket(&bucket).send().await.expect("create bucket");
    let mut keys = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let key = format!("{i:03}-{}", Path::new(file).file_name().unwrap().to_string_lossy());
        let body = std::fs::read(file).expect("input");
        store.client().put_object().bucket(&bucket).key(&key).body(body.into()).send().await.expect("put");
        keys.push(key);
    }
    let collection = format!("bench_ingest_{}", std::process::id());
    let index = stack.milvus_with_timeout(&collection, ImageEmbedder::dim(&*encoder), MILVUS_TIMEOUT).await;
    index.count().await.expect("collection ready");
    let cfg = encoder.preprocessor().config().clone();
    let min_side = (cfg.height.min(cfg.width) as f32 * DEFAULT_JPEG_REDUCTION_MARGIN).ceil() as u32;
    let limits = DecodeLimits { max_pixels: 200_000_000, deadline: shared::config::DEFAULT_DECODE_DEADLINE };
    let (mut get, mut decode, mut preprocess, mut infer, mut upsert) = (vec![], vec![], vec![], vec![], vec![]);
    for key in &keys {
        let start = Instant::now();
        let object = store.get(&bucket, key, u64::MAX).await.expect("get");
        get.push(ms(start));
        let start = Instant::now();
        let decoded = decode_rgb_reduced(&object.bytes, &limits, Some(min_side)).expect("decode");
        decode.push(ms(start));
        let start = Instant::now();
        let fitted = encoder.preprocessor().fit(&decoded.rgb).expect("bench inputs fit");
        preprocess.push(ms(start));
        let prepared = shared::embedder::PreparedImage {
            fitted,
            width: decoded.width,
            height: decoded.height,
            format: decoded.format,
        };
        let start = Instant::now();
        let vector = encoder.embed_prepared(std::slice::from_ref(&prepared)).expect("infer").remove(0);
        infer.push(ms(start));
        let record = ImageRecord {
            id: record_id(&bucket, key),
            bucket: bucket.clone(),
            key: key.clone(),
            owner: String::new(),
            size: object.size as i64,
            etag: object.etag.clone(),
            content_type: "image/jpeg".into(),
            last_modified_ms: object.last_modified_ms.unwrap_or(0),
            width: decoded.width as i64,
            height: decoded.height as i64,
            indexed_at_ms: 0,
            sequencer: None,
            vector,
        };
        let start = Instant::now();
        index.upsert(&[record]).await.expect("upsert");
        upsert.push(ms(start));
    }
    // The use case end to end, one object per call (as for one S3 record), after dropping the records above.
    let ids: Vec<String> = keys.iter().map(|k| record_id(&bucket, k)).collect();
    index.delete(&ids).await.expect("delete");
    let ingestor = Ingestor {
        access: Default::default(),
        embedder: encoder.clone(),
        store: store.clone(),
        index: index.clone(),
        config: shared::config::IngestConfig { max_object_bytes: u64::MAX, retry_attempts: 1 },
        retry: RetryPolicy::new(1),
    };
    let mut whole = Vec::new();
    for key in &keys {
        let change = ObjectChange::Created { bucket: bucket.clone(), key: key.clone(), etag: None, sequencer: None };
        let start = Instant::now();
        let report = ingestor.apply(vec![change]).await.expect("ingest");
        whole.push(ms(start));
        assert_eq!(report.indexed.len(), 1, "{report:?}");
    }
    for key in &keys {
        store.client().delete_object().bucket(&bucket).key(key).send().await.expect("delete object");
    }
    store.client().delete_bucket().bucket(&bucket).send().await.ok();
    json!({
        "images": keys.len(),
        "get": percentiles(get), "decode": percentiles(decode), "preprocess": percentiles(preprocess),
        "infer": percentiles(infer), "upsert": percentiles(upsert), "use_case": percentiles(whole),
    })
}

/// Cold start of a Lambda binary: from spawning the process to its first `GET .../invocation/next`
/// on the runtime API, i.e. config read, model loaded, clients built; beside a bare process that
/// only creates the same tower's session ([`session_ready`]), measured the same way.
pub fn init_process(binary: &Path, model: &Path, threads: usize, iters: usize) -> Value {
    let tower = if binary.file_name().is_some_and(|n| n == "search") { "textual" } else { "visual" };
    let bare = std::env::current_exe().expect("clip-bench's own path");
    let (mut function, mut baseline) = (Vec::new(), Vec::new());
    // Alternating the two, and the first round also pays for the page cache.
    for round in 0..=iters {
        let f = ready_after(binary, &[], &lambda_env(model, threads));
        let args = ["session-ready".into(), model.into(), threads.to_string().into(), "0".into(), tower.into()];
        let b = ready_after(&bare, &args, &[]);
        if round > 0 {
            function.push(f);
            baseline.push(b);
        }
    }
    json!({"function": crate::stats(function), "bare_session_process": crate::stats(baseline)})
}

/// The Lambda environment the function sees, with a runtime API address filled in by [`ready_after`].
pub(crate) fn lambda_env(model: &Path, threads: usize) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("AWS_LAMBDA_FUNCTION_NAME", "bench".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "bench".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "bench".into()),
        ("AWS_SECRET_ACCESS_KEY", "bench".into()),
        ("MODEL_DIR", model.into()),
        ("ORT_INTRA_THREADS", threads.to_string().into()),
        // Nothing listens here: the connection is tried in the background and fails, as in a
        // cold start whose Milvus is slow; init does not wait for it.
        ("MILVUS_URI", "http://127.0.0.1:9".into()),
        ("RUST_LOG", "error".into()),
    ]
}

/// Milliseconds from starting `command` to its first connection to `AWS_LAMBDA_RUNTIME_API`
/// (a TCP listener stands in for the runtime API: this measures, it does not serve).
pub(crate) fn ready_after(program: &Path, args: &[std::ffi::OsString], env: &[(&str, std::ffi::OsString)]) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let address = listener.local_addr().unwrap().to_string();
    let start = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ORT_DYLIB_PATH", tests::onnxruntime_library().unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &address)
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the process");
    let (_connection, _) = listener.accept().expect("the process calls the runtime API");
    let elapsed = ms(start);
    child.kill().ok();
    child.wait().ok();
    elapsed
}

/// The baseline for [`init_process`]: a process that only loads ONNX Runtime and creates one
/// session, then calls `AWS_LAMBDA_RUNTIME_API` as a function does when it is ready.
pub fn session_ready(model: &shared::embedder::ModelBundle, threads: usize, tower: &str) -> ! {
    let path = if tower == "textual" { model.textual_model_path() } else { model.visual_model_path() };
    let _session = shared::embedder::onnx::build_session(&path, &crate::runtime(threads)).expect("session");
    let address = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API");
    let _connection = std::net::TcpStream::connect(address).expect("connect");
    std::thread::sleep(std::time::Duration::from_secs(60));
    std::process::exit(0)
}
