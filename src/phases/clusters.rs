//! Phase `clusters`: create the kind clusters and learn how to reach them. Reference section 2.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::kube::wait;
use crate::plan::{Condition, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};
use crate::versions;

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

/// The address other clusters reach a kind cluster's API server at: its control-plane node's
/// address on the docker network (kind gives the kubelet `--node-ip` and kubeadm's advertise
/// address that address), port 6443.
pub fn api_endpoint(ip: &str) -> String {
    format!("https://{ip}:6443")
}

/// Name of a kind cluster's control-plane node container (and of its Node).
pub fn control_plane_container(cluster: &str) -> String {
    format!("{cluster}-control-plane")
}

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
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
    b.step(Step::CreateKindCluster {
        name: cluster.name.clone(),
        config,
        wait_secs: b.input.timeout_secs,
    });
    b.step(Step::ImportKubeconfig {
        kind_cluster: cluster.name.clone(),
        context: cluster.context.clone(),
    });
    // istiod in other clusters must reach this API server on the docker network, never 127.0.0.1
    // (reference section 2.3, pitfall 1).
    b.step(Step::RecordApiEndpoint {
        container: control_plane_container(&cluster.name),
        network: b.input.docker_network.clone(),
    });
    b.step(Step::Wait {
        until: Condition::NodesReady,
    });
    Ok(())
}

/// The kind cluster answers through its context, its nodes are Ready, and the API address recorded
/// for remote secrets is still its control-plane node's address (docker may give a node another
/// address after a restart, kind#2246). Reads the API only: no kind or docker run.
pub(super) async fn probe(p: &Probe<'_>) -> Vec<Finding> {
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
