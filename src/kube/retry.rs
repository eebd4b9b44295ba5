//! Retrying transient API failures with exponential backoff; permanent ones fail at once.
//!
//! Transient: connection refused or reset, TLS or HTTP transport errors, 429, 5xx, and 409 (a
//! create racing another writer, or an update racing a controller). Permanent: every other 4xx,
//! reported with the server's message.

use std::future::Future;
use std::time::Duration;

use super::KubeError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Delay after the first failure; doubles each time.
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(3),
        }
    }
}

/// Whether an error is worth another attempt.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500..=599),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails permanently, or the attempts are spent. `what` names the
/// operation and object in the error.
pub async fn retry<T, F, Fut>(what: &str, policy: RetryPolicy, mut op: F) -> Result<T, KubeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = policy.initial;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && attempt < policy.attempts => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max);
            }
            Err(e) if is_transient(&e) => {
                return Err(KubeError::Exhausted {
                    what: what.to_string(),
                    attempts: attempt,
                    last: describe(&e),
                });
            }
            Err(e) => return Err(permanent(what, &e)),
        }
    }
}

/// The error for a failure that is not retried.
pub fn permanent(what: &str, e: &kube::Error) -> KubeError {
    match e {
        kube::Error::Api(status) => KubeError::Rejected {
            what: what.to_string(),
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => KubeError::Invalid {
            what: what.to_string(),
            reason: describe(other),
        },
    }
}

/// A one-line description of a kube error, in a user's words (see [`super::human_reason`]).
pub fn describe(e: &kube::Error) -> String {
    super::human_reason(e)
}
