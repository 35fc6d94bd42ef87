//! Flushing: Milvus Lite turns its in-memory table into an indexed segment, and no record may be
//! lost or duplicated on the way, whether it was written before or after the flush, overwritten or
//! deleted on either side, or read while the flush runs. Also the idle flush. Needs the local stack
//! (its Milvus Lite, whose data folder shows the segments).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::domain::record::{record_id, ImageRecord};
use shared::index::{MilvusIndex, SearchQuery, VectorIndex};
use tests::{random_unit, unique, Stack};

const DIM: usize = 16;
const BUCKET: &str = "flush-test";
/// Keys in use stay under HNSW's search breadth (ef = 64), so a search of the top 64 returns
/// every record of the collection, whatever segment holds it.
const KEYS: usize = 60;

fn key(i: usize) -> String {
    format!("k{i:02}.jpg")
}

fn record(i: usize, etag: &str) -> ImageRecord {
    ImageRecord {
        id: record_id(BUCKET, &key(i)),
        bucket: BUCKET.into(),
        key: key(i),
        etag: etag.into(),
        content_type: "image/jpeg".into(),
        vector: random_unit(i as u64, DIM),
        ..Default::default()
    }
}

/// The writes of one step and what the collection must hold afterwards (key → ETag).
struct Model {
    expected: BTreeMap<String, String>,
}

impl Model {
    async fn upsert(&mut self, index: &MilvusIndex, keys: impl IntoIterator<Item = usize>, etag: &str) {
        let records: Vec<ImageRecord> = keys.into_iter().map(|i| record(i, etag)).collect();
        index.upsert(&records).await.expect("upsert");
        for r in records {
            self.expected.insert(r.key, r.etag);
        }
    }

    async fn delete(&mut self, index: &MilvusIndex, keys: impl IntoIterator<Item = usize>) {
        let keys: Vec<usize> = keys.into_iter().collect();
        index.delete(&keys.iter().map(|&i| record_id(BUCKET, &key(i))).collect::<Vec<_>>()).await.expect("delete");
        for i in keys {
            self.expected.remove(&key(i));
        }
    }
}

/// What `list` and a search over everything return, each as key → ETags (a key twice is a duplicate).
async fn read(index: &MilvusIndex) -> [BTreeMap<String, Vec<String>>; 2] {
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in index.list(BUCKET, "").await.expect("list") {
        listed.entry(o.key).or_default().push(o.etag);
    }
    let probe = record(1000, "").vector;
    let mut searched: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for hit in index.search(&SearchQuery::top(&probe, 64)).await.expect("search") {
        searched.entry(hit.record.key).or_default().push(hit.record.etag);
    }
    [listed, searched]
}

/// Every record once, with its latest ETag, in both reads; the mismatches otherwise.
fn mismatches(reads: &[BTreeMap<String, Vec<String>>; 2], expected: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    for (how, got) in ["list", "search"].iter().zip(reads) {
        for (key, etag) in expected {
            match got.get(key).map(Vec::as_slice) {
                Some([one]) if one == etag => {}
                other => found.push(format!("{how}: {key} should be {etag}, read {other:?}")),
            }
        }
        for (key, etags) in got {
            if !expected.contains_key(key) {
                found.push(format!("{how}: {key} should be gone, read {etags:?}"));
            }
        }
    }
    found
}

/// Flushes while readers read through the same index, then checks every read taken meanwhile and
/// one after. Returns how many reads overlapped the flush.
async fn flush_while_reading(index: &Arc<MilvusIndex>, model: &Model, step: &str) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (index, stop, expected) = (index.clone(), stop.clone(), model.expected.clone());
            tokio::spawn(async move {
                let (mut reads, mut wrong) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) || reads == 0 {
                    wrong.extend(mismatches(&read(&index).await, &expected));
                    reads += 1;
                }
                (reads, wrong)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    index.flush().await.expect("flush");
    stop.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for reader in readers {
        let (n, wrong) = reader.await.expect("reader");
        assert!(wrong.is_empty(), "{step}: reads during the flush: {wrong:#?}");
        reads += n;
    }
    let after = mismatches(&read(index).await, &model.expected);
    assert!(after.is_empty(), "{step}: reads after the flush: {after:#?}");
    reads
}

/// The data files (segments) Milvus Lite has written for `collection`, in the stack's data folder.
fn segments(collection: &str) -> usize {
    let partitions: PathBuf = Stack::env_path()
        .parent()
        .expect("stack.env is in .local/")
        .join("milvus/collections")
        .join(collection)
        .join("partitions");
    let Ok(entries) = std::fs::read_dir(&partitions) else { return 0 };
    entries
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path().join("data")).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "parquet"))
        .count()
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn no_record_is_lost_or_duplicated_across_flushes() {
    let stack = Stack::load();
    let collection = unique("t_flush");
    // No idle flush here: every flush is one this test makes, between known writes.
    let index = stack.milvus_configured(&collection, DIM, |c| c.idle_flush = None).await;
    let mut model = Model { expected: BTreeMap::new() };

    // Before the first flush: everything in Lite's in-memory table.
    model.upsert(&index, 0..40, "v1").await;
    model.upsert(&index, 0..8, "v2").await;
    model.delete(&index, 8..12).await;
    let before = mismatches(&read(&index).await, &model.expected);
    assert!(before.is_empty(), "before any flush: {before:#?}");
    assert!(index.flushes(), "the stack's Milvus Lite is flushed (MILVUS_FLUSH=auto)");
    assert_eq!(segments(&collection), 0, "nothing is flushed before the first flush");
    let mut overlapping = flush_while_reading(&index, &model, "first flush").await;
    assert!(segments(&collection) > 0, "the flush wrote a segment");

    // After it: overwrites and deletes of flushed records, new records, a deleted key written again;
    // then more flushes, each over a segment and deletes of the last.
    model.upsert(&index, 12..16, "v3").await;
    model.delete(&index, 16..20).await;
    model.upsert(&index, 40..48, "v1").await;
    model.upsert(&index, 8..10, "v4").await;
    let after = mismatches(&read(&index).await, &model.expected);
    assert!(after.is_empty(), "after the first flush: {after:#?}");
    overlapping += flush_while_reading(&index, &model, "second flush").await;
    for round in 0..6 {
        let at = 48 + 2 * round;
        model.upsert(&index, [round, at, at + 1], &format!("r{round}")).await;
        model.delete(&index, [20 + round]).await;
        overlapping += flush_while_reading(&index, &model, &format!("flush {}", round + 3)).await;
    }
    assert!(model.expected.len() <= KEYS);
    assert!(overlapping >= 8, "reads overlapped the flushes ({overlapping})");

    // Nothing to flush: a no-op that leaves everything as it was.
    index.flush().await.expect("flush");
    let last = mismatches(&read(&index).await, &model.expected);
    assert!(last.is_empty(), "after an empty flush: {last:#?}");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn writes_are_flushed_once_they_pause() {
    let stack = Stack::load();
    let collection = unique("t_idle_flush");
    let idle = Duration::from_secs(2);
    let index = stack.milvus_configured(&collection, DIM, |c| c.idle_flush = Some(idle)).await;
    let mut model = Model { expected: BTreeMap::new() };
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        model.upsert(&index, [i], "v1").await;
    }
    let paused = Instant::now();
    assert_eq!(segments(&collection), 0, "no flush while the writes keep coming");
    while segments(&collection) == 0 {
        assert!(
            paused.elapsed() < idle + Duration::from_secs(10),
            "no flush {:?} after the writes paused",
            paused.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        paused.elapsed() >= idle - Duration::from_millis(100),
        "flushed {:?} after the last write",
        paused.elapsed()
    );
    let after = mismatches(&read(&index).await, &model.expected);
    assert!(after.is_empty(), "after the idle flush: {after:#?}");
}
