//! `meshctl upgrade --to VERSION [--finish]`, `--finish`, `--rollback` (see [`crate::upgrade`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use super::{Exit, UsageError};
use crate::cli::{OutputFormat, UpgradeArgs};
use crate::executor::Settings;
use crate::istio_version::IstioVersion;
use crate::kube::Clients;
use crate::mesh_dir::MeshDir;
use crate::report::Reporter;
use crate::revision::Revision;
use crate::state::{IstioRelease, MeshState, StateStore};
use crate::tools::istioctl::Istioctl;
use crate::upgrade::{Outcome, Refusal, Upgrader};

/// An ambient mesh (as asked, or as its state recorded it) is not upgraded: its canary steps move
/// istiod and the gateways, but ztunnel and istio-cni are node agents that every ambient pod's
/// traffic runs through, upgraded in place node by node (Istio's ambient upgrade guide), which
/// this procedure does not do.
fn refuse_ambient(mesh: &crate::topology::Mesh, state: &crate::state::MeshState) -> Result<()> {
    let dataplane = state.dataplane.unwrap_or(mesh.dataplane);
    if dataplane.is_sidecar() {
        return Ok(());
    }
    Err(super::UsageError(format!(
        "upgrade: mesh `{}` runs the ambient data plane, and `meshctl upgrade` upgrades sidecar meshes only: ztunnel and istio-cni run on every node and every ambient pod's traffic goes through them, so their upgrade is a node-by-node procedure of its own (Istio's ambient upgrade guide) that meshctl does not do yet",
        mesh.mesh_id
    ))
    .into())
}

pub(super) async fn run(args: UpgradeArgs, workdir: &Path, kubeconfig: Option<&Path>) -> Result<Exit> {
    let mesh = super::resolve_topology(&args.topology)?;
    super::refuse_external_control_plane(&mesh, "upgrade")?;
    // A dry run previews the upgrade of the topology as given; a real one moves a mesh `up` built
    // (checked before istioctl is fetched).
    let dir = if args.dry_run {
        MeshDir::new(workdir, &mesh.mesh_id)
    } else {
        crate::work_dir::recorded_mesh(workdir, &mesh.mesh_id, "upgrade")?
    };
    let state = StateStore::load(&dir.state())?.snapshot();
    refuse_ambient(&mesh, &state)?;
    let to = target(&args, &state)?;
    let mut settings = Settings::for_mesh(&dir, kubeconfig, args.timeout);
    settings.istio_version = Some(to.version.clone());
    if args.dry_run {
        return dry_run(&args, &mesh, &state, &to, &settings);
    }
    let reporter = Arc::new(Reporter::new(super::report_format(args.output)));
    let tools = crate::istioctl_choice::istioctl_runner(
        args.istioctl.as_deref(),
        Some(&to.version),
        false,
        &settings.cache_dir,
        &reporter,
    )
    .await?;
    // The program must answer before anything moves (its release was checked against `--to`
    // where the user named it; a fetched one is that release's).
    Istioctl::new(tools.as_ref()).version().await?;
    let clients = Clients::new(kubeconfig);
    let upgrader = Upgrader {
        mesh: &mesh,
        dir: &dir,
        settings,
        tools,
        reporter: reporter.clone(),
        clients: &clients,
        restart_namespaces: args.restart_namespaces.clone(),
        verify: !args.no_verify,
        force: args.force,
        tools_back: Default::default(),
    };
    // Ctrl-C anywhere (the executor listens only while it runs a phase): what was done stays in
    // the clusters, and the same command resumes from there.
    let ran = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => Ok(Outcome::Interrupted),
        ran = steps(&args, &upgrader, &to, &reporter) => ran,
    };
    let outcome = match ran {
        Err(e) => {
            return match e.downcast::<Refusal>() {
                Ok(refusal) => Err(UsageError(refusal.0).into()),
                Err(other) => Err(other),
            };
        }
        Ok(outcome) => outcome,
    };
    Ok(conclude(&args, &outcome, &to, &reporter))
}

/// The release to go to: `--to`, else the one of the upgrade under way.
fn target(args: &UpgradeArgs, state: &MeshState) -> Result<IstioRelease> {
    let version = match (&args.to, &state.upgrade) {
        (Some(v), _) => v.clone(),
        (None, Some(under_way)) => under_way.to.version.clone(),
        (None, None) => {
            return Err(UsageError(
                "no upgrade is under way in this mesh: nothing to finish or roll back (start one with --to VERSION)".into(),
            )
            .into());
        }
    };
    let parsed: IstioVersion = version.parse().map_err(UsageError)?;
    Ok(IstioRelease {
        version,
        revision: Revision::of(&parsed),
    })
}

async fn steps(
    args: &UpgradeArgs,
    upgrader: &Upgrader<'_>,
    to: &IstioRelease,
    reporter: &Reporter,
) -> Result<Outcome> {
    if args.rollback {
        if let Some(under_way) = StateStore::load(&upgrader.dir.state())?.snapshot().upgrade {
            upgrader.keep_tools_back(&under_way.from).await;
        }
        return upgrader.rollback().await;
    }
    if args.to.is_some() {
        let from = upgrader.from_release(to).await?;
        upgrader.keep_tools_back(&from).await;
        reporter.note(
            "upgrade",
            &format!(
                "Istio {} (revision {}) → {} (revision {}), one cluster at a time",
                from.version, from.revision, to.version, to.revision
            ),
        );
        let outcome = upgrader.upgrade(&from, to).await?;
        if outcome != Outcome::Done || !args.finish {
            return Ok(outcome);
        }
    }
    upgrader.finish().await
}

fn conclude(args: &UpgradeArgs, outcome: &Outcome, to: &IstioRelease, reporter: &Reporter) -> Exit {
    let event = |result: &str| {
        reporter.event(
            "upgrade",
            serde_json::json!({"to": to.version, "revision": to.revision, "result": result}),
        )
    };
    match outcome {
        Outcome::Interrupted => {
            event("interrupted");
            reporter.note(
                "upgrade",
                "interrupted; the same command resumes from what the clusters hold",
            );
            Exit::Interrupted
        }
        Outcome::RolledBack { cluster, .. } => {
            event("rolled-back");
            reporter.fail(
                "upgrade",
                &format!("stopped at `{cluster}` (what failed is above); every cluster is back on the release it ran"),
            );
            Exit::Failure
        }
        Outcome::Done if args.rollback => {
            event("rolled-back");
            reporter.ok(
                "upgrade",
                "rolled back: every cluster is on the release it ran before",
            );
            Exit::Success
        }
        Outcome::Done if args.finish => {
            event("finished");
            reporter.ok(
                "upgrade",
                &format!("finished: every cluster runs only Istio {}", to.version),
            );
            Exit::Success
        }
        Outcome::Done => {
            event("upgraded");
            reporter.ok(
                "upgrade",
                &format!(
                    "every cluster runs Istio {} (revision {}); the old revision is still installed",
                    to.version, to.revision
                ),
            );
            reporter.note(
                "next",
                "restart your workloads onto the new proxies, then `meshctl upgrade --finish` (or `--rollback`)",
            );
            Exit::Success
        }
    }
}

fn dry_run(
    args: &UpgradeArgs,
    mesh: &crate::topology::Mesh,
    state: &MeshState,
    to: &IstioRelease,
    settings: &Settings,
) -> Result<Exit> {
    let out = args.out.as_deref().expect("--dry-run requires --out");
    crate::upgrade::preview::prepare_out(out).map_err(UsageError)?;
    let (from, basis) = crate::upgrade::preview::assumed_from(mesh, state, to).map_err(UsageError)?;
    let (text, files) = crate::upgrade::preview::write(mesh, state, &from, to, out, settings)?;
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"from": from, "fromBasis": basis, "to": to, "out": out, "files": files})
        ),
        OutputFormat::Text => {
            eprintln!("from Istio {} ({basis}; --dry-run asks no cluster)", from.version);
            print!("{text}");
            println!(
                "\nupgrade written to `{}` ({files} files); no cluster was touched",
                out.display()
            );
        }
    }
    Ok(Exit::Success)
}
