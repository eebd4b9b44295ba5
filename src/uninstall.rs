//! `meshctl down --uninstall`: remove from a cluster what meshctl put there, and only that.
//!
//! How meshctl tells its own objects from anyone else's, per kind of object:
//! - remote secrets: meshctl's field manager owns fields of them (server-side apply);
//! - the reader account, its role, binding and token, the expose Gateway, `cacerts`: the label
//!   `app.kubernetes.io/managed-by: meshctl` (set only on objects meshctl created), as on the
//!   expose-istiod Gateway and VirtualService;
//! - istiod (a remote's istiod Service) and the east-west gateway: the installed-digest annotation
//!   meshctl records after its `istioctl install`; they are removed with `istioctl uninstall` of
//!   the same IstioOperator file.
//!
//! Kept, and said so: the `istio-system` namespace, Istio's CRDs (other installs may use them),
//! node labels (meshctl only added missing ones, which cannot be told apart from the provider's).

use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, Resource};

use crate::phases::istio::{INSTALLED_DIGEST, NAMESPACE};
use crate::phases::remote_secrets::{meshctl_secret_for, remote_secrets_selector};
use crate::plan::{Phase, RecordOn};
use crate::remote_secret::{READER_CLUSTER_ROLE, READER_SERVICE_ACCOUNT, TOKEN_SECRET};
use crate::tools::{ProcessRunner, RunOptions};
use crate::topology::Cluster;

fn ours<K: Resource>(obj: &K) -> bool {
    crate::kube::managed_by_meshctl(obj.meta())
}

/// Whether `record_on` (in istio-system) carries meshctl's install record: meshctl installed it.
async fn recorded(client: &Client, record_on: &RecordOn) -> Result<bool> {
    let has_record = |meta: &kube::api::ObjectMeta| {
        meta.annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(INSTALLED_DIGEST))
    };
    let found = match record_on {
        RecordOn::Service(name) => Api::<Service>::namespaced(client.clone(), NAMESPACE)
            .get_opt(name)
            .await
            .map(|o| o.is_some_and(|s| has_record(&s.metadata))),
        RecordOn::Deployment(name) => Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
            .get_opt(name)
            .await
            .map(|o| o.is_some_and(|d| has_record(&d.metadata))),
    };
    found.with_context(|| format!("cannot read {record_on} in {NAMESPACE}"))
}

/// Deletes `name` through `api` when it exists and `owned` says meshctl made it; says what it did.
async fn delete_if<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    owned: impl Fn(&K) -> bool,
) -> Result<Option<String>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read {what}"))?
    {
        Some(obj) if owned(&obj) => {
            api.delete(name, &DeleteParams::default())
                .await
                .with_context(|| format!("cannot delete {what}"))?;
            Ok(Some(what.to_string()))
        }
        _ => Ok(None),
    }
}

/// The remote secrets meshctl applied in this cluster, deleted; their names.
pub async fn remote_secrets(client: &Client) -> Result<Vec<String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let list = api
        .list(&remote_secrets_selector())
        .await
        .context("cannot list remote secrets")?;
    let mut removed = Vec::new();
    for secret in list.items.iter().filter(|s| meshctl_secret_for(s).is_some()) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        api.delete(&name, &DeleteParams::default())
            .await
            .with_context(|| format!("cannot delete secret {NAMESPACE}/{name}"))?;
        removed.push(format!("Secret {NAMESPACE}/{name}"));
    }
    Ok(removed)
}

/// Everything else meshctl put in `cluster` (call [`remote_secrets`] in every cluster first, so no
/// istiod keeps watching a cluster whose reader token is gone). `plan_dir` holds the IstioOperator
/// files `up` installed. Returns what was removed.
pub async fn rest(
    client: &Client,
    cluster: &Cluster,
    plan_dir: &Path,
    kubeconfig: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    // The Gateways first: they route through the east-west gateway about to go.
    let gateways = crate::phases::expose::gateways(client);
    for name in [
        crate::phases::expose::GATEWAY_NAME,
        crate::phases::expose::ISTIOD_GATEWAY_NAME,
    ] {
        let what = format!("Gateway {NAMESPACE}/{name}");
        removed.extend(delete_if(&gateways, name, &what, ours).await?);
    }
    let services = crate::phases::expose::virtual_services(client);
    let vs = crate::phases::expose::ISTIOD_VIRTUAL_SERVICE;
    let what = format!("VirtualService {NAMESPACE}/{vs}");
    removed.extend(delete_if(&services, vs, &what, ours).await?);
    // Istio, as meshctl installed it: the east-west gateway, then the control plane (a remote's
    // install record is on its istiod Service: it has no istiod).
    let istio_record = match cluster.role {
        crate::topology::Role::Primary => RecordOn::Deployment("istiod".into()),
        crate::topology::Role::Remote => {
            RecordOn::Service(crate::phases::istio::REMOTE_RECORD_SERVICE.into())
        }
    };
    for (phase, file, record_on) in [
        (
            Phase::Eastwest,
            "eastwest-gateway.yaml",
            RecordOn::Deployment(crate::phases::eastwest::GATEWAY_NAME.into()),
        ),
        (Phase::Istio, "control-plane.yaml", istio_record),
    ] {
        let path = format!("{}/{}/{file}", cluster.name, phase.folder());
        if !recorded(client, &record_on).await? || !plan_dir.join(&path).exists() {
            continue;
        }
        let args: Vec<String> = ["uninstall", "-y", "--context", &cluster.context, "-f", &path]
            .map(String::from)
            .to_vec();
        let options = RunOptions {
            cwd: Some(plan_dir.to_path_buf()),
            timeout: Some(timeout),
            env: kubeconfig
                .map(|p| ("KUBECONFIG".to_string(), p.display().to_string()))
                .into_iter()
                .collect(),
            ..Default::default()
        };
        ProcessRunner.run("istioctl", &args, &options).await?;
        removed.push(format!("{record_on} (istioctl uninstall -f {path})"));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let steps = [
        delete_if(&secrets, "cacerts", &format!("Secret {NAMESPACE}/cacerts"), ours).await?,
        delete_if(
            &secrets,
            TOKEN_SECRET,
            &format!("Secret {NAMESPACE}/{TOKEN_SECRET}"),
            ours,
        )
        .await?,
        delete_if(
            &accounts,
            READER_SERVICE_ACCOUNT,
            &format!("ServiceAccount {NAMESPACE}/{READER_SERVICE_ACCOUNT}"),
            ours,
        )
        .await?,
        delete_if(
            &bindings,
            READER_CLUSTER_ROLE,
            &format!("ClusterRoleBinding {READER_CLUSTER_ROLE}"),
            ours,
        )
        .await?,
        delete_if(
            &roles,
            READER_CLUSTER_ROLE,
            &format!("ClusterRole {READER_CLUSTER_ROLE}"),
            ours,
        )
        .await?,
    ];
    removed.extend(steps.into_iter().flatten());
    Ok(removed)
}
