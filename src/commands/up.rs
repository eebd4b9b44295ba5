//! `meshctl up`: plan, then (unless `--dry-run`) run the plan.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::{Exit, UsageError};
use crate::cli::{OutputFormat, UpArgs};
use crate::executor::{Executor, Prepared, RunEnd, Settings, facts};
use crate::mesh_dir::MeshDir;
use crate::phases::{self, Fact};
use crate::plan::Phase;
use crate::planner;
use crate::report::Reporter;
use crate::state::StateStore;
use crate::tools::{ProcessRunner, ToolRunner};
use crate::topology::Mesh;
use crate::{dry_run, kubeconfig};

/// What every way of running `up` resolves once: the docker network and the certificate directory
/// (the same for `--dry-run` and the real run, so the plan shows the certificates `up` will use).
struct Resolved {
    network: String,
    certs_dir: PathBuf,
}

/// `up`'s flags as the planner takes them.
fn request<'a>(args: &'a UpArgs, resolved: &'a Resolved) -> facts::Request<'a> {
    facts::Request {
        timeout: args.timeout,
        lb_subnet: args.lb_subnet,
        network: &resolved.network,
        certs_dir: &resolved.certs_dir,
        key_type: args.key_type,
        only: &args.only,
    }
}

/// `--dry-run --out DIR`: the plan written and listed (stdout: the plan, as text or JSON;
/// anything else on stderr), nothing changed.
async fn dry_run_to(mesh: &Mesh, phases: Vec<Phase>, args: &UpArgs, resolved: &Resolved) -> Result<Exit> {
    // clap makes --dry-run require --out.
    let out = args.out.as_deref().expect("--dry-run requires --out");
    dry_run::prepare_out(out, args.overwrite).map_err(UsageError::from_display)?;
    let messages = Reporter::for_stderr();
    let Prepared { plan, verify, .. } =
        facts::prepare(mesh, phases, &request(args, resolved), None, out, &messages).await?;
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
    super::named_files::check(&args)?;
    let dir = MeshDir::new(workdir, &mesh.mesh_id);
    let resolved = Resolved {
        network: crate::tools::docker::kind_network(),
        certs_dir: args.certs_dir.clone().unwrap_or_else(|| dir.certs()),
    };
    let state = StateStore::load(&dir.state())?;
    if args.dry_run {
        crate::upgrade::follow_for_up(
            &mut mesh,
            args.istio_version.as_deref(),
            &state.snapshot(),
            &Reporter::for_stderr(),
        )?;
        return dry_run_to(&mesh, phases, &args, &resolved).await;
    }
    let reporter = Arc::new(Reporter::new(super::report_format(args.output)));
    crate::upgrade::follow_for_up(
        &mut mesh,
        args.istio_version.as_deref(),
        &state.snapshot(),
        &reporter,
    )?;
    crate::work_dir::refuse_clusters_of_other_meshes(workdir, &mesh, kubeconfig_flag, "up")?;
    let target = kubeconfig::target_path(kubeconfig_flag);
    phases::preflight(
        &phases,
        &phases::Preflight {
            mesh: &mesh,
            state: &state.snapshot(),
            kubeconfig_target: &target,
            kubeconfig_flag,
            metallb_manifest: args.metallb_manifest.as_deref(),
        },
    )?;
    crate::isolation::note_isolated(&state.snapshot(), &reporter);
    // The data plane is the mesh's from its first `up` on (see `follow_for_up`).
    state.update(|s| {
        s.dataplane.get_or_insert(mesh.dataplane);
    })?;
    let uses_docker = phases::any_needs(&phases, Fact::Pools);
    let runner = ProcessRunner;
    let mut prepared = facts::prepare(
        &mesh,
        phases,
        &request(&args, &resolved),
        Some(facts::Recorded {
            state: &state,
            docker: uses_docker.then_some(&runner as &dyn ToolRunner),
        }),
        &dir.plan(),
        &reporter,
    )
    .await?;

    crate::isolation::forget_departed(&state, &mesh, &dir, &reporter)?;
    state.update(|s| {
        s.mesh_id = mesh.mesh_id.clone();
        s.certs_dir = Some(resolved.certs_dir.clone());
        for cluster in &mesh.clusters {
            let recorded = s.clusters.entry(cluster.name.clone()).or_default();
            recorded.context = Some(cluster.context.clone());
            // kind contexts exist once the clusters phase made them: recorded by the next run.
            if let Ok(server) = crate::kube::server_of(kubeconfig_flag, &cluster.context) {
                recorded.server = Some(server);
            }
        }
    })?;
    let mut settings = settings(&args, &dir, &resolved, kubeconfig_flag, target);
    settings.istio_version = args.istio_version.clone().or_else(|| mesh.istio_version.clone());
    let upgrading_from = state.snapshot().upgrade.map(|u| u.from.version);
    let tools = tools_for(&args, &mesh, &settings, upgrading_from.as_deref(), &reporter).await?;
    let executor = Executor::with_tools(settings, state, reporter.clone(), mesh.clone(), tools);
    let end = executor.run(&mut prepared).await.inspect_err(|_| {
        if !executor.began_phases() {
            return;
        }
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
    crate::executor::summary(&reporter, &mesh, &executor.state().snapshot(), &prepared.plan);
    Ok(Exit::Success)
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
        crate::mesh_health::refuse_another_running_release(mesh, &clients, chosen, upgrading_from).await?;
    }
    crate::istioctl_choice::istioctl_runner(
        args.istioctl.as_deref(),
        chosen,
        args.allow_version_skew,
        &settings.cache_dir,
        reporter,
    )
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
        gateway_api_crds: args.gateway_api_crds.clone(),
        force: args.force,
        allow_version_skew: args.allow_version_skew,
        adopt: args.adopt,
        lb_subnet: args.lb_subnet,
        docker_network: resolved.network.clone(),
        ..Settings::for_mesh(dir, kubeconfig_flag, args.timeout)
    }
}
