//! `clip-bench`: times this project's embedder and bare ONNX Runtime on the same model, inputs
//! and thread count, and prints one JSON object. `scripts/bench` runs it beside the Python
//! reference (`bench/python_ref.py`) and writes the report; timings are never asserted.
//!
//! clip-bench images  MODEL_DIR THREADS ITERS FILE...   project image path, batch 1 and 8
//! clip-bench images-full-decode ...                    the same with JPEGs decoded at full size
//! clip-bench texts   MODEL_DIR THREADS ITERS QUERIES   project text path (QUERIES: one per line)
//! clip-bench bare    MODEL_DIR THREADS ITERS           bare ORT: pre-made tensors / token ids, batch 1 and 8
//! clip-bench init    MODEL_DIR THREADS ITERS           session creation: bare ORT vs each tower's loader
//! clip-bench init-process MODEL_DIR THREADS ITERS BIN   a Lambda binary's cold start, to its first runtime API call,
//!                                                      beside a process that only creates the session
//! clip-bench session-ready MODEL_DIR THREADS 0 TOWER   that process (visual|textual), for init-process
//! clip-bench cosine  MODEL_DIR THREADS ITERS OTHER_MODEL QUERIES FILE...    embeddings of two models compared (int8 vs fp32)
//! clip-bench search  MODEL_DIR THREADS CALLS STACK_ENV QUERIES VECTORS   the search handler over VECTORS indexed images
//! clip-bench ingest  MODEL_DIR THREADS ITERS STACK_ENV FILE...            the ingest path per image, stage by stage
//! clip-bench milvus-flush MODEL_DIR THREADS CALLS STACK_ENV QUERIES SIZES BEFORE AFTER   the search handler over
//!                      SIZES (e.g. 10000,100000) vectors in two private Milvus Lite servers (URI,DATA_DIR):
//!                      without the flush policy and with it, side by side
//! clip-bench queue   MODEL_DIR THREADS ROUNDS STACK_ENV COUNT FILE...     ingest of COUNT objects, direct vs SQS batches of 1, 5, 10
//! clip-bench model-fetch MODEL_DIR THREADS ROUNDS STACK_ENV SIZE_MB       the model from S3: sequential vs ranged GETs
//! clip-bench cold-start MODEL_DIR THREADS ITERS STACK_ENV BIN             ingest's cold start: model from a layer vs from S3
//! clip-bench backfill MODEL_DIR THREADS 0 STACK_ENV CLI COUNT FILE...     `clip-search backfill` of COUNT generated objects

mod lite;
mod scale;
mod services;

use std::path::Path;
use std::time::Instant;

use std::borrow::Cow;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use serde_json::{json, Value};
use shared::embedder::onnx::{build_session, RuntimeOptions};
use shared::embedder::{ClipImageEncoder, ClipTextEncoder, ImageEmbedder, ModelBundle, TextEmbedder};

/// Median, min and max of repeated measurements, in milliseconds.
pub(crate) fn stats(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2.0 };
    json!({"median_ms": median, "min_ms": samples[0], "max_ms": samples[n - 1], "runs": n, "samples_ms": samples})
}

/// Runs `f` `iters` times after one warm-up run; returns per-run milliseconds divided by `per`.
fn time(iters: usize, per: usize, mut f: impl FnMut()) -> Value {
    f();
    let samples = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0 / per as f64
        })
        .collect();
    stats(samples)
}

/// `threads` intra-op threads; the library from `ORT_DYLIB_PATH`, else the pinned one in `.local/onnxruntime/`
/// (as the tests find it), else ONNX Runtime's default places.
pub(crate) fn runtime(threads: usize) -> RuntimeOptions {
    RuntimeOptions { dylib_path: tests::onnxruntime_library(), intra_threads: Some(threads) }
}

/// `full_decode`: decode every JPEG at full size (the reference's way) instead of DCT-scaled.
fn images(model: &ModelBundle, threads: usize, iters: usize, files: &[String], full_decode: bool) -> Value {
    let margin = (!full_decode).then_some(shared::embedder::DEFAULT_JPEG_REDUCTION_MARGIN);
    let encoder =
        ClipImageEncoder::load(model, &runtime(threads), 200_000_000).expect("visual tower").with_reduced_jpeg(margin);
    let mut out = json!({});
    for batch in [1usize, 8] {
        let chunks: Vec<&[String]> = files.chunks(batch).collect();
        out[format!("batch{batch}")] = time(iters, files.len(), || {
            for chunk in &chunks {
                // read bytes → decode → preprocess → infer, as ingest does after GetObject.
                let bytes: Vec<Vec<u8>> = chunk.iter().map(|f| std::fs::read(f).expect("input")).collect();
                let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                for r in encoder.embed_images(&refs).expect("inference") {
                    r.expect("decodable input");
                }
            }
        });
    }
    // Where the time goes, per image at batch 1: decode+preprocess alone.
    out["prepare_only"] = time(iters, files.len(), || {
        for f in files {
            encoder.prepare(&std::fs::read(f).unwrap()).unwrap();
        }
    });
    out
}

fn texts(model: &ModelBundle, threads: usize, iters: usize, queries: &[String]) -> Value {
    let encoder = ClipTextEncoder::load(model, &runtime(threads)).expect("text tower");
    let mut out = json!({});
    out["batch1"] = time(iters, queries.len(), || {
        for q in queries {
            encoder.embed_text(q).unwrap();
        }
    });
    out["tokenize_only"] = time(iters, queries.len(), || {
        for q in queries {
            encoder.tokenize(q).unwrap();
        }
    });
    out
}

/// A zero tensor of the model's input type and `batch` rows.
fn feed(session: &Session, batch: usize, image_hw: (usize, usize), context: usize) -> Vec<(String, DynValue)> {
    session
        .inputs()
        .iter()
        .map(|input| {
            let ValueType::Tensor { ty, shape, .. } = input.dtype() else { panic!("tensor input") };
            let value: DynValue = match (ty, shape.len()) {
                (TensorElementType::Float32, 4) => Tensor::from_array((
                    [batch, 3, image_hw.0, image_hw.1],
                    vec![0.1f32; batch * 3 * image_hw.0 * image_hw.1],
                ))
                .unwrap()
                .into_dyn(),
                (TensorElementType::Uint8, 4) => Tensor::from_array((
                    [batch, image_hw.0, image_hw.1, 3],
                    vec![128u8; batch * 3 * image_hw.0 * image_hw.1],
                ))
                .unwrap()
                .into_dyn(),
                (TensorElementType::Int32, _) => {
                    let mut ids = vec![49407i32; batch * context];
                    ids.iter_mut().step_by(context).for_each(|v| *v = 49406);
                    Tensor::from_array(([batch, context], ids)).unwrap().into_dyn()
                }
                _ => Tensor::from_array(([batch, context], vec![1i64; batch * context])).unwrap().into_dyn(),
            };
            (input.name().to_string(), value)
        })
        .collect()
}

fn bare(model: &ModelBundle, threads: usize, iters: usize) -> Value {
    let cfg = model.preprocess_config().expect("preprocess config");
    let context = model.model_config().expect("config").context_length;
    let mut out = json!({});
    for (tower, path) in [("image", model.visual_model_path()), ("text", model.textual_model_path())] {
        let mut session = build_session(&path, &runtime(threads)).expect("session");
        for batch in [1usize, 8] {
            let inputs = feed(&session, batch, (cfg.height as usize, cfg.width as usize), context);
            out[format!("{tower}_batch{batch}")] = time(iters, batch, || {
                let feed: Vec<(Cow<str>, SessionInputValue)> =
                    inputs.iter().map(|(n, v)| (Cow::from(n.as_str()), SessionInputValue::from(v))).collect();
                session.run(feed).unwrap();
            });
        }
    }
    out
}

/// Session creation in this process, bare and through each tower's loader, alternated so that
/// neither side always runs on a warmer heap and page cache.
fn init(model: &ModelBundle, threads: usize, iters: usize) -> Value {
    let rt = runtime(threads);
    let mut samples: [Vec<f64>; 4] = Default::default();
    for round in 0..=iters {
        let runs: [&dyn Fn(); 4] = [
            &|| drop(build_session(&model.visual_model_path(), &rt).unwrap()),
            &|| drop(ClipImageEncoder::load(model, &rt, 1).unwrap()),
            &|| drop(build_session(&model.textual_model_path(), &rt).unwrap()),
            &|| drop(ClipTextEncoder::load(model, &rt).unwrap()),
        ];
        for (run, out) in runs.iter().zip(samples.iter_mut()) {
            let start = Instant::now();
            run();
            if round > 0 {
                out.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let [bare_image, image, bare_text, text] = samples.map(stats);
    json!({
        "bare_session_image": bare_image,
        "image_tower_load": image,
        "bare_session_text": bare_text,
        "text_tower_load": text,
    })
}

/// Cosine between the two models' embeddings of each file and each query: how much quantization changes them.
fn cosine(model: &ModelBundle, other: &ModelBundle, threads: usize, queries: &[String], files: &[String]) -> Value {
    let summary = |pairs: Vec<(String, f32)>| {
        let worst = pairs.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("inputs");
        let mean = pairs.iter().map(|p| p.1 as f64).sum::<f64>() / pairs.len() as f64;
        json!({"count": pairs.len(), "min": worst.1, "mean": mean, "worst": worst.0})
    };
    let rt = runtime(threads);
    let (a, b) = (
        ClipImageEncoder::load(model, &rt, 200_000_000).unwrap(),
        ClipImageEncoder::load(other, &rt, 200_000_000).unwrap(),
    );
    let images = files
        .iter()
        .filter_map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let x = a.embed_images(&[&bytes]).unwrap().remove(0).ok()?;
            let y = b.embed_images(&[&bytes]).unwrap().remove(0).ok()?;
            Some((f.clone(), shared::embedder::cosine(&x.vector, &y.vector)))
        })
        .collect();
    let (a, b) = (ClipTextEncoder::load(model, &rt).unwrap(), ClipTextEncoder::load(other, &rt).unwrap());
    let texts = queries
        .iter()
        .map(|q| (q.clone(), shared::embedder::cosine(&a.embed_text(q).unwrap(), &b.embed_text(q).unwrap())))
        .collect();
    json!({"images": summary(images), "texts": summary(texts)})
}

pub(crate) fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: clip-bench images|images-full-decode|texts|bare|init|init-process|search|ingest|milvus-flush|queue|\
         model-fetch|cold-start|backfill MODEL_DIR THREADS ITERS ...";
    let [command, model, threads, iters, rest @ ..] = args.as_slice() else { panic!("{usage}") };
    let model = ModelBundle::open(model).expect("model bundle");
    let threads: usize = threads.parse().expect(usage);
    let iters: usize = iters.parse().expect(usage);
    let result = match command.as_str() {
        "images" => images(&model, threads, iters, rest, false),
        "images-full-decode" => images(&model, threads, iters, rest, true),
        "texts" => {
            let queries: Vec<String> = std::fs::read_to_string(&rest[0]).unwrap().lines().map(str::to_string).collect();
            texts(&model, threads, iters, &queries)
        }
        "bare" => bare(&model, threads, iters),
        "init" => init(&model, threads, iters),
        "cosine" => {
            let other = ModelBundle::open(&rest[0]).expect("other model bundle");
            let queries: Vec<String> = std::fs::read_to_string(&rest[1]).unwrap().lines().map(str::to_string).collect();
            cosine(&model, &other, threads, &queries, &rest[2..])
        }
        "init-process" => services::init_process(Path::new(&rest[0]), model.root(), threads, iters),
        "session-ready" => services::session_ready(&model, threads, &rest[0]),
        "search" => {
            let queries: Vec<String> = std::fs::read_to_string(&rest[1]).unwrap().lines().map(str::to_string).collect();
            let stack = tests::Stack::read(Path::new(&rest[0]));
            let vectors: usize = rest[2].parse().expect(usage);
            let stack_env = Path::new(&rest[0]);
            tokio_runtime().block_on(services::search(&model, threads, iters, vectors, &stack, stack_env, &queries))
        }
        "ingest" => {
            let stack = tests::Stack::read(Path::new(&rest[0]));
            tokio_runtime().block_on(services::ingest(&model, threads, &rest[1..], &stack))
        }
        "milvus-flush" => {
            let [stack, queries, sizes, before, after] = rest else { panic!("{usage}") };
            let stack = tests::Stack::read(Path::new(stack));
            let queries: Vec<String> = std::fs::read_to_string(queries).unwrap().lines().map(str::to_string).collect();
            let sizes: Vec<usize> = sizes.split(',').map(|n| n.parse().expect(usage)).collect();
            let (before, after) = (lite::Server::parse(before), lite::Server::parse(after));
            tokio_runtime().block_on(lite::compare(&model, threads, iters, &stack, &queries, &sizes, before, after))
        }
        "queue" => {
            let stack = tests::Stack::read(Path::new(&rest[0]));
            let count: usize = rest[1].parse().expect(usage);
            tokio_runtime().block_on(scale::queue(&model, threads, iters, &stack, count, &rest[2..]))
        }
        "model-fetch" => {
            let stack = tests::Stack::read(Path::new(&rest[0]));
            tokio_runtime().block_on(scale::model_fetch(iters, &stack, rest[1].parse().expect(usage)))
        }
        "cold-start" => {
            let stack = tests::Stack::read(Path::new(&rest[0]));
            scale::cold_start(model.root(), threads, iters, &stack, Path::new(&rest[1]))
        }
        "backfill" => {
            let stack = tests::Stack::read(Path::new(&rest[0]));
            let count: usize = rest[2].parse().expect(usage);
            scale::backfill(model.root(), threads, &stack, Path::new(&rest[1]), count, &rest[3..])
        }
        _ => panic!("{usage}"),
    };
    println!("{result}");
}
