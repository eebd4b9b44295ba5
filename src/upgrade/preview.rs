//! `meshctl upgrade --dry-run --out DIR`: every cluster's part of the upgrade written out, in the
//! order it would run, with every IstioOperator and every command; no cluster is asked anything,
//! so every step is listed (a real run skips what a cluster already holds).

use std::path::Path;

use anyhow::{Context as _, Result};

use super::procedure::{self, Action, UpgradeStep};
use crate::executor::Settings;
use crate::plan::{Phase, Plan};
use crate::state::{IstioRelease, MeshState};
use crate::topology::{Cluster, Mesh, Role};

/// The file listing the whole procedure, beside one folder per cluster.
pub const STEPS_FILE: &str = "steps.txt";

/// How [`STEPS_FILE`] starts: a later preview knows its own by it.
const STEPS_OPENING: &str = "upgrade of mesh `";

/// Whether `out` holds a preview [`write`] made: its steps file, and beside it only meshctl plans.
fn holds_earlier_preview(out: &Path, entries: &[String]) -> bool {
    let steps = std::fs::read_to_string(out.join(STEPS_FILE)).unwrap_or_default();
    steps.starts_with(STEPS_OPENING)
        && entries
            .iter()
            .all(|e| e == STEPS_FILE || crate::dry_run::holds_meshctl_plan(&out.join(e)))
}

/// Writes the upgrade from `from` to `to` into `out`; returns the listing (also in
/// [`STEPS_FILE`]) and the number of files written.
/// Makes `out` ready for a preview: new, empty, or an earlier preview (its `steps.txt` and one
/// plan folder per cluster, removed as `up --dry-run` removes an earlier plan, and nothing else);
/// any other folder is refused, naming what it holds.
pub fn prepare_out(out: &Path) -> Result<(), String> {
    let entries: Vec<String> = match std::fs::read_dir(out) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("--out `{}`: {e}", out.display())),
    };
    if !entries.is_empty() && !holds_earlier_preview(out, &entries) {
        let mut shown: Vec<String> = entries.iter().take(4).map(|e| format!("`{e}`")).collect();
        shown.sort();
        return Err(format!(
            "--out `{}` holds {} and is not an earlier upgrade preview: name a new or empty folder",
            out.display(),
            shown.join(", ")
        ));
    }
    for entry in entries.iter().filter(|e| *e != STEPS_FILE) {
        let folder = out.join(entry);
        crate::dry_run::remove_plan(&folder).map_err(|e| format!("`{}`: {e}", folder.display()))?;
        let _ = std::fs::remove_dir(&folder);
    }
    let _ = std::fs::remove_file(out.join(STEPS_FILE));
    Ok(())
}

pub fn write(
    mesh: &Mesh,
    state: &MeshState,
    from: &IstioRelease,
    to: &IstioRelease,
    out: &Path,
    settings: &Settings,
) -> Result<(String, usize)> {
    let mut revisioned = mesh.clone();
    revisioned.istio_revision = to.revision.clone();
    let isolated = state.isolated.keys().cloned().collect();
    let mut text = format!(
        "{STEPS_OPENING}{}` from Istio {} (revision {}) to {} (revision {}), one cluster at a time\n",
        mesh.mesh_id, from.version, from.revision, to.version, to.revision
    );
    let mut files = 1;
    for (n, cluster) in procedure::order(mesh, &isolated).into_iter().enumerate() {
        let phases = UpgradeStep::phases();
        let input = super::run::cluster_input(&revisioned, &cluster.name, phases, state, settings);
        let plan = crate::planner::build(&input)?;
        let folder = out.join(format!("{}-{}", n + 1, cluster.name));
        crate::dry_run::write(&folder, &plan, &[])
            .with_context(|| format!("cannot write `{}`", folder.display()))?;
        files += plan.artifacts.len() + 2;
        text.push_str(&format!(
            "\n{}. {} ({}), plan in {}/\n",
            n + 1,
            cluster.name,
            if cluster.role == Role::Primary {
                "primary"
            } else {
                "remote"
            },
            folder.file_name().unwrap_or_default().to_string_lossy()
        ));
        text.push_str(&cluster_steps(cluster, &plan, to));
    }
    text.push_str(&format!(
        "\nthen `meshctl upgrade --finish` (once workloads run on {}: restart them, or --restart-namespaces), in every cluster:\n     run: istioctl uninstall --revision {} -y --context <context>\n",
        to.revision, from.revision
    ));
    crate::atomic_file::write(&out.join(STEPS_FILE), text.as_bytes(), crate::atomic_file::PUBLIC)?;
    Ok((text, files))
}

/// Where a preview says the mesh comes from, asking no cluster: the release last recorded for it,
/// else the unrevisioned install `up` makes (its `istio.version`, or the pinned release), with
/// which of these it is; refused when the move to `to` is not an upgrade Istio supports.
pub fn assumed_from(
    mesh: &Mesh,
    state: &MeshState,
    to: &IstioRelease,
) -> Result<(IstioRelease, &'static str), String> {
    let recorded = state
        .upgrade
        .as_ref()
        .map(|u| u.from.clone())
        .or_else(|| state.istio.clone());
    let basis = match (&recorded, state.mesh_id.is_empty(), &mesh.istio_version) {
        (Some(_), _, _) => "as recorded for this mesh",
        (None, true, Some(_)) => "no mesh recorded here: istio.version, as `up` would install it",
        (None, true, None) => "no mesh recorded here: the pinned release, as `up` would install it",
        (None, false, _) => "the release `up` installed, unrevisioned",
    };
    let from = recorded.unwrap_or_else(|| IstioRelease {
        version: mesh
            .istio_version
            .clone()
            .unwrap_or_else(|| crate::versions::ISTIO_VERSION.to_string()),
        revision: crate::revision::Revision::default_revision(),
    });
    let from_version: crate::istio_version::IstioVersion = from.version.parse()?;
    let to_version: crate::istio_version::IstioVersion = to.version.parse()?;
    procedure::check_move(&from_version, &to_version).map_err(|e| {
        format!("{e} (as recorded for this mesh, or its istio.version, or the pinned release: --dry-run asks no cluster)")
    })?;
    Ok((from, basis))
}

/// One cluster's steps, in order, with the commands each runs, and its gate.
fn cluster_steps(cluster: &Cluster, plan: &Plan, to: &IstioRelease) -> String {
    let mut text = String::new();
    let lines = |phases: &[Phase]| steps_of(plan, phases);
    for step in UpgradeStep::ALL {
        let commands = match step.action() {
            Action::Converge(phases) => lines(phases),
            Action::MoveInjection => vec![format!(
                "run: istioctl {}",
                super::tag_set_args(&cluster.context, &to.revision).join(" ")
            )],
        };
        if commands.is_empty() {
            continue;
        }
        text.push_str(&format!("   {}\n", step.describe(&to.revision)));
        for command in commands {
            text.push_str(&format!("     {command}\n"));
        }
    }
    text.push_str("   gate: the cluster holds revision ");
    text.push_str(&format!(
        "{}, injects with it, its gateway runs it{}; every pair of clusters calls each other (unless --no-verify)\n",
        to.revision,
        if cluster.role == Role::Primary {
            format!("; istiod-{} reports every cluster it reads synced", to.revision.label())
        } else {
            String::new()
        }
    ));
    text
}

fn steps_of(plan: &Plan, phases: &[Phase]) -> Vec<String> {
    plan.phases
        .iter()
        .filter(|p| phases.contains(&p.phase))
        .flat_map(|p| {
            p.clusters
                .iter()
                .flat_map(move |c| c.steps.iter().map(crate::dry_run::describe))
        })
        .collect()
}
