//! Phase `certs`: what must exist before istiod starts: istio-system with its network label, the
//! nodes' locality labels, and on primaries the plug-in CA (`cacerts`) istiod signs with.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Serialize;

use super::{Fact, PhaseLogic, RemoveContext, StepContext, StepResult};
use crate::kube::apply::{Change, summary};
use crate::kube::{delete_owned, wait};
use crate::pki::IntermediateCa;
use crate::plan::{Phase, PhaseBuilder, PlanError, Step};
use crate::probe::{self, Finding, Probe};
use crate::topology::{Provider, Role};

/// What istiod needs before it starts: its namespace and network, locality labels, the plug-in CA.
pub struct Certs;

impl PhaseLogic for Certs {
    fn phase(&self) -> Phase {
        Phase::Certs
    }

    fn plan(&self, b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
        plan(b)
    }

    fn probe<'a>(&'a self, p: &'a Probe<'a>) -> BoxFuture<'a, Vec<Finding>> {
        Box::pin(probe(p))
    }

    fn needs(&self) -> &'static [Fact] {
        &[Fact::Cas]
    }

    fn run<'a>(&'a self, step: &'a Step, cx: StepContext<'a>) -> Option<StepResult<'a>> {
        Some(match step {
            Step::LabelNodes { labels, overwrite } => Box::pin(label_nodes(cx, labels, *overwrite)),
            Step::ApplyPluggedCa { file } => Box::pin(apply_plugged_ca(cx, file)),
            _ => return None,
        })
    }

    fn describe(&self, step: &Step) -> Option<String> {
        Some(match step {
            Step::LabelNodes { labels, overwrite } => {
                let l: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let only = if *overwrite { "" } else { " (only where missing)" };
                format!("label nodes: {}{only}", l.join(" "))
            }
            Step::ApplyPluggedCa { file } => {
                format!("apply: {file}   (then restarts istiod if it replaced the CA istiod runs with)")
            }
            _ => return None,
        })
    }

    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let namespace = cx.istio_namespace;
            let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), namespace);
            let what = format!("Secret {namespace}/{CACERTS}");
            Ok(delete_owned(&secrets, CACERTS, &what)
                .await?
                .into_iter()
                .collect())
        })
    }
}

/// The plug-in CA Secret istiod reads at start.
pub const CACERTS: &str = "cacerts";

/// Context of `templates/certs/istio-system.yaml.j2`.
#[derive(Serialize)]
struct IstioSystem<'a> {
    namespace: &'a str,
    network: &'a str,
    /// The cluster ID of the istiod that manages a remote: annotation
    /// `topology.istio.io/controlPlaneClusters`.
    control_plane: Option<&'a str>,
}

/// The `cacerts` Secret of `ca`'s cluster in `namespace` (istiod's), as `up` applies it (and
/// `certs rotate`).
pub fn render_cacerts(ca: &IntermediateCa, namespace: &str) -> Result<String, crate::render::RenderError> {
    crate::render::render(CACERTS_TEMPLATE, &CaCerts::of(ca, namespace))
}

const CACERTS_TEMPLATE: &str = "certs/cacerts.yaml.j2";

/// Context of `templates/certs/cacerts.yaml.j2`.
#[derive(Serialize)]
struct CaCerts<'a> {
    cluster: &'a str,
    namespace: &'a str,
    ca_cert: &'a str,
    ca_key: &'a str,
    root_cert: &'a str,
    cert_chain: &'a str,
}

impl<'a> CaCerts<'a> {
    fn of(ca: &'a IntermediateCa, namespace: &'a str) -> CaCerts<'a> {
        CaCerts {
            cluster: &ca.cluster,
            namespace,
            ca_cert: &ca.ca_cert_pem,
            ca_key: &ca.ca_key_pem,
            root_cert: &ca.root_cert_pem,
            cert_chain: &ca.cert_chain_pem,
        }
    }
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
    b.step(Step::LabelNodes {
        labels: BTreeMap::from([
            (
                "topology.kubernetes.io/region".to_string(),
                cluster.region.clone(),
            ),
            ("topology.kubernetes.io/zone".to_string(), cluster.zone.clone()),
        ]),
        overwrite: b.input.mesh.provider == Provider::Kind,
    });
    // A remote runs no istiod (the remote profile renders no Deployment: Istio's
    // `istio-discovery/templates/deployment.yaml` is skipped there): its proxies get their
    // certificates from the primary's istiod, so nothing would read a CA key put there.
    // An external control plane's CA is its external istiod's, in `external-istiod`.
    if cluster.role != Role::Remote {
        let context = CaCerts::of(ca, istio_namespace);
        let cacerts = b.render("cacerts.yaml", CACERTS_TEMPLATE, &context, true)?;
        b.step(Step::ApplyPluggedCa { file: cacerts });
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
            Step::Apply { file } | Step::ApplyPluggedCa { file } => {
                out.extend(p.applied(&client, file).await)
            }
            Step::LabelNodes { labels, overwrite } => {
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

/// Applies `cacerts`; when that replaced one istiod already runs with, restarts istiod and waits
/// for the new pods: istiod takes up a new intermediate by itself but ignores a new root (Istio
/// `pilot/pkg/bootstrap/istio_ca.go`, `handleEvent`: "Updating new ROOT-CA not supported").
async fn apply_plugged_ca(cx: StepContext<'_>, file: &str) -> Result<Option<String>> {
    let applied = cx.apply(&cx.artifact_text(file)?, file).await?;
    let replaced = applied.iter().any(|a| a.change == Change::Updated);
    let client = cx.client().await?;
    if !replaced {
        return Ok(summary(&applied));
    }
    // Every revision's istiod (two run during an upgrade), by the label Istio's chart gives them.
    let namespace = cx.istio_namespace();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let istiods: Vec<String> = deployments
        .list(&ListParams::default().labels("app=istiod"))
        .await?
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    if istiods.is_empty() {
        return Ok(summary(&applied));
    }
    for istiod in &istiods {
        crate::kube::apply::rollout_restart(&client, namespace, istiod).await?;
    }
    for istiod in &istiods {
        wait::rollout_complete(&client, namespace, istiod, cx.settings().timeout).await?;
    }
    Ok(Some(format!(
        "cacerts replaced; {} restarted to sign with it",
        istiods.join(", ")
    )))
}
