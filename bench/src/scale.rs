//! Scale and cost measurements against the local stack (issue 14, item 4): ingest throughput and
//! CPU per image through the queue path at several batch sizes against the direct path, the model
//! fetched from S3 at init (sequential against ranged GETs, and the function's whole cold start
//! against one reading a layer), and `clip-search backfill` of a generated bucket.
//!
//! Everything runs in this process against the stack's SeaweedFS and Milvus Lite, in a bucket and
//! a collection of its own that are removed afterwards. CPU time is this process's (getrusage:
//! every thread, ONNX Runtime's included), not SeaweedFS's or Milvus Lite's: on AWS those are
//! other services, and Lambda bills the function alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use shared::domain::ingest::Ingestor;
use shared::domain::record::record_id;
use shared::domain::retry::RetryPolicy;
use shared::embedder::{ClipImageEncoder, ImageEmbedder, ModelBundle, DEFAULT_JPEG_REDUCTION_MARGIN};
use shared::index::VectorIndex;
use shared::store::{S3Store, Transfer};
use tests::{lambda_context, unique, Stack};

use crate::runtime;

const MILVUS_TIMEOUT: Duration = Duration::from_secs(30);

/// User and system CPU seconds of this process so far (all threads), or of its waited-for children.
pub fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Puts `count` objects named `NNNNN-FILE` into `bucket`, cycling through `files`, 16 at a time;
/// returns (key, ETag) in key order.
async fn upload(s3: &S3Store, bucket: &str, count: usize, files: &[String]) -> Vec<(String, String)> {
    let bodies: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (Path::new(f).file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(f).expect("input")))
        .collect();
    futures::stream::iter(0..count)
        .map(|i| {
            let (name, body) = &bodies[i % bodies.len()];
            let key = format!("{i:05}-{name}");
            async move {
                let etag = tests::put(s3, bucket, &key, body.clone(), "image/jpeg").await;
                (key, etag)
            }
        })
        .buffered(16)
        .collect()
        .await
}

/// Deletes every object of `bucket` and the bucket itself.
async fn remove_bucket(s3: &S3Store, bucket: &str) {
    let keys: Vec<String> =
        shared::store::ObjectStore::list(s3, bucket, "").await.unwrap_or_default().into_iter().map(|o| o.key).collect();
    futures::stream::iter(keys)
        .for_each_concurrent(16, |key| async move {
            let _ = s3.client().delete_object().bucket(bucket).key(&key).send().await;
        })
        .await;
    let _ = s3.client().delete_bucket().bucket(bucket).send().await;
}

/// One S3 `ObjectCreated:Put` event per object, as S3 sends it (what the bridge builds).
fn s3_event(bucket: &str, key: &str, etag: &str) -> Value {
    let change = bridge::Change::Created {
        bucket: bucket.to_string(),
        key: key.to_string(),
        size: 0,
        etag: etag.to_string(),
        mtime: 0,
    };
    bridge::s3_event(&change, "us-east-1")
}

/// The event an SQS event source mapping hands the function: one message per S3 event.
fn sqs_event(bodies: &[(usize, Value)]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .map(|(i, body)| {
            json!({
                "messageId": format!("m{i}"), "receiptHandle": format!("r{i}"), "body": body.to_string(),
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:bench",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Ingest through `shared::events::handle`, as the function runs it: every object as a direct S3
/// event (one invocation each), then as SQS batches of 1, 5 and 10 messages. Each pass starts
/// from an empty index (the records of the previous pass deleted), so every pass embeds every
/// object. Passes alternate within each round, so a slow minute on this shared machine hits
/// every mode alike; each ratio is taken within a round.
pub async fn queue(
    model: &ModelBundle,
    threads: usize,
    rounds: usize,
    stack: &Stack,
    count: usize,
    files: &[String],
) -> Value {
    let encoder = Arc::new(
        ClipImageEncoder::load(model, &runtime(threads), 200_000_000)
            .expect("visual tower")
            .with_reduced_jpeg(Some(DEFAULT_JPEG_REDUCTION_MARGIN)),
    );
    let s3 = Arc::new(stack.s3().await);
    let bucket = stack.bucket(&s3, "bench-queue").await;
    let objects = upload(&s3, &bucket, count, files).await;
    let collection = unique("bench_queue");
    let index = stack.milvus_with_timeout(&collection, ImageEmbedder::dim(&*encoder), MILVUS_TIMEOUT).await;
    index.count().await.expect("collection ready");
    let ingestor = Ingestor {
        access: Default::default(),
        embedder: encoder.clone(),
        store: s3.clone(),
        index: Arc::clone(&index) as Arc<dyn VectorIndex>,
        config: shared::config::IngestConfig {
            max_object_bytes: shared::config::DEFAULT_MAX_OBJECT_BYTES,
            retry_attempts: 3,
        },
        retry: RetryPolicy::new(3),
    };
    let ids: Vec<String> = objects.iter().map(|(key, _)| record_id(&bucket, key)).collect();
    let modes: [(&str, usize); 4] = [("direct", 0), ("queue_batch1", 1), ("queue_batch5", 5), ("queue_batch10", 10)];
    let mut passes: Vec<Vec<Value>> = vec![Vec::new(); modes.len()];
    // Round 0 warms up (first inference allocations, connections) and is not kept.
    for round in 0..=rounds {
        for (m, &(mode, batch)) in modes.iter().enumerate() {
            index.delete(&ids).await.expect("delete the previous pass's records");
            let bodies: Vec<(usize, Value)> =
                objects.iter().enumerate().map(|(i, (key, etag))| (i, s3_event(&bucket, key, etag))).collect();
            let events: Vec<Value> = match batch {
                0 => bodies.into_iter().map(|(_, event)| event).collect(),
                b => bodies.chunks(b).map(sqs_event).collect(),
            };
            let invocations = events.len();
            let (cpu, start) = (cpu_seconds(libc::RUSAGE_SELF), Instant::now());
            let mut indexed = 0;
            for event in events {
                let context = lambda_context(Duration::from_secs(120));
                let answer = shared::events::handle(&ingestor, event, &context).await.expect("ingest");
                match batch {
                    0 => indexed += answer["indexed"].as_array().map_or(0, Vec::len),
                    b => {
                        let failed = answer["batchItemFailures"].as_array().map_or(usize::MAX, Vec::len);
                        assert_eq!(failed, 0, "{mode}: {answer}");
                        indexed += b;
                    }
                }
            }
            let wall = start.elapsed().as_secs_f64();
            let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu;
            assert_eq!(indexed.min(count), count, "{mode}: every object indexed");
            let stored = index.count().await.expect("count");
            assert_eq!(stored, count as u64, "{mode}: {stored} records for {count} objects");
            eprintln!("round {round}/{rounds} {mode}: {count} images in {wall:.2} s, {cpu:.2} CPU-s");
            if round > 0 {
                passes[m].push(json!({"wall_s": wall, "cpu_s": cpu, "invocations": invocations}));
            }
        }
    }
    remove_bucket(&s3, &bucket).await;
    drop(index);
    let per_round = |m: usize, f: &dyn Fn(&Value) -> f64| -> Vec<f64> { passes[m].iter().map(f).collect() };
    let mut out = json!({"images": count, "rounds": rounds, "threads": threads, "inputs": files.len(),
                         "how": "in-process: shared::events::handle fed S3 events (direct) or SQS events of N messages; \
                                 CPU = getrusage(RUSAGE_SELF) of this process"});
    for (m, &(mode, batch)) in modes.iter().enumerate() {
        let images_per_s = per_round(m, &|p| count as f64 / p["wall_s"].as_f64().unwrap());
        let cpu_per_1000 = per_round(m, &|p| p["cpu_s"].as_f64().unwrap() * 1000.0 / count as f64);
        let wall_per_image_ms = per_round(m, &|p| p["wall_s"].as_f64().unwrap() * 1000.0 / count as f64);
        out["modes"][mode] = json!({
            "batch": if batch == 0 { 1 } else { batch },
            "invocations": passes[m][0]["invocations"],
            "images_per_s": summary(images_per_s),
            "cpu_s_per_1000_images": summary(cpu_per_1000),
            "wall_ms_per_image": summary(wall_per_image_ms),
            "passes": passes[m],
        });
    }
    // Ratios within each round, then their median and range over the rounds.
    let ratio = |a: usize, b: usize, key: &str| -> Value {
        let values: Vec<f64> = (0..rounds)
            .map(|r| {
                let (x, y) = (&passes[a][r], &passes[b][r]);
                x[key].as_f64().unwrap() / y[key].as_f64().unwrap()
            })
            .collect();
        summary(values)
    };
    out["ratios"] = json!({
        "cpu_per_image_batch10_over_batch1": ratio(3, 1, "cpu_s"),
        "cpu_per_image_batch5_over_batch1": ratio(2, 1, "cpu_s"),
        "cpu_per_image_batch10_over_direct": ratio(3, 0, "cpu_s"),
        "cpu_per_image_batch1_over_direct": ratio(1, 0, "cpu_s"),
        "images_per_s_batch10_over_batch1": ratio(1, 3, "wall_s"),
        "images_per_s_batch10_over_direct": ratio(0, 3, "wall_s"),
        "images_per_s_batch5_over_batch1": ratio(1, 2, "wall_s"),
    });
    out
}

/// Median, min and max of plain values, and the values.
fn summary(mut values: Vec<f64>) -> Value {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
    json!({"median": median, "min": values[0], "max": values[n - 1], "values": values})
}

/// A deterministic incompressible byte string (xorshift), as model weights are to a network.
fn noise(bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(bytes + 8);
    while out.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(bytes);
    out
}

/// A fresh folder under the system's temporary folder (Lambda's /tmp), removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&path).expect("temporary folder");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The transfers compared: how the model was fetched before (one whole GET after another) and
/// ranged GETs of 16 MiB, 4 and 8 at once (8 is the functions' default).
fn transfers() -> [(&'static str, Transfer); 3] {
    [
        ("sequential", Transfer::SEQUENTIAL),
        ("ranged_4", Transfer::with_concurrency(4)),
        ("ranged_8", Transfer::with_concurrency(8)),
    ]
}

/// `S3Store::download_prefix` of a model-sized prefix (a `size_mb` `visual/model.onnx` of noise
/// and two small JSON files) from SeaweedFS into a fresh folder, each transfer once a round.
pub async fn model_fetch(rounds: usize, stack: &Stack, size_mb: usize) -> Value {
    let s3 = stack.s3().await;
    let bucket = stack.bucket(&s3, "bench-model").await;
    let size = size_mb << 20;
    for (key, body) in [
        ("m/config.json", b"{}".to_vec()),
        ("m/visual/preprocess_cfg.json", b"{}".to_vec()),
        ("m/visual/model.onnx", noise(size, 7)),
    ] {
        tests::put(&s3, &bucket, key, body, "application/octet-stream").await;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); transfers().len()];
    for round in 0..=rounds {
        for (t, (name, transfer)) in transfers().into_iter().enumerate() {
            let dest = TempDir::new("bench-model");
            let start = Instant::now();
            let files = s3.download_prefix(&bucket, "m", &dest.0, |_| true, transfer).await.expect("download");
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(files, 3);
            let got = std::fs::metadata(dest.0.join("visual/model.onnx")).expect("downloaded").len();
            assert_eq!(got, size as u64);
            eprintln!("round {round}/{rounds} model fetch {name}: {ms:.0} ms");
            if round > 0 {
                samples[t].push(ms);
            }
        }
    }
    remove_bucket(&s3, &bucket).await;
    let mut out = json!({"model_mb": size_mb, "rounds": rounds});
    for (t, (name, transfer)) in transfers().into_iter().enumerate() {
        let ms = crate::stats(samples[t].clone());
        let mb_per_s = size_mb as f64 * 1000.0 / ms["median_ms"].as_f64().unwrap();
        out["transfers"][name] = json!({"concurrency": transfer.concurrency,
            "part_mib": if transfer.part_bytes == u64::MAX { Value::Null } else { json!(transfer.part_bytes >> 20) },
            "ms": ms, "mb_per_s": mb_per_s});
    }
    out
}

/// The ingest function's cold start, process start to its first runtime-API call: the model read
/// from a folder (a layer) against the model fetched from S3 (SeaweedFS) into an empty `/tmp`
/// folder, sequentially and with ranged GETs; alternated, a fresh folder every run.
pub fn cold_start(model: &Path, threads: usize, iters: usize, stack: &Stack, binary: &Path) -> Value {
    let runtime = crate::tokio_runtime();
    let s3 = runtime.block_on(stack.s3());
    let bucket = runtime.block_on(stack.bucket(&s3, "bench-cold"));
    let mut model_bytes = 0u64;
    for path in walk(model) {
        let relative = path.strip_prefix(model).unwrap().to_string_lossy().replace('\\', "/");
        let body = std::fs::read(&path).expect("model file");
        model_bytes += body.len() as u64;
        runtime.block_on(tests::put(&s3, &bucket, &format!("model/{relative}"), body, "application/octet-stream"));
    }
    let visual = std::fs::metadata(model.join("visual/model.onnx")).expect("visual tower").len();
    let stack_env: Vec<(&'static str, std::ffi::OsString)> =
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL_S3"]
            .into_iter()
            .map(|name| (name, stack.get(name).into()))
            .chain([("S3_FORCE_PATH_STYLE", "true".into())])
            .collect();
    let variants: [(&str, Option<usize>); 3] = [("layer", None), ("s3_sequential", Some(1)), ("s3_ranged_8", Some(8))];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..=iters {
        for (v, (name, concurrency)) in variants.iter().enumerate() {
            let tmp = TempDir::new("bench-cold");
            let dir = if concurrency.is_some() { tmp.0.clone() } else { model.to_path_buf() };
            let mut env = crate::services::lambda_env(&dir, threads);
            env.extend(stack_env.iter().cloned());
            if let Some(n) = concurrency {
                env.push(("MODEL_S3_URI", format!("s3://{bucket}/model").into()));
                env.push(("MODEL_DOWNLOAD_CONCURRENCY", n.to_string().into()));
            }
            let ms = crate::services::ready_after(binary, &[], &env);
            // An init that failed also calls the runtime API (to report the error): check the fetch.
            let fetched = std::fs::metadata(dir.join("visual/model.onnx")).map(|m| m.len()).unwrap_or(0);
            assert_eq!(fetched, visual, "{name}: the visual tower in {}", dir.display());
            eprintln!("round {round}/{iters} cold start {name}: {ms:.0} ms");
            if round > 0 {
                samples[v].push(ms);
            }
        }
    }
    runtime.block_on(remove_bucket(&s3, &bucket));
    let mut out = json!({"model_mb": model_bytes as f64 / 1048576.0, "visual_mb": visual as f64 / 1048576.0});
    for (v, (name, _)) in variants.iter().enumerate() {
        out[name] = crate::stats(samples[v].clone());
    }
    out
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("model folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `clip-search backfill` of a bucket of `count` generated photos into a collection of its own,
/// end to end on the local stack: wall time, and the CLI process's CPU time.
pub fn backfill(model: &Path, threads: usize, stack: &Stack, cli: &Path, count: usize, files: &[String]) -> Value {
    let runtime = crate::tokio_runtime();
    let s3 = runtime.block_on(stack.s3());
    let bucket = runtime.block_on(stack.bucket(&s3, "bench-backfill"));
    let start = Instant::now();
    let objects = runtime.block_on(upload(&s3, &bucket, count, files));
    let upload_s = start.elapsed().as_secs_f64();
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum::<u64>() / files.len() as u64;
    let collection = unique("bench_backfill");
    let cpu = cpu_seconds(libc::RUSAGE_CHILDREN);
    let start = Instant::now();
    let output = std::process::Command::new(cli)
        .args(["backfill", "--bucket", &bucket, "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(
            [
                "MILVUS_URI",
                "MILVUS_TOKEN",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_REGION",
                "AWS_ENDPOINT_URL_S3",
                "S3_FORCE_PATH_STYLE",
            ]
            .map(|name| (name, stack.get(name))),
        )
        .env("MILVUS_COLLECTION", &collection)
        .env("MODEL_DIR", model)
        .env("ORT_DYLIB_PATH", tests::onnxruntime_library().unwrap_or_default())
        .env("ORT_INTRA_THREADS", threads.to_string())
        .output()
        .expect("run clip-search");
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(libc::RUSAGE_CHILDREN) - cpu;
    let summary: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("clip-search backfill: {e}; stderr: {}", String::from_utf8_lossy(&output.stderr)));
    let indexed = summary["indexed"].as_array().map_or(0, Vec::len);
    // Drop the collection and the bucket.
    let dim = ModelBundle::open(model).expect("model").model_config().expect("config").embed_dim;
    drop(runtime.block_on(stack.milvus_with_timeout(&collection, dim, MILVUS_TIMEOUT)));
    runtime.block_on(remove_bucket(&s3, &bucket));
    assert_eq!(indexed, objects.len(), "backfill indexed every object: {summary}");
    json!({"images": count, "mean_object_bytes": bytes, "upload_s": upload_s, "wall_s": wall, "cpu_s": cpu,
           "images_per_s": count as f64 / wall, "cpu_s_per_1000_images": cpu * 1000.0 / count as f64,
           "failed": summary["failed"].as_array().map_or(0, Vec::len),
           "options": "clip-search backfill defaults: --batch-size 16 --concurrency 2"})
}
