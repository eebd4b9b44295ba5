//! Talking to clusters: one kube-rs client per kubeconfig context, server-side apply of rendered
//! YAML, waits driven by watches, and retries of transient failures. No kubectl.

pub mod apply;
pub mod inspect;
pub mod retry;
pub mod wait;

use std::path::Path;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The one field manager of every server-side apply meshctl makes.
pub const FIELD_MANAGER: &str = "meshctl";

/// Errors of the Kubernetes layer. Each names the cluster context and the object.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig or context cannot be used.
    #[error("context `{context}`: {reason}")]
    Config {
        /// The context.
        context: String,
        /// Why.
        reason: String,
    },
    /// The API server refused the request for good (4xx other than 409/429).
    #[error("{what}: the API server answered {code} {reason}: {message}")]
    Rejected {
        /// The operation and object.
        what: String,
        /// HTTP status.
        code: u16,
        /// Kubernetes reason.
        reason: String,
        /// The server's message.
        message: String,
    },
    /// Transient failures persisted through every retry.
    #[error("{what}: still failing after {attempts} attempts: {last}")]
    Exhausted {
        /// The operation and object.
        what: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// A document cannot be applied as it is.
    #[error("{what}: {reason}")]
    Invalid {
        /// The document.
        what: String,
        /// Why.
        reason: String,
    },
    /// A wait ran out of time.
    #[error(transparent)]
    Wait(#[from] wait::WaitError),
}

/// A client for `context` from `kubeconfig` (or `KUBECONFIG`, which may list several files, or
/// `~/.kube/config`).
pub async fn connect(kubeconfig: Option<&Path>, context: &str) -> Result<Client, KubeError> {
    let err = |reason: String| KubeError::Config {
        context: context.to_string(),
        reason,
    };
    let config = match kubeconfig {
        Some(path) => {
            Kubeconfig::read_from(path).map_err(|e| err(format!("cannot read `{}`: {e}", path.display())))?
        }
        None => Kubeconfig::read().map_err(|e| err(format!("cannot read the kubeconfig: {e}")))?,
    };
    if !config.contexts.iter().any(|c| c.name == context) {
        let known: Vec<_> = config.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(err(format!(
            "no such context in the kubeconfig (known: {})",
            known.join(", ")
        )));
    }
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(config, &options)
        .await
        .map_err(|e| err(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(10));
    Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// The API server URL `context` points at, as written in the kubeconfig.
pub fn server_of(kubeconfig: Option<&Path>, context: &str) -> Result<String, KubeError> {
    let err = |reason: String| KubeError::Config {
        context: context.to_string(),
        reason,
    };
    let config = match kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?,
        None => Kubeconfig::read().map_err(|e| err(e.to_string()))?,
    };
    let ctx = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| err("no such context in the kubeconfig".into()))?;
    config
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| err(format!("cluster `{}` of the context has no server", ctx.cluster)))
}
