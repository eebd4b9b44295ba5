//! Phase `routes`: kind clusters that share an Istio network reach each other's pods directly.
//!
//! All kind nodes sit on one docker network, but a cluster's pod and service CIDRs are routed only
//! inside its own node. Istio's CI makes clusters of one network flat by adding, on each node, a
//! route to every same-network peer's pod CIDR and service CIDR via the peer's node address
//! (istio/istio `common/scripts/kind_provisioner.sh`, `connect_kind_clusters`); clusters on other
//! networks get none, which is what keeps them separate networks. Existing clusters bring their own
//! network: nothing is planned for them.

use crate::phases::clusters::control_plane_container;
use crate::plan::{PeerRoutes, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};
use crate::tools::ProcessRunner;
use crate::tools::docker::Docker;

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let mesh = b.input.mesh;
    if b.cluster.kind.is_none() {
        return Ok(());
    }
    let peers: Vec<PeerRoutes> = mesh
        .same_network_peers(b.cluster)
        .filter_map(|peer| {
            let kind = peer.kind.as_ref()?;
            Some(PeerRoutes {
                cluster: peer.name.clone(),
                node: control_plane_container(&peer.name),
                cidrs: vec![kind.pod_subnet.to_string(), kind.service_subnet.to_string()],
            })
        })
        .collect();
    if !peers.is_empty() {
        b.step(Step::RoutePeers {
            node: control_plane_container(&b.cluster.name),
            network: b.input.docker_network.clone(),
            peers,
        });
    }
    Ok(())
}

/// Each planned route is on the node and points at the peer's current node address.
pub(super) async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let runner = ProcessRunner;
    let docker = Docker::new(&runner);
    let mut out = Vec::new();
    for step in p.steps {
        let Step::RoutePeers { node, network, peers } = step else {
            continue;
        };
        for peer in peers {
            let via = docker.container_ip(&peer.node, network).await;
            for cidr in &peer.cidrs {
                let object = format!("route {cidr} on {node}");
                let finding = match (&via, docker.route_via(node, cidr).await) {
                    (Err(e), _) => Finding::unreachable(object, e.to_string()),
                    (_, Err(e)) => Finding::unreachable(object, e.to_string()),
                    (Ok(want), Ok(Some(have))) if have == *want => {
                        Finding::present(object, format!("via {have} ({})", peer.cluster))
                    }
                    (Ok(want), Ok(Some(have))) => Finding::different(
                        object,
                        format!("via {have}, but {}'s node is at {want}", peer.cluster),
                    ),
                    (Ok(_), Ok(None)) => Finding::missing(object, "no route"),
                };
                out.push(finding);
            }
        }
    }
    out
}
