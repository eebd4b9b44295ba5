//! What `meshctl status` looks at, in one look: per cluster and phase, what the phase's probe
//! finds (the same probes `up` runs before deciding what to do), the mesh across clusters as the
//! istiods see it, and for anything not right what fixes it.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Result;

use crate::check::{self, Check, Fix, State};
use crate::executor::facts;
use crate::exit::UsageError;
use crate::kube::Clients;
use crate::mesh_dir::MeshDir;
use crate::mesh_health::{self, MeshHealth};
use crate::phases::context::DEFAULT_TIMEOUT;
use crate::phases::{self, Fact, Settings};
use crate::plan::{Phase, PhasePlan, Plan, PlanInput};
use crate::planner;
use crate::probe::{Finding, Found, Probe};
use crate::state::{Isolation, MeshState, StateStore};
use crate::tools::ProcessRunner;
use crate::topology::{Mesh, Provider};

/// What one look found.
pub struct Report {
    pub checks: Vec<Check>,
    pub health: MeshHealth,
    pub ready: bool,
}

/// One look at every cluster: the per-phase checks, and the mesh across clusters.
pub async fn look(mesh: &Mesh, dir: &MeshDir, kubeconfig: Option<&Path>) -> Result<Report> {
    let store = StateStore::load(&dir.state())?;
    let state = store.snapshot();
    let (plan, have_cas) = plan_for_status(mesh, &store, dir).await?;
    let clients = Clients::new(kubeconfig);
    // The probes of one look share what they read of one cluster for another.
    let memo = crate::memo::Memo::default();
    let (mut checks, mut down) = unreachable_clusters(mesh, &plan, &state, &clients).await;
    // An isolation of a cluster no longer in the topology holds nothing back (`up` forgets it).
    for (cluster, isolation) in state.isolated.iter().filter(|(c, _)| mesh.cluster(c).is_some()) {
        let mut check = isolated_check(cluster, isolation);
        if let Some(cost) = crate::isolation::remote_cost(mesh, cluster) {
            check.detail = format!("{}; {cost}", check.detail);
        }
        checks.push(check);
        down.push(cluster.clone());
    }
    // The phases left out of the plan for want of CAs, shown where `up` runs them.
    let mut without_cas: Vec<Phase> = if have_cas {
        Vec::new()
    } else {
        planner::select_phases(mesh.provider, &[], &[])
            .map_err(UsageError::from_display)?
            .into_iter()
            .filter(|p| phases::logic(*p).needs().contains(&Fact::Cas))
            .collect()
    };
    for phase_plan in &plan.phases {
        let phase = phase_plan.phase;
        while let Some(skipped) = without_cas.first().copied().filter(|p| *p < phase) {
            without_cas.remove(0);
            for c in mesh.clusters.iter().filter(|c| !down.contains(&c.name)) {
                let missing = Finding::missing(
                    "certificate authorities",
                    format!("none in the work dir for mesh `{}`", mesh.mesh_id),
                );
                checks.push(check_of(&c.name, skipped, vec![missing], Some(Fix::Up(None))));
            }
        }
        let probed = Probed {
            memo: &memo,
            mesh,
            plan: &plan,
            state: &state,
            clients: &clients,
        };
        for (cluster, findings) in probed.phase(phase_plan, &down).await {
            // A cluster that is gone needs every phase again; anything else, its own phase.
            let gone = findings.iter().any(|f| f.found == Found::Unreachable)
                || phases::logic(phase).repair_makes_the_cluster_anew();
            let fix = Fix::Up((!gone).then_some(phase));
            checks.push(check_of(&cluster, phase, findings, Some(fix)));
        }
    }
    checks.sort_by_key(|c| {
        mesh.clusters
            .iter()
            .position(|m| Some(&m.name) == c.cluster.as_ref())
    });
    let down: BTreeSet<String> = down.into_iter().collect();
    let mut reachable = Vec::new();
    for c in mesh.clusters.iter().filter(|c| !down.contains(&c.name)) {
        if let Ok(client) = clients.get(&c.context).await {
            reachable.push((c.name.clone(), client));
        }
    }
    let health = mesh_health::gather(mesh, &reachable, &state, &down).await;
    let ready = check::all_passed(&checks) && check::all_passed(&health.problems);
    Ok(Report {
        checks,
        health,
        ready,
    })
}
/// The plan `up` would run now, built from what is on disk without writing anything: pools from
/// the recorded docker subnet (else the default `--lb-subnet`), the CAs `up` used. `None` for the
/// CAs when there are none yet (then `cacerts` cannot be compared).
async fn plan_for_status(mesh: &Mesh, store: &StateStore, dir: &MeshDir) -> Result<(Plan, bool)> {
    let state = store.snapshot();
    let mut phases = planner::select_phases(mesh.provider, &[], &[]).map_err(UsageError::from_display)?;
    let cas = facts::existing_cas(mesh, &dir.certs_in_use(&state))?;
    let have_cas = cas.is_some();
    if !have_cas {
        phases.retain(|p| !phases::logic(*p).needs().contains(&Fact::Cas));
    }
    // Read-only: the settings `up` runs with by default; the pools from the recorded subnet, no
    // docker asked, and a topology `up` accepted is reported on, not judged again.
    let settings = Settings::for_mesh(dir, None, DEFAULT_TIMEOUT);
    let mut input = PlanInput::recorded(mesh, phases, &state, settings.timeout, &settings.docker_network);
    input.pools = facts::recorded_pools(mesh, &state)?;
    input.cas = cas.unwrap_or_default();
    Ok((planner::build(&input)?, have_cas))
}

fn check_of(cluster: &str, phase: Phase, findings: Vec<Finding>, fix: Option<Fix>) -> Check {
    let worst = [
        Found::Unreachable,
        Found::Conflict,
        Found::Foreign,
        Found::Missing,
        Found::Different,
    ]
    .into_iter()
    .find(|w| findings.iter().any(|f| f.found == *w));
    // Someone else's object stands where meshctl's would: only an explicit adoption takes it over
    // (or the user removes it).
    let fix = match (worst, fix) {
        (Some(Found::Foreign), Some(Fix::Up(only))) => Some(Fix::Adopt(only)),
        // What the mesh runs on would be replaced: no command of this machine's repairs it.
        (Some(Found::Conflict), _) => Some(Fix::ByHand(crate::plugged_ca::CARRY_THE_ROOT_OVER.to_string())),
        (_, fix) => fix,
    };
    let (state, detail) = match worst {
        None => (
            State::Ok,
            findings
                .iter()
                .map(|f| f.detail.clone())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Some(w) => (
            match w {
                Found::Unreachable => State::Unreachable,
                Found::Conflict => State::Conflict,
                Found::Foreign => State::Foreign,
                Found::Missing => State::Missing,
                _ => State::Different,
            },
            findings
                .iter()
                .filter(|f| f.found != Found::Present)
                .map(|f| format!("{}: {} ({})", f.object, f.found.as_str(), f.detail))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let mut check = Check::new(phase.name(), state, detail)
        .in_cluster(cluster)
        .of_phase(phase);
    check.fix = worst.and(fix);
    check.findings = findings;
    check
}

/// One check per cluster that does not answer (one line, not one per phase), and their names.
async fn unreachable_clusters(
    mesh: &Mesh,
    plan: &Plan,
    state: &MeshState,
    clients: &Clients,
) -> (Vec<Check>, Vec<String>) {
    // An isolated cluster is not asked: it may be the one that is down.
    let members: Vec<_> = mesh
        .clusters
        .iter()
        .filter(|c| !state.isolated.contains_key(&c.name))
        .collect();
    let connected = futures::future::join_all(members.iter().map(|c| clients.get(&c.context))).await;
    // `isolate` works on a mesh this machine recorded, and keeps the clusters that answer: with
    // none recorded, or none answering, it is no way out.
    let answering = connected.iter().filter(|r| r.is_ok()).count();
    let isolation_helps = !state.mesh_id.is_empty() && answering > 0;
    let mut checks = Vec::new();
    let mut down = Vec::new();
    for (c, result) in members.into_iter().zip(connected) {
        let Err(e) = result else {
            continue;
        };
        let (phase, found, hint) = match mesh.provider {
            // kind: `up` creates it again, with everything in it.
            Provider::Kind => (
                Phase::ALL
                    .into_iter()
                    .find(|p| phases::logic(*p).repair_makes_the_cluster_anew())
                    .unwrap_or(plan.phases[0].phase),
                Finding::missing(format!("kind cluster `{}`", c.name), e.to_string()),
                Some(Fix::Up(None)),
            ),
            // Existing clusters are not meshctl's to bring back; what meshctl can do is take one
            // out of the mesh, so the other istiods stop waiting on it.
            Provider::Existing => (
                plan.phases[0].phase,
                Finding::unreachable(format!("API server of `{}`", c.name), e.to_string()),
                (isolation_helps && !crate::isolation::peers(mesh, &c.name).is_empty())
                    .then(|| Fix::Isolate(c.name.clone())),
            ),
        };
        checks.push(check_of(&c.name, phase, vec![found], hint));
        down.push(c.name.clone());
    }
    (checks, down)
}

/// The one line of a cluster `meshctl isolate` took out of the mesh: not ready (the mesh is not
/// whole), and the command that brings it back.
fn isolated_check(cluster: &str, isolation: &Isolation) -> Check {
    let readers: Vec<&str> = isolation.removed_from.iter().map(String::as_str).collect();
    let detail = format!(
        "taken out of the mesh by `meshctl isolate` at {}: no other istiod reads it{}",
        isolation.since,
        if readers.is_empty() {
            String::new()
        } else {
            format!(" (its remote secrets removed from {})", readers.join(", "))
        }
    );

    Check::new("mesh", State::Isolated, detail)
        .in_cluster(cluster)
        .fixed_by(Fix::Rejoin(cluster.to_string()))
}

/// What the probes read from.
struct Probed<'a> {
    memo: &'a crate::memo::Memo,
    mesh: &'a Mesh,
    plan: &'a Plan,
    state: &'a MeshState,
    clients: &'a Clients,
}

impl Probed<'_> {
    /// One phase probed in every cluster of it that answers, all at once.
    async fn phase(&self, phase_plan: &PhasePlan, down: &[String]) -> Vec<(String, Vec<Finding>)> {
        let reachable: Vec<_> = phase_plan
            .clusters
            .iter()
            .filter(|cs| !down.contains(&cs.cluster))
            .collect();
        let probes = reachable.iter().map(|cs| async move {
            let cluster = self
                .mesh
                .cluster(&cs.cluster)
                .expect("planned clusters are in the topology");
            let probe = Probe {
                mesh: self.mesh,
                cluster,
                plan: self.plan,
                steps: &cs.steps,
                state: self.state,
                clients: self.clients,
                tools: &ProcessRunner,
                memo: self.memo,
            };
            crate::phases::probe(phase_plan.phase, &probe).await
        });
        let found = futures::future::join_all(probes).await;
        reachable.iter().map(|cs| cs.cluster.clone()).zip(found).collect()
    }
}
