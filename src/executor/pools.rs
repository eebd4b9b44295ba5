//! The MetalLB pools a plan needs, which only the machine knows: from the docker network the kind
//! nodes are on, gathered by the executor.

use anyhow::{Context, Result};

use crate::ipam::{self, Pool};
use crate::state::StateStore;
use crate::tools::ToolRunner;
use crate::tools::docker::Docker;
use crate::topology::Mesh;

/// One pool per cluster, and whether they are provisional (from `--lb-subnet` because the docker
/// network does not exist yet; planned again once it does).
///
/// In order: the subnet recorded in the state (no docker run: a finished mesh runs no tool); with
/// `docker`, the network's real subnet, avoiding the addresses its containers hold, then recorded;
/// else `lb_subnet`. Pools depend on the subnet and the cluster's position only, so a cluster
/// added later never moves the others' pools.
pub async fn pools(
    docker: Option<&dyn ToolRunner>,
    state: Option<&StateStore>,
    mesh: &Mesh,
    lb_subnet: ipnet::IpNet,
    network: &str,
) -> Result<(Vec<Pool>, bool)> {
    let plan = |subnet, occupied: &[std::net::IpAddr]| {
        ipam::plan_pools(subnet, mesh.clusters.len(), occupied)
            .context("phase metallb: cannot plan the address pools")
    };
    if let Some(subnet) = state.and_then(|s| s.snapshot().docker_subnet) {
        return Ok((plan(subnet, &[])?, false));
    }
    if let Some(runner) = docker
        && let Ok(net) = Docker::new(runner).network(network).await
    {
        let subnet = ipam::ipv4_subnet(&net.subnets)?;
        let occupied: Vec<_> = net.containers.iter().map(|(_, ip)| *ip).collect();
        let pools = plan(subnet, &occupied)?;
        if let Some(state) = state {
            state.update(|s| s.docker_subnet = Some(subnet))?;
        }
        return Ok((pools, false));
    }
    // From `--lb-subnet` alone: a subnet that cannot hold the pools is a mistake on the command
    // line (exit 2), not a failed phase.
    let pools = ipam::ipv4_subnet(&[lb_subnet])
        .and_then(|subnet| ipam::plan_pools(subnet, mesh.clusters.len(), &[]))
        .map_err(|e| crate::exit::UsageError(format!("--lb-subnet {lb_subnet}: {e}")))?;
    Ok((pools, docker.is_some()))
}
