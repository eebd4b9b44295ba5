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
//!   the same IstioOperator file.
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

/// The label that enrolls a namespace's pods in ambient mode (istio/api
/// `label.IoIstioDataplaneMode`): istio-cni redirects their traffic to the node's ztunnel.
const AMBIENT_ENROLLED: &str = "istio.io/dataplane-mode=ambient";

/// Refuses to take ztunnel and istio-cni away from pods still enrolled in ambient mode in a
/// namespace meshctl did not make: istio-cni removes only its node rules when it stops, not the
/// redirection inside each pod (cni/pkg/nodeagent/net_linux.go, `Stop`), so their traffic would go
/// to a ztunnel that is gone until they restart. Istio's ambient uninstall takes the label off
/// first, and so must the namespace's owner: meshctl changes no namespace of theirs.
pub async fn refuse_enrolled_workloads(targets: &[Target<'_>]) -> Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, ListParams};
    let per_cluster = targets.iter().map(|t| async move {
        let enrolled = Api::<Namespace>::all(t.client.clone())
            .list(&ListParams::default().labels(AMBIENT_ENROLLED))
            .await
            .with_context(|| {
                format!(
                    "down --uninstall: cluster `{}`: cannot list namespaces",
                    t.cluster.name
                )
            })?;
        let mut busy = Vec::new();
        for ns in enrolled.items {
            let labels = ns.metadata.labels.unwrap_or_default();
            let name = ns.metadata.name.unwrap_or_default();
            if labels.get("app.kubernetes.io/managed-by").map(String::as_str) == Some("meshctl") {
                continue;
            }
            let pods = Api::<Pod>::namespaced(t.client.clone(), &name)
                .list(&ListParams::default().limit(1))
                .await
                .with_context(|| {
                    format!(
                        "down --uninstall: cluster `{}`: cannot list pods in `{name}`",
                        t.cluster.name
                    )
                })?;
            if !pods.items.is_empty() {
                busy.push(name);
            }
        }
        Ok::<_, anyhow::Error>((t, busy))
    });
    let mut refusals = Vec::new();
    for result in futures::future::join_all(per_cluster).await {
        let (t, busy) = result?;
        refusals.extend(busy.into_iter().map(|ns| {
            format!(
                "cluster `{}`: namespace `{ns}` (kubectl --context {} label namespace {ns} istio.io/dataplane-mode-)",
                t.cluster.name, t.cluster.context
            )
        }));
    }
    if refusals.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "down --uninstall: pods of namespaces enrolled in the ambient mesh would lose their traffic when ztunnel and istio-cni go; nothing was changed\n  {}\nhint: take each out of the mesh first, as Istio's ambient uninstall does (the command beside it), then run `down --uninstall` again",
        refusals.join("\n  ")
    )
}
