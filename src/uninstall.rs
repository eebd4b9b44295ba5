//! `meshctl down --uninstall`: remove from the clusters what meshctl put there, and only that.
//!
//! Each phase removes its own objects ([`crate::phases::PhaseLogic::remove`]), in the reverse of
//! the order `up` built them, in every cluster before the next phase: the remote secrets first
//! everywhere, so no istiod keeps watching a cluster whose reader token is about to go. How
//! meshctl tells its own objects from anyone else's:
//! - remote secrets: meshctl's field manager owns fields of them (server-side apply);
//! - the reader account, its role, binding and token, the expose Gateways, `cacerts`: the label
//!   `app.kubernetes.io/managed-by: meshctl` (set only on objects meshctl created);
//! - istiod (a remote's istiod Service) and the east-west gateway: the installed-digest annotation
//!   meshctl records after its `istioctl install`; they are removed with `istioctl uninstall` of
//!   the same IstioOperator file;
//! - verify's namespace `sample` (kept by `verify --keep`): the label; it goes first.
//!
//! Kept, and said so: the `istio-system` namespace, Istio's CRDs (other installs may use them),
//! node labels (meshctl only added missing ones, which cannot be told apart from the provider's);
//! in an ambient mesh also the Gateway API CRDs with their admission policy (other software may
//! use them) and the GatewayClasses istiod makes for itself (no owner reference, no label of
//! meshctl's). The ambient east-west Gateway is meshctl's (its label) and goes; istiod's Deployment
//! and Service for it go with it, by owner reference.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::phases::{self, RemoveContext};
use crate::plan::Phase;
use crate::tools::ToolRunner;
use crate::topology::Cluster;

/// Where the objects `up` installed are removed from.
pub struct Target<'a> {
    pub cluster: &'a Cluster,
    /// The namespace of its Istio control-plane objects (`Mesh::istio_namespace`).
    pub istio_namespace: &'static str,
    pub client: kube::Client,
}

/// Removes every phase from every cluster, last phase first; returns what went, per cluster, in
/// the order it went.
pub async fn uninstall(
    targets: &[Target<'_>],
    mesh_id: &str,
    plan_dir: &Path,
    kubeconfig: Option<&Path>,
    timeout: Duration,
    tools: &dyn ToolRunner,
) -> Result<Vec<(String, Vec<String>)>> {
    let mut removed: Vec<(String, Vec<String>)> = targets
        .iter()
        .map(|t| (t.cluster.name.clone(), Vec::new()))
        .collect();
    // verify's workloads (kept by `verify --keep`, or left by one interrupted) are the last thing
    // meshctl put there: the first to go, before the control plane their proxies depend on.
    let verification = targets.iter().map(|t| async move {
        remove_verification_namespace(&t.client)
            .await
            .with_context(|| format!("down --uninstall: cluster `{}`", t.cluster.name))
    });
    for ((_, list), result) in removed
        .iter_mut()
        .zip(futures::future::join_all(verification).await)
    {
        list.extend(result?);
    }
    for phase in Phase::ALL.into_iter().rev() {
        let logic = phases::logic(phase);
        let runs = targets.iter().map(|t| async move {
            let cx = RemoveContext {
                cluster: t.cluster,
                mesh_id,
                istio_namespace: t.istio_namespace,
                client: t.client.clone(),
                plan_dir,
                kubeconfig,
                timeout,
                tools,
            };
            logic
                .remove(&cx)
                .await
                .with_context(|| format!("down --uninstall: cluster `{}`, phase {phase}", t.cluster.name))
        });
        for ((_, list), result) in removed.iter_mut().zip(futures::future::join_all(runs).await) {
            list.extend(result?);
        }
    }
    Ok(removed)
}

/// Deletes verify's namespace where meshctl made it (its label); someone else's of the same name
/// stays.
async fn remove_verification_namespace(client: &kube::Client) -> Result<Option<String>> {
    use k8s_openapi::api::core::v1::Namespace;
    let namespace = crate::verification::workloads::NAMESPACE;
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let (key, value) = crate::kube::MANAGED_BY;
    match namespaces
        .get_opt(namespace)
        .await
        .with_context(|| format!("cannot read Namespace {namespace}"))?
    {
        Some(ns)
            if ns
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .is_some_and(|v| v == value) =>
        {
            namespaces
                .delete(namespace, &Default::default())
                .await
                .with_context(|| format!("cannot delete Namespace {namespace}"))?;
            Ok(Some(format!("Namespace {namespace} (verify's workloads)")))
        }
        _ => Ok(None),
    }
}

/// What istio-cni writes on a pod whose traffic it redirects to ztunnel: `enabled`, or `pending`
/// while no ztunnel has taken it yet (cni/pkg/util/podutil.go; istio-cni itself undoes a pod by
/// these, `PodFullyEnrolled` and `PodPartiallyEnrolled`).
const REDIRECTION: &str = "ambient.istio.io/redirection";

/// The label that enrolls a pod, or the pods of a namespace, in ambient mode (istio/api
/// `label.IoIstioDataplaneMode`; istio-cni's default enablement selectors).
const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// Refuses to take ztunnel and istio-cni away from pods whose traffic istio-cni still redirects,
/// outside the namespaces meshctl made: istio-cni removes only its node rules when it stops, not
/// the redirection inside each pod (cni/pkg/nodeagent/net_linux.go and meshdataplane_linux.go,
/// `Stop`), so their traffic would go to a ztunnel that is gone until they restart. Pods are judged
/// by what istio-cni recorded on them, however they were enrolled (their namespace's label or
/// their own). Taking the label off is their owner's to do, as Istio's ambient uninstall does
/// first; istio-cni then undoes each pod and its annotation goes, and a later run goes ahead.
pub async fn refuse_enrolled_workloads(targets: &[Target<'_>]) -> Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, ListParams};
    let per_cluster = targets.iter().map(|t| async move {
        let failed = |what: &str| format!("down --uninstall: cluster `{}`: cannot list {what}", t.cluster.name);
        let namespaces = Api::<Namespace>::all(t.client.clone())
            .list(&ListParams::default())
            .await
            .with_context(|| failed("namespaces"))?;
        let ours: std::collections::BTreeSet<String> = namespaces
            .items
            .iter()
            .filter(|n| {
                let (key, value) = crate::kube::MANAGED_BY;
                n.metadata.labels.as_ref().and_then(|l| l.get(key)).is_some_and(|v| v == value)
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let pods = Api::<Pod>::all(t.client.clone())
            .list(&ListParams::default())
            .await
            .with_context(|| failed("pods"))?;
        let mut found = std::collections::BTreeSet::new();
        for pod in pods.items {
            let meta = pod.metadata;
            let namespace = meta.namespace.clone().unwrap_or_default();
            let redirected = meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(REDIRECTION))
                .is_some_and(|v| v == "enabled" || v == "pending");
            if !redirected || ours.contains(&namespace) {
                continue;
            }
            let name = meta.name.unwrap_or_default();
            let own_label = meta.labels.as_ref().and_then(|l| l.get(DATAPLANE_MODE)).is_some();
            found.insert(if own_label {
                format!(
                    "cluster `{}`: pod {namespace}/{name} (its own label {DATAPLANE_MODE}: take it off its workload's pod template)",
                    t.cluster.name
                )
            } else {
                format!(
                    "cluster `{}`: namespace `{namespace}` (kubectl --context {} label namespace {namespace} {DATAPLANE_MODE}-)",
                    t.cluster.name, t.cluster.context
                )
            });
        }
        Ok::<_, anyhow::Error>(found)
    });
    let mut refusals = Vec::new();
    for result in futures::future::join_all(per_cluster).await {
        refusals.extend(result?);
    }
    if refusals.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "down --uninstall: istio-cni still redirects these pods' traffic to ztunnel, which the uninstall removes (they would lose their traffic until restarted); nothing was changed\n  {}\nhint: take each out of the mesh first, as Istio's ambient uninstall does (the way is beside it); once istio-cni has let them go, run `down --uninstall` again",
        refusals.join("\n  ")
    )
}
