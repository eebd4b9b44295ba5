//! The work dir: the folder meshctl keeps every mesh's state in (`--workdir`, `MESHCTL_HOME`, or
//! the XDG state folder), and the meshes recorded there: a command acting on a built mesh finds it
//! here, and a new mesh is refused the clusters another recorded mesh was built on.

use std::path::{Path, PathBuf};

use crate::exit::UsageError;
use crate::mesh_dir::MeshDir;
use crate::topology::Mesh;

/// The state folder: `--workdir`, else `MESHCTL_HOME` (set and not empty: an empty variable is
/// unset, as for `KUBECONFIG`), else the default. One that exists as something other than a
/// folder is refused, naming where it came from.
pub fn resolve(flag: Option<&Path>) -> Result<PathBuf, UsageError> {
    let (dir, from) = match (flag, std::env::var_os("MESHCTL_HOME").filter(|v| !v.is_empty())) {
        (Some(dir), _) => (dir.to_path_buf(), "--workdir"),
        (None, Some(home)) => (PathBuf::from(home), "MESHCTL_HOME"),
        (None, None) => (default_workdir()?, "the default state folder"),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(UsageError(format!(
            "{from} `{}` is not a folder: meshctl keeps its state (certificates, progress, kubeconfigs) in a folder{}",
            dir.display(),
            if from == "MESHCTL_HOME" {
                "; name a folder, or unset MESHCTL_HOME"
            } else {
                "; name a folder"
            }
        )));
    }
    // Tools run from the plan folder (kind writes the kubeconfig it is given there): a relative
    // work dir would name another file for them than for meshctl.
    std::path::absolute(&dir).map_err(|e| UsageError(format!("{from} `{}`: {e}", dir.display())))
}

/// `$XDG_STATE_HOME/meshctl`, else `~/.local/state/meshctl`. A relative `XDG_STATE_HOME` is
/// ignored, as the XDG Base Directory specification says it must be (it would put the CA keys
/// wherever the command happens to run); without `HOME` there is no default at all: the state
/// folder holds private keys, so it is never guessed to be the current folder.
fn default_workdir() -> Result<PathBuf, UsageError> {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(state.join("meshctl"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/meshctl")),
        None => Err(UsageError(
            "HOME is not set, so meshctl has no state folder for the mesh's certificates and progress\nhint: set MESHCTL_HOME (or pass --workdir) to the folder meshctl keeps them in".into(),
        )),
    }
}

/// The folder of a mesh `up` recorded in `workdir`, for a command that acts on a built mesh
/// (`down --uninstall`, `upgrade`, `isolate`): a mesh never recorded here (a typo in `--mesh-id`,
/// a mesh built on another machine) is refused before any cluster is asked or anything fetched.
pub fn recorded_mesh(workdir: &Path, mesh_id: &str, command: &str) -> Result<MeshDir, UsageError> {
    let dir = MeshDir::new(workdir, mesh_id);
    if dir.state().is_file() {
        return Ok(dir);
    }
    let others = recorded_meshes(workdir);
    Err(UsageError(format!(
        "{command}: no mesh `{mesh_id}` recorded in `{}`{}; nothing was asked of any cluster\nhint: name the mesh `up` built (`--mesh-id`, or `--config` with its file), and run where it was built (its `MESHCTL_HOME` or `--workdir`)",
        workdir.display(),
        if others.is_empty() {
            String::new()
        } else {
            format!(
                " (recorded here: {})",
                others
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )))
}

/// Refuses to start a mesh not yet recorded in `workdir` on clusters another recorded mesh was
/// built on: a mistyped `--mesh-id` would otherwise record a second mesh over the first one's
/// clusters. A mesh already recorded is never refused here (it converges on its own clusters).
pub fn refuse_clusters_of_other_meshes(
    workdir: &Path,
    mesh: &Mesh,
    kubeconfig: Option<&Path>,
    command: &str,
) -> Result<(), UsageError> {
    if MeshDir::new(workdir, &mesh.mesh_id).state().is_file() {
        return Ok(());
    }
    // A context is the same cluster when it names the server recorded with it (a context of the
    // same name in another kubeconfig is another cluster); where no server was recorded, or the
    // context is not in this kubeconfig yet, its name alone says it.
    let same = |context: &str, recorded: &Option<String>| match (
        recorded,
        crate::kube::server_of(kubeconfig, context),
    ) {
        (Some(then), Ok(now)) => *then == now,
        _ => true,
    };
    let mut taken = Vec::new();
    for other in recorded_meshes(workdir)
        .into_iter()
        .filter(|m| *m != mesh.mesh_id)
    {
        let Ok(store) = crate::state::StateStore::load(&MeshDir::new(workdir, &other).state()) else {
            continue;
        };
        let contexts = store.snapshot().contexts();
        taken.extend(
            mesh.clusters
                .iter()
                .filter(|c| {
                    contexts
                        .get(&c.context)
                        .is_some_and(|server| same(&c.context, server))
                })
                .map(|c| (other.clone(), c.name.clone(), c.context.clone())),
        );
    }
    let Some((first_mesh, _, _)) = taken.first().cloned() else {
        return Ok(());
    };
    Err(UsageError(format!(
        "{command}: mesh `{}` is not recorded in `{}`, and its clusters belong to another mesh: {}; a cluster is in one mesh, so nothing was changed\nhint: `--mesh-id {first_mesh}` to converge the mesh these clusters are in; to build another mesh, name other clusters (or `meshctl down --mesh-id {first_mesh}` first)",
        mesh.mesh_id,
        workdir.display(),
        taken
            .iter()
            .map(|(m, c, ctx)| format!("{c} (context `{ctx}`) is in `{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The meshes whose state is recorded in `workdir` (folders holding a state file), by name.
pub fn recorded_meshes(workdir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(workdir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| MeshDir::new(workdir, name).state().is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}
