//! Native remote secrets: what `istioctl create-remote-secret` does, without istioctl.
//!
//! In the source cluster: make sure the reader service account and its read-only cluster role
//! exist, find or create the long-lived token Secret and wait for the token controller to fill it
//! (a short-lived TokenRequest token would expire under istiod, and Kubernetes 1.24+ no longer
//! creates one by itself). Then build
//! the kubeconfig with the source's in-network API address, its CA and the token, and render the
//! Secret in the exact format of istioctl 1.31's `create-remote-secret`. The server is never a loopback address unless
//! the user says so explicitly (istiod in another cluster would dial itself), and never skips
//! TLS verification.

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::kube::apply::Applier;
use crate::kube::retry::{RetryPolicy, retry};
use crate::kube::{KubeError, wait};
use crate::render::{self, RenderError};

/// Istio's namespace, where istiod looks for remote secrets (and nowhere else).
pub const NAMESPACE: &str = crate::topology::ISTIO_NAMESPACE;
/// The service account remote istiods authenticate as.
pub const READER_SERVICE_ACCOUNT: &str = "istio-reader-service-account";
/// Its cluster role (and binding), as Istio names them.
pub const READER_CLUSTER_ROLE: &str = "istio-reader-clusterrole-istio-system";
/// The token Secret istioctl creates when none exists.
pub const TOKEN_SECRET: &str = "istio-reader-service-account-istio-remote-secret-token";

/// Why a remote secret could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RemoteSecretError {
    /// The API server address is a loopback address other clusters cannot reach.
    #[error(
        "cluster `{cluster}`: the API server address `{server}` is a loopback address; istiod in the other clusters cannot reach it\nhint: pass --server (or set `apiServer` for the cluster in meshctl.yaml) with the address on the shared network, e.g. https://<container-ip>:6443 (for kind: docker inspect -f '{{{{ .NetworkSettings.Networks.kind.IPAddress }}}}' {container})"
    )]
    LoopbackServer {
        cluster: String,
        server: String,
        /// The kind node container that probably serves it.
        container: String,
    },
    /// The address is not an https URL another cluster can use.
    #[error("cluster `{cluster}`: `{server}` {reason}")]
    BadServer {
        cluster: String,
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token Secret holds no usable token.
    #[error("cluster `{cluster}`: secret {NAMESPACE}/{secret}: {reason}")]
    BadToken {
        cluster: String,
        secret: String,
        reason: String,
    },
    /// Talking to the cluster failed.
    #[error("cluster `{cluster}`: {source}")]
    Kube { cluster: String, source: KubeError },
    #[error(transparent)]
    Render(#[from] RenderError),
}

pub use crate::topology::api_server::{is_loopback, server_problem};

/// Checks the address a remote secret will carry. An explicit `--server` is the user's word and
/// only has to be an https URL; an address taken from a kubeconfig must not be a loopback address.
pub fn check_server(cluster: &str, server: &str, explicit: bool) -> Result<(), RemoteSecretError> {
    if let Some(reason) = server_problem(server) {
        return Err(RemoteSecretError::BadServer {
            cluster: cluster.into(),
            server: server.into(),
            reason,
        });
    }
    if !explicit && is_loopback(server) {
        return Err(RemoteSecretError::LoopbackServer {
            cluster: cluster.into(),
            server: server.into(),
            container: format!(
                "{}-control-plane",
                cluster.strip_prefix("kind-").unwrap_or(cluster)
            ),
        });
    }
    Ok(())
}

/// What the kubeconfig inside the secret authenticates with.
#[derive(Clone, PartialEq, Eq)]
pub struct ReaderCredentials {
    /// base64 of the cluster CA PEM (`certificate-authority-data`).
    pub ca_data: String,
    pub token: String,
}

impl std::fmt::Debug for ReaderCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderCredentials").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ReaderRbac<'a> {
    service_account: &'a str,
    namespace: &'a str,
    cluster_role: &'a str,
}

#[derive(Serialize)]
pub struct SecretContext<'a> {
    name: &'a str,
    server: &'a str,
    ca_data: &'a str,
    token: &'a str,
    /// Placeholders stand for what only a run can read; the rendering says so on its first line.
    preview: bool,
}

/// The template of the remote secret.
pub const TEMPLATE: &str = "remote-secrets/remote-secret.yaml.j2";

/// The remote secret of `name` as a plan shows it: the token and the CA are read from the cluster
/// when the phase runs (the token is a credential and never belongs in a plan on disk).
pub fn preview<'a>(name: &'a str, server: &'a str) -> SecretContext<'a> {
    SecretContext {
        name,
        server,
        ca_data: "<read at run time: the cluster's CA, base64>",
        token: "<read at run time: the long-lived token of istio-system/istio-reader-service-account>",
        preview: true,
    }
}

/// Renders the Secret exactly as `istioctl create-remote-secret` prints it.
pub fn render_secret(name: &str, server: &str, creds: &ReaderCredentials) -> Result<String, RenderError> {
    render::render(
        TEMPLATE,
        &SecretContext {
            name,
            server,
            ca_data: &creds.ca_data,
            token: &creds.token,
            preview: false,
        },
    )
}

/// In the source cluster: ensure the reader account exists, then get (or create) its long-lived
/// token and wait until the token controller has filled it.
pub async fn reader_credentials(
    client: &Client,
    cluster: &str,
    timeout: Duration,
) -> Result<ReaderCredentials, RemoteSecretError> {
    let kube_err = |source| RemoteSecretError::Kube {
        cluster: cluster.into(),
        source,
    };
    let rbac = render::render(
        "remote-secrets/reader-rbac.yaml.j2",
        &ReaderRbac {
            service_account: READER_SERVICE_ACCOUNT,
            namespace: NAMESPACE,
            cluster_role: READER_CLUSTER_ROLE,
        },
    )?;
    Applier::new(client.clone())
        .create_missing(&rbac, "reader RBAC")
        .await
        .map_err(kube_err)?;

    let name = token_secret(client).await.map_err(kube_err)?;
    let filled = wait::token_filled(client, NAMESPACE, &name, timeout)
        .await
        .map_err(|e| kube_err(e.into()))?;
    let data = filled.data.unwrap_or_default();
    let bad = |reason: &str| RemoteSecretError::BadToken {
        cluster: cluster.into(),
        secret: name.clone(),
        reason: reason.into(),
    };
    let token = String::from_utf8(data.get("token").map(|b| b.0.clone()).unwrap_or_default())
        .map_err(|_| bad("the token is not text"))?;
    let ca = data.get("ca.crt").map(|b| b.0.clone()).unwrap_or_default();
    if token.is_empty() || ca.is_empty() {
        return Err(bad("token or ca.crt is empty"));
    }
    Ok(ReaderCredentials {
        ca_data: base64::engine::general_purpose::STANDARD.encode(ca),
        token,
    })
}

/// The name of the reader's long-lived token Secret: the one the cluster holds (istioctl's, or
/// an earlier run's), else one created now.
async fn token_secret(client: &Client) -> Result<String, crate::kube::KubeError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let policy = RetryPolicy::default();
    let all = ListParams::default();
    let existing = retry("list secrets in istio-system", policy, || secrets.list(&all)).await?;
    let is_reader_token = |s: &Secret| {
        s.type_.as_deref() == Some("kubernetes.io/service-account-token")
            && s.annotations()
                .get("kubernetes.io/service-account.name")
                .map(String::as_str)
                == Some(READER_SERVICE_ACCOUNT)
    };
    let name = match existing.items.iter().find(|s| is_reader_token(s)) {
        Some(found) => found.name_any(),
        None => {
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": TOKEN_SECRET, "namespace": NAMESPACE,
                    "annotations": {"kubernetes.io/service-account.name": READER_SERVICE_ACCOUNT},
                    "labels": {"app.kubernetes.io/managed-by": "meshctl"}}}))
            .expect("static secret is valid");
            let created = retry(
                &format!("create secret {NAMESPACE}/{TOKEN_SECRET}"),
                policy,
                || async {
                    match secrets.create(&PostParams::default(), &secret).await {
                        // Created by a concurrent run: just as good.
                        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(()),
                        other => other.map(|_| ()),
                    }
                },
            )
            .await;
            created?;
            TOKEN_SECRET.to_string()
        }
    };
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_recognised() {
        for s in [
            "https://127.0.0.1:6443",
            "https://localhost:443",
            "https://127.1.2.3",
            "https://[::1]:6443",
        ] {
            assert!(is_loopback(s), "{s}");
        }
        for s in [
            "https://172.18.0.3:6443",
            "https://cluster1-control-plane:6443",
            "https://[fc00::3]:6443",
        ] {
            assert!(!is_loopback(s), "{s}");
        }
    }

    #[test]
    fn a_derived_loopback_server_is_refused_with_the_address_to_use() {
        let err = check_server("kind-cluster1", "https://127.0.0.1:40123", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("127.0.0.1:40123")
                && err.contains("cluster1-control-plane")
                && err.contains("--server"),
            "{err}"
        );
        assert!(
            check_server("c", "https://127.0.0.1:40123", true).is_ok(),
            "explicit --server is the user's word"
        );
        assert!(check_server("c", "http://10.0.0.1", true).is_err());
    }

    #[test]
    fn rendered_secret_is_istioctl_format_byte_for_byte() {
        let creds = ReaderCredentials {
            ca_data: "Q0FEQVRB".into(),
            token: "tok.en".into(),
        };
        let text = render_secret("cluster1", "https://172.18.0.3:6443", &creds).unwrap();
        let expected = "# This file is autogenerated, do not edit.
apiVersion: v1
kind: Secret
metadata:
  annotations:
    networking.istio.io/cluster: cluster1
  labels:
    istio/multiCluster: \"true\"
  name: istio-remote-secret-cluster1
  namespace: istio-system
stringData:
  cluster1: |
    apiVersion: v1
    clusters:
    - cluster:
        certificate-authority-data: Q0FEQVRB
        server: https://172.18.0.3:6443
      name: cluster1
    contexts:
    - context:
        cluster: cluster1
        user: cluster1
      name: cluster1
    current-context: cluster1
    kind: Config
    users:
    - name: cluster1
      user:
        token: tok.en
---
";
        assert_eq!(text, expected);
    }
}
