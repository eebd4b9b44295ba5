//! What a plan needs that only the machine knows, gathered in one place for every command that
//! plans: the MetalLB pools (from the docker network the kind nodes are on) and the certificate
//! authorities (from the certificate folder). `up` gathers them before it plans, the executor
//! again when a run makes them stale, `status` from what is recorded.

use std::path::Path;

use anyhow::{Context, Result};

use super::Prepared;
use crate::exit::UsageError;
use crate::ipam::{self, Pool};
use crate::phases::{self, Fact};
use crate::pki::IntermediateCa;
use crate::pki::layout::{self, CertsRequest};
use crate::plan::{Phase, PlanInput};
use crate::planner;
use crate::report::Reporter;
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
    // The clusters' own pod and service ranges must not overlap the network their nodes are on
    // (or `--lb-subnet` standing in for it): refused as a mistake in the topology.
    let clash_free = |subnet| {
        let problems = mesh.docker_network_problems(subnet);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(UsageError::from_display(crate::topology::TopologyError::Invalid(
                problems,
            )))
        }
    };
    if let Some(subnet) = state.and_then(|s| s.snapshot().docker_subnet) {
        clash_free(subnet)?;
        return Ok((plan(subnet, &[])?, false));
    }
    if let Some(runner) = docker
        && let Ok(net) = Docker::new(runner).network(network).await
    {
        let subnet = ipam::ipv4_subnet(&net.subnets)?;
        clash_free(subnet)?;
        let occupied: Vec<_> = net.containers.iter().map(|(_, ip)| *ip).collect();
        let pools = plan(subnet, &occupied)?;
        if let Some(state) = state {
            state.update(|s| s.docker_subnet = Some(subnet))?;
        }
        return Ok((pools, false));
    }
    // From `--lb-subnet` alone: a subnet that cannot hold the pools is a mistake on the command
    // line (exit 2), not a failed phase.
    let subnet =
        ipam::ipv4_subnet(&[lb_subnet]).map_err(|e| UsageError(format!("--lb-subnet {lb_subnet}: {e}")))?;
    clash_free(subnet)?;
    let pools = ipam::plan_pools(subnet, mesh.clusters.len(), &[])
        .map_err(|e| UsageError(format!("--lb-subnet {lb_subnet}: {e}")))?;
    Ok((pools, docker.is_some()))
}

/// The pools as `up` planned them from the subnet it recorded (else kind's usual one), for a
/// command that only reads.
pub fn recorded_pools(mesh: &Mesh, state: &crate::state::MeshState) -> Result<Vec<Pool>> {
    let subnet = state
        .docker_subnet
        .unwrap_or_else(|| ipam::KIND_SUBNET.parse().expect("a valid subnet"));
    Ok(ipam::plan_pools(subnet, mesh.clusters.len(), &[])?)
}

/// Each cluster's intermediate CA under the mesh's root in `dir`, made where missing (with keys
/// of `key_type`); what the folder holds that is worth a word (a CA near its end) is said.
pub fn cas(
    mesh: &Mesh,
    dir: &Path,
    key_type: crate::pki::KeyType,
    reporter: &Reporter,
) -> Result<Vec<IntermediateCa>> {
    let request = CertsRequest {
        dir: dir.to_path_buf(),
        clusters: mesh.clusters.iter().map(|c| c.name.clone()).collect(),
        key_type,
        validity: crate::pki::Validity::default(),
        force: false,
        replace_root: false,
    };
    let (cas, warnings) = layout::ensure(&request)
        .with_context(|| {
            format!(
                "phase certs: cannot prepare the certificate authorities in `{}`",
                dir.display()
            )
        })?
        .into_cas();
    warnings.iter().for_each(|w| reporter.warn("certs", w));
    Ok(cas)
}

/// The CAs already in `dir` for every cluster (none made): `None` where any is missing.
pub fn existing_cas(mesh: &Mesh, dir: &Path) -> Result<Option<Vec<IntermediateCa>>> {
    let names: Vec<String> = mesh.clusters.iter().map(|c| c.name.clone()).collect();
    layout::load_existing(dir, &names)
        .with_context(|| format!("cannot read the certificate authorities in `{}`", dir.display()))
}

/// What a real run knows before it plans: the state file, and the docker network when the pools
/// need it.
pub struct Recorded<'a> {
    pub state: &'a StateStore,
    pub docker: Option<&'a dyn ToolRunner>,
}

/// What `up` plans with, from its flags: the bound on each wait, the subnet standing in for the
/// docker network until it exists, the network's name, the CA folder and the key type of new CAs.
pub struct Request<'a> {
    pub timeout: std::time::Duration,
    pub lb_subnet: ipnet::IpNet,
    pub network: &'a str,
    pub certs_dir: &'a Path,
    pub key_type: crate::pki::KeyType,
    /// The phases asked for by name (`--only`): each must have something to do.
    pub only: &'a [Phase],
}

/// Gathers what planning needs (pools first: they are checked without writing anything; then the
/// CAs), builds the plan and writes it to `out`. `docker`: read the pools' subnet from the docker
/// network through this runner when it exists.
pub async fn prepare<'m>(
    mesh: &'m Mesh,
    phases: Vec<Phase>,
    request: &Request<'_>,
    recorded: Option<Recorded<'_>>,
    out: &Path,
    reporter: &Reporter,
) -> Result<Prepared<'m>> {
    let snapshot = recorded.as_ref().map(|r| r.state.snapshot()).unwrap_or_default();
    let mut input = PlanInput::recorded(mesh, phases, &snapshot, request.timeout, request.network);
    // Pools are read from the docker network only where it is asked for.
    let provisional = if phases::any_needs(&input.phases, Fact::Pools) {
        let (docker, state) = recorded.map_or((None, None), |r| (r.docker, Some(r.state)));
        let (pools, provisional) = pools(docker, state, mesh, request.lb_subnet, request.network).await?;
        input.pools = pools;
        provisional
    } else {
        false
    };
    if phases::any_needs(&input.phases, Fact::Cas) {
        input.cas = cas(mesh, request.certs_dir, request.key_type, reporter)?;
    }
    let verify = crate::verification::workloads::artifacts(mesh)?;
    let built = planner::build(&input)?;
    refuse_idle_phases(request.only, mesh, &built)?;
    let mut prepared = Prepared {
        plan: built,
        input,
        verify,
        provisional,
        out: out.to_path_buf(),
    };
    prepared.rebuild()?;
    Ok(prepared)
}

/// A phase asked for by name that has nothing to do in this mesh (`--only routes` where no two
/// clusters share a network) is said, not planned as an empty plan.
fn refuse_idle_phases(only: &[Phase], mesh: &Mesh, built: &crate::plan::Plan) -> Result<()> {
    let idle: Vec<String> = only
        .iter()
        .filter(|p| {
            !built
                .phases
                .iter()
                .any(|pp| pp.phase == **p && pp.clusters.iter().any(|c| !c.steps.is_empty()))
        })
        .map(|p| p.name().to_string())
        .collect();
    if !idle.is_empty() {
        return Err(UsageError(format!(
            "--only {}: nothing to do in mesh `{}` for this model (e.g. `routes` serves only clusters that share a network; `expose` only where another network or a remote needs it)",
            idle.join(","),
            mesh.mesh_id
        ))
        .into());
    }
    Ok(())
}
