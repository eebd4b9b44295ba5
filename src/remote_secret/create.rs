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
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
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

/// The account in the source cluster whose token a secret carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub namespace: String,
    pub service_account: String,
    /// The read-only cluster role created with the account when either is missing; `None` when
    /// the account must exist already (the config cluster's `istiod`, which Istio's chart makes
    /// with its own roles: istioctl's `--create-service-account=false`).
    pub reader_role: Option<String>,
}

impl Account {
    /// The reader account remote istiods use, in `namespace` (Istio's namespace in that cluster);
    /// its cluster role named as Istio's chart names it (`istio-reader-clusterrole-<namespace>`).
    pub fn reader(namespace: &str) -> Account {
        Account {
            namespace: namespace.into(),
            service_account: READER_SERVICE_ACCOUNT.into(),
            reader_role: Some(format!("istio-reader-clusterrole-{namespace}")),
        }
    }

    /// The config cluster's `istiod` account an external istiod runs as (istioctl's default
    /// service account for `--type=config`).
    pub fn config_istiod(namespace: &str) -> Account {
        Account {
            namespace: namespace.into(),
            service_account: "istiod".into(),
            reader_role: None,
        }
    }

    /// The long-lived token Secret made for it when none exists (istioctl's `tokenSecretName`).
    pub fn token_secret(&self) -> String {
        format!("{}-istio-remote-secret-token", self.service_account)
    }
}

/// Where a secret goes and what it is, as istioctl's `--type` and `--namespace` choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'a> {
    /// The namespace of the istiod that reads it.
    pub namespace: &'a str,
    /// A remote cluster's secret, or the config cluster's kubeconfig of an external istiod.
    pub config: bool,
}

impl Default for Placement<'_> {
    fn default() -> Self {
        Placement {
            namespace: NAMESPACE,
            config: false,
        }
    }
}

/// The Secret an external istiod mounts as its kubeconfig of the config cluster (Istio's
/// istio-discovery chart mounts it, optional, at `/var/run/secrets/remote`).
pub const CONFIG_SECRET: &str = "istio-kubeconfig";

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
    /// The account the secret must carry a token of does not exist.
    #[error(
        "cluster `{cluster}`: no service account {namespace}/{service_account} to take a token of (Istio's install of this cluster makes it: run `meshctl up` so its istio phase completes first)"
    )]
    NoAccount {
        cluster: String,
        namespace: String,
        service_account: String,
    },
    /// The token Secret holds no usable token.
    #[error("cluster `{cluster}`: secret {namespace}/{secret}: {reason}")]
    BadToken {
        namespace: String,
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
    /// The Secret's own name: [`super::secret_name`], or the config cluster's kubeconfig's.
    secret_name: String,
    namespace: &'a str,
    /// The config cluster's kubeconfig (`istio-kubeconfig`, key `config`) instead of a remote
    /// secret.
    config: bool,
    server: &'a str,
    ca_data: &'a str,
    token: String,
    /// Placeholders stand for what only a run can read; the rendering says so on its first line.
    preview: bool,
}

fn secret_name_of(placement: Placement<'_>, name: &str) -> String {
    if placement.config {
        CONFIG_SECRET.to_string()
    } else {
        super::secret_name(name)
    }
}

/// The template of the remote secret.
pub const TEMPLATE: &str = "remote-secrets/remote-secret.yaml.j2";

/// The remote secret of `name` as a plan shows it: the token and the CA are read from the cluster
/// when the phase runs (the token is a credential and never belongs in a plan on disk).
pub fn preview<'a>(name: &'a str, server: &'a str) -> SecretContext<'a> {
    preview_in(Placement::default(), name, server, &Account::reader(NAMESPACE))
}

/// [`preview`] of a secret placed as `placement` says, carrying a token of `account`.
pub fn preview_in<'a>(
    placement: Placement<'a>,
    name: &'a str,
    server: &'a str,
    account: &Account,
) -> SecretContext<'a> {
    SecretContext {
        name,
        secret_name: secret_name_of(placement, name),
        namespace: placement.namespace,
        config: placement.config,
        server,
        ca_data: "<read at run time: the cluster's CA, base64>",
        token: format!(
            "<read at run time: the long-lived token of {}/{}>",
            account.namespace, account.service_account
        ),
        preview: true,
    }
}

/// Renders the Secret exactly as `istioctl create-remote-secret` prints it.
pub fn render_secret(name: &str, server: &str, creds: &ReaderCredentials) -> Result<String, RenderError> {
    render_secret_in(Placement::default(), name, server, creds)
}

/// [`render_secret`] placed as `placement` says. The config cluster's kubeconfig carries no
/// `istio/multiCluster` label, unlike istioctl's `--type=config` output: an external istiod
/// watching its own namespace for remote secrets (`LOCAL_CLUSTER_SECRET_WATCHER`) would take the
/// labelled Secret for one more remote cluster, named `config` after its key, and read the config
/// cluster twice (Istio `pkg/kube/multicluster/secretcontroller.go`, `addRemoteConfig`). Istio's
/// own test framework writes it unlabelled for the same model.
pub fn render_secret_in(
    placement: Placement<'_>,
    name: &str,
    server: &str,
    creds: &ReaderCredentials,
) -> Result<String, RenderError> {
    render::render(
        TEMPLATE,
        &SecretContext {
            name,
            secret_name: secret_name_of(placement, name),
            namespace: placement.namespace,
            config: placement.config,
            server,
            ca_data: &creds.ca_data,
            token: creds.token.clone(),
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
    credentials_of(client, cluster, &Account::reader(NAMESPACE), timeout).await
}

/// [`reader_credentials`] of any account: its RBAC made where missing (when it has a reader
/// role), else the account required to exist; then its long-lived token.
pub async fn credentials_of(
    client: &Client,
    cluster: &str,
    account: &Account,
    timeout: Duration,
) -> Result<ReaderCredentials, RemoteSecretError> {
    let kube_err = |source| RemoteSecretError::Kube {
        cluster: cluster.into(),
        source,
    };
    let namespace = account.namespace.as_str();
    match &account.reader_role {
        Some(role) => {
            let rbac = render::render(
                "remote-secrets/reader-rbac.yaml.j2",
                &ReaderRbac {
                    service_account: &account.service_account,
                    namespace,
                    cluster_role: role,
                },
            )?;
            Applier::new(client.clone())
                .create_missing(&rbac, "reader RBAC")
                .await
                .map_err(kube_err)?;
        }
        None => {
            let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
            let found = retry("read service account", RetryPolicy::default(), || {
                accounts.get_opt(&account.service_account)
            })
            .await
            .map_err(kube_err)?;
            if found.is_none() {
                return Err(RemoteSecretError::NoAccount {
                    cluster: cluster.into(),
                    namespace: namespace.into(),
                    service_account: account.service_account.clone(),
                });
            }
        }
    }

    let name = token_secret(client, account).await.map_err(kube_err)?;
    let secrets = kube::Api::namespaced(client.clone(), namespace);
    let filled = wait::until_object(&secrets, wait::token_filled(namespace, &name), timeout)
        .await
        .map_err(|e| kube_err(e.into()))?;
    let data = filled.data.unwrap_or_default();
    let bad = |reason: &str| RemoteSecretError::BadToken {
        namespace: namespace.into(),
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

/// The name of the account's long-lived token Secret: the one the cluster holds (istioctl's, or
/// an earlier run's), else one created now.
async fn token_secret(client: &Client, account: &Account) -> Result<String, crate::kube::KubeError> {
    let namespace = account.namespace.as_str();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let policy = RetryPolicy::default();
    let all = ListParams::default();
    let existing = retry(&format!("list secrets in {namespace}"), policy, || {
        secrets.list(&all)
    })
    .await?;
    let is_token_of_account = |s: &Secret| {
        s.type_.as_deref() == Some("kubernetes.io/service-account-token")
            && s.annotations()
                .get("kubernetes.io/service-account.name")
                .map(String::as_str)
                == Some(account.service_account.as_str())
    };
    let token_secret = account.token_secret();
    let name = match existing.items.iter().find(|s| is_token_of_account(s)) {
        Some(found) => found.name_any(),
        None => {
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": token_secret, "namespace": namespace,
                    "annotations": {"kubernetes.io/service-account.name": account.service_account},
                    "labels": {"app.kubernetes.io/managed-by": "meshctl"}}}))
            .expect("static secret is valid");
            let created = retry(
                &format!("create secret {namespace}/{token_secret}"),
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
            token_secret
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

    /// The names istioctl gives the reader's role and token Secret in istio-system, and the
    /// config cluster's account it reads for `--type=config`.
    #[test]
    fn accounts_are_named_as_istio_names_them() {
        let reader = Account::reader(NAMESPACE);
        assert_eq!(
            reader.reader_role.as_deref(),
            Some("istio-reader-clusterrole-istio-system")
        );
        assert_eq!(
            reader.token_secret(),
            "istio-reader-service-account-istio-remote-secret-token"
        );
        let config = Account::config_istiod("external-istiod");
        assert_eq!(
            (config.service_account.as_str(), config.reader_role.as_deref()),
            ("istiod", None)
        );
        assert_eq!(config.token_secret(), "istiod-istio-remote-secret-token");
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
