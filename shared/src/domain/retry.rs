//! Retrying transient failures (S3 5xx and timeouts, Milvus unavailable) with exponential
//! backoff inside one invocation, before the error is surfaced to Lambda's own retries.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Errors that say whether trying again may help.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// No retry is started after this (the invocation's deadline less a reserve); the error is
    /// returned instead, so the invocation fails while it still can and Lambda retries the event.
    pub deadline: Option<Instant>,
}

impl RetryPolicy {
    pub fn new(attempts: u32) -> Self {
        RetryPolicy {
            attempts: attempts.max(1),
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            deadline: None,
        }
    }

    /// The same policy, with no retry started after `deadline`.
    pub fn until(self, deadline: Instant) -> Self {
        RetryPolicy { deadline: Some(deadline), ..self }
    }

    fn has_time_for(&self, delay: Duration) -> bool {
        self.deadline.is_none_or(|deadline| Instant::now() + delay < deadline)
    }

    fn delay(&self, attempt: u32) -> Duration {
        self.first_delay.saturating_mul(1 << attempt.min(16)).min(self.max_delay)
    }
}

/// Runs `op` until it succeeds, fails permanently, or the attempts are used up.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e)
                if e.is_transient() && attempt + 1 < policy.attempts && policy.has_time_for(policy.delay(attempt)) =>
            {
                let delay = policy.delay(attempt);
                tracing::warn!(operation = what, attempt = attempt + 1, error = %e, retry_in_ms = delay.as_millis() as u64, "transient failure, retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Flaky(bool);
    impl Transient for Flaky {
        fn is_transient(&self) -> bool {
            self.0
        }
    }
    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "flaky")
        }
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            deadline: None,
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, Flaky> = retry(&quick(4), "op", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                Err(Flaky(true))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Flaky> = retry(&quick(3), "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Flaky(true))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        calls.store(0, Ordering::SeqCst);
        let _: Result<(), Flaky> = retry(&quick(3), "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Flaky(false))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy::new(5);
        assert_eq!(p.delay(0), Duration::from_millis(200));
        assert_eq!(p.delay(1), Duration::from_millis(400));
        assert_eq!(p.delay(10), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn no_retry_starts_after_the_deadline() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            attempts: 1_000,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(20),
            deadline: Some(Instant::now() + Duration::from_millis(100)),
        };
        let started = Instant::now();
        let result: Result<u32, Flaky> = retry(&policy, "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Flaky(true))
        })
        .await;
        assert!(result.is_err());
        let calls = calls.load(Ordering::SeqCst);
        assert!((2..=6).contains(&calls), "about 100 ms / 20 ms attempts, not 1,000: {calls}");
        assert!(started.elapsed() < Duration::from_millis(150), "{:?}", started.elapsed());
    }
}
