//! `meshctl up`: plan, then (unless `--dry-run`) run the plan.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Exit, UsageError};
use crate::cli::{OutputFormat, UpArgs};
use crate::executor::{Executor, Prepared, RunEnd, Settings, facts};
use crate::mesh_dir::MeshDir;
use crate::phases::{self, Fact};
use crate::plan::Phase;
use crate::plan::{Plan, PlanInput};
use crate::planner;
use crate::report::Reporter;
use crate::state::{MeshState, StateStore};
use crate::tools::{ProcessRunner, ToolRunner};
use crate::topology::Mesh;
use crate::{dry_run, kubeconfig};

/// What every way of running `up` resolves once: the docker network and the certificate directory
/// (the same for `--dry-run` and the real run, so the plan shows the certificates `up` will use).
struct Resolved {
    network: String,
    certs_dir: PathBuf,
}

/// What a real run knows before it plans: the state file, and the docker network when the pools
/// need it.
struct Recorded<'a> {
    state: &'a StateStore,
    docker: Option<&'a dyn ToolRunner>,
}

/// Gathers what planning needs (pools first: they are checked without writing anything; then the
/// CAs), builds the plan and writes it to `out`. `docker`: read the pools' subnet from the docker
/// network through this runner when it exists.
async fn prepare<'m>(
    mesh: &'m Mesh,
    phases: Vec<Phase>,
    args: &UpArgs,
    resolved: &Resolved,
    recorded: Option<Recorded<'_>>,
    out: &Path,
    reporter: &Reporter,
) -> Result<Prepared<'m>> {
    let snapshot = recorded.as_ref().map(|r| r.state.snapshot()).unwrap_or_default();
    let mut input = PlanInput::recorded(mesh, phases, &snapshot, args.timeout, &resolved.network);
    // Pools are read from the docker network only where it is asked for.
    let provisional = if phases::any_needs(&input.phases, Fact::Pools) {
        let (docker, state) = recorded.map_or((None, None), |r| (r.docker, Some(r.state)));
        let (pools, provisional) =
            facts::pools(docker, state, mesh, args.lb_subnet, &resolved.network).await?;
        input.pools = pools;
        provisional
    } else {
        false
    };
    if phases::any_needs(&input.phases, Fact::Cas) {
        input.cas = facts::cas(mesh, &resolved.certs_dir, args.key_type, reporter)?;
    }
    let verify = crate::verification::workloads::artifacts(mesh)?;
    let built = planner::build(&input)?;
    // A phase asked for by name that has nothing to do in this mesh (`--only routes` where no
    // two clusters share a network) is said, not planned as an empty plan.
    let idle: Vec<String> = args
        .only
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

/// `--dry-run --out DIR`: the plan written and listed (stdout: the plan, as text or JSON;
/// anything else on stderr), nothing changed.
async fn dry_run_to(mesh: &Mesh, phases: Vec<Phase>, args: &UpArgs, resolved: &Resolved) -> Result<Exit> {
    // clap makes --dry-run require --out.
    let out = args.out.as_deref().expect("--dry-run requires --out");
    dry_run::prepare_out(out, args.overwrite).map_err(UsageError::from_display)?;
    let messages = Reporter::for_stderr();
    let Prepared { plan, verify, .. } = prepare(mesh, phases, args, resolved, None, out, &messages).await?;
    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&plan)?)?,
        OutputFormat::Text => {
            write!(stdout, "{}", dry_run::listing(&plan))?;
            let files = plan.artifacts.len() + verify.len() + 2;
            writeln!(
                stdout,
                "\nplan written to `{}` ({files} files); no cluster was touched",
                out.display()
            )?;
            if plan
                .phases
                .iter()
                .any(|p| phases::logic(p.phase).needs().contains(&Fact::Cas))
            {
                // The plan holds the clusters' cacerts, so the CAs exist now (made by this run
                // if they did not): said, not hidden behind "nothing was changed".
                writeln!(
                    stdout,
                    "certificates: `{}` (kept, or created by this run where missing: the CA `meshctl up` will use)",
                    resolved.certs_dir.display()
                )?;
            }
        }
    }
    Ok(Exit::Success)
}

pub(super) async fn run(args: UpArgs, workdir: &Path, kubeconfig_flag: Option<&Path>) -> Result<Exit> {
    let mut mesh = super::resolve_topology(&args.topology)?;
    let phases =
        planner::select_phases(mesh.provider, &args.only, &args.skip).map_err(UsageError::from_display)?;
    check_metallb_manifest(&args)?;
    let dir = MeshDir::new(workdir, &mesh.mesh_id);
    let resolved = Resolved {
        network: crate::tools::docker::kind_network(),
        certs_dir: args.certs_dir.clone().unwrap_or_else(|| dir.certs()),
    };
    let state = StateStore::load(&dir.state())?;
    if args.dry_run {
        follow_upgrade(&mut mesh, &args, &state.snapshot(), &Reporter::for_stderr())?;
        return dry_run_to(&mesh, phases, &args, &resolved).await;
    }
    let reporter = Arc::new(Reporter::new(super::report_format(args.output)));
    follow_upgrade(&mut mesh, &args, &state.snapshot(), &reporter)?;
    crate::work_dir::refuse_clusters_of_other_meshes(workdir, &mesh, kubeconfig_flag, "up")?;
    let target = kubeconfig::target_path(kubeconfig_flag);
    preflight(&mesh, &phases, &args, &state, &target, kubeconfig_flag)?;
    note_isolated(&state, &reporter);
    let uses_docker = phases::any_needs(&phases, Fact::Pools);
    let runner = ProcessRunner;
    let mut prepared = prepare(
        &mesh,
        phases,
        &args,
        &resolved,
        Some(Recorded {
            state: &state,
            docker: uses_docker.then_some(&runner as &dyn ToolRunner),
        }),
        &dir.plan(),
        &reporter,
    )
    .await?;

    // A cluster taken out of the topology is no longer isolated from anything: its record (and the
    // secrets kept for its rejoin, which carry tokens) go, said once.
    let gone: Vec<String> = state
        .snapshot()
        .isolated
        .keys()
        .filter(|c| mesh.cluster(c).is_none())
        .cloned()
        .collect();
    state.update(|s| {
        s.mesh_id = mesh.mesh_id.clone();
        s.certs_dir = Some(resolved.certs_dir.clone());
        s.isolated.retain(|c, _| !gone.contains(c));
        for cluster in &mesh.clusters {
            let recorded = s.clusters.entry(cluster.name.clone()).or_default();
            recorded.context = Some(cluster.context.clone());
            // kind contexts exist once the clusters phase made them: recorded by the next run.
            if let Ok(server) = crate::kube::server_of(kubeconfig_flag, &cluster.context) {
                recorded.server = Some(server);
            }
        }
    })?;
    for cluster in &gone {
        let _ = std::fs::remove_dir_all(dir.isolated(cluster));
        reporter.note(
            cluster,
            "no longer in the mesh: its isolation is forgotten (and the secrets kept for its rejoin removed)",
        );
    }
    let mut settings = settings(&args, &dir, &resolved, kubeconfig_flag, target);
    settings.istio_version = args.istio_version.clone().or_else(|| mesh.istio_version.clone());
    let upgrading_from = state.snapshot().upgrade.map(|u| u.from.version);
    let tools = tools_for(&args, &mesh, &settings, upgrading_from.as_deref(), &reporter).await?;
    let executor = Executor::with_tools(settings, state, reporter.clone(), mesh.clone(), tools);
    let end = executor.run(&mut prepared).await.inspect_err(|_| {
        let diagnose = super::diagnose_command(kubeconfig_flag, workdir, &args.topology);
        let hint = format!("to collect what the clusters hold (for you or a bug report): {diagnose}");
        reporter.note("diagnose", &hint);
    })?;
    match end {
        RunEnd::Interrupted => {
            reporter.note("up", "interrupted; run the same `meshctl up` again to resume from what the clusters hold");
            return Ok(Exit::Interrupted);
        }
        RunEnd::Finished { changed: false } => reporter.note(
            "mesh",
            "nothing to change: every phase is in place in every cluster (asked of the clusters; --force re-applies)",
        ),
        RunEnd::Finished { changed: true } => {}
    }
    summary(&reporter, &mesh, executor.state(), &prepared.plan);
    Ok(Exit::Success)
}

/// The release `meshctl upgrade` moved the mesh to: `up` installs it (and its revision), never the
/// one before, whatever meshctl.yaml still says; a flag asking for another is refused.
fn follow_upgrade(mesh: &mut Mesh, args: &UpArgs, state: &MeshState, reporter: &Reporter) -> Result<()> {
    let Some(recorded) = &state.istio else {
        return Ok(());
    };
    if let Some(flag) = args.istio_version.as_ref().filter(|f| **f != recorded.version) {
        return Err(UsageError(format!(
            "--istio-version {flag}: mesh `{}` runs Istio {} (revision {}) since `meshctl upgrade`; `meshctl upgrade --to {flag}` moves it to another release",
            mesh.mesh_id, recorded.version, recorded.revision
        ))
        .into());
    }
    if let Some(file) = mesh.istio_version.as_ref().filter(|f| **f != recorded.version) {
        reporter.warn(
            "mesh",
            &format!(
                "meshctl.yaml says istio.version {file}, but `meshctl upgrade` moved the mesh to {}: installing {} (set istio.version to {} to match)",
                recorded.version, recorded.version, recorded.version
            ),
        );
    }
    super::follow_recorded_release(mesh, state);
    Ok(())
}

/// A chosen release is for installing: a primary whose istiod already runs another release is not
/// moved by `up` (re-installing in place would skip the canary steps an upgrade needs), and says so
/// before anything changes. Clusters that do not answer or have no istiod yet are not in the way.
async fn refuse_another_running_release(
    mesh: &Mesh,
    clients: &crate::kube::Clients,
    chosen: &str,
    upgrading_from: Option<&str>,
) -> Result<()> {
    for c in mesh
        .clusters
        .iter()
        .filter(|c| c.role != crate::topology::Role::Remote)
    {
        let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(10), clients.get(&c.context)).await
        else {
            continue;
        };
        let running: Vec<String> = crate::mesh_health::control_planes(&client, mesh.istio_namespace(c))
            .await
            .into_iter()
            .map(|p| p.version)
            // Mid-upgrade the release being replaced runs beside the chosen one.
            .filter(|v| v != chosen && v != "unknown" && Some(v.as_str()) != upgrading_from)
            .collect();
        if let Some(version) = running.first() {
            bail!(
                "preflight: cluster `{}` runs Istio {version} (its istiod's image), and the chosen release is {chosen}; `up` installs a release but does not move a running mesh to another one\nhint: keep istio.version at {version} (or drop --istio-version) for this mesh; `meshctl upgrade --to {chosen}` moves it",
                c.name
            );
        }
    }
    Ok(())
}

/// Each cluster `meshctl isolate` took out, said before the run leaves it alone.
fn note_isolated(state: &StateStore, reporter: &Reporter) {
    for (cluster, isolation) in &state.snapshot().isolated {
        reporter.note(
            cluster,
            &format!(
                "isolated since {}: left as it is and read by no other istiod (`meshctl rejoin {cluster}` brings it back)",
                isolation.since
            ),
        );
    }
}

/// `--metallb-manifest` names a file (clap cannot tell): a usage error, before anything else.
fn check_metallb_manifest(args: &UpArgs) -> Result<()> {
    match &args.metallb_manifest {
        Some(path) if !path.is_file() => Err(UsageError(format!(
            "--metallb-manifest `{}` {}: name the MetalLB manifest file (metallb-native.yaml)",
            path.display(),
            if path.is_dir() {
                "is a directory"
            } else {
                "does not exist"
            }
        ))
        .into()),
        _ => Ok(()),
    }
}

/// The programs a run uses: istioctl from `--istioctl`, else the chosen release's (downloaded
/// once, cached by version), else the one on PATH. A chosen release is first checked against
/// what the primaries already run.
async fn tools_for(
    args: &UpArgs,
    mesh: &Mesh,
    settings: &Settings,
    upgrading_from: Option<&str>,
    reporter: &Reporter,
) -> Result<Arc<dyn ToolRunner>> {
    let chosen = settings.istio_version.as_deref();
    if let Some(chosen) = chosen {
        let clients = crate::kube::Clients::new(settings.kubeconfig_flag.as_deref());
        refuse_another_running_release(mesh, &clients, chosen, upgrading_from).await?;
    }
    crate::istioctl_choice::istioctl_runner(args.istioctl.as_deref(), chosen, &settings.cache_dir, reporter)
        .await
}

/// The run's settings, from the arguments, once.
fn settings(
    args: &UpArgs,
    dir: &MeshDir,
    resolved: &Resolved,
    kubeconfig_flag: Option<&Path>,
    target: PathBuf,
) -> Settings {
    Settings {
        kubeconfig_target: target,
        metallb_manifest: args.metallb_manifest.clone(),
        force: args.force,
        allow_version_skew: args.allow_version_skew,
        adopt: args.adopt,
        lb_subnet: args.lb_subnet,
        docker_network: resolved.network.clone(),
        ..Settings::for_mesh(dir, kubeconfig_flag, args.timeout)
    }
}

/// Everything `up` can check before it changes anything, asked of every selected phase.
fn preflight(
    mesh: &Mesh,
    phases: &[Phase],
    args: &UpArgs,
    state: &StateStore,
    target: &Path,
    kubeconfig_flag: Option<&Path>,
) -> Result<()> {
    let snapshot = state.snapshot();
    let cx = phases::Preflight {
        mesh,
        state: &snapshot,
        kubeconfig_target: target,
        kubeconfig_flag,
        metallb_manifest: args.metallb_manifest.as_deref(),
    };
    for phase in phases {
        phases::logic(*phase).preflight(&cx)?;
    }
    Ok(())
}

/// The closing table: each cluster's network and east-west address, then one column per phase
/// that has one to show ("-" where the phase was not planned).
fn summary(reporter: &Reporter, mesh: &Mesh, state: &StateStore, plan: &Plan) {
    let snapshot = state.snapshot();
    let planned = |phase: Phase| plan.phases.iter().any(|p| p.phase == phase);
    let mut headers = vec!["CLUSTER", "NETWORK", "EAST-WEST IP"];
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for (i, c) in mesh.clusters.iter().enumerate() {
        let cs = snapshot.clusters.get(&c.name).cloned().unwrap_or_default();
        let ip = cs.eastwest_ip.clone().unwrap_or_else(|| "-".into());
        let mut json = serde_json::json!({"cluster": c.name, "network": c.network,
            "eastwestIP": cs.eastwest_ip, "apiEndpoint": cs.api_endpoint});
        let mut row = vec![c.name.clone(), c.network.clone(), ip];
        for phase in Phase::ALL {
            let Some(mut column) = phases::logic(phase).summary(mesh, c) else {
                continue;
            };
            if !planned(phase) {
                column.value = "-".into();
            }
            if i == 0 {
                headers.push(column.header);
            }
            json[column.key] = serde_json::Value::from(column.value.clone());
            row.push(column.value);
        }
        json_rows.push(json);
        rows.push(row);
    }
    reporter.table(&headers, &rows);
    let phases: Vec<&str> = plan.phases.iter().map(|p| p.phase.name()).collect();
    reporter.event(
        "summary",
        serde_json::json!({"meshID": mesh.mesh_id, "phases": phases, "clusters": json_rows}),
    );
    for p in &plan.phases {
        if let Some(next) = phases::logic(p.phase).next_step() {
            reporter.note("next", next);
        }
    }
}
