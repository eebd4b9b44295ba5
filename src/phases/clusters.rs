//! Phase `clusters`: create the kind clusters and learn how to reach them. Reference section 2.

use serde::Serialize;

use crate::plan::{Condition, PhaseBuilder, PlanError, Step, Tool};
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

/// Name of a kind cluster's control-plane node container.
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
    let wait = format!("{}s", b.input.timeout_secs);
    b.step(Step::Run {
        tool: Tool::Kind,
        args: [
            "create",
            "cluster",
            "--name",
            &cluster.name,
            "--config",
            &config,
            "--wait",
            &wait,
        ]
        .map(String::from)
        .to_vec(),
        // An existing kind cluster of that name is reused, not an error.
        unless: Some(format!("`kind get clusters` lists `{}`", cluster.name)),
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
