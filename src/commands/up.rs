//! `meshctl up`: plan, then (unless `--dry-run`) run the plan.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Exit;
use crate::cli::{OutputFormat, UpArgs};
use crate::executor::{Executor, Outcome, Settings, mesh_dir};
use crate::ipam::{self, Pool};
use crate::phases::{self, Phase};
use crate::pki::Validity;
use crate::pki::layout::{self, CertsRequest};
use crate::plan::{self, Artifact, Plan, PlanInput};
use crate::report::Reporter;
use crate::state::StateStore;
use crate::tools::docker::Docker;
use crate::tools::{ProcessRunner, ToolRunner};
use crate::topology::Mesh;
use crate::{dry_run, kubeconfig, upstream};

/// The docker network kind uses (`KIND_EXPERIMENTAL_DOCKER_NETWORK` overrides it, as in kind).
fn kind_network() -> String {
    std::env::var("KIND_EXPERIMENTAL_DOCKER_NETWORK")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "kind".into())
}

/// MetalLB pools from the real docker network when it exists; else from `--lb-subnet`, marked
/// provisional (the network appears with the first kind cluster and is read again then).
async fn plan_pools(
    runner: &dyn ToolRunner,
    mesh: &Mesh,
    lb_subnet: &str,
    docker: bool,
) -> Result<(Vec<Pool>, bool)> {
    if docker && let Ok(net) = Docker::new(runner).network(&kind_network()).await {
        let subnet = ipam::ipv4_subnet(&net.subnets)?;
        let occupied: Vec<_> = net.containers.iter().map(|(_, ip)| *ip).collect();
        let pools = ipam::plan_pools(subnet, mesh.clusters.len(), &occupied)
            .context("phase metallb: cannot plan the address pools")?;
        return Ok((pools, false));
    }
    let subnet: ipnet::IpNet = lb_subnet
        .parse()
        .with_context(|| format!("--lb-subnet `{lb_subnet}` is not a CIDR"))?;
    let pools = ipam::plan_pools(ipam::ipv4_subnet(&[subnet])?, mesh.clusters.len(), &[])
        .context("phase metallb: cannot plan the address pools")?;
    Ok((pools, docker))
}

fn ensure_cas(mesh: &Mesh, dir: &Path, args: &UpArgs) -> Result<Vec<crate::pki::IntermediateCa>> {
    let request = CertsRequest {
        dir: dir.to_path_buf(),
        clusters: mesh.clusters.iter().map(|c| c.name.clone()).collect(),
        key_type: args.key_type,
        validity: Validity::default(),
        force: false,
    };
    let outcome = layout::ensure(&request).with_context(|| {
        format!(
            "phase certs: cannot prepare the certificate authorities in `{}`",
            dir.display()
        )
    })?;
    Ok(outcome.clusters.into_iter().map(|(ca, _)| ca).collect())
}

/// The plan, with what went into it, written to `out`.
struct Prepared<'m> {
    input: PlanInput<'m>,
    plan: Plan,
    verify: Vec<Artifact>,
    /// The pools came from `--lb-subnet` because the docker network does not exist yet.
    provisional: bool,
}

impl Prepared<'_> {
    /// Builds the plan from `input` again and rewrites it in `out`.
    fn rebuild(&mut self, out: &Path) -> Result<()> {
        self.plan = plan::build(&self.input)?;
        dry_run::write(out, &self.plan, &self.verify)
            .with_context(|| format!("cannot write the plan to `{}`", out.display()))
    }
}

/// Gathers what planning needs (pools first: they are checked without writing anything; then the
/// CAs, in `--certs-dir` or `default_certs`), builds the plan and writes it to `out`. `docker`: read
/// the pools' subnet from the docker network when it exists.
#[allow(clippy::too_many_arguments)]
async fn prepare<'m>(
    mesh: &'m Mesh,
    phases: Vec<Phase>,
    args: &UpArgs,
    runner: &dyn ToolRunner,
    docker: bool,
    default_certs: PathBuf,
    out: &Path,
    timeout: Duration,
) -> Result<Prepared<'m>> {
    let (pools, provisional) = if phases.contains(&Phase::Metallb) {
        plan_pools(runner, mesh, &args.lb_subnet, docker).await?
    } else {
        (Vec::new(), false)
    };
    let cas = if phases.contains(&Phase::Certs) {
        ensure_cas(mesh, &args.certs_dir.clone().unwrap_or(default_certs), args)?
    } else {
        Vec::new()
    };
    let input = PlanInput {
        mesh,
        phases,
        pools,
        cas,
        timeout_secs: timeout.as_secs(),
    };
    let verify = phases::verify::artifacts(mesh)?;
    let mut prepared = Prepared {
        plan: plan::build(&input)?,
        input,
        verify,
        provisional,
    };
    prepared.rebuild(out)?;
    Ok(prepared)
}

pub(super) async fn run(args: UpArgs, workdir: &Path, kubeconfig_flag: Option<&Path>) -> Result<Exit> {
    let mesh = super::resolve_topology(&args.topology)?;
    let phases = plan::select_phases(mesh.provider, &args.only, &args.skip)?;
    let timeout = super::parse_timeout(&args.timeout)?;
    let runner: Arc<dyn ToolRunner> = Arc::new(ProcessRunner);

    if args.dry_run {
        let Some(out) = args.out.as_deref() else {
            bail!("--dry-run needs --out DIR")
        };
        let Prepared { plan, verify, .. } = prepare(
            &mesh,
            phases,
            &args,
            runner.as_ref(),
            false,
            out.join("certs"),
            out,
            timeout,
        )
        .await?;
        let mut stdout = std::io::stdout().lock();
        match args.output {
            OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&plan)?)?,
            OutputFormat::Text => {
                write!(stdout, "{}", dry_run::listing(&plan))?;
                let files = plan.artifacts.len() + verify.len() + 2;
                writeln!(
                    stdout,
                    "\nplan written to `{}` ({files} files); nothing was changed",
                    out.display()
                )?;
            }
        }
        return Ok(Exit::Success);
    }

    let format = super::report_format(args.output);
    let reporter = Arc::new(Reporter::new(format));
    let dir = mesh_dir(workdir, &mesh.mesh_id);
    let plan_dir = dir.join("plan");
    let uses_docker = phases
        .iter()
        .any(|p| matches!(p, Phase::Clusters | Phase::Metallb));
    let mut prepared = prepare(
        &mesh,
        phases,
        &args,
        runner.as_ref(),
        uses_docker,
        dir.join("certs"),
        &plan_dir,
        timeout,
    )
    .await?;

    let state = StateStore::load(&dir.join("state.json"))?;
    state.update(|s| s.mesh_id = mesh.mesh_id.clone())?;
    let settings = Settings {
        kubeconfig_flag: kubeconfig_flag.map(Path::to_path_buf),
        kubeconfig_target: kubeconfig::target_path(kubeconfig_flag),
        kind_kubeconfig: dir.join("kind-kubeconfig"),
        plan_dir: plan_dir.clone(),
        timeout,
        tool_timeout: timeout * 2 + Duration::from_secs(60),
        allow_version_skew: args.allow_version_skew,
        metallb_manifest: args.metallb_manifest.clone(),
        cache_dir: upstream::cache_dir(),
    };
    let executor = Executor::new(settings, runner.clone(), state, reporter.clone(), mesh.clone());

    let run_all = async {
        let mut all_skipped = true;
        for index in 0..prepared.plan.phases.len() {
            if prepared.plan.phases[index].phase == Phase::Metallb && prepared.provisional {
                // The kind network exists now: plan the pools from its real subnet and containers.
                let (pools, still) = plan_pools(runner.as_ref(), &mesh, &args.lb_subnet, true).await?;
                prepared.provisional = still;
                prepared.input.pools = pools;
                prepared.rebuild(&plan_dir)?;
            }
            let outcomes = executor
                .run_phase(&prepared.plan, &prepared.plan.phases[index])
                .await?;
            all_skipped &= outcomes.iter().all(|(_, o)| *o == Outcome::Skipped);
        }
        Ok::<bool, anyhow::Error>(all_skipped)
    };
    let all_skipped = tokio::select! {
        result = run_all => result?,
        _ = tokio::signal::ctrl_c() => {
            reporter.note("up", "interrupted; progress is saved, run the same `meshctl up` again to resume");
            return Ok(Exit::Interrupted);
        }
    };
    if all_skipped {
        reporter.note("mesh", "nothing to change: every phase was already done");
    }
    summary(&reporter, &mesh, &executor.state, &prepared.plan);
    Ok(Exit::Success)
}

fn summary(reporter: &Reporter, mesh: &Mesh, state: &StateStore, plan: &Plan) {
    let snapshot = state.snapshot();
    let n = mesh.clusters.len();
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for c in &mesh.clusters {
        let cs = snapshot.clusters.get(&c.name).cloned().unwrap_or_default();
        let istiod = if cs.done.contains_key("istio") {
            "ready"
        } else {
            "-"
        };
        let secrets = if cs.done.contains_key("remote-secrets") {
            format!("{}/{}", n - 1, n - 1)
        } else {
            "-".into()
        };
        let ip = cs.eastwest_ip.clone().unwrap_or_else(|| "-".into());
        json_rows.push(
            serde_json::json!({"cluster": c.name, "network": c.network, "eastwestIP": cs.eastwest_ip,
            "istiod": istiod, "remoteSecrets": secrets, "apiEndpoint": cs.api_endpoint}),
        );
        rows.push(vec![
            c.name.clone(),
            c.network.clone(),
            ip,
            istiod.to_string(),
            secrets,
        ]);
    }
    reporter.table(
        &["CLUSTER", "NETWORK", "EAST-WEST IP", "ISTIOD", "REMOTE SECRETS"],
        &rows,
    );
    let phases: Vec<&str> = plan.phases.iter().map(|p| p.phase.name()).collect();
    reporter.event(
        "summary",
        serde_json::json!({"meshID": mesh.mesh_id, "phases": phases, "clusters": json_rows}),
    );
    if plan.phases.iter().any(|p| p.phase == Phase::RemoteSecrets) {
        reporter.note("next", "meshctl verify   (calls across every pair of clusters)");
    }
}
