//! The S3 adapter (aws-sdk-s3). Region, credentials and endpoint come from the standard AWS
//! environment (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL_S3`, the Lambda role, ...).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};

use super::{normalize_etag, ListedObject, ObjectStore, PresignedUrl, StoreError, StoredObject};
use crate::config::S3Config;
use crate::domain::describe;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    /// The provider the client signs with, asked for the credentials' expiry.
    provider: Option<SharedCredentialsProvider>,
    /// What is known of the signing credentials' lifetime, looked up at most once a minute.
    credentials: Arc<Mutex<Option<CredentialLifetime>>>,
}

/// When the credentials that sign URLs stop working.
#[derive(Debug, Clone, Copy)]
struct CredentialLifetime {
    looked_up: SystemTime,
    expiry: Option<SystemTime>,
    /// Temporary (with a session token): they expire even when the provider does not say when.
    temporary: bool,
}

/// How long URLs signed with temporary credentials of unknown expiry may live. The Lambda runtime
/// hands the role's session credentials over in the environment without their expiry; AWS
/// documents that role sessions of services such as Lambda may end sooner than the role's
/// maximum session duration, so a URL is not promised beyond an hour.
pub const UNKNOWN_EXPIRY_TTL_CAP: Duration = Duration::from_secs(3600);
/// Kept back from a known expiry: the URL must still work when the user clicks it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// The lifetime of a URL asked to live `ttl`, signed at `now` with credentials that end at
/// `expiry` (a URL dies with its credentials, whatever its own expiry says).
fn presign_lifetime(ttl: Duration, now: SystemTime, lifetime: Option<CredentialLifetime>) -> Duration {
    let Some(lifetime) = lifetime else { return ttl };
    let cap = match lifetime.expiry {
        Some(expiry) => expiry.duration_since(now).unwrap_or_default().saturating_sub(EXPIRY_MARGIN),
        None if lifetime.temporary => UNKNOWN_EXPIRY_TTL_CAP,
        None => return ttl,
    };
    ttl.min(cap).max(Duration::from_secs(1))
}

impl S3Store {
    /// A client from the AWS environment, built once at init.
    pub async fn from_env(config: &S3Config) -> Self {
        Self::from_sdk_config(&aws_config::load_from_env().await, config)
    }

    /// A client from an explicit AWS configuration (tools and tests).
    pub fn from_sdk_config(shared: &aws_config::SdkConfig, config: &S3Config) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(shared).force_path_style(config.force_path_style).build();
        S3Store { client: Client::from_conf(s3), provider: shared.credentials_provider(), credentials: Arc::default() }
    }

    /// The signing credentials' lifetime, from the client's credentials provider (cached for a
    /// minute: providers such as SSO read files or call out).
    async fn credential_lifetime(&self) -> Option<CredentialLifetime> {
        let now = SystemTime::now();
        let cached = *self.credentials.lock().expect("lock");
        if let Some(known) =
            cached.filter(|c| now.duration_since(c.looked_up).unwrap_or_default() < Duration::from_secs(60))
        {
            return Some(known);
        }
        let provider = self.provider.as_ref()?;
        let credentials = provider.provide_credentials().await.ok()?;
        let known = CredentialLifetime {
            looked_up: now,
            expiry: credentials.expiry(),
            temporary: credentials.session_token().is_some(),
        };
        *self.credentials.lock().expect("lock") = Some(known);
        Some(known)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Copies every object under `s3://bucket/prefix/` whose relative path `wanted` accepts into `dest`,
    /// skipping files already there with the same size (a warm Lambda container keeps /tmp).
    ///
    /// Each object is fetched in ranged GETs of `transfer.part_bytes`, up to `transfer.concurrency`
    /// at once over all files, and written in place into `FILE.part`, renamed when complete: one
    /// TCP stream from S3 is far slower than the network of a Lambda with a few GB of memory, and
    /// the body never sits in memory whole. Every range must come from the listed version (its
    /// ETag) and hold exactly the bytes asked for, and each file must end with the listed size.
    pub async fn download_prefix(
        &self,
        bucket: &str,
        prefix: &str,
        dest: &Path,
        wanted: impl Fn(&str) -> bool,
        transfer: Transfer,
    ) -> Result<usize, StoreError> {
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
        let mut files = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, bucket, &prefix))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let relative = &key[prefix.len()..];
                if relative.is_empty() || relative.ends_with('/') || !wanted(relative) {
                    continue;
                }
                // A key such as `prefix/../../etc/x` or `prefix//abs` would write outside `dest`.
                if !is_plain_relative(relative) {
                    return Err(StoreError::Refused(format!(
                        "model key s3://{bucket}/{key} is not a plain relative path (`..`, `.`, an absolute or empty part); \
                         refusing to write it under {}",
                        dest.display()
                    )));
                }
                let Some(size) = object.size().and_then(|s| u64::try_from(s).ok()) else {
                    return Err(StoreError::Refused(format!("model key s3://{bucket}/{key} is listed without a size")));
                };
                let target = dest.join(relative);
                if std::fs::metadata(&target).map(|m| m.len() == size).unwrap_or(false) {
                    continue;
                }
                let etag = object.e_tag().map(str::to_string);
                files.push(Fetch { key: key.to_string(), target, size, etag });
            }
        }
        let cannot_write =
            |path: &Path, e: std::io::Error| StoreError::Refused(format!("cannot write {}: {e}", path.display()));
        let mut parts = Vec::new();
        let mut open = Vec::new();
        for (index, file) in files.iter().enumerate() {
            std::fs::create_dir_all(file.target.parent().unwrap_or(dest)).map_err(|e| cannot_write(&file.target, e))?;
            let partial = file.target.with_extension("part");
            let out = std::fs::File::create(&partial).and_then(|f| f.set_len(file.size).map(|()| f));
            open.push(Arc::new(out.map_err(|e| cannot_write(&partial, e))?));
            parts.extend(part_ranges(file.size, transfer.part_bytes).into_iter().map(|range| (index, range)));
        }
        let fetched = futures::stream::iter(parts)
            .map(|(index, range)| self.fetch_range(bucket, &files[index], range, Arc::clone(&open[index])))
            .buffer_unordered(transfer.concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await;
        drop(open);
        if let Err(e) = fetched {
            for file in &files {
                let _ = std::fs::remove_file(file.target.with_extension("part"));
            }
            return Err(e);
        }
        for file in &files {
            let partial = file.target.with_extension("part");
            let written = std::fs::metadata(&partial).map_err(|e| cannot_write(&partial, e))?.len();
            if written != file.size {
                return Err(StoreError::Unavailable(format!(
                    "s3://{bucket}/{}: wrote {written} bytes of {}",
                    file.key, file.size
                )));
            }
            std::fs::rename(&partial, &file.target).map_err(|e| cannot_write(&file.target, e))?;
        }
        Ok(files.len())
    }

    /// One range of `file` into its `.part` file, at the range's offset. A range covering the whole
    /// object is a plain GET (an empty object has no valid range).
    async fn fetch_range(
        &self,
        bucket: &str,
        file: &Fetch,
        range: std::ops::Range<u64>,
        out: Arc<std::fs::File>,
    ) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let whole = range.start == 0 && range.end == file.size;
        let mut request = self.client.get_object().bucket(bucket).key(&file.key).set_if_match(file.etag.clone());
        if !whole {
            request = request.range(format!("bytes={}-{}", range.start, range.end - 1));
        }
        let output = request.send().await.map_err(|e| classify(e, bucket, &file.key))?;
        let mut body = output.body;
        let mut offset = range.start;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading s3://{bucket}/{}: {e}", file.key)))?
        {
            if offset + chunk.len() as u64 > range.end {
                return Err(StoreError::Unavailable(format!(
                    "s3://{bucket}/{} sent more than the {} bytes asked for at {} (did it change?)",
                    file.key,
                    range.end - range.start,
                    range.start
                )));
            }
            out.write_all_at(&chunk, offset).map_err(|e| {
                StoreError::Refused(format!("cannot write {}: {e}", file.target.with_extension("part").display()))
            })?;
            offset += chunk.len() as u64;
        }
        if offset != range.end {
            return Err(StoreError::Unavailable(format!(
                "s3://{bucket}/{} ended after {} of the {} bytes asked for at {}",
                file.key,
                offset - range.start,
                range.end - range.start,
                range.start
            )));
        }
        Ok(())
    }
}

/// How [`S3Store::download_prefix`] fetches: ranges of `part_bytes`, `concurrency` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub concurrency: usize,
    pub part_bytes: u64,
}

impl Transfer {
    /// One whole-object GET after another (how the model was fetched before ranged GETs).
    pub const SEQUENTIAL: Transfer = Transfer { concurrency: 1, part_bytes: u64::MAX };
    /// Part size of the default: large enough that request overhead is small, small enough that a
    /// 350 MB tower is spread over the connections.
    pub const DEFAULT_PART_BYTES: u64 = 16 << 20;

    /// `concurrency` ranged GETs of [`Transfer::DEFAULT_PART_BYTES`] at once (1 = [`Transfer::SEQUENTIAL`]).
    pub fn with_concurrency(concurrency: usize) -> Transfer {
        match concurrency {
            0 | 1 => Transfer::SEQUENTIAL,
            n => Transfer { concurrency: n, part_bytes: Transfer::DEFAULT_PART_BYTES },
        }
    }
}

/// One object to fetch.
struct Fetch {
    key: String,
    target: std::path::PathBuf,
    size: u64,
    etag: Option<String>,
}

/// `0..size` cut into consecutive ranges of at most `part_bytes`; an empty object is one empty range.
fn part_ranges(size: u64, part_bytes: u64) -> Vec<std::ops::Range<u64>> {
    let part = part_bytes.max(1);
    if size == 0 {
        return std::iter::once(0..0).collect();
    }
    (0..size.div_ceil(part)).map(|i| i * part..(i * part).saturating_add(part).min(size)).collect()
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<StoredObject, StoreError> {
        let output =
            self.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| classify(e, bucket, key))?;
        // The declared length refuses an oversized object before its body is read; the body is
        // still read in chunks up to the limit, since a length can be missing or wrong.
        let declared = output.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(size) = declared.filter(|&size| size > max_bytes) {
            return Err(StoreError::TooLarge { size, max: max_bytes });
        }
        let etag = output.e_tag().map(normalize_etag).unwrap_or_default();
        let content_type = output.content_type().map(str::to_string);
        let last_modified_ms = output.last_modified().and_then(|t| t.to_millis().ok());
        let mut body = output.body;
        let mut bytes = Vec::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
        while let Some(chunk) =
            body.try_next().await.map_err(|e| StoreError::Unavailable(format!("reading the body failed: {e}")))?
        {
            let size = (bytes.len() as u64).saturating_add(chunk.len() as u64);
            if size > max_bytes {
                return Err(StoreError::TooLarge { size, max: max_bytes });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(StoredObject { size: bytes.len() as u64, bytes, etag, content_type, last_modified_ms })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<String>, StoreError> {
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(output) => Ok(Some(output.e_tag().map(normalize_etag).unwrap_or_default())),
            Err(e) => match classify(e, bucket, key) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, bucket, prefix))?;
            for object in page.contents() {
                let Some(key) = object.key().filter(|k| !k.ends_with('/')) else { continue };
                objects.push(ListedObject {
                    key: key.to_string(),
                    etag: object.e_tag().map(normalize_etag).unwrap_or_default(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                });
            }
        }
        Ok(objects)
    }

    async fn presign_get(&self, bucket: &str, key: &str, ttl: Duration) -> Result<PresignedUrl, StoreError> {
        let start = SystemTime::now();
        let ttl = presign_lifetime(ttl, start, self.credential_lifetime().await);
        let config = PresigningConfig::builder()
            .start_time(start)
            .expires_in(ttl)
            .build()
            .map_err(|e| StoreError::Refused(format!("presigning config: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| StoreError::Refused(format!("presigning failed: {e}")))?;
        Ok(PresignedUrl { url: request.uri().to_string(), expires_at: start + ttl })
    }
}

/// Whether `relative` is made only of normal path parts (no `..`, `.`, root or empty parts).
fn is_plain_relative(relative: &str) -> bool {
    !relative.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        && Path::new(relative).components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Maps SDK failures to what the use cases act on: 404 not found, throttling/5xx/network transient, the rest refused.
fn classify<E>(err: SdkError<E, HttpResponse>, bucket: &str, key: &str) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(service) => classify_response(
            service.raw().status().as_u16(),
            service.err().code().unwrap_or("Unknown"),
            service.err().message().unwrap_or("no message"),
            bucket,
            key,
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(describe(&err))
        }
        _ => StoreError::Refused(describe(&err)),
    }
}

/// S3's answer, by what a later attempt can do about it:
/// - a missing object (404; the functions hold `s3:ListBucket`, so S3 says 404 and not 403) is
///   `NotFound`, a skip;
/// - throttling, server errors, expired or not-yet-refreshed credentials, a skewed clock and KMS
///   errors pass with time: `Unavailable`, retried, then the invocation fails and Lambda retries;
/// - anything else (a denied policy, a bad request) needs a fix: `Refused`, which fails the
///   invocation too, so the event waits in the failure queue instead of being dropped.
fn classify_response(status: u16, code: &str, message: &str, bucket: &str, key: &str) -> StoreError {
    let text = format!("{code} (HTTP {status}): {message}");
    let passes_with_time = status >= 500
        || status == 429
        || matches!(
            code,
            "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "TokenRefreshRequired"
                | "RequestExpired"
                | "RequestTimeTooSkewed"
        )
        || code.starts_with("KMS.")
        || (code == "AccessDenied" && message.to_ascii_lowercase().contains("kms"));
    if code == "NoSuchKey" || code == "NotFound" || status == 404 {
        StoreError::NotFound { bucket: bucket.into(), key: key.into() }
    } else if passes_with_time {
        StoreError::Unavailable(text)
    } else {
        StoreError::Refused(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_outlive_their_credentials() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ttl = Duration::from_secs(900);
        let lifetime = |expiry: Option<u64>, temporary| {
            Some(CredentialLifetime { looked_up: now, expiry: expiry.map(|s| now + Duration::from_secs(s)), temporary })
        };
        assert_eq!(presign_lifetime(ttl, now, None), ttl, "no credentials known: as asked");
        assert_eq!(presign_lifetime(ttl, now, lifetime(None, false)), ttl, "long-term keys");
        assert_eq!(presign_lifetime(ttl, now, lifetime(Some(7200), true)), ttl, "far from expiry");
        assert_eq!(presign_lifetime(ttl, now, lifetime(Some(600), true)), Duration::from_secs(570));
        assert_eq!(presign_lifetime(ttl, now, lifetime(Some(10), true)), Duration::from_secs(1), "at least a second");
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(presign_lifetime(week, now, lifetime(None, true)), UNKNOWN_EXPIRY_TTL_CAP);
        assert_eq!(presign_lifetime(week, now, lifetime(Some(36 * 3600), true)), Duration::from_secs(36 * 3600 - 30));
    }

    fn class(status: u16, code: &str, message: &str) -> &'static str {
        match classify_response(status, code, message, "b", "k") {
            StoreError::NotFound { .. } => "skip",
            StoreError::Unavailable(_) => "retry",
            StoreError::Refused(_) => "fail",
            StoreError::TooLarge { .. } => "too large",
        }
    }

    #[test]
    fn model_keys_must_stay_under_the_download_folder() {
        for good in ["config.json", "visual/model.onnx", "textual/tokenizer.json", "a..b/c"] {
            assert!(is_plain_relative(good), "{good}");
        }
        for bad in ["../x", "visual/../../etc/passwd", "./config.json", "/etc/passwd", "visual//model.onnx", ".."] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }

    #[test]
    fn ranges_cover_each_object_exactly_once() {
        let single = |range: std::ops::Range<u64>| std::iter::once(range).collect::<Vec<_>>();
        assert_eq!(part_ranges(0, 16), single(0..0), "an empty object is one plain GET");
        assert_eq!(part_ranges(10, u64::MAX), single(0..10), "sequential: the whole object");
        assert_eq!(part_ranges(32, 16), vec![0..16, 16..32]);
        assert_eq!(part_ranges(33, 16), vec![0..16, 16..32, 32..33]);
        assert_eq!(part_ranges(5, 0), (0..5).map(|i| i..i + 1).collect::<Vec<_>>(), "a zero part size is 1");
        assert_eq!(Transfer::with_concurrency(1), Transfer::SEQUENTIAL);
        assert_eq!(Transfer::with_concurrency(8).part_bytes, Transfer::DEFAULT_PART_BYTES);
    }

    #[test]
    fn only_a_missing_object_is_a_skip_and_what_passes_with_time_is_retried() {
        assert_eq!(class(404, "NoSuchKey", "The specified key does not exist."), "skip");
        for (status, code, message) in [
            (503, "SlowDown", "Please reduce your request rate."),
            (500, "InternalError", "We encountered an internal error."),
            (400, "ExpiredToken", "The provided token has expired."),
            (400, "TokenRefreshRequired", "The provided token must be refreshed."),
            (
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the server's time is too large.",
            ),
            (400, "KMS.ThrottlingException", "Rate exceeded"),
            (403, "AccessDenied", "User is not authorized to perform: kms:Decrypt"),
        ] {
            assert_eq!(class(status, code, message), "retry", "{code}");
        }
        assert_eq!(class(403, "AccessDenied", "Access Denied"), "fail", "a policy mistake needs a fix");
        assert_eq!(class(400, "InvalidArgument", "bad"), "fail");
    }
}
