//! The flush policy measured (docs/milvus.md#flushing): the search handler over N synthetic
//! 512-d vectors held by two private Milvus Lite servers side by side, one as the stack ran it
//! before (Lite's defaults, never flushed by this project) and one with the policy (the stack's
//! Lite settings, `scripts/milvus-lite.env`, and a flush when the bulk insert ends, as backfill
//! does). Queries alternate between the two, unfiltered and with a key-prefix filter, and Milvus's
//! share of each handler call is timed inside it (the index the handler uses is wrapped).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::config::{FlushMode, MilvusConfig, DEFAULT_IDLE_FLUSH};
use shared::domain::record::{ImageHit, ImageRecord};
use shared::domain::search::Searcher;
use shared::embedder::{ClipTextEncoder, Embedding, ModelBundle, TextEmbedError, TextEmbedder};
use shared::index::{
    Deletion, IndexError, IndexedObject, IndexedVersion, MilvusIndex, SchemaRole, SearchQuery, VectorIndex,
};
use tests::{apigw_request, with_query, Stack};
use tower::ServiceExt;

use crate::services::{percentiles, synthetic_record};

/// CLIP ViT-B's embedding size: the index holds vectors of this size whatever the model.
const DIM: usize = 512;
/// Rows per upsert: large batches, so 100,000 vectors go in quickly.
const BATCH: usize = 1_000;
/// Keys fall under this many prefixes (`bench/0/` … `bench/9/`); the filtered queries take one.
const PREFIXES: usize = 10;
/// How long a server may take to finish indexing before the measurement goes ahead anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(900);

/// A Milvus Lite server: its URI and data folder (`URI,DATA_DIR` on the command line).
pub struct Server {
    uri: String,
    data_dir: PathBuf,
}

impl Server {
    pub fn parse(arg: &str) -> Server {
        let Some((uri, dir)) = arg.split_once(',') else { panic!("a server is URI,DATA_DIR, not {arg:?}") };
        Server { uri: uri.into(), data_dir: dir.into() }
    }

    /// The Milvus Lite of the stack whose `stack.env` is at `stack_env` (`scripts/stack` keeps its
    /// data in `.local/milvus/`).
    pub fn of_stack(stack_env: &Path, uri: &str) -> Server {
        let local = stack_env.parent().expect("stack.env is in .local/");
        Server { uri: uri.into(), data_dir: local.join("milvus") }
    }

    fn partitions(&self, collection: &str) -> PathBuf {
        self.data_dir.join("collections").join(collection).join("partitions")
    }

    /// The collection's data files (segments), and those that have their vector index yet.
    fn segments(&self, collection: &str) -> (Vec<String>, usize) {
        let (mut segments, mut indexed) = (Vec::new(), 0);
        for partition in std::fs::read_dir(self.partitions(collection)).into_iter().flatten().flatten() {
            let indexes: Vec<String> = std::fs::read_dir(partition.path().join("indexes"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|f| f.file_name().to_string_lossy().into_owned())
                .collect();
            for file in std::fs::read_dir(partition.path().join("data")).into_iter().flatten().flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                let Some(stem) = name.strip_suffix(".parquet") else { continue };
                if indexes.iter().any(|i| i.starts_with(&format!("{stem}.vector."))) {
                    indexed += 1;
                }
                segments.push(format!("{}/{name}", partition.file_name().to_string_lossy()));
            }
        }
        segments.sort();
        (segments, indexed)
    }
}

/// Waits until Milvus Lite has indexed every segment of `collection` and the segments stayed the
/// same for 2 s. Lite compacts and indexes in the background after each flush, and every segment
/// a flush or a compaction writes lacks its index until that work is done. Returns seconds waited
/// and whether it settled within [`SETTLE_LIMIT`].
pub async fn settle(server: &Server, collection: &str) -> (f64, bool) {
    let started = Instant::now();
    let mut last = None;
    loop {
        let (segments, indexed) = server.segments(collection);
        let done = indexed == segments.len();
        if done && last.as_ref() == Some(&segments) {
            return (started.elapsed().as_secs_f64(), true);
        }
        last = done.then_some(segments);
        if started.elapsed() > SETTLE_LIMIT {
            return (started.elapsed().as_secs_f64(), false);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The index as the handler sees it, timing each search (Milvus's share of a handler call).
struct Timed {
    inner: Arc<MilvusIndex>,
    searches_ms: Mutex<f64>,
}

impl Timed {
    fn take_ms(&self) -> f64 {
        std::mem::take(&mut *self.searches_ms.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl VectorIndex for Timed {
    async fn upsert(&self, records: &[ImageRecord]) -> Result<(), IndexError> {
        self.inner.upsert(records).await
    }
    async fn delete_if(&self, deletions: &[Deletion]) -> Result<(), IndexError> {
        self.inner.delete_if(deletions).await
    }
    async fn versions(&self, ids: &[String]) -> Result<std::collections::HashMap<String, IndexedVersion>, IndexError> {
        self.inner.versions(ids).await
    }
    async fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<ImageHit>, IndexError> {
        let start = Instant::now();
        let hits = self.inner.search(query).await;
        *self.searches_ms.lock().unwrap() += start.elapsed().as_secs_f64() * 1000.0;
        hits
    }
    async fn records_with_key(&self, key: &str) -> Result<Vec<ImageRecord>, IndexError> {
        self.inner.records_with_key(key).await
    }
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<IndexedObject>, IndexError> {
        self.inner.list(bucket, prefix).await
    }
    async fn count(&self) -> Result<u64, IndexError> {
        self.inner.count().await
    }
}

/// The model's text embedding padded with zeros to [`DIM`] (the tiny test model embeds in 64
/// dimensions). Against random unit vectors any query direction ranks alike, so the search
/// costs what a 512-d model's query would.
struct Widened(Arc<ClipTextEncoder>);

impl TextEmbedder for Widened {
    fn dim(&self) -> usize {
        DIM
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Embedding>, TextEmbedError> {
        let mut embeddings = self.0.embed_texts(texts)?;
        for e in &mut embeddings {
            e.resize(DIM, 0.0);
        }
        Ok(embeddings)
    }
}

/// One side of the comparison: its server, index (as the handler sees it) and what loading took.
struct Side {
    name: &'static str,
    server: Server,
    index: Arc<MilvusIndex>,
    timed: Arc<Timed>,
    report: Value,
}

/// `MilvusConfig` for a private server: `policy` on (as the stack runs now) or off (as before).
fn config(server: &Server, collection: &str, policy: bool) -> MilvusConfig {
    MilvusConfig {
        uri: server.uri.clone(),
        token: None,
        token_secret_arn: None,
        collection: collection.into(),
        timeout: Duration::from_secs(120),
        flush: if policy { FlushMode::Auto } else { FlushMode::Off },
        idle_flush: policy.then_some(DEFAULT_IDLE_FLUSH),
    }
}

/// The comparison at each size in `sizes`: `calls` handler calls per side and filter up to 20,000
/// vectors, proportionally fewer above (the unflushed side takes seconds per query at 100,000).
#[allow(clippy::too_many_arguments)]
pub async fn compare(
    model: &ModelBundle,
    threads: usize,
    calls: usize,
    stack: &Stack,
    queries: &[String],
    sizes: &[usize],
    before: Server,
    after: Server,
) -> Value {
    let encoder = Arc::new(ClipTextEncoder::load(model, &crate::runtime(threads)).expect("text tower"));
    let embedder: Arc<dyn TextEmbedder> =
        if encoder.dim() == DIM { encoder.clone() } else { Arc::new(Widened(encoder.clone())) };
    let store = Arc::new(stack.s3().await);
    let bucket = "bench-flush";
    let mut servers = vec![("before", before), ("after", after)];
    let mut out = Vec::new();
    for &n in sizes {
        let collection = format!("bench_flush_{n}_{}", std::process::id());
        let mut sides = Vec::new();
        for (name, server) in servers.drain(..) {
            let policy = name == "after";
            let spec =
                shared::index::CollectionSpec { dim: DIM, model: tests::tiny_model_identity(), owner_template: None };
            let index = Arc::new(
                MilvusIndex::new(&config(&server, &collection, policy), None, spec, SchemaRole::Owner)
                    .await
                    .expect("milvus client"),
            );
            eprintln!("{name}: inserting {n} vectors");
            let started = Instant::now();
            let ids: Vec<usize> = (0..n).collect();
            for chunk in ids.chunks(BATCH) {
                let records: Vec<ImageRecord> = chunk
                    .iter()
                    .map(|&i| synthetic_record(bucket, format!("bench/{}/{i:06}.jpg", i % PREFIXES), i, DIM))
                    .collect();
                index.upsert(&records).await.expect("upsert");
            }
            let insert_s = started.elapsed().as_secs_f64();
            // The policy's flush when a bulk run ends (what backfill and reconcile call).
            let started = Instant::now();
            index.flush().await.expect("flush");
            let flush_ms = started.elapsed().as_secs_f64() * 1000.0;
            let timed = Arc::new(Timed { inner: index.clone(), searches_ms: Mutex::new(0.0) });
            let report = json!({"insert_s": insert_s, "flush_ms": flush_ms, "flushes": index.flushes()});
            sides.push(Side { name, server, index, timed, report });
        }
        for side in &mut sides {
            eprintln!("{}: waiting for Milvus Lite to finish indexing", side.name);
            let (seconds, settled) = settle(&side.server, &collection).await;
            let (segments, indexed) = side.server.segments(&collection);
            side.report["settle_s"] = json!(seconds);
            side.report["settled"] = json!(settled);
            side.report["segments"] = json!(segments.len());
            side.report["indexed_segments"] = json!(indexed);
        }
        let apis: Vec<_> = sides
            .iter()
            .map(|side| {
                let searcher = Searcher {
                    embedder: embedder.clone(),
                    index: side.timed.clone(),
                    store: store.clone(),
                    url_ttl: Duration::from_secs(900),
                    model_name: "bench".into(),
                    collection: collection.clone(),
                    access: Default::default(),
                };
                shared::http::service::<lambda_http::Body>(Arc::new(searcher), tests::test_cursor_key())
            })
            .collect();
        let filters: [(&str, Option<String>); 2] = [("unfiltered", None), ("prefix", Some("bench/3/".to_string()))];
        let rounds = (calls * 20_000 / n.max(20_000)).max(5);
        // samples[side][filter] = (handler ms, Milvus ms within it)
        let mut samples = vec![vec![(Vec::new(), Vec::new()); filters.len()]; sides.len()];
        eprintln!("{n} vectors: {rounds} rounds of queries, alternating the sides");
        for round in 0..=rounds {
            let q = queries[round % queries.len()].as_str();
            for (s, (side, api)) in sides.iter().zip(&apis).enumerate() {
                for (f, (_, prefix)) in filters.iter().enumerate() {
                    let mut params = vec![("q", q), ("k", "10")];
                    if let Some(prefix) = prefix {
                        params.push(("prefix", prefix));
                    }
                    let request = apigw_request("v2-get-search.json", |json| with_query(json, &params));
                    side.timed.take_ms();
                    let start = Instant::now();
                    let Ok(response) = api.clone().oneshot(request).await;
                    let handler = start.elapsed().as_secs_f64() * 1000.0;
                    let milvus = side.timed.take_ms();
                    assert_eq!(response.status(), 200, "search failed on the {} side", side.name);
                    // Round 0 warms up (the first inference allocates).
                    if round > 0 {
                        samples[s][f].0.push(handler);
                        samples[s][f].1.push(milvus);
                    }
                }
            }
        }
        let mut result = json!({"vectors": n, "dim": DIM, "calls": rounds});
        for (s, side) in sides.iter().enumerate() {
            let mut report = side.report.clone();
            for (f, (name, _)) in filters.iter().enumerate() {
                let (handler, milvus) = samples[s][f].clone();
                report[*name] = json!({"handler": percentiles(handler), "milvus": percentiles(milvus)});
            }
            result[side.name] = report;
        }
        out.push(result);
        for side in sides {
            side.index.drop_collection().await.expect("drop the collection");
            servers.push((side.name, side.server));
        }
    }
    json!({"dim": DIM, "prefix_share": 1.0 / PREFIXES as f64, "sizes": out})
}
