//! Phase `routes`: kind clusters that share an Istio network reach each other's pods directly.
//!
//! All kind nodes sit on one docker network, but a cluster's pod and service CIDRs are routed only
//! inside its own node. Istio's CI makes clusters of one network flat by adding, on each node, a
//! route to every same-network peer's pod CIDR and service CIDR via the peer's node address
//! (istio/istio `common/scripts/kind_provisioner.sh`, `connect_kind_clusters`); clusters on other
//! networks get none, which is what keeps them separate networks. Existing clusters bring their own
//! network: nothing is planned for them.

use anyhow::Result;

use super::{PhaseLogic, StepContext, StepResult};
use crate::plan::RoutesStep;
use crate::plan::{PeerRoutes, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};
use crate::tools::docker::Docker;
use crate::tools::kind::control_plane_container;

/// Routes between the pod and service CIDRs of kind clusters on one Istio network.
pub struct Routes;

impl PhaseLogic for Routes {
    fn on_existing_clusters(&self) -> super::OnExistingClusters {
        super::OnExistingClusters::Never
    }

    plan_and_probe_are_the_modules!();
}

/// Runs the phase's own step.
pub(super) fn run<'a>(step: &'a RoutesStep, cx: StepContext<'a>) -> StepResult<'a> {
    let RoutesStep::RoutePeers { node, network, peers } = step;
    Box::pin(route_peers(cx, node, network, peers))
}

/// How the phase's own step reads.
pub(super) fn describe(step: &RoutesStep) -> String {
    let RoutesStep::RoutePeers { node, peers, .. } = step;
    let routes: Vec<_> = peers
        .iter()
        .flat_map(|p| {
            p.cidrs
                .iter()
                .map(move |c| format!("{c} via <{} address>", p.node))
        })
        .collect();
    format!(
        "run: docker exec {node} ip route replace … for {}",
        routes.join(", ")
    )
}

/// On `node`, each peer's CIDRs routed via the peer's node address, read from docker now.
async fn route_peers(
    cx: StepContext<'_>,
    node: &str,
    network: &str,
    peers: &[PeerRoutes],
) -> Result<Option<String>> {
    let docker = Docker::new(cx.run.tools.as_ref());
    let mut done = Vec::new();
    for peer in peers {
        let via = docker.container_ip(&peer.node, network).await?;
        for cidr in &peer.cidrs {
            docker.route_replace(node, cidr, via).await?;
        }
        done.push(format!("{} via {via} ({})", peer.cidrs.join(", "), peer.cluster));
    }
    Ok(Some(format!("routes {}", done.join("; "))))
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
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
        b.step(Step::Routes(RoutesStep::RoutePeers {
            node: control_plane_container(&b.cluster.name),
            network: b.input.docker_network.clone(),
            peers,
        }));
    }
    Ok(())
}

/// Each planned route is on the node and points at the peer's current node address.
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let docker = Docker::new(p.tools);
    let mut out = Vec::new();
    for step in p.steps {
        let Step::Routes(RoutesStep::RoutePeers { node, network, peers }) = step else {
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
