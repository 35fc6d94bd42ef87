//! What the use cases store, find and report: one record per object, a hit is a record with its
//! score, and one filter type from the API down to the index adapters.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// One image's vector and the metadata returned with search hits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageRecord {
    /// [`record_id`] of bucket and key: one entity per object, so a re-upload replaces it.
    pub id: String,
    pub bucket: String,
    pub key: String,
    /// Who the key belongs to under `OWNER_KEY_TEMPLATE` ([`crate::domain::scope::OwnerTemplate`]);
    /// empty without a template or for a key outside every owner's space.
    pub owner: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    /// Milliseconds since the Unix epoch (0 when unknown).
    pub last_modified_ms: i64,
    pub width: i64,
    pub height: i64,
    pub indexed_at_ms: i64,
    /// The S3 sequencer of the event that indexed this object, or one older than it ([`Sequencer`]);
    /// `None` when indexed without one (backfill). Ingest ignores events older than it.
    pub sequencer: Option<Sequencer>,
    /// Empty in a search hit unless [`crate::index::SearchQuery::with_vectors`] was set.
    pub vector: Vec<f32>,
}

/// A search hit: the record and its cosine similarity to the query (higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageHit {
    pub record: ImageRecord,
    pub score: f32,
}

/// Which records a search may return. Plain validated values: the index adapter turns them into
/// an expression with every string escaped, so user input never becomes expression syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SearchFilter {
    /// Only this owner's records. Set from the caller's verified identity, never from a parameter.
    pub owner: Option<String>,
    /// Only keys that start with it.
    pub prefix: Option<String>,
    /// Lower case, e.g. `image/jpeg`.
    pub content_type: Option<String>,
    /// S3 LastModified in milliseconds since the epoch, inclusive.
    pub uploaded_after_ms: Option<i64>,
    /// S3 LastModified in milliseconds since the epoch, exclusive.
    pub uploaded_before_ms: Option<i64>,
    /// Leave this record out (image-to-image search leaves out the query image).
    pub exclude_id: Option<String>,
}

impl SearchFilter {
    /// Whether the record belongs to the filter's owner (any record without one).
    pub fn matches_owner(&self, record: &ImageRecord) -> bool {
        self.owner.as_deref().is_none_or(|o| o == record.owner)
    }

    /// The same rules in Rust, for in-memory indexes and checks.
    pub fn matches(&self, record: &ImageRecord) -> bool {
        self.matches_owner(record)
            && self.prefix.as_deref().is_none_or(|p| record.key.starts_with(p))
            && self.content_type.as_deref().is_none_or(|c| c == record.content_type)
            && self.uploaded_after_ms.is_none_or(|t| record.last_modified_ms >= t)
            && self.uploaded_before_ms.is_none_or(|t| record.last_modified_ms < t)
            && self.exclude_id.as_deref().is_none_or(|x| x != record.id)
    }
}

/// S3's `sequencer`: the order of the events of one key. S3 documents it as hex strings of varying
/// length, compared after left-padding the shorter with zeros; it is kept padded to a fixed width,
/// so plain string order (in Rust and in Milvus filter expressions) is event order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sequencer(String);

impl Sequencer {
    /// Hex digits stored: twice S3's 16 to 18, so every real sequencer fits.
    pub const WIDTH: usize = 32;

    /// `None` for an empty, non-hex or over-long value: such an event is applied unordered
    /// (with the bucket as the judge), never trusted to hide a newer one.
    pub fn parse(raw: &str) -> Option<Sequencer> {
        let digits = raw.trim().trim_start_matches('0');
        let valid = raw.trim().bytes().all(|b| b.is_ascii_hexdigit()) && !raw.trim().is_empty();
        (valid && digits.len() <= Self::WIDTH)
            .then(|| Sequencer(format!("{:0>width$}", digits.to_ascii_uppercase(), width = Self::WIDTH)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An object that was not indexed, and why: a bad object (ingest skips it and the event
/// succeeds), or in a bulk run also an object whose batch failed after retries.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NotIndexed {
    pub key: String,
    pub reason: String,
    /// Why, as a class (a metric per class); `None` for a bulk batch that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<SkipCause>,
}

/// The classes of skipped objects, each counted by its own CloudWatch metric.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SkipCause {
    /// Gone before it was read (deleted after its event).
    Missing,
    /// Over `MAX_OBJECT_BYTES` or `MAX_IMAGE_PIXELS`.
    TooLarge,
    /// Not an image: its content type or its first bytes say so, or an unsupported format.
    NotAnImage,
    /// An image that cannot be decoded or prepared: corrupt, truncated, too slow, degenerate.
    UnreadableImage,
}

impl SkipCause {
    pub const ALL: [SkipCause; 4] =
        [SkipCause::Missing, SkipCause::TooLarge, SkipCause::NotAnImage, SkipCause::UnreadableImage];

    /// The metric that counts this class.
    pub fn metric(self) -> &'static str {
        match self {
            SkipCause::Missing => "SkippedMissing",
            SkipCause::TooLarge => "SkippedTooLarge",
            SkipCause::NotAnImage => "SkippedNotAnImage",
            SkipCause::UnreadableImage => "SkippedUnreadableImage",
        }
    }
}

/// Primary key of an object: SHA-256 of bucket and key, hex. Keys up to 1024 bytes map to a fixed 64 characters.
pub fn record_id(bucket: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(bucket.as_bytes());
    hash.update([0u8]);
    hash.update(key.as_bytes());
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_hash_bucket_nul_key_and_distinguish_bucket_from_key() {
        // sha256(b"b\0k"), computed independently: printf 'b\0k' | sha256sum
        assert_eq!(record_id("b", "k"), "265def662ae3808168044d68d81cc945eebb382c7a3622ea0c50f92672565192");
        assert_ne!(record_id("ab", "c"), record_id("a", "bc"));
        assert_eq!(record_id("b", &"x".repeat(1024)).len(), 64);
    }

    #[test]
    fn sequencers_compare_as_s3_says_after_left_padding() {
        let seq = |s: &str| Sequencer::parse(s).unwrap();
        assert!(seq("0055AED6DCD90281E5") < seq("0055AED6DCD90281E6"));
        // Different lengths: the shorter is padded on the left, so it may be the later one.
        assert!(seq("FF") < seq("0100"));
        assert!(seq("9") < seq("10"));
        assert_eq!(seq("00ab"), seq("AB"));
        assert_eq!(seq("1").as_str().len(), Sequencer::WIDTH);
        for bad in ["", "  ", "xyz", "12 34", "0x12", &"f".repeat(33)] {
            assert_eq!(Sequencer::parse(bad), None, "{bad:?}");
        }
        assert!(Sequencer::parse(&format!("{}{}", "0".repeat(40), "f".repeat(32))).is_some());
    }

    #[test]
    fn filters_apply_every_condition() {
        let record = ImageRecord {
            id: "1".into(),
            key: "photos/cat.jpg".into(),
            content_type: "image/jpeg".into(),
            last_modified_ms: 1_000,
            ..Default::default()
        };
        assert!(SearchFilter::default().matches(&record));
        let only = |f: SearchFilter| f.matches(&record);
        assert!(only(SearchFilter { prefix: Some("photos/".into()), ..Default::default() }));
        assert!(!only(SearchFilter { prefix: Some("videos/".into()), ..Default::default() }));
        assert!(!only(SearchFilter { content_type: Some("image/png".into()), ..Default::default() }));
        assert!(only(SearchFilter { uploaded_after_ms: Some(1_000), ..Default::default() }));
        assert!(!only(SearchFilter { uploaded_before_ms: Some(1_000), ..Default::default() }));
        assert!(!only(SearchFilter { exclude_id: Some("1".into()), ..Default::default() }));
        assert!(!only(SearchFilter { owner: Some("alice".into()), ..Default::default() }));
        let alices = ImageRecord { owner: "alice".into(), ..record.clone() };
        assert!(SearchFilter { owner: Some("alice".into()), ..Default::default() }.matches(&alices));
    }
}
