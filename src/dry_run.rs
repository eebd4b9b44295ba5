//! `up --dry-run`: the plan written to disk, for review or GitOps.
//!
//! ```text
//! OUT/plan.json, OUT/plan.yaml           phases × clusters × steps, and the artifact list
//! OUT/<cluster>/<NN-phase>/<file>.yaml   every rendered manifest (secrets 0600)
//! OUT/<cluster>/verify/*.yaml            what `meshctl verify` applies
//! ```
//! Paths inside the plan are relative to OUT, so `cd OUT` and the listed commands run as shown.

use std::io;
use std::path::Path;

use serde::Serialize;

use crate::atomic_file::{self, PRIVATE, PUBLIC};
use crate::phases;
use crate::plan::{Artifact, Plan, Step};

/// What `plan.json` holds: who wrote it, the plan and the verification manifests.
#[derive(Serialize)]
struct PlanFile<'a> {
    /// [`GENERATOR`]: how a later run knows the folder is an earlier plan of its own, whose listed
    /// files it may remove, and not somebody else's `plan.json` (Terraform writes one too).
    generator: &'static str,
    #[serde(flatten)]
    plan: &'a Plan,
    verify: Vec<&'a str>,
}

/// The `generator` of every `plan.json` meshctl writes.
pub const GENERATOR: &str = "meshctl";

/// Whether `dir/plan.json` is a plan meshctl wrote (a file that does not parse, or parses as
/// anything else, is not).
pub fn holds_meshctl_plan(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("plan.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|doc| doc["generator"] == GENERATOR)
}

/// Writes the plan and every artifact under `out`. Existing files are replaced atomically.
pub fn write(out: &Path, plan: &Plan, verify: &[Artifact]) -> io::Result<()> {
    atomic_file::create_dir_all(out, 0o755)?;
    for artifact in plan.artifacts.iter().chain(verify) {
        refuse_links_below(out, Path::new(&artifact.path))?;
        let path = out.join(&artifact.path);
        atomic_file::create_dir_all(atomic_file::parent_of(&path), 0o755)?;
        let mode = if artifact.secret { PRIVATE } else { PUBLIC };
        atomic_file::write(&path, artifact.content.as_bytes(), mode)?;
    }
    let file = PlanFile {
        generator: GENERATOR,
        plan,
        verify: verify.iter().map(|a| a.path.as_str()).collect(),
    };
    let json = serde_json::to_string_pretty(&file).map_err(io::Error::other)?;
    refuse_links_below(out, Path::new("plan.json"))?;
    refuse_links_below(out, Path::new("plan.yaml"))?;
    atomic_file::write(&out.join("plan.json"), format!("{json}\n").as_bytes(), PUBLIC)?;
    let yaml = serde_saphyr::to_string(&file).map_err(io::Error::other)?;
    atomic_file::write(&out.join("plan.yaml"), yaml.as_bytes(), PUBLIC)?;
    Ok(())
}

/// Fails when any part of `rel` below `out` is a symbolic link: meshctl writes and removes only
/// inside the folder it owns, and a link there (`plan/cluster1 -> /etc`) would lead it out. `out`
/// itself may be a link: the user chose it.
fn refuse_links_below(out: &Path, rel: &Path) -> io::Result<()> {
    let mut at = out.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "`{}` is a symbolic link: meshctl writes only inside --out `{}` and never follows a link out of it; remove the link",
                    at.display(),
                    out.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why `--out` cannot take a plan.
#[derive(Debug, thiserror::Error)]
pub enum OutError {
    /// The folder holds files meshctl did not write.
    #[error("--out `{}` is not empty and holds no meshctl plan (it has {}); nothing was written\nhint: choose an empty or new folder, or pass --overwrite to write into it anyway", dir.display(), entries.join(", "))]
    Foreign {
        dir: std::path::PathBuf,
        /// A few of its entries.
        entries: Vec<String>,
    },
    /// Reading or removing failed.
    #[error("--out `{}`: {source}", dir.display())]
    Io {
        dir: std::path::PathBuf,
        source: io::Error,
    },
}

/// Readies `out` for a plan: a missing or empty folder is fine; a previous meshctl plan is removed
/// (only the files its `plan.json` lists, so no stale cluster folders survive a smaller re-plan);
/// any other non-empty folder, one with somebody else's `plan.json` included, is refused unless
/// `overwrite`, and then only written into.
pub fn prepare_out(out: &Path, overwrite: bool) -> Result<(), OutError> {
    let io_err = |source| OutError::Io {
        dir: out.to_path_buf(),
        source,
    };
    let entries: Vec<String> = match std::fs::read_dir(out) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    if entries.is_empty() {
        return Ok(());
    }
    if holds_meshctl_plan(out) {
        return remove_plan(out).map_err(io_err);
    }
    if overwrite {
        return Ok(());
    }
    let mut shown: Vec<String> = entries.into_iter().take(4).collect();
    shown.sort();
    Err(OutError::Foreign {
        dir: out.to_path_buf(),
        entries: shown.into_iter().map(|e| format!("`{e}`")).collect(),
    })
}

/// Removes a plan written by [`write`]: the files its `plan.json` lists, `plan.json` and
/// `plan.yaml`, then the folders that became empty. Nothing else is touched, and a `plan.json`
/// meshctl did not write is refused.
pub fn remove_plan(out: &Path) -> io::Result<()> {
    let text = match std::fs::read_to_string(out.join("plan.json")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| io::Error::other(format!("plan.json is not a meshctl plan: {e}")))?;
    if doc["generator"] != GENERATOR {
        return Err(io::Error::other(format!(
            "plan.json is not a meshctl plan (its `generator` is not `{GENERATOR}`): nothing was removed"
        )));
    }
    let listed = doc["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["path"].as_str())
        .chain(
            doc["verify"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str()),
        )
        .chain(["plan.json", "plan.yaml"]);
    let mut folders = std::collections::BTreeSet::new();
    for rel in listed {
        // Only relative paths below `out`: a tampered plan.json must not reach elsewhere.
        let rel = Path::new(rel);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        // Nothing is removed through a link, nor a link's target.
        refuse_links_below(out, rel)?;
        match std::fs::remove_file(out.join(rel)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut parent = rel.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            folders.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    // Deepest first; a folder that still holds something (the user's) stays.
    for folder in folders.iter().rev() {
        let _ = std::fs::remove_dir(out.join(folder));
    }
    Ok(())
}

/// The plan as text a reviewer reads top to bottom: per phase, per cluster, each step.
pub fn listing(plan: &Plan) -> String {
    let mut text = format!(
        "mesh `{}`: {} cluster(s), provider {:?}\n",
        plan.mesh_id,
        plan.clusters.len(),
        plan.provider
    );
    for c in &plan.clusters {
        let pool = c
            .metallb_pool
            .as_deref()
            .map(|p| format!("  pool {p}"))
            .unwrap_or_default();
        text.push_str(&format!(
            "  {:<10} context {}  network {}  locality {}{pool}\n",
            c.name, c.context, c.network, c.locality
        ));
    }
    let mut listed = Vec::new();
    for phase in &plan.phases {
        // A phase listed again holds remotes, which run it after their primaries.
        let again = if listed.contains(&phase.phase) {
            "   (remotes, after their primaries)"
        } else {
            ""
        };
        listed.push(phase.phase);
        text.push_str(&format!("\n{}{again}\n", phase.phase.folder()));
        for cluster in &phase.clusters {
            for step in &cluster.steps {
                text.push_str(&format!("  {:<10} {}\n", cluster.cluster, describe(step)));
            }
        }
    }
    text
}

/// One line for a step of `phase`: the phase says how its own steps read; the shared ones read
/// the same in every phase.
pub fn describe(step: &Step) -> String {
    phases::describe(step)
}
