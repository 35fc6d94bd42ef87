//! Faults between the functions and their services: a [`FaultProxy`] sits between ingest and
//! Milvus Lite, another between ingest and SeaweedFS. Events are delivered as the platform does
//! (the bridge's redelivery, then its failure queue) to the ingest function's handler with a
//! Lambda deadline. While a fault lasts, events fail and are kept; once it stops, a replay of the
//! failure queue must leave every good image indexed exactly once and every deleted one gone.
//! Needs the local stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bridge::delivery::{replay, FailureQueue, Redelivery, ReplayReport};
use lambda_http::lambda_runtime::Context;
use shared::domain::ingest::Ingestor;
use shared::domain::record::{record_id, ImageHit, ImageRecord};
use shared::domain::retry::RetryPolicy;
use shared::events::S3Event;
use shared::index::{Deletion, IndexError, IndexedObject, IndexedVersion, SearchQuery, VectorIndex};
use shared::store::{ObjectStore, S3Store};
use tests::fault_proxy::{s3_error_response, Fault, FaultProxy};
use tests::{fixture_image, image_encoder, put, s3_change_event, Sandbox};

const DIM: usize = 64;
const IMAGES: [&str; 4] = ["baseline.jpg", "palette.png", "lossy.webp", "progressive.jpg"];

/// The proxies, the ingest function wired through them, and the platform's retries.
struct Rig {
    sandbox: Sandbox,
    s3_proxy: FaultProxy,
    milvus_proxy: Arc<FaultProxy>,
    ingestor: Arc<Ingestor>,
    /// Lambda kills an invocation at its timeout; ingest stops retrying a reserve before it.
    timeout: Duration,
    redelivery: Redelivery,
    queue: FailureQueue,
    _failed_dir: tempfile::TempDir,
    sequencer: std::sync::atomic::AtomicU64,
    /// Invocations that failed or were killed.
    failures: std::sync::atomic::AtomicUsize,
}

fn socket(uri: &str) -> SocketAddr {
    let authority = uri.split("://").nth(1).unwrap_or(uri).trim_end_matches('/');
    authority.parse().unwrap_or_else(|e| panic!("{uri} is not host:port: {e}"))
}

impl Rig {
    async fn new(name: &str, milvus_timeout: Duration, timeout: Duration) -> Rig {
        let sandbox = Sandbox::new(name, DIM).await;
        // Create the collection directly, so that the proxied client only uses it.
        assert_eq!(sandbox.index.count().await.unwrap(), 0);
        let milvus_proxy = Arc::new(FaultProxy::start(socket(sandbox.stack.get("MILVUS_URI"))).await.unwrap());
        let s3_proxy = FaultProxy::start(socket(sandbox.stack.get("AWS_ENDPOINT_URL_S3"))).await.unwrap();
        let index =
            sandbox.stack.milvus_via(&milvus_proxy.url("http"), sandbox.index.collection(), DIM, milvus_timeout).await;
        let sdk = sandbox.stack.aws().await.into_builder().endpoint_url(s3_proxy.url("http")).build();
        let store = S3Store::from_sdk_config(&sdk, &sandbox.stack.env().s3().unwrap());
        let ingestor = Ingestor {
            access: Default::default(),
            embedder: Arc::new(image_encoder()),
            store: Arc::new(store),
            index: Arc::new(index),
            config: shared::config::IngestConfig { max_object_bytes: 50 << 20, retry_attempts: 3 },
            retry: RetryPolicy::new(3),
        };
        let failed_dir = tempfile::tempdir().unwrap();
        Rig {
            sandbox,
            s3_proxy,
            milvus_proxy,
            ingestor: Arc::new(ingestor),
            timeout,
            redelivery: Redelivery { attempts: 2, first_delay: Duration::from_millis(200) },
            queue: FailureQueue::new(failed_dir.path().join("failed")),
            _failed_dir: failed_dir,
            sequencer: 1.into(),
            failures: 0.into(),
        }
    }

    /// One invocation of the ingest handler with a Lambda deadline, killed at the timeout as Lambda does.
    async fn invoke(&self, event: serde_json::Value) -> Result<(), String> {
        let event: S3Event = serde_json::from_value(event).map_err(|e| e.to_string())?;
        let mut context = Context::default();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        context.deadline = (now + self.timeout).as_millis() as u64;
        let outcome =
            tokio::time::timeout(self.timeout, shared::events::s3::ingest_within(&self.ingestor, &event, &context))
                .await;
        let result = match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(shared::domain::describe(&e)),
            Err(_) => Err("Task timed out".into()),
        };
        if result.is_err() {
            self.failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }

    /// Delivers an event as the platform does: redelivery, then the failure queue.
    async fn deliver(&self, event: S3Event) {
        let event = serde_json::to_value(event).unwrap();
        if let Err(e) = self.redelivery.deliver(|| self.invoke(event.clone())).await {
            self.queue.park(&event, &e).unwrap();
        }
    }

    /// Uploads the fixture images under `prefix` and returns each key with its event.
    async fn upload(&self, prefix: &str) -> Vec<(String, S3Event)> {
        let mut uploaded = Vec::new();
        for file in IMAGES {
            let key = format!("{prefix}{file}");
            let etag =
                put(&self.sandbox.s3, &self.sandbox.bucket, &key, fixture_image(file), "application/octet-stream")
                    .await;
            uploaded.push((key.clone(), self.event(&key, Some(&etag))));
        }
        uploaded
    }

    fn event(&self, key: &str, etag: Option<&str>) -> S3Event {
        let n = self.sequencer.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        s3_change_event(&self.sandbox.bucket, key, etag, n)
    }

    /// One object indexed and then deleted from the bucket: its removal event, for delivery during a fault.
    async fn deleted_object(&self) -> S3Event {
        let key = "gone/old.jpg";
        let etag = put(&self.sandbox.s3, &self.sandbox.bucket, key, fixture_image("baseline.jpg"), "image/jpeg").await;
        self.invoke(serde_json::to_value(self.event(key, Some(&etag))).unwrap()).await.unwrap();
        assert!(self.sandbox.index.etags(&[record_id(&self.sandbox.bucket, key)]).await.unwrap().len() == 1);
        self.sandbox.s3.client().delete_object().bucket(&self.sandbox.bucket).key(key).send().await.unwrap();
        self.event(key, None)
    }

    async fn replay(&self) -> ReplayReport {
        replay(&self.queue, &self.redelivery, |event| self.invoke(event)).await.unwrap()
    }

    fn parked(&self) -> usize {
        self.queue.parked().unwrap().len()
    }

    /// The index holds exactly the bucket's objects, by key and ETag, each once.
    async fn assert_index_equals_bucket(&self) {
        let (bucket, index) = (&self.sandbox.bucket, &self.sandbox.index);
        let mut listed: Vec<(String, String)> =
            self.sandbox.s3.list(bucket, "").await.unwrap().into_iter().map(|o| (o.key, o.etag)).collect();
        let mut indexed: Vec<(String, String)> =
            index.list(bucket, "").await.unwrap().into_iter().map(|o| (o.key, o.etag)).collect();
        listed.sort();
        indexed.sort();
        assert_eq!(indexed, listed, "the index equals the bucket");
        assert_eq!(index.count().await.unwrap(), listed.len() as u64, "each object once");
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn milvus_going_down_mid_batch() {
    let rig = Rig::new("fault-milvus-down", Duration::from_secs(2), Duration::from_secs(30)).await;
    let removal = rig.deleted_object().await;
    let uploads = rig.upload("batch/").await;
    // One event with every record, so the outage falls inside one batch: the lookup passes, then
    // Milvus goes away while the images download and embed.
    let mut event = uploads[0].1.clone();
    event.records = uploads.iter().flat_map(|(_, e)| e.records.clone()).collect();
    rig.milvus_proxy.set(Fault::Delay(Duration::from_millis(300)));
    let delivery = rig.deliver(event);
    let outage = async {
        tokio::time::sleep(Duration::from_millis(450)).await;
        rig.milvus_proxy.set(Fault::Reset);
    };
    tokio::join!(delivery, outage);
    rig.deliver(removal).await;
    assert_eq!(rig.parked(), 2, "both events failed and were kept");

    rig.milvus_proxy.clear();
    assert_eq!(rig.replay().await, ReplayReport { delivered: 2, still_failing: 0 });
    rig.assert_index_equals_bucket().await;
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn milvus_slower_than_the_rpc_timeout() {
    let rig = Rig::new("fault-milvus-slow", Duration::from_secs(1), Duration::from_secs(30)).await;
    let uploads = rig.upload("slow/").await;
    rig.milvus_proxy.set(Fault::Delay(Duration::from_millis(1_500)));
    for (_, event) in uploads.iter().take(2) {
        rig.deliver(event.clone()).await;
    }
    assert_eq!(rig.parked(), 2);
    rig.milvus_proxy.clear();
    for (_, event) in uploads.iter().skip(2) {
        rig.deliver(event.clone()).await;
    }
    assert_eq!(rig.replay().await, ReplayReport { delivered: 2, still_failing: 0 });
    rig.assert_index_equals_bucket().await;
}

/// Milvus through the proxy, except that the first upsert loses its response (and from then on
/// every response is lost until the test clears the fault): the write is applied, the caller
/// cannot know.
struct LoseUpsertResponse {
    inner: Arc<dyn VectorIndex>,
    proxy: Arc<FaultProxy>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl VectorIndex for LoseUpsertResponse {
    async fn upsert(&self, records: &[ImageRecord]) -> Result<(), IndexError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.proxy.set(Fault::LoseResponses);
        }
        self.inner.upsert(records).await
    }
    async fn delete_if(&self, deletions: &[Deletion]) -> Result<(), IndexError> {
        self.inner.delete_if(deletions).await
    }
    async fn versions(&self, ids: &[String]) -> Result<std::collections::HashMap<String, IndexedVersion>, IndexError> {
        self.inner.versions(ids).await
    }
    async fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<ImageHit>, IndexError> {
        self.inner.search(query).await
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

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn an_upsert_applied_but_its_response_lost() {
    let rig = Rig::new("fault-lost-reply", Duration::from_secs(2), Duration::from_secs(30)).await;
    let uploads = rig.upload("lost/").await;
    // One object first: the client then knows the collection's schema, so the armed upsert's
    // request is the next thing it sends (not a schema lookup whose answer would be lost instead).
    rig.deliver(uploads[1].1.clone()).await;
    let lossy = LoseUpsertResponse {
        inner: Arc::clone(&rig.ingestor.index),
        proxy: Arc::clone(&rig.milvus_proxy),
        armed: true.into(),
    };
    let ingestor = Ingestor {
        access: Default::default(),
        embedder: Arc::clone(&rig.ingestor.embedder),
        store: Arc::clone(&rig.ingestor.store),
        index: Arc::new(lossy),
        config: rig.ingestor.config.clone(),
        retry: RetryPolicy::new(2),
    };
    let (key, event) = &uploads[0];
    let err = ingestor.apply(shared::events::s3::changes_from_event(event)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // The write got through although its caller saw a failure.
    let id = record_id(&rig.sandbox.bucket, key);
    let mut applied = false;
    for _ in 0..50 {
        if rig.sandbox.index.etags(std::slice::from_ref(&id)).await.unwrap().contains_key(&id) {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(applied, "Milvus applied the upsert whose response was lost");
    rig.queue.park(&serde_json::to_value(event).unwrap(), &err.to_string()).unwrap();

    rig.milvus_proxy.clear();
    for (_, event) in &uploads[2..] {
        rig.deliver(event.clone()).await;
    }
    assert_eq!(rig.replay().await, ReplayReport { delivered: 1, still_failing: 0 });
    rig.assert_index_equals_bucket().await;
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn s3_reset_mid_body_is_retried_never_skipped_as_corrupt() {
    let rig = Rig::new("fault-s3-reset", Duration::from_secs(5), Duration::from_secs(30)).await;
    let uploads = rig.upload("cut/").await;
    // Every image is larger than this: each download is cut inside its body.
    rig.s3_proxy.set(Fault::CloseMidBody { after: 1_500 });
    for (_, event) in &uploads {
        rig.deliver(event.clone()).await;
    }
    assert_eq!(rig.parked(), uploads.len(), "a cut body fails the event; it is not a corrupt image");
    rig.s3_proxy.clear();
    assert_eq!(rig.replay().await.delivered, uploads.len());
    rig.assert_index_equals_bucket().await;
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn s3_answering_503_slow_down() {
    let rig = Rig::new("fault-s3-503", Duration::from_secs(5), Duration::from_secs(30)).await;
    let removal = rig.deleted_object().await;
    let uploads = rig.upload("busy/").await;
    let slow_down = s3_error_response(503, "Slow Down", "SlowDown", "Please reduce your request rate.");
    rig.s3_proxy.set(Fault::Respond(slow_down));
    rig.deliver(uploads[0].1.clone()).await;
    rig.deliver(removal).await;
    assert_eq!(rig.parked(), 2);
    rig.s3_proxy.clear();
    for (_, event) in &uploads[1..] {
        rig.deliver(event.clone()).await;
    }
    assert_eq!(rig.replay().await, ReplayReport { delivered: 2, still_failing: 0 });
    rig.assert_index_equals_bucket().await;
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn s3_refusing_an_expired_token() {
    let rig = Rig::new("fault-s3-token", Duration::from_secs(5), Duration::from_secs(30)).await;
    let uploads = rig.upload("token/").await;
    let expired = s3_error_response(400, "Bad Request", "ExpiredToken", "The provided token has expired.");
    let denied = s3_error_response(403, "Forbidden", "ExpiredToken", "The provided token has expired.");
    rig.s3_proxy.set(Fault::Respond(expired));
    rig.deliver(uploads[0].1.clone()).await;
    rig.s3_proxy.set(Fault::Respond(denied));
    rig.deliver(uploads[1].1.clone()).await;
    assert_eq!(rig.parked(), 2, "an expired token is not a missing object: nothing is skipped");
    assert!(rig.sandbox.index.count().await.unwrap() == 0);
    rig.s3_proxy.clear();
    for (_, event) in &uploads[2..] {
        rig.deliver(event.clone()).await;
    }
    assert_eq!(rig.replay().await.delivered, 2);
    rig.assert_index_equals_bucket().await;
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn the_lambda_deadline_reached_mid_batch() {
    // Every Milvus exchange takes 0.6 s and the function has 2 s: each invocation is killed
    // somewhere inside its batch (after the lookup, during or after the upsert).
    let rig = Rig::new("fault-deadline", Duration::from_secs(5), Duration::from_secs(2)).await;
    let removal = rig.deleted_object().await;
    let uploads = rig.upload("late/").await;
    let mut event = uploads[0].1.clone();
    event.records = uploads.iter().flat_map(|(_, e)| e.records.clone()).collect();
    rig.milvus_proxy.set(Fault::Delay(Duration::from_millis(600)));
    rig.deliver(event).await;
    let killed = rig.failures.load(std::sync::atomic::Ordering::SeqCst);
    assert!(killed >= 1, "the first invocation ran out of time");
    // A redelivery may finish in time (what the killed attempt wrote is then unchanged) or be
    // killed and kept, and so may the removal; either way each must end applied.
    rig.deliver(removal).await;
    let parked = rig.parked();
    rig.milvus_proxy.clear();
    assert_eq!(rig.replay().await, ReplayReport { delivered: parked, still_failing: 0 });
    rig.assert_index_equals_bucket().await;
}
