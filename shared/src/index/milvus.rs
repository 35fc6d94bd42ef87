//! The Milvus adapter (milvus-sdk-rust `ClientV2`), for Milvus 2.6+/3.x, Zilliz Cloud and Milvus Lite 3.2.
//!
//! The client connects on first use and, in the same step, makes sure the collection exists
//! with this model's dimension and a cosine index, and is loaded. A failed attempt is retried
//! on the next call, so a container started while Milvus was down recovers by itself. Containers
//! that start together may race to create the collection: the losers check what the winner made.
//!
//! The collection records which model made its vectors ([`ModelIdentity`], in two collection
//! properties) and refuses another model, which would mix vectors of two spaces.
//!
//! Milvus Lite gaps handled here (see docs/milvus.md): `create_index` is sent without waiting
//! (`sync(false)`), deletes use a filter expression instead of `ids(..)` (which the SDK sends
//! as a filter template Lite cannot parse), and `has_collection` replaces `list_collections`.
//!
//! Milvus Lite indexes only what it has flushed and searches the rest by brute force, so on Lite
//! the adapter flushes what it wrote: when a bulk run ends ([`VectorIndex::flush`]) and once its
//! writes pause ([`Flushing`]). Milvus 2.6+ and Zilliz Cloud flush by themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use milvus::v2::error::Error as MilvusError;
use milvus::v2::prelude::*;
use serde_json::json;
use std::result::Result;
use tokio::sync::{watch, OnceCell, RwLock};
use tonic::Code;

use super::{Deletion, IndexError, IndexedObject, IndexedVersion, SearchQuery, VectorIndex};
use crate::config::{FlushMode, MilvusConfig};
use crate::domain::record::{ImageHit, ImageRecord, SearchFilter, Sequencer};
use crate::domain::scope::MAX_OWNER_BYTES;
use crate::embedder::ModelIdentity;

const VECTOR: &str = "vector";
const OUTPUT_FIELDS: [&str; 12] = [
    "id",
    "bucket",
    "key",
    "owner",
    "size",
    "etag",
    "content_type",
    "last_modified",
    "width",
    "height",
    "indexed_at",
    "sequencer",
];

/// The collection properties that record the model (Milvus Lite keeps properties, not descriptions).
const MODEL_PROPERTY: &str = "clip_search.model";
const MODEL_CONFIG_PROPERTY: &str = "clip_search.model_config_sha256";
/// The collection property that records `OWNER_KEY_TEMPLATE` ("" without one): the owners stored
/// by ingest mean what search filters by only if both read keys the same way.
const OWNER_TEMPLATE_PROPERTY: &str = "clip_search.owner_key_template";

/// What a collection must fit: the model's embedding size and identity, and how keys map to owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSpec {
    pub dim: usize,
    pub model: ModelIdentity,
    /// `OWNER_KEY_TEMPLATE` as configured; `None` without one.
    pub owner_template: Option<String>,
}

/// Who owns the collection's schema. Ingest (and the CLI's bulk commands) create the collection
/// and its index; search only uses them, so its Milvus credential can be read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaRole {
    Owner,
    Reader,
}

pub struct MilvusIndex {
    connect: ConnectConfig,
    collection: String,
    spec: CollectionSpec,
    role: SchemaRole,
    client: OnceCell<ClientV2>,
    flushing: Flushing,
}

/// The flush policy (docs/milvus.md#flushing). Milvus Lite keeps writes in an in-memory table
/// that every search scans by brute force, in Python, until a flush turns it into a segment with
/// its own index; Milvus 2.6+ and Zilliz Cloud flush by themselves, and frequent flushes there
/// only make small segments. So with [`FlushMode::Auto`] this flushes only on Milvus Lite: when a
/// bulk run ends, and once this process's writes have paused for `idle`.
struct Flushing {
    mode: FlushMode,
    idle: Option<Duration>,
    timeout: Duration,
    /// `mode` with `Auto` resolved, decided on connecting (it asks the server what it is).
    enabled: OnceLock<bool>,
    shared: Arc<FlushGate>,
    /// The time of this process's last write, which the idle-flush task watches. The task ends
    /// when this is dropped, with the index.
    last_write: watch::Sender<Instant>,
    idle_task: Once,
}

/// What the idle-flush task shares with the index.
struct FlushGate {
    /// Every call holds it shared, a flush exclusively. Milvus Lite swaps its in-memory table out
    /// before it takes its own lock, so a read that races a flush can miss the rows being flushed,
    /// and a write can be applied to the table just flushed and lost; within this process no
    /// call overlaps a flush.
    gate: RwLock<()>,
    /// Something was written since the last flush began.
    dirty: AtomicBool,
}

impl FlushGate {
    /// Flushes the collection if this process wrote to it since the last flush.
    async fn flush(&self, client: &ClientV2, collection: &str, timeout: Duration) -> Result<(), IndexError> {
        let _exclusive = self.gate.write().await;
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let request = FlushRequest::builder()
            .collection_names([collection])
            // Milvus Lite flushes before it answers; real Milvus is waited for up to the call timeout.
            .wait_flushed_ms(timeout.as_millis().max(1) as i64)
            .build()
            .map_err(classify)?;
        let started = Instant::now();
        match client.flush(request).await {
            Ok(_) => {
                tracing::debug!(collection, ms = started.elapsed().as_millis() as u64, "flushed");
                Ok(())
            }
            Err(e) => {
                self.dirty.store(true, Ordering::SeqCst);
                Err(classify(e))
            }
        }
    }
}

/// Flushes once `idle` passes without a write (`writes` carries the time of the last one); ends
/// when the index that sends them is dropped.
async fn flush_when_idle(
    client: ClientV2,
    collection: String,
    gate: Arc<FlushGate>,
    mut writes: watch::Receiver<Instant>,
    idle: Duration,
    timeout: Duration,
) {
    loop {
        loop {
            let quiet_at = *writes.borrow_and_update() + idle;
            match tokio::time::timeout_at(quiet_at.into(), writes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
        if let Err(e) = gate.flush(&client, &collection, timeout).await {
            tracing::warn!(error = %e, collection, "idle flush failed; searches scan the unflushed rows until the next one");
        }
        if writes.changed().await.is_err() {
            return;
        }
    }
}

/// Whether the server is Milvus Lite, which names itself `milvus_lite-VERSION`.
async fn is_milvus_lite(client: &ClientV2) -> bool {
    let Ok(request) = GetServerVersionRequest::builder().build() else { return false };
    match client.server_version(request).await {
        Ok(version) => version.version().starts_with("milvus_lite"),
        Err(e) => {
            tracing::debug!(error = %e, "could not ask Milvus for its version; taking it for real Milvus");
            false
        }
    }
}

impl MilvusIndex {
    /// Prepares the client; nothing is sent until the first call. An [`SchemaRole::Owner`] creates
    /// a missing collection for `spec`; a [`SchemaRole::Reader`] never creates or alters one, and
    /// reports a missing one as unavailable. Both refuse a collection that does not fit `spec`.
    pub async fn new(
        config: &MilvusConfig,
        token: Option<String>,
        spec: CollectionSpec,
        role: SchemaRole,
    ) -> Result<Self, IndexError> {
        let mut connect = ConnectConfig::new()
            .uri(config.uri.clone())
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .rpc_timeout(config.timeout)
            .retry(RetryConfig::new().max_attempts(2).max_retry_timeout(config.timeout));
        if let Some(token) = token {
            connect = connect.token(token);
        }
        let flushing = Flushing {
            mode: config.flush,
            idle: config.idle_flush,
            timeout: config.timeout,
            enabled: OnceLock::new(),
            shared: Arc::new(FlushGate { gate: RwLock::new(()), dirty: AtomicBool::new(false) }),
            last_write: watch::channel(Instant::now()).0,
            idle_task: Once::new(),
        };
        Ok(MilvusIndex {
            connect,
            collection: config.collection.clone(),
            spec,
            role,
            client: OnceCell::new(),
            flushing,
        })
    }

    /// Connects and checks the collection now, so the first request does not pay for it. A failure
    /// is only logged: the connection is tried again on the next call, where errors are reported.
    pub async fn warm_up(&self) {
        if let Err(e) = self.client().await {
            tracing::warn!(error = %e, collection = %self.collection, "Milvus is not reachable yet; will retry on the first request");
        }
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Drops the collection and everything in it (tests and tools; the functions never call this).
    pub async fn drop_collection(&self) -> Result<(), IndexError> {
        let client = ClientV2::new(&self.connect).await.map_err(classify)?;
        let request =
            DropCollectionRequest::builder().collection_name(self.collection.as_str()).build().map_err(classify)?;
        client.drop_collection(request).await.map_err(classify)?;
        Ok(())
    }

    async fn client(&self) -> Result<&ClientV2, IndexError> {
        self.client
            .get_or_try_init(|| async {
                let client = ClientV2::new(&self.connect).await.map_err(classify)?;
                self.ensure_collection(&client).await?;
                // A reader never writes, so it has nothing to flush (and need not ask the server what it is).
                let enabled = match (self.role, self.flushing.mode) {
                    (SchemaRole::Reader, _) | (_, FlushMode::Off) => false,
                    (_, FlushMode::On) => true,
                    (_, FlushMode::Auto) => is_milvus_lite(&client).await,
                };
                let _ = self.flushing.enabled.set(enabled);
                Ok(client)
            })
            .await
    }

    /// Whether this index flushes (known once connected).
    pub fn flushes(&self) -> bool {
        self.flushing.enabled.get().copied().unwrap_or(false)
    }

    /// Notes a write (called while the write holds the gate, so a flush that starts after it sees it).
    fn wrote(&self, client: &ClientV2) {
        if !self.flushes() {
            return;
        }
        self.flushing.shared.dirty.store(true, Ordering::SeqCst);
        let Some(idle) = self.flushing.idle else { return };
        self.flushing.last_write.send_replace(Instant::now());
        self.flushing.idle_task.call_once(|| {
            tokio::spawn(flush_when_idle(
                client.clone(),
                self.collection.clone(),
                self.flushing.shared.clone(),
                self.flushing.last_write.subscribe(),
                idle,
                self.flushing.timeout,
            ));
        });
    }

    /// Creates the collection if it is missing; refuses one with another dimension or metric.
    async fn ensure_collection(&self, client: &ClientV2) -> Result<(), IndexError> {
        let name = self.collection.as_str();
        let exists = self.has_collection(client).await?;
        if !exists && self.role == SchemaRole::Reader {
            return Err(IndexError::Unavailable(format!(
                "the collection {name:?} does not exist yet; ingest creates it with the first upload \
                 (or run `clip-search backfill`)"
            )));
        }
        if !exists {
            let request = CreateCollectionRequest::builder()
                .collection_name(name)
                .schema(self.schema())
                .properties(collection_properties(&self.spec))
                .build()
                .map_err(classify)?;
            match client.create_collection(request).await {
                Ok(_) => tracing::info!(collection = name, dim = self.spec.dim, "created the Milvus collection"),
                // Another container created it at the same moment (Milvus words this in several ways,
                // Milvus Lite as a file error): if it exists now, the checks below decide.
                Err(e) if self.appears_soon(client).await? => {
                    tracing::debug!(collection = name, error = %e, "the collection was created concurrently")
                }
                Err(e) => return Err(classify(e)),
            }
        }
        let description = client
            .describe_collection(DescribeCollectionRequest::builder().collection_name(name).build().map_err(classify)?)
            .await
            .map_err(classify)?;
        let schema = description.description().get_schema();
        let properties = description.description().get_properties();
        let model = &self.spec.model;
        match model_of(properties) {
            Some(recorded) if recorded == *model => {}
            Some(recorded) => {
                return Err(self.incompatible(format!(
                    "its vectors were made by the model {recorded}, not by {}; embeddings of two models \
                     cannot be compared: use another MILVUS_COLLECTION for this model, or the same model \
                     (MODEL_NAME sets the name recorded)",
                    model
                )))
            }
            None => {
                return Err(self.incompatible(format!(
                    "it does not record which model made its vectors (made by an older version); \
                     use another MILVUS_COLLECTION for {} and backfill it",
                    model
                )))
            }
        }
        let recorded = properties.get(OWNER_TEMPLATE_PROPERTY).map(String::as_str).unwrap_or_default();
        let ours = self.spec.owner_template.as_deref().unwrap_or_default();
        // A reader without a template serves everyone's images (no isolation): any template fits it.
        let reads_all = self.role == SchemaRole::Reader && self.spec.owner_template.is_none();
        if recorded != ours && !reads_all {
            return Err(self.incompatible(format!(
                "its owners were stored with OWNER_KEY_TEMPLATE={recorded:?}, not {ours:?}; owners derived \
                 another way would give users the wrong images: set the same template, or use another \
                 MILVUS_COLLECTION and backfill it"
            )));
        }
        let fields = schema.get_fields();
        let vector = fields
            .iter()
            .find(|f| f.get_name() == VECTOR)
            .ok_or_else(|| self.incompatible(format!("it has no `{VECTOR}` field; use another MILVUS_COLLECTION")))?;
        if vector.get_dimension() as usize != self.spec.dim {
            return Err(self.incompatible(format!(
                "its vectors have dimension {} but the model's embeddings have dimension {}; use another MILVUS_COLLECTION for this model",
                vector.get_dimension(),
                self.spec.dim
            )));
        }
        for field in OUTPUT_FIELDS {
            if !fields.iter().any(|f| f.get_name() == field) {
                return Err(self.incompatible(format!("it has no `{field}` field; use another MILVUS_COLLECTION")));
            }
        }
        if !self.check_vector_index(client).await? {
            if self.role == SchemaRole::Reader {
                return Err(IndexError::Unavailable(format!(
                    "the collection {name:?} has no vector index yet; ingest creates it"
                )));
            }
            if let Err(e) = self.create_index(client).await {
                // Another container created it at the same moment: keep it if its metric is right.
                if !self.check_vector_index(client).await? {
                    return Err(e);
                }
                tracing::debug!(collection = name, error = %e, "the vector index was created concurrently");
            }
        }
        let load = LoadCollectionRequest::builder().collection_name(name).build().map_err(classify)?;
        match client.load_collection(load).await {
            Ok(_) => {}
            // A read-only credential may not load; the owner keeps it loaded, and a search of an
            // unloaded collection fails with Milvus's own message.
            Err(e) if self.role == SchemaRole::Reader => {
                tracing::warn!(collection = name, error = %e, "could not load the collection; relying on ingest to")
            }
            Err(e) => return Err(classify(e)),
        }
        Ok(())
    }

    /// The collection exists but cannot serve this model: `problem` says why.
    fn incompatible(&self, problem: String) -> IndexError {
        IndexError::Incompatible { collection: self.collection.clone(), problem }
    }

    async fn has_collection(&self, client: &ClientV2) -> Result<bool, IndexError> {
        let request =
            HasCollectionRequest::builder().collection_name(self.collection.as_str()).build().map_err(classify)?;
        Ok(client.has_collection(request).await.map_err(classify)?.exists())
    }

    /// Whether the collection shows up within a second: a concurrent creator that won the race
    /// may not have registered it yet when our own create fails.
    async fn appears_soon(&self, client: &ClientV2) -> Result<bool, IndexError> {
        for _ in 0..10 {
            if self.has_collection(client).await? {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(false)
    }

    /// Whether the vector field has an index; refuses one that does not use the cosine metric.
    async fn check_vector_index(&self, client: &ClientV2) -> Result<bool, IndexError> {
        let name = self.collection.as_str();
        let request =
            DescribeIndexRequest::builder().collection_name(name).field_name(VECTOR).build().map_err(classify)?;
        // Milvus answers "index not found" with an error: treat any error as "no index yet".
        let Ok(indexes) = client.describe_index(request).await else { return Ok(false) };
        let Some(index) = indexes.indexes().first() else { return Ok(false) };
        let metric = index.get_metric_type();
        if metric != MetricType::Cosine {
            return Err(self.incompatible(format!(
                "its vector index uses the {metric:?} metric but search needs COSINE; use another MILVUS_COLLECTION"
            )));
        }
        Ok(true)
    }

    fn schema(&self) -> CollectionSchema {
        let text = |name: &str, len: u32| FieldSchema::new().name(name).data_type(DataType::VarChar).max_length(len);
        let int = |name: &str| FieldSchema::new().name(name).data_type(DataType::Int64);
        CollectionSchema::new()
            .description("CLIP image embeddings, one entity per S3 object")
            .enable_dynamic_field(false)
            .add_field(text("id", 64).primary_key(true).auto_id(false).description("sha256(bucket, key)"))
            .add_field(text("bucket", 63))
            .add_field(text("key", 1024))
            // The partition key groups each owner's records, so a per-user search reads only theirs.
            .add_field(text("owner", MAX_OWNER_BYTES as u32).partition_key(true).description("from OWNER_KEY_TEMPLATE"))
            .add_field(int("size"))
            .add_field(text("etag", 128))
            .add_field(text("content_type", 255))
            .add_field(int("last_modified").description("ms since the epoch"))
            .add_field(int("width"))
            .add_field(int("height"))
            .add_field(int("indexed_at").description("ms since the epoch"))
            .add_field(text("sequencer", Sequencer::WIDTH as u32).description("S3 event order; empty when unknown"))
            .add_field(FieldSchema::new().name(VECTOR).data_type(DataType::FloatVector).dimension(self.spec.dim as u32))
    }

    async fn create_index(&self, client: &ClientV2) -> Result<(), IndexError> {
        let params =
            HashMap::from([("M".to_string(), "16".to_string()), ("efConstruction".to_string(), "200".to_string())]);
        let index = IndexParam::new()
            .field_name(VECTOR)
            .index_type(IndexType::Hnsw)
            .metric_type(MetricType::Cosine)
            .extra_params(params);
        // Not waiting for the build: Milvus Lite lacks the RPC, and load_collection waits on real Milvus anyway.
        let request = CreateIndexRequest::builder()
            .collection_name(self.collection.as_str())
            .index_param(index)
            .sync(false)
            .build()
            .map_err(classify)?;
        client.create_index(request).await.map_err(classify)?;
        Ok(())
    }

    fn id_filter(ids: &[String]) -> String {
        let quoted: Vec<String> = ids.iter().map(|id| format!("\"{}\"", escape(id))).collect();
        format!("id in [{}]", quoted.join(", "))
    }
}

/// The collection properties that record the model and the owner template of `spec`.
fn collection_properties(spec: &CollectionSpec) -> HashMap<String, String> {
    HashMap::from([
        (MODEL_PROPERTY.to_string(), spec.model.name.clone()),
        (MODEL_CONFIG_PROPERTY.to_string(), spec.model.config_hash.clone()),
        (OWNER_TEMPLATE_PROPERTY.to_string(), spec.owner_template.clone().unwrap_or_default()),
    ])
}

/// The model a collection's properties record, if they record one.
fn model_of(properties: &HashMap<String, String>) -> Option<ModelIdentity> {
    Some(ModelIdentity {
        name: properties.get(MODEL_PROPERTY)?.clone(),
        config_hash: properties.get(MODEL_CONFIG_PROPERTY)?.clone(),
    })
}

/// One deletion as an expression: its id and each of its conditions.
fn deletion_expression(deletion: &Deletion) -> String {
    let mut parts = vec![format!("id == \"{}\"", escape(&deletion.id))];
    if let Some(etag) = &deletion.etag {
        parts.push(format!("etag == \"{}\"", escape(etag)));
    }
    if let Some(limit) = &deletion.not_newer_than {
        parts.push(format!("sequencer <= \"{}\"", escape(limit.as_str())));
    }
    format!("({})", parts.join(" and "))
}

/// Conditional deletions per delete request: each is ~250 characters of expression.
const DELETIONS_PER_REQUEST: usize = 100;

/// Escapes a value for a double-quoted string literal in a Milvus filter expression.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").replace('\r', "\\r")
}

/// `field` starts with `prefix`, as a range of strings rather than `like`: Milvus builds differ on
/// backslashes in `like` patterns, while string order is byte order everywhere. Every key that
/// starts with the prefix sorts between it and the prefix followed by the highest code point.
fn prefix_expression(field: &str, prefix: &str) -> String {
    let low = escape(prefix);
    format!("({field} >= \"{low}\" and {field} < \"{low}{}\")", char::MAX)
}

/// The filter as a Milvus boolean expression ("" when it lets everything through).
fn filter_expression(filter: &SearchFilter) -> String {
    let mut parts = Vec::new();
    // First, on the partition key: Milvus then searches only this owner's partition.
    if let Some(owner) = &filter.owner {
        parts.push(format!("owner == \"{}\"", escape(owner)));
    }
    if let Some(prefix) = filter.prefix.as_deref().filter(|p| !p.is_empty()) {
        parts.push(prefix_expression("key", prefix));
    }
    if let Some(content_type) = &filter.content_type {
        parts.push(format!("content_type == \"{}\"", escape(content_type)));
    }
    if let Some(from) = filter.uploaded_after_ms {
        parts.push(format!("last_modified >= {from}"));
    }
    if let Some(until) = filter.uploaded_before_ms {
        parts.push(format!("last_modified < {until}"));
    }
    if let Some(id) = &filter.exclude_id {
        parts.push(format!("id != \"{}\"", escape(id)));
    }
    parts.join(" and ")
}

/// Rows of one listing query. A row is at most ~1.2 KB (a 64-byte id, a key of up to 1,024 bytes,
/// an ETag), so a page stays under 2.5 MB, within gRPC's 4 MiB default message limit, which
/// the SDK keeps. Larger listings split into id-prefix shards.
const LIST_PAGE_ROWS: usize = 2_048;

#[async_trait::async_trait]
impl VectorIndex for MilvusIndex {
    async fn upsert(&self, records: &[ImageRecord]) -> Result<(), IndexError> {
        if records.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let rows: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "bucket": r.bucket, "key": r.key, "owner": r.owner, "size": r.size, "etag": r.etag,
                    "content_type": r.content_type, "last_modified": r.last_modified_ms,
                    "width": r.width, "height": r.height, "indexed_at": r.indexed_at_ms,
                    "sequencer": r.sequencer.as_ref().map(Sequencer::as_str).unwrap_or(""), "vector": r.vector,
                })
            })
            .collect();
        let insert =
            InsertRequest::builder().collection_name(self.collection.as_str()).rows(rows).build().map_err(classify)?;
        let request = UpsertRequest::builder().insert(insert).build().map_err(classify)?;
        let _shared = self.flushing.shared.gate.read().await;
        let written = client.upsert(request).await;
        self.wrote(client);
        written.map_err(classify)?;
        Ok(())
    }

    async fn delete_if(&self, deletions: &[Deletion]) -> Result<(), IndexError> {
        if deletions.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let (plain, conditional): (Vec<&Deletion>, Vec<&Deletion>) =
            deletions.iter().partition(|d| d.etag.is_none() && d.not_newer_than.is_none());
        let mut filters = Vec::new();
        if !plain.is_empty() {
            filters.push(Self::id_filter(&plain.iter().map(|d| d.id.clone()).collect::<Vec<_>>()));
        }
        for chunk in conditional.chunks(DELETIONS_PER_REQUEST) {
            filters.push(chunk.iter().map(|d| deletion_expression(d)).collect::<Vec<_>>().join(" or "));
        }
        let _shared = self.flushing.shared.gate.read().await;
        for filter in filters {
            let request = DeleteRequest::builder()
                .collection_name(self.collection.as_str())
                .filter(filter)
                .build()
                .map_err(classify)?;
            let deleted = client.delete(request).await;
            self.wrote(client);
            deleted.map_err(classify)?;
        }
        Ok(())
    }

    async fn versions(&self, ids: &[String]) -> Result<HashMap<String, IndexedVersion>, IndexError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let client = self.client().await?;
        let request = QueryRequest::builder()
            .collection_name(self.collection.as_str())
            .filter(Self::id_filter(ids))
            .output_fields(["id", "etag", "sequencer"])
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(classify)?;
        let response = {
            let _shared = self.flushing.shared.gate.read().await;
            client.query(request).await.map_err(classify)?
        };
        let mut versions = HashMap::new();
        for row in response.results().rows().map_err(classify)? {
            versions.insert(
                row.get_str("id").map_err(classify)?.to_string(),
                IndexedVersion {
                    etag: row.get_str("etag").map_err(classify)?.to_string(),
                    sequencer: Sequencer::parse(row.get_str("sequencer").map_err(classify)?),
                },
            );
        }
        Ok(versions)
    }

    async fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<ImageHit>, IndexError> {
        let client = self.client().await?;
        let mut fields: Vec<&str> = OUTPUT_FIELDS.to_vec();
        if query.with_vectors {
            fields.push(VECTOR);
        }
        let request = SearchRequest::builder()
            .collection_name(self.collection.as_str())
            .vector_field(VECTOR)
            .vectors(SearchVectors::Float(vec![query.vector.to_vec()]))
            .offset(query.offset as i64)
            .limit(query.limit as i64)
            .filter(filter_expression(query.filter))
            .output_fields(fields)
            .build()
            .map_err(classify)?;
        let response = {
            let _shared = self.flushing.shared.gate.read().await;
            client.search(request).await.map_err(classify)?
        };
        let mut hits = Vec::new();
        for result in response.results().iter() {
            for row in result.rows().map_err(classify)? {
                let score = row.get_f32("score").map_err(classify)?;
                hits.push(ImageHit { record: record_from_row(&row, query.with_vectors)?, score });
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(hits)
    }

    async fn records_with_key(&self, key: &str) -> Result<Vec<ImageRecord>, IndexError> {
        let client = self.client().await?;
        let mut fields: Vec<&str> = OUTPUT_FIELDS.to_vec();
        fields.push(VECTOR);
        let request = QueryRequest::builder()
            .collection_name(self.collection.as_str())
            .filter(format!("key == \"{}\"", escape(key)))
            .output_fields(fields)
            .build()
            .map_err(classify)?;
        let response = {
            let _shared = self.flushing.shared.gate.read().await;
            client.query(request).await.map_err(classify)?
        };
        let mut records = Vec::new();
        for row in response.results().rows().map_err(classify)? {
            records.push(record_from_row(&row, true)?);
        }
        records.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        Ok(records)
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<IndexedObject>, IndexError> {
        let client = self.client().await?;
        let mut scope = format!("bucket == \"{}\"", escape(bucket));
        if !prefix.is_empty() {
            scope = format!("{scope} and {}", prefix_expression("key", prefix));
        }
        // One listing is one read: a flush in between could move rows between shards already read.
        let _shared = self.flushing.shared.gate.read().await;
        // Ids are hex: a shard is an id prefix, split further while a shard fills a whole query.
        let mut shards = vec![String::new()];
        let mut objects = Vec::new();
        while let Some(shard) = shards.pop() {
            let filter = match shard.is_empty() {
                true => scope.clone(),
                false => format!("{scope} and id like \"{shard}%\""),
            };
            let request = QueryRequest::builder()
                .collection_name(self.collection.as_str())
                .filter(filter)
                .output_fields(["id", "key", "etag"])
                .limit(LIST_PAGE_ROWS as i64)
                .consistency_level(ConsistencyLevel::Strong)
                .build()
                .map_err(classify)?;
            let response = client.query(request).await.map_err(classify)?;
            let rows = response.results().rows().map_err(classify)?;
            if rows.len() >= LIST_PAGE_ROWS && shard.len() < 64 {
                shards.extend("0123456789abcdef".chars().map(|c| format!("{shard}{c}")));
                continue;
            }
            for row in rows {
                objects.push(IndexedObject {
                    id: row.get_str("id").map_err(classify)?.to_string(),
                    key: row.get_str("key").map_err(classify)?.to_string(),
                    etag: row.get_str("etag").map_err(classify)?.to_string(),
                });
            }
        }
        Ok(objects)
    }

    async fn count(&self) -> Result<u64, IndexError> {
        let client = self.client().await?;
        let request = QueryRequest::builder()
            .collection_name(self.collection.as_str())
            .filter("")
            .output_fields(["count(*)"])
            .build()
            .map_err(classify)?;
        let response = {
            let _shared = self.flushing.shared.gate.read().await;
            client.query(request).await.map_err(classify)?
        };
        let rows = response.results().rows().map_err(classify)?;
        let mut count = 0;
        for row in rows {
            count = row.get_i64("count(*)").map_err(classify)?.max(0) as u64;
        }
        Ok(count)
    }

    async fn flush(&self) -> Result<(), IndexError> {
        let client = self.client().await?;
        if !self.flushes() {
            return Ok(());
        }
        self.flushing.shared.flush(client, &self.collection, self.flushing.timeout).await
    }
}

/// A record from a row with [`OUTPUT_FIELDS`] (and the vector when `with_vector`; empty otherwise).
fn record_from_row(row: &ResultRow<'_>, with_vector: bool) -> Result<ImageRecord, IndexError> {
    let text = |f: &str| row.get_str(f).map(str::to_string).map_err(classify);
    let int = |f: &str| row.get_i64(f).map_err(classify);
    Ok(ImageRecord {
        id: text("id")?,
        bucket: text("bucket")?,
        key: text("key")?,
        owner: text("owner")?,
        size: int("size")?,
        etag: text("etag")?,
        content_type: text("content_type")?,
        last_modified_ms: int("last_modified")?,
        width: int("width")?,
        height: int("height")?,
        indexed_at_ms: int("indexed_at")?,
        sequencer: Sequencer::parse(&text("sequencer")?),
        vector: match with_vector {
            true => row.get_float_vector(VECTOR).map_err(classify)?.to_vec(),
            false => Vec::new(),
        },
    })
}

/// Connection trouble is transient (retry); whatever the server refuses is not.
fn classify(error: MilvusError) -> IndexError {
    match &error {
        MilvusError::Grpc(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown => IndexError::Unavailable(status.message().to_string()),
            _ => IndexError::Refused(error.to_string()),
        },
        MilvusError::Timeout(_) | MilvusError::RetryExhausted { .. } | MilvusError::Cancelled(_) => {
            IndexError::Unavailable(error.to_string())
        }
        _ => IndexError::Refused(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads an expression as Milvus's grammar does: a string literal is `"`, then any character
    /// but `"`, `\`, CR and LF, or a backslash escape, then `"`. Returns the decoded literals and
    /// the expression with each literal emptied to `""`; panics where Milvus would refuse the text.
    fn literals(expr: &str) -> (Vec<String>, String) {
        let (mut found, mut skeleton) = (Vec::new(), String::new());
        let mut chars = expr.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                skeleton.push(c);
                continue;
            }
            let mut literal = String::new();
            loop {
                match chars.next().expect("the literal is closed") {
                    '"' => break,
                    '\\' => literal.push(match chars.next().expect("an escape is complete") {
                        '\\' => '\\',
                        '"' => '"',
                        'n' => '\n',
                        'r' => '\r',
                        other => panic!("escape \\{other} is not one escape() writes"),
                    }),
                    '\n' | '\r' => panic!("a raw line break inside a literal"),
                    other => literal.push(other),
                }
            }
            found.push(literal);
            skeleton.push_str("\"\"");
        }
        (found, skeleton)
    }

    /// Strings rich in what could break out of a literal.
    fn hostile_text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![Just('"'), Just('\\'), Just('\n'), Just('\r'), Just('\''), Just(' '), any::<char>()],
            0..24,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn an_escaped_value_never_leaves_its_literal(value in hostile_text()) {
            let (found, skeleton) = literals(&format!("key == \"{}\"", escape(&value)));
            prop_assert_eq!(found, vec![value]);
            prop_assert_eq!(skeleton, "key == \"\"");
        }

        #[test]
        fn a_filter_expression_keeps_its_shape_whatever_the_values(
            prefix in hostile_text(),
            content_type in hostile_text(),
            exclude_id in hostile_text(),
            after in any::<i64>(),
            before in any::<i64>(),
        ) {
            let filter = |p: &str, c: &str, e: &str| SearchFilter {
                owner: None,
                prefix: Some(p.to_string()),
                content_type: Some(c.to_string()),
                uploaded_after_ms: Some(after),
                uploaded_before_ms: Some(before),
                exclude_id: Some(e.to_string()),
            };
            let (found, skeleton) = literals(&filter_expression(&filter(&prefix, &content_type, &exclude_id)));
            let (_, plain) = literals(&filter_expression(&filter("p", "c", "e")));
            let (_, no_prefix) = literals(&filter_expression(&filter("", "c", "e")));
            if prefix.is_empty() {
                prop_assert_eq!(skeleton, no_prefix);
                prop_assert_eq!(found, vec![content_type, exclude_id]);
            } else {
                prop_assert_eq!(skeleton, plain);
                prop_assert_eq!(found, vec![prefix.clone(), format!("{prefix}{}", char::MAX), content_type, exclude_id]);
            }
        }
    }

    #[test]
    fn the_properties_record_the_model_and_read_back() {
        let model = ModelIdentity { name: "ViT-B-32 openai".into(), config_hash: "0123456789abcdef".into() };
        let spec = CollectionSpec { dim: 2, model: model.clone(), owner_template: Some("u/{sub}/".into()) };
        let properties = collection_properties(&spec);
        assert_eq!(model_of(&properties), Some(model));
        assert_eq!(properties[OWNER_TEMPLATE_PROPERTY], "u/{sub}/");
        assert_eq!(model_of(&HashMap::new()), None);
    }

    #[test]
    fn deletions_carry_their_conditions() {
        let seq = Sequencer::parse("AB").unwrap();
        let deletion = Deletion { id: "i".into(), etag: Some("e\"".into()), not_newer_than: Some(seq.clone()) };
        assert_eq!(
            deletion_expression(&deletion),
            format!(r#"(id == "i" and etag == "e\"" and sequencer <= "{}")"#, seq.as_str())
        );
        assert_eq!(deletion_expression(&Deletion::any("i")), r#"(id == "i")"#);
    }

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(escape(r#"we"ird\name"#), r#"we\"ird\\name"#);
        assert_eq!(MilvusIndex::id_filter(&["a".into(), "b\"".into()]), r#"id in ["a", "b\""]"#);
    }

    #[test]
    fn filters_become_escaped_expressions() {
        assert_eq!(filter_expression(&SearchFilter::default()), "");
        let filter = SearchFilter {
            owner: Some("al\"ice".into()),
            prefix: Some(r#"a" or id != "x\"#.into()),
            content_type: Some("image/jpeg".into()),
            uploaded_after_ms: Some(5),
            uploaded_before_ms: Some(9),
            exclude_id: Some("ab".into()),
        };
        let top = char::MAX;
        assert_eq!(
            filter_expression(&filter),
            format!(
                r#"owner == "al\"ice" and (key >= "a\" or id != \"x\\" and key < "a\" or id != \"x\\{top}") and content_type == "image/jpeg" and last_modified >= 5 and last_modified < 9 and id != "ab""#
            )
        );
    }
}
