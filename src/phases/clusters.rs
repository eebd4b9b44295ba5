//! Phase `clusters`: create the kind clusters and learn how to reach them. kind's own kubeconfig names the
//! context `kind-<name>` and points at 127.0.0.1, which only the host can use.

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde::Serialize;

use std::path::PathBuf;

use super::{Fact, PhaseLogic, Preflight, StepContext, StepResult};
use crate::kube::wait;
use crate::kubeconfig;
use crate::plan::{ClustersStep, Condition, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};
use crate::tools::docker::Docker;
use crate::tools::kind::{self, Kind, api_endpoint, control_plane_container};
use crate::versions;

/// Creates the kind clusters and learns how other clusters reach their API servers.
pub struct Clusters;

impl PhaseLogic for Clusters {
    fn on_existing_clusters(&self) -> super::OnExistingClusters {
        super::OnExistingClusters::Never
    }

    /// The kubeconfig meshctl imports kind contexts into parses and holds no entry of the same
    /// name that meshctl did not create.
    fn preflight(&self, cx: &Preflight<'_>) -> Result<()> {
        // What meshctl wrote counts only in the file it wrote it to.
        let owned = if cx.state.kubeconfig.as_deref() == Some(cx.kubeconfig_target) {
            cx.state.owned_kubeconfig_entries()
        } else {
            Default::default()
        };
        let names: Vec<String> = cx.mesh.clusters.iter().map(|c| c.context.clone()).collect();
        // Every file the user's tools merge counts: with KUBECONFIG=a:b, meshctl writes into `a`,
        // and a context of the same name in `b` would be shadowed by meshctl's (the first file
        // wins), as good as overwritten.
        let merged: Vec<PathBuf> = match (cx.kubeconfig_flag, std::env::var_os("KUBECONFIG")) {
            (None, Some(list)) => std::env::split_paths(&list)
                .filter(|p| !p.as_os_str().is_empty() && p.exists())
                .collect(),
            _ => Vec::new(),
        };
        let target = cx.kubeconfig_target;
        let files = std::iter::once(target.to_path_buf()).chain(merged.into_iter().filter(|p| p != target));
        for file in files {
            let owned_here = if file == target {
                owned.clone()
            } else {
                Default::default()
            };
            let taken = kubeconfig::foreign_entries(&file, &names, &owned_here)
                .with_context(|| format!("preflight: the kubeconfig `{}` cannot be used", file.display()))?;
            if let Some((list, name)) = taken.first() {
                anyhow::bail!(
                    "preflight: the kubeconfig `{}` already has a {list} named `{name}` that meshctl did not create; meshctl never overwrites, shadows or deletes it\nhint: keep meshctl's contexts in another file with `--kubeconfig FILE`, or rename yours first (`kubectl config rename-context {name} <new-name>`)",
                    file.display()
                );
            }
        }
        Ok(())
    }

    plan_and_probe_are_the_modules!();

    fn repair_makes_the_cluster_anew(&self) -> bool {
        true
    }

    /// A cluster created anew may have brought the docker network into being.
    fn invalidates(&self) -> &'static [Fact] {
        &[Fact::Pools]
    }
}

/// Runs one of the phase's own steps.
pub(super) fn run<'a>(step: &'a ClustersStep, cx: StepContext<'a>) -> StepResult<'a> {
    match step {
        ClustersStep::CreateKindCluster {
            name,
            config,
            wait_secs,
        } => Box::pin(create_kind_cluster(cx, name, config, *wait_secs)),
        ClustersStep::ImportKubeconfig {
            kind_cluster,
            context,
        } => Box::pin(import_kubeconfig(cx, kind_cluster, context)),
        ClustersStep::RecordApiEndpoint { container, network } => {
            Box::pin(record_api_endpoint(cx, container, network))
        }
    }
}

/// How one of the phase's own steps reads.
pub(super) fn describe(step: &ClustersStep) -> String {
    match step {
        ClustersStep::CreateKindCluster {
            name,
            config,
            wait_secs,
        } => format!(
            "run: kind {}   (skipped if `kind get clusters` lists `{name}`)",
            kind::create_args(name, config, *wait_secs).join(" ")
        ),
        ClustersStep::ImportKubeconfig {
            kind_cluster,
            context,
        } => {
            format!("kubeconfig: `kind get kubeconfig --name {kind_cluster}`, context renamed to `{context}`")
        }
        ClustersStep::RecordApiEndpoint { container, network } => {
            format!("record: API server of `{container}` on docker network `{network}` (https://<ip>:6443)")
        }
    }
}

/// `kind create cluster`, unless a kind cluster of that name exists: that one is reused, and never
/// deleted by `down` (meshctl did not create it).
async fn create_kind_cluster(
    cx: StepContext<'_>,
    name: &str,
    config: &str,
    wait_secs: u64,
) -> Result<Option<String>> {
    let tools = cx.run.tools.as_ref();
    if Kind::new(tools).clusters().await?.iter().any(|c| c == name) {
        return Ok(Some(format!("kind cluster `{name}` exists, reused")));
    }
    let options = cx.tool_options(Some(&cx.settings().kind_kubeconfig));
    tools
        .run("kind", &kind::create_args(name, config, wait_secs), &options)
        .await?;
    cx.run
        .state
        .update(|s| s.created_kind_clusters.insert(name.to_string()))?;
    Ok(Some(format!("kind cluster `{name}` created")))
}

/// kind's kubeconfig for the cluster, merged into meshctl's target file under the cluster's
/// context name (one writer at a time: clusters run this concurrently).
async fn import_kubeconfig(cx: StepContext<'_>, kind_cluster: &str, context: &str) -> Result<Option<String>> {
    let text = Kind::new(cx.run.tools.as_ref()).kubeconfig(kind_cluster).await?;
    let _guard = cx.run.kubeconfig_lock.lock().await;
    let target = &cx.settings().kubeconfig_target;
    crate::kubeconfig::import_context(target, &text, &format!("kind-{kind_cluster}"), context)
        .with_context(|| format!("cannot import context `{context}` into `{}`", target.display()))?;
    cx.run.state.update(|s| {
        s.kubeconfig = Some(target.clone());
        s.kubeconfig_entries.insert(context.to_string());
    })?;
    cx.run.clients.forget(context);
    Ok(None)
}

async fn record_api_endpoint(cx: StepContext<'_>, container: &str, network: &str) -> Result<Option<String>> {
    let ip = Docker::new(cx.run.tools.as_ref())
        .container_ip(container, network)
        .await?;
    let endpoint = api_endpoint(&ip.to_string());
    cx.record(|c| c.api_endpoint = Some(endpoint.clone()))?;
    // A remote secret of this cluster built earlier in the run carries the old address.
    cx.run
        .memo
        .forget(&crate::remote_secret::cache_key(&cx.cluster.name));
    cx.run
        .memo
        .forget(&crate::remote_secret::published_ca_key(&cx.cluster.name));
    Ok(Some(format!("API server {endpoint}")))
}

/// Context of `templates/clusters/kind-config.yaml.j2`.
#[derive(Serialize)]
struct KindConfig<'a> {
    name: &'a str,
    kind_version: &'a str,
    node_image: &'a str,
    pod_subnet: String,
    service_subnet: String,
    region: &'a str,
    zone: &'a str,
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let cluster = b.cluster;
    let kind = cluster
        .kind
        .as_ref()
        .ok_or_else(|| b.missing("kind settings (the cluster is not a kind cluster)"))?;
    let config = b.render(
        "kind-config.yaml",
        "clusters/kind-config.yaml.j2",
        &KindConfig {
            name: &cluster.name,
            kind_version: versions::KIND_VERSION,
            node_image: &kind.node_image,
            pod_subnet: kind.pod_subnet.to_string(),
            service_subnet: kind.service_subnet.to_string(),
            region: &cluster.region,
            zone: &cluster.zone,
        },
        false,
    )?;
    b.step(Step::Clusters(ClustersStep::CreateKindCluster {
        name: cluster.name.clone(),
        config,
        wait_secs: b.input.timeout_secs,
    }));
    b.step(Step::Clusters(ClustersStep::ImportKubeconfig {
        kind_cluster: cluster.name.clone(),
        context: cluster.context.clone(),
    }));
    // istiod in other clusters must reach this API server on the docker network, never 127.0.0.1
    // (a remote secret pointing at 127.0.0.1 makes istiod dial itself).
    b.step(Step::Clusters(ClustersStep::RecordApiEndpoint {
        container: control_plane_container(&cluster.name),
        network: b.input.docker_network.clone(),
    }));
    b.step(Step::Wait {
        until: Condition::NodesReady,
    });
    Ok(())
}

/// The kind cluster answers through its context, its nodes are Ready, and the API address recorded
/// for remote secrets is still its control-plane node's address (docker may give a node another
/// address after a restart, kind#2246). Reads the API only: no kind or docker run.
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let name = &p.cluster.name;
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![Finding::missing(format!("kind cluster `{name}`"), f.detail)],
    };
    let nodes = match Api::<Node>::all(client).list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            return vec![Finding::unreachable(
                format!("kind cluster `{name}`"),
                crate::kube::human_reason(&e),
            )];
        }
    };
    let not_ready: Vec<String> = nodes
        .iter()
        .filter(|n| !wait::node_ready(n))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let mut out = vec![if nodes.is_empty() {
        Finding::different("nodes", "no node registered")
    } else if not_ready.is_empty() {
        Finding::present("nodes", format!("{} Ready", nodes.len()))
    } else {
        Finding::different("nodes", format!("not Ready: {}", not_ready.join(", ")))
    }];
    let node = control_plane_container(name);
    let address = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
        .and_then(|n| n.status.as_ref()?.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| api_endpoint(&a.address));
    let recorded = p.state.clusters.get(name).and_then(|c| c.api_endpoint.clone());
    out.push(match (recorded, address) {
        (None, _) => Finding::missing("API address on the docker network", "not recorded"),
        (Some(r), Some(now)) if r != now => Finding::different(
            "API address on the docker network",
            format!("recorded {r}, but node {node} is now at {now}"),
        ),
        (Some(r), _) => Finding::present("API address on the docker network", r),
    });
    out
}
