//! Phase `certs`: what must exist before istiod starts: istio-system with its network label, the
//! nodes' locality labels, and on primaries the plug-in CA (`cacerts`) istiod signs with.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Serialize;

use super::{Fact, PhaseLogic, RemoveContext, StepContext, StepResult};
use crate::kube::apply::{Change, summary};
use crate::kube::delete_owned;
use crate::plan::CertsStep;
use crate::plan::{PhaseBuilder, PlanError, Step};
use crate::plugged_ca::{self, CACERTS};
use crate::probe::{self, Finding, Probe};
use crate::topology::{Provider, Role};

/// What istiod needs before it starts: its namespace and network, locality labels, the plug-in CA.
pub struct Certs;

impl PhaseLogic for Certs {
    plan_and_probe_are_the_modules!();

    fn needs(&self) -> &'static [Fact] {
        &[Fact::Cas]
    }

    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let namespace = cx.istio_namespace;
            let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), namespace);
            let what = format!("Secret {namespace}/{CACERTS}");
            Ok(delete_owned(&secrets, (CACERTS, cx.mesh_id), &what)
                .await?
                .into_iter()
                .collect())
        })
    }
}

/// Runs one of the phase's own steps.
pub(super) fn run<'a>(step: &'a CertsStep, cx: StepContext<'a>) -> StepResult<'a> {
    match step {
        CertsStep::LabelNodes { labels, overwrite } => Box::pin(label_nodes(cx, labels, *overwrite)),
        CertsStep::ApplyPluggedCa { file } => Box::pin(apply_plugged_ca(cx, file)),
    }
}

/// How one of the phase's own steps reads.
pub(super) fn describe(step: &CertsStep) -> String {
    match step {
        CertsStep::LabelNodes { labels, overwrite } => {
            let l: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let only = if *overwrite { "" } else { " (only where missing)" };
            format!("label nodes: {}{only}", l.join(" "))
        }
        CertsStep::ApplyPluggedCa { file } => {
            format!("apply: {file}   (then restarts istiod if it replaced the CA istiod runs with)")
        }
    }
}

/// Context of `templates/certs/istio-system.yaml.j2`.
#[derive(Serialize)]
struct IstioSystem<'a> {
    namespace: &'a str,
    network: &'a str,
    /// The cluster ID of the istiod that manages a remote: annotation
    /// `topology.istio.io/controlPlaneClusters`.
    control_plane: Option<&'a str>,
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let cluster = b.cluster;
    let ca = b
        .input
        .cas
        .get(b.index)
        .ok_or_else(|| b.missing("an intermediate CA"))?;
    let mesh = b.input.mesh;
    let istio_namespace = mesh.istio_namespace(cluster);
    // A remote of an external control plane is managed by the istiod whose cluster ID is the
    // config cluster's (the external istiod runs as it).
    let control_plane = match mesh.external_control_plane() {
        Some(external) if cluster.role == Role::Remote => {
            mesh.config_cluster_of(external).map(|c| c.name.as_str())
        }
        _ => cluster.primary.as_deref(),
    };
    let namespace = b.render(
        "istio-system.yaml",
        "certs/istio-system.yaml.j2",
        &IstioSystem {
            namespace: istio_namespace,
            network: &cluster.network,
            control_plane,
        },
        false,
    )?;
    b.step(Step::Apply { file: namespace });
    b.step(Step::Certs(CertsStep::LabelNodes {
        labels: BTreeMap::from([
            (
                "topology.kubernetes.io/region".to_string(),
                cluster.region.clone(),
            ),
            ("topology.kubernetes.io/zone".to_string(), cluster.zone.clone()),
        ]),
        overwrite: b.input.mesh.provider == Provider::Kind,
    }));
    // A remote runs no istiod (the remote profile renders no Deployment: Istio's
    // `istio-discovery/templates/deployment.yaml` is skipped there): its proxies get their
    // certificates from the primary's istiod, so nothing would read a CA key put there.
    // An external control plane's CA is its external istiod's, in `external-istiod`.
    if cluster.role != Role::Remote {
        let context = plugged_ca::context(ca, (&mesh.mesh_id, istio_namespace));
        let cacerts = b.render("cacerts.yaml", plugged_ca::TEMPLATE, &context, true)?;
        b.step(Step::Certs(CertsStep::ApplyPluggedCa { file: cacerts }));
    }
    Ok(())
}

/// The namespace with its network label, the nodes' locality labels, and `cacerts` as rendered
/// (compared field by field; a difference names the key, never its value).
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![f],
    };
    let mut out = Vec::new();
    for step in p.steps {
        match step {
            Step::Apply { file } => out.extend(p.applied(&client, file).await),
            Step::Certs(CertsStep::ApplyPluggedCa { file }) => {
                let namespace = p.mesh.istio_namespace(p.cluster);
                let wanted = p
                    .artifact(file)
                    .and_then(|a| plugged_ca::root_of_rendered(&a.content));
                let conflict = match wanted {
                    Some(root) => {
                        plugged_ca::conflict_finding(&client, (&p.mesh.mesh_id, namespace), &root).await
                    }
                    None => None,
                };
                match conflict {
                    Some(refused) => out.push(refused),
                    None => out.extend(p.applied(&client, file).await),
                }
            }
            Step::Certs(CertsStep::LabelNodes { labels, overwrite }) => {
                out.push(probe::nodes(&client, labels, *overwrite).await)
            }
            _ => {}
        }
    }
    out
}

/// Sets `labels` on every node: missing ones always, differing ones only with `overwrite` (kind
/// clusters; a cloud provider's own topology labels are never overwritten).
async fn label_nodes(
    cx: StepContext<'_>,
    labels: &BTreeMap<String, String>,
    overwrite: bool,
) -> Result<Option<String>> {
    let nodes: Api<Node> = Api::all(cx.client().await?);
    let list = nodes
        .list(&ListParams::default())
        .await
        .context("cannot list nodes")?;
    let mut changed = 0;
    for node in list.items {
        let current = node.metadata.labels.clone().unwrap_or_default();
        let wanted: BTreeMap<&String, &String> = labels
            .iter()
            .filter(|(k, v)| match current.get(*k) {
                None => true,
                Some(have) => overwrite && have != *v,
            })
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"labels": wanted}});
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("cannot label node `{name}`"))?;
        changed += 1;
    }
    Ok((changed > 0).then(|| format!("{changed} node(s) labelled")))
}

/// Applies `cacerts`, unless meshctl's own one there trusts another root (a second machine with a
/// root of its own, another `MESHCTL_HOME`: replacing it is a root rotation, never a repair); when
/// it replaced the one istiod runs with, restarts every istiod to sign with it.
async fn apply_plugged_ca(cx: StepContext<'_>, file: &str) -> Result<Option<String>> {
    let text = cx.artifact_text(file)?;
    let client = cx.client().await?;
    let namespace = cx.istio_namespace();
    if let Some(root) = plugged_ca::root_of_rendered(&text) {
        plugged_ca::refuse_other_root(&client, (&cx.run.mesh.mesh_id, namespace), &root).await?;
    }
    let applied = cx.apply(&text, file).await?;
    if !applied.iter().any(|a| a.change == Change::Updated) {
        return Ok(summary(&applied));
    }
    let restarted = plugged_ca::restart_istiods(&client, namespace, cx.settings().timeout).await?;
    if restarted.is_empty() {
        return Ok(summary(&applied));
    }
    Ok(Some(format!(
        "cacerts replaced; {} restarted to sign with it",
        restarted.join(", ")
    )))
}
