//! The index follows the bucket whatever the events do: late, repeated, reordered or racing
//! events, overwrites with bad files, and a collection made by another model. Real SeaweedFS and
//! Milvus Lite; events go through the ingest function's handler. Needs the local stack.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use shared::domain::ingest::Ingestor;
use shared::embedder::ModelIdentity;
use shared::index::{IndexError, SearchQuery, VectorIndex};
use shared::store::ObjectStore;
use tests::{fixture_image, ingest, ingestor, s3_change_event, tiny_model_identity, unique, Sandbox, Stack};

const DIM: usize = 64;

/// A small deterministic generator (xorshift), so a failing interleaving can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Keys S3 encodes in events: spaces, `+`, `%`, non-ASCII, deep folders.
const KEYS: [&str; 5] = ["plain.jpg", "with space/é+plus%25.png", "deep/a/b/c/📷 photo.webp", "100%.jpg", "x+y=z.png"];
const GOOD: [(&str, &str); 3] =
    [("baseline.jpg", "image/jpeg"), ("palette.png", "image/png"), ("lossy.webp", "image/webp")];

async fn put(sandbox: &Sandbox, key: &str, bytes: Vec<u8>, content_type: &str) -> String {
    tests::put(&sandbox.s3, &sandbox.bucket, key, bytes, content_type).await
}

/// What the index must hold afterwards: every object of the bucket that is an image, by key, with its ETag.
async fn expected(sandbox: &Sandbox, images: &BTreeMap<String, bool>) -> BTreeMap<String, String> {
    let listed = sandbox.s3.list(&sandbox.bucket, "").await.unwrap();
    listed.into_iter().filter(|o| images[&o.key]).map(|o| (o.key, o.etag)).collect()
}

async fn indexed(sandbox: &Sandbox) -> BTreeMap<String, String> {
    let listed = sandbox.index.list(&sandbox.bucket, "").await.unwrap();
    listed.into_iter().map(|o| (o.key, o.etag)).collect()
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn random_interleavings_of_uploads_overwrites_and_deletes_converge_on_the_bucket() {
    for seed in [7u64, 2026, 90_125] {
        let sandbox = Sandbox::new(&format!("order-{seed}"), DIM).await;
        let ingestor = Arc::new(ingestor(&sandbox.s3, sandbox.index.clone()));
        let mut rng = Rng(seed);
        // The operations, with the event each one makes, numbered in order as S3's sequencer does.
        let mut events = Vec::new();
        let mut is_image: BTreeMap<String, bool> = BTreeMap::new();
        for step in 1..=30u64 {
            let key = KEYS[rng.below(KEYS.len())];
            let etag = match rng.below(8) {
                0..=3 => {
                    let (file, content_type) = GOOD[rng.below(GOOD.len())];
                    is_image.insert(key.into(), true);
                    Some(put(&sandbox, key, fixture_image(file), content_type).await)
                }
                4 => {
                    is_image.insert(key.into(), false);
                    Some(put(&sandbox, key, b"not a jpeg at all".to_vec(), "image/jpeg").await)
                }
                5 => {
                    is_image.insert(key.into(), false);
                    Some(put(&sandbox, key, b"notes".to_vec(), "text/plain").await)
                }
                _ => {
                    sandbox.s3.client().delete_object().bucket(&sandbox.bucket).key(key).send().await.unwrap();
                    None
                }
            };
            events.push(s3_change_event(&sandbox.bucket, key, etag.as_deref(), 1_000 + step));
        }
        // Delivered in a shuffled order, a third of them twice, up to four at once.
        for i in (1..events.len()).rev() {
            events.swap(i, rng.below(i + 1));
        }
        let repeats: Vec<_> = events.iter().step_by(3).cloned().collect();
        events.extend(repeats);
        let results: Vec<_> = futures::stream::iter(events)
            .map(|event| {
                let ingestor = Arc::clone(&ingestor);
                async move { ingest(&ingestor, &event).await }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let mut superseded = 0;
        for result in results {
            superseded += result.unwrap_or_else(|e| panic!("seed {seed}: an event failed: {e:?}")).superseded.len();
        }
        assert!(superseded > 0, "seed {seed}: the shuffle delivered some events after newer ones");

        let want = expected(&sandbox, &is_image).await;
        assert_eq!(indexed(&sandbox).await, want, "seed {seed}: the index equals the bucket's images");
        // No search hands out a deleted object or a non-image.
        let hits = sandbox.index.search(&SearchQuery::top(&[0.1; DIM], 50)).await.unwrap();
        for hit in hits {
            assert_eq!(want.get(&hit.record.key), Some(&hit.record.etag), "seed {seed}: {} is current", hit.record.key);
        }
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn racing_ingests_of_one_key_converge_on_the_newest_object() {
    let sandbox = Sandbox::new("race", DIM).await;
    let ingestor: Arc<Ingestor> = Arc::new(ingestor(&sandbox.s3, sandbox.index.clone()));
    let key = "race/photo.jpg";
    let mut running = Vec::new();
    let mut last = String::new();
    // Each version's event starts while the previous ones are still being ingested.
    for (n, (file, content_type)) in GOOD.iter().cycle().take(6).enumerate() {
        last = put(&sandbox, key, fixture_image(file), content_type).await;
        let event = s3_change_event(&sandbox.bucket, key, Some(&last), 1 + n as u64);
        let ingestor = Arc::clone(&ingestor);
        running.push(tokio::spawn(async move { ingest(&ingestor, &event).await }));
    }
    for task in running {
        task.await.unwrap().expect("every ingest succeeds");
    }
    let index = indexed(&sandbox).await;
    assert_eq!(index.get(key), Some(&last), "the record is the newest version: {index:?}");
    assert_eq!(index.len(), 1);
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn a_collection_refuses_a_model_other_than_the_one_that_made_it() {
    let stack = Stack::load();
    let collection = unique("t_model").replace('-', "_");
    let guard = stack.milvus(&collection, DIM).await;
    assert_eq!(guard.count().await.unwrap(), 0, "created for the tiny model");

    let tiny = tiny_model_identity();
    let same = stack.milvus_of_model(&collection, DIM, tiny.clone()).await;
    assert_eq!(same.count().await.unwrap(), 0, "the same model opens it");

    // Same dimension, other weights: the case the schema cannot catch.
    let other = ModelIdentity { name: "ViT-B-32__laion2b-s34b-b79k".into(), config_hash: tiny.config_hash.clone() };
    let err = stack.milvus_of_model(&collection, DIM, other.clone()).await.count().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, IndexError::Incompatible { .. }), "{err:?}");
    assert!(message.contains(&tiny.to_string()) && message.contains(&other.to_string()), "names both: {message}");
    let renamed_config = ModelIdentity { name: tiny.name.clone(), config_hash: "0000000000000000".into() };
    let err = stack.milvus_of_model(&collection, DIM, renamed_config).await.count().await.unwrap_err();
    assert!(matches!(err, IndexError::Incompatible { .. }), "another config of the same name: {err:?}");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn search_never_creates_the_collection_only_ingest_does() {
    let stack = Stack::load();
    let collection = unique("t_reader").replace('-', "_");
    let reader = stack.milvus_reader(&collection, DIM).await;
    let err = reader.count().await.unwrap_err();
    assert!(matches!(err, IndexError::Unavailable(_)) && err.to_string().contains("does not exist yet"), "{err}");
    // Still missing: the owner's first call creates it now, and the reader then uses it.
    let owner = stack.milvus(&collection, DIM).await;
    assert_eq!(owner.count().await.unwrap(), 0);
    let reader = stack.milvus_reader(&collection, DIM).await;
    assert_eq!(reader.count().await.unwrap(), 0);
}
