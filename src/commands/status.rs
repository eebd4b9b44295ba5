//! `meshctl status`: per cluster and phase, what the phase's probe finds (the same probes `up`
//! runs before deciding what to do), and for anything missing or different the command that fixes it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::{Exit, UsageError};
use crate::cli::{DocumentFormat, StatusArgs};
use crate::executor::facts;
use crate::kube::Clients;
use crate::mesh_dir::MeshDir;
use crate::mesh_health::{self, Fix, MeshHealth};
use crate::phases::context::DEFAULT_TIMEOUT;
use crate::phases::{self, Fact, Settings};
use crate::plan::{Phase, PhasePlan, Plan, PlanInput};
use crate::planner;
use crate::probe::{Finding, Found, Probe};
use crate::state::{Isolation, MeshState, StateStore};
use crate::tools::ProcessRunner;
use crate::topology::{Mesh, Provider};

/// One line of the status: a phase in a cluster.
#[derive(Debug, Clone, Serialize)]
struct Check {
    cluster: String,
    phase: &'static str,
    /// `ready`, or the worst finding: `missing`, `different`, `unreachable`.
    state: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    hint: String,
    findings: Vec<Finding>,
}

/// Global flags to repeat in a suggested command.
pub(super) struct Flags<'a> {
    /// `--kubeconfig`.
    pub kubeconfig: Option<&'a Path>,
    /// `--workdir`.
    pub workdir: Option<&'a Path>,
}

/// `meshctl [--kubeconfig K] [--workdir W] up <topology> [--only phase]`.
fn up_command(flags: &Flags<'_>, args: &StatusArgs, only: Option<Phase>) -> String {
    let extra: &[&str] = match &only {
        Some(phase) => &["--only", phase.name()],
        None => &[],
    };
    super::command_line(flags.kubeconfig, flags.workdir, "up", &args.topology, extra)
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
    // docker asked.
    let settings = Settings::for_mesh(dir, None, DEFAULT_TIMEOUT);
    let mut input = PlanInput::recorded(mesh, phases, &state, settings.timeout, &settings.docker_network);
    input.pools = facts::pools(
        None,
        Some(store),
        mesh,
        settings.lb_subnet,
        &settings.docker_network,
    )
    .await?
    .0;
    input.cas = cas.unwrap_or_default();
    Ok((planner::build(&input)?, have_cas))
}

fn check_of(cluster: &str, phase: Phase, findings: Vec<Finding>, hint: String) -> Check {
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
    let hint = match worst {
        Some(Found::Foreign) => format!("{hint} --adopt"),
        // What the mesh runs on would be replaced: no command of this machine's repairs it.
        Some(Found::Conflict) => crate::plugged_ca::CARRY_THE_ROOT_OVER.to_string(),
        _ => hint,
    };
    let (state, detail) = match worst {
        None => (
            "ready",
            findings
                .iter()
                .map(|f| f.detail.clone())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Some(w) => (
            w.as_str(),
            findings
                .iter()
                .filter(|f| f.found != Found::Present)
                .map(|f| format!("{}: {} ({})", f.object, f.found.as_str(), f.detail))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    Check {
        cluster: cluster.to_string(),
        phase: phase.name(),
        state,
        detail,
        hint: if worst.is_some() { hint } else { String::new() },
        findings,
    }
}

pub(super) async fn run(args: StatusArgs, workdir: &Path, flags: Flags<'_>) -> Result<Exit> {
    let mut mesh = super::resolve_topology(&args.topology)?;
    let dir = MeshDir::new(workdir, &mesh.mesh_id);
    super::follow_recorded_release(&mut mesh, &StateStore::load(&dir.state())?.snapshot());
    refuse_unknown_contexts(&mesh, flags.kubeconfig)?;
    // `--wait`: look again until the mesh is ready or the time is up, as `cilium status --wait`:
    // each look says what is still missing, the pauses grow but never pass the deadline, one last
    // look is taken at it, and a look still running then is not waited for.
    let started = std::time::Instant::now();
    let deadline = args.wait.map(|w| started + w);
    let mut pause = Duration::from_secs(1);
    let mut report = collect(&mesh, &dir, &flags, &args).await?;
    while let Some(d) = deadline.filter(|_| !report.ready) {
        let now = std::time::Instant::now();
        if now >= d {
            break;
        }
        let left = d - now;
        let missing: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.hint.is_empty())
            .map(|c| format!("{} {}", c.cluster, c.phase))
            .chain(report.health.problems.iter().map(|p| p.cluster.clone()))
            .collect();
        eprintln!(
            "status: not ready after {}s ({}); looking again, {}s left",
            started.elapsed().as_secs(),
            if missing.is_empty() {
                "see below".to_string()
            } else {
                missing.join(", ")
            },
            left.as_secs()
        );
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(10));
        let left = d
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_secs(1));
        match tokio::time::timeout(left, collect(&mesh, &dir, &flags, &args)).await {
            Ok(next) => report = next?,
            Err(_) => break,
        }
    }
    print(&mesh, &report, &flags, &args)?;
    Ok(if report.ready {
        Exit::Success
    } else {
        Exit::NotReady
    })
}

/// A context of an existing cluster that the kubeconfig does not have is a mistake in the
/// command (exit 2), said once and before any look: not a cluster that does not answer, for the
/// whole `--wait`. (A kind mesh's contexts appear only when `up` creates its clusters.)
fn refuse_unknown_contexts(mesh: &Mesh, kubeconfig: Option<&Path>) -> Result<()> {
    if mesh.provider != crate::topology::Provider::Existing {
        return Ok(());
    }
    for c in &mesh.clusters {
        if let Err(e) = crate::kube::server_of(kubeconfig, &c.context) {
            return Err(super::UsageError(format!("cluster `{}`: {e}", c.name)).into());
        }
    }
    Ok(())
}

/// What one look found.
struct Report {
    checks: Vec<Check>,
    health: MeshHealth,
    ready: bool,
}

fn print(mesh: &Mesh, report: &Report, flags: &Flags<'_>, args: &StatusArgs) -> Result<()> {
    let problems: Vec<serde_json::Value> = report
        .health
        .problems
        .iter()
        .map(|p| serde_json::json!({"cluster": p.cluster, "problem": p.problem, "fix": fix_command(&p.fix, flags, args)}))
        .collect();
    match args.output {
        DocumentFormat::Json | DocumentFormat::Yaml => super::print_document(
            args.output,
            &serde_json::json!({"meshID": mesh.mesh_id, "ready": report.ready, "checks": report.checks,
                "mesh": report.health, "problems": problems}),
        )?,
        DocumentFormat::Text => {
            println!("{:<10} {:<15} {:<11} DETAIL", "CLUSTER", "PHASE", "STATE");
            for c in &report.checks {
                println!("{:<10} {:<15} {:<11} {}", c.cluster, c.phase, c.state, c.detail);
                if !c.hint.is_empty() {
                    println!("{:<38}fix: {}", "", c.hint);
                }
            }
            print_mesh(&report.health, flags, args);
        }
    }
    Ok(())
}

/// The proxies istiod configures, by cluster and by release.
fn print_proxies(health: &MeshHealth) {
    let counts = |map: &std::collections::BTreeMap<String, usize>| {
        map.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let by_cluster = counts(&health.proxies);
    println!(
        "  proxies connected: {}",
        if by_cluster.is_empty() {
            "none"
        } else {
            &by_cluster
        }
    );
    if !health.proxy_versions.is_empty() {
        println!("  proxies by release: {}", counts(&health.proxy_versions));
    }
}

/// Each cluster's control-plane revisions (the one injection points at marked), its gateway's,
/// and the upgrade under way.
fn print_revisions(health: &MeshHealth) {
    for (cluster, held) in &health.revisions {
        if held.revisions.is_empty() {
            continue;
        }
        let injection = held.injection();
        let revisions: Vec<String> = held
            .revisions
            .iter()
            .map(|r| {
                let version = r.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
                let mark = if r.revision == injection {
                    " (injecting)"
                } else {
                    ""
                };
                format!("{}{version}{mark}", r.revision)
            })
            .collect();
        let gateway = held
            .gateway
            .as_ref()
            .map(|g| format!("; gateway on {g}"))
            .unwrap_or_default();
        println!("  revisions of {cluster:<10} {}{gateway}", revisions.join(", "));
    }
    if let Some(u) = &health.upgrade {
        println!(
            "  upgrade under way since {}: Istio {} ({}) → {} ({}); `meshctl upgrade --to {}` resumes it, `--finish` ends it, `--rollback` undoes it",
            u.started, u.from.version, u.from.revision, u.to.version, u.to.revision, u.to.version
        );
    }
}

/// The mesh across clusters, for people.
fn print_mesh(health: &MeshHealth, flags: &Flags<'_>, args: &StatusArgs) {
    println!("\nMESH");
    for seen in &health.istiods {
        let what = match &seen.error {
            Some(e) => format!("no answer: {e}"),
            None => seen
                .clusters
                .iter()
                .filter(|c| c.id != seen.cluster)
                .map(|c| format!("{} {}", c.id, c.sync_status))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let planes: Vec<String> = seen
            .control_planes
            .iter()
            .map(|p| format!("{} {}", p.revision, p.version))
            .collect();
        let planes = if planes.is_empty() {
            "no istiod Deployment".to_string()
        } else {
            planes.join(", ")
        };
        let what = if what.is_empty() {
            "no other cluster".to_string()
        } else {
            what
        };
        println!("  istiod of {:<10} ({planes}) reads: {what}", seen.cluster);
    }
    print_revisions(health);
    print_proxies(health);
    for (network, gateways) in &health.gateways {
        println!("  gateways of {network}: {}", gateways.join(", "));
    }
    for ca in &health.cas {
        println!(
            "  intermediate CA of {:<10} valid until {} ({} days)",
            ca.cluster, ca.not_after, ca.days_left
        );
    }
    for p in &health.problems {
        println!("✗ {:<10} {}", p.cluster, p.problem);
        // `fix:` lines are commands to run as printed; anything else says what to do.
        let label = if matches!(p.fix, Fix::ByHand(_)) {
            "by hand"
        } else {
            "fix"
        };
        println!("{:<13}{label}: {}", "", fix_command(&p.fix, flags, args));
    }
}

fn fix_command(fix: &Fix, flags: &Flags<'_>, args: &StatusArgs) -> String {
    let line = |sub: &str, extra: &[&str]| {
        super::command_line(flags.kubeconfig, flags.workdir, sub, &args.topology, extra)
    };
    match fix {
        Fix::UpOnly(phase) => up_command(flags, args, Some(*phase)),
        Fix::Isolate(cluster) => line("isolate", &[cluster]),
        Fix::RotateCa(cluster) => line("certs rotate", &["--cluster", cluster]),
        Fix::ByHand(what) => what.clone(),
    }
}

/// One look at every cluster: the per-phase checks, and the mesh across clusters.
async fn collect(mesh: &Mesh, dir: &MeshDir, flags: &Flags<'_>, args: &StatusArgs) -> Result<Report> {
    let store = StateStore::load(&dir.state())?;
    let state = store.snapshot();
    let (plan, have_cas) = plan_for_status(mesh, &store, dir).await?;
    let clients = Clients::new(flags.kubeconfig);
    let (mut checks, mut down) = unreachable_clusters(mesh, &plan, &state, &clients, flags, args).await;
    // An isolation of a cluster no longer in the topology holds nothing back (`up` forgets it).
    for (cluster, isolation) in state.isolated.iter().filter(|(c, _)| mesh.cluster(c).is_some()) {
        let mut check = isolated_check(cluster, isolation, flags, args);
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
                let hint = up_command(flags, args, None);
                checks.push(check_of(&c.name, skipped, vec![missing], hint));
            }
        }
        let probed = Probed {
            mesh,
            plan: &plan,
            state: &state,
            clients: &clients,
        };
        for (cluster, findings) in probed.phase(phase_plan, &down).await {
            // A cluster that is gone needs every phase again; anything else, its own phase.
            let gone = findings.iter().any(|f| f.found == Found::Unreachable)
                || phases::logic(phase).repair_makes_the_cluster_anew();
            let hint = up_command(flags, args, (!gone).then_some(phase));
            checks.push(check_of(&cluster, phase, findings, hint));
        }
    }
    checks.sort_by_key(|c| mesh.clusters.iter().position(|m| m.name == c.cluster));
    let down: BTreeSet<String> = down.into_iter().collect();
    let mut reachable = Vec::new();
    for c in mesh.clusters.iter().filter(|c| !down.contains(&c.name)) {
        if let Ok(client) = clients.get(&c.context).await {
            reachable.push((c.name.clone(), client));
        }
    }
    let health = mesh_health::gather(mesh, &reachable, &state, &down).await;
    let ready = checks.iter().all(|c| c.state == "ready") && health.problems.is_empty();
    Ok(Report {
        checks,
        health,
        ready,
    })
}
/// One check per cluster that does not answer (one line, not one per phase), and their names.
async fn unreachable_clusters(
    mesh: &Mesh,
    plan: &Plan,
    state: &MeshState,
    clients: &Clients,
    flags: &Flags<'_>,
    args: &StatusArgs,
) -> (Vec<Check>, Vec<String>) {
    // An isolated cluster is not asked: it may be the one that is down.
    let members: Vec<_> = mesh
        .clusters
        .iter()
        .filter(|c| !state.isolated.contains_key(&c.name))
        .collect();
    let connected = futures::future::join_all(members.iter().map(|c| clients.get(&c.context))).await;
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
                up_command(flags, args, None),
            ),
            // Existing clusters are not meshctl's to bring back; what meshctl can do is take one
            // out of the mesh, so the other istiods stop waiting on it.
            Provider::Existing => (
                plan.phases[0].phase,
                Finding::unreachable(format!("API server of `{}`", c.name), e.to_string()),
                if crate::isolation::peers(mesh, &c.name).is_empty() {
                    String::new()
                } else {
                    super::command_line(
                        flags.kubeconfig,
                        flags.workdir,
                        "isolate",
                        &args.topology,
                        &[&c.name],
                    )
                },
            ),
        };
        checks.push(check_of(&c.name, phase, vec![found], hint));
        down.push(c.name.clone());
    }
    (checks, down)
}

/// The one line of a cluster `meshctl isolate` took out of the mesh: not ready (the mesh is not
/// whole), and the command that brings it back.
fn isolated_check(cluster: &str, isolation: &Isolation, flags: &Flags<'_>, args: &StatusArgs) -> Check {
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
    let hint = super::command_line(
        flags.kubeconfig,
        flags.workdir,
        "rejoin",
        &args.topology,
        &[cluster],
    );
    Check {
        cluster: cluster.to_string(),
        phase: "mesh",
        state: "isolated",
        detail,
        hint,
        findings: Vec::new(),
    }
}

/// What the probes read from.
struct Probed<'a> {
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
            };
            crate::phases::probe(phase_plan.phase, &probe).await
        });
        let found = futures::future::join_all(probes).await;
        reachable.iter().map(|cs| cs.cluster.clone()).zip(found).collect()
    }
}
