//! What `meshctl down` removes of what meshctl created on this machine: the kind clusters it made
//! (with the kubeconfig entries it wrote for them), and with `--purge` its files in the mesh's
//! folder, file by file.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::mesh_dir::MeshDir;
use crate::report::Reporter;
use crate::state::StateStore;
use crate::tools::ProcessRunner;
use crate::tools::kind::Kind;

/// Deletes the kind clusters meshctl created (those still there), each with the kubeconfig entry
/// meshctl wrote for it; the first failure is returned after every deletion was tried.
pub async fn delete_created_kind_clusters(
    state: &StateStore,
    kind_kubeconfig: &Path,
    reporter: &Reporter,
) -> Result<()> {
    let snapshot = state.snapshot();
    let runner = ProcessRunner;
    let kind = Kind::new(&runner);
    let existing = if snapshot.created_kind_clusters.is_empty() {
        Vec::new()
    } else {
        kind.clusters().await?
    };
    let deletions = snapshot.created_kind_clusters.iter().map(|name| {
        let (kind, existing) = (&kind, &existing);
        async move {
            if existing.contains(name)
                && let Err(e) = kind.delete(name, Duration::from_secs(300), kind_kubeconfig).await
            {
                // kind deletes the nodes even when it cannot edit the kubeconfig (another
                // deletion holds its lock) and then exits 1: what counts is the cluster gone.
                let gone = kind.clusters().await.is_ok_and(|now| !now.contains(name));
                if !gone {
                    return Err(
                        anyhow::Error::from(e).context(format!("cannot delete kind cluster `{name}`"))
                    );
                }
            }
            Ok::<_, anyhow::Error>(name.clone())
        }
    });
    let mut failed = Vec::new();
    for result in futures::future::join_all(deletions).await {
        match result {
            Ok(name) => {
                // Only an entry meshctl wrote; a same-named one of the user's is never touched.
                if let Some(kubeconfig) = &snapshot.kubeconfig
                    && snapshot.owned_kubeconfig_entries().contains(&name)
                {
                    crate::kubeconfig::remove_context(kubeconfig, &name)?;
                }
                state.update(|s| {
                    s.created_kind_clusters.remove(&name);
                    s.kubeconfig_entries.remove(&name);
                    s.clusters.remove(&name);
                })?;
                reporter.ok(&name, "kind cluster deleted");
            }
            Err(e) => {
                reporter.fail("down", &format!("{e:#}"));
                failed.push(e);
            }
        }
    }
    match failed.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Removes what meshctl wrote in the mesh's folder of the work dir (state, plan, kind kubeconfig,
/// certificate authorities), file by file: anything else found there stays, and is named.
pub fn purge(mesh_dir: &MeshDir, reporter: &Reporter, mesh_id: &str) -> Result<()> {
    let dir = mesh_dir.root();
    let cannot = || format!("cannot remove meshctl's files from `{}`", dir.display());
    // The remote secrets `isolate` kept (they carry tokens), by what the state says it wrote.
    let isolated = StateStore::load(&mesh_dir.state())
        .map(|s| s.snapshot().isolated)
        .unwrap_or_default();
    for (cluster, isolation) in &isolated {
        let folder = mesh_dir.isolated(cluster);
        for peer in &isolation.removed_from {
            match std::fs::remove_file(folder.join(format!("{peer}.yaml"))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(cannot),
                _ => {}
            }
        }
        let _ = std::fs::remove_dir(&folder);
    }
    let _ = std::fs::remove_dir(mesh_dir.isolated_root());
    for file in [mesh_dir.state(), mesh_dir.kind_kubeconfig()] {
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(cannot),
            _ => {}
        }
    }
    crate::dry_run::remove_plan(&mesh_dir.plan()).with_context(cannot)?;
    let _ = std::fs::remove_dir(mesh_dir.plan());
    crate::pki::layout::remove(&mesh_dir.certs()).with_context(cannot)?;
    let left: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| format!("`{}`", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    if left.is_empty() {
        let _ = std::fs::remove_dir(dir);
        reporter.ok(
            mesh_id,
            &format!("state and certificate authorities removed (`{}`)", dir.display()),
        );
    } else {
        reporter.note(
            mesh_id,
            &format!(
                "state and certificate authorities removed; `{}` also holds {} that meshctl did not write, kept",
                dir.display(),
                left.join(", ")
            ),
        );
    }
    Ok(())
}
