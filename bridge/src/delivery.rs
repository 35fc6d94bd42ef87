//! What Lambda's asynchronous invocation gives an S3 event, for the local stack: redelivery
//! with backoff, then a failure queue (Lambda's on-failure destination) that keeps the event
//! until it is replayed. Fault tests use the same code with the handler called in process.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Deliveries of one event: the first, then retries after a delay that doubles each time.
#[derive(Debug, Clone, Copy)]
pub struct Redelivery {
    pub attempts: u32,
    pub first_delay: Duration,
}

impl Redelivery {
    /// Calls `invoke` until it succeeds or the attempts are spent; the error is the last one.
    pub async fn deliver<F, Fut>(&self, mut invoke: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut delay = self.first_delay;
        let mut attempt = 1;
        loop {
            match invoke().await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= self.attempts.max(1) => return Err(e),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "delivery failed");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
            }
        }
    }
}

/// Events that failed every delivery, one JSON file each (`{"event", "error", "failed_at_ms"}`),
/// kept until [`replay`] delivers them: nothing is dropped, as with Lambda's failure destination.
#[derive(Debug, Clone)]
pub struct FailureQueue {
    dir: PathBuf,
}

impl FailureQueue {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FailureQueue { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the event; written under a temporary name and renamed, so a reader never sees half a file.
    pub fn park(&self, event: &Value, error: &str) -> std::io::Result<PathBuf> {
        static N: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.dir)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let name = format!("{:020}-{}-{}", now.as_nanos(), std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = self.dir.join(format!("{name}.json"));
        let partial = self.dir.join(format!(".{name}.part"));
        let entry = json!({"event": event, "error": error, "failed_at_ms": now.as_millis() as u64});
        std::fs::write(&partial, entry.to_string())?;
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }

    /// The parked events, oldest first, with their files. A file that does not parse is reported
    /// in the log and left where it is.
    pub fn parked(&self) -> std::io::Result<Vec<(PathBuf, Value)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let mut parked = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path)?;
            match serde_json::from_str::<Value>(&text).ok().and_then(|v| v.get("event").cloned()) {
                Some(event) => parked.push((path, event)),
                None => tracing::error!(file = %path.display(), "unreadable parked event, left in place"),
            }
        }
        Ok(parked)
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub delivered: usize,
    pub still_failing: usize,
}

/// Delivers every parked event again (oldest first); a delivered one leaves the queue, one that
/// fails again stays for the next replay.
pub async fn replay<F, Fut>(queue: &FailureQueue, policy: &Redelivery, invoke: F) -> std::io::Result<ReplayReport>
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut report = ReplayReport::default();
    for (path, event) in queue.parked()? {
        match policy.deliver(|| invoke(event.clone())).await {
            Ok(()) => {
                std::fs::remove_file(&path)?;
                report.delivered += 1;
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "replayed event failed again");
                report.still_failing += 1;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn quick(attempts: u32) -> Redelivery {
        Redelivery { attempts, first_delay: Duration::from_millis(1) }
    }

    #[tokio::test]
    async fn an_event_is_delivered_until_it_succeeds_or_the_attempts_are_spent() {
        let calls = AtomicU32::new(0);
        let flaky = || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                Err(format!("failure {n}"))
            } else {
                Ok(())
            }
        };
        assert_eq!(quick(3).deliver(flaky).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        calls.store(0, Ordering::SeqCst);
        assert_eq!(quick(2).deliver(flaky).await, Err("failure 2".to_string()));
    }

    #[tokio::test]
    async fn failed_events_wait_in_the_queue_until_a_replay_delivers_them() {
        let dir = tempfile::tempdir().unwrap();
        let queue = FailureQueue::new(dir.path().join("failed"));
        assert!(queue.parked().unwrap().is_empty(), "a missing folder is an empty queue");
        queue.park(&json!({"n": 1}), "Milvus is unavailable").unwrap();
        queue.park(&json!({"n": 2}), "S3 is unavailable").unwrap();
        let events: Vec<Value> = queue.parked().unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(events, vec![json!({"n": 1}), json!({"n": 2})], "oldest first");

        // Event 2 still fails: it stays; event 1 is delivered and leaves the queue.
        let report = replay(&queue, &quick(1), |event| async move {
            if event["n"] == 1 {
                Ok(())
            } else {
                Err("still down".to_string())
            }
        })
        .await
        .unwrap();
        assert_eq!(report, ReplayReport { delivered: 1, still_failing: 1 });
        let left: Vec<Value> = queue.parked().unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(left, vec![json!({"n": 2})]);
    }
}
