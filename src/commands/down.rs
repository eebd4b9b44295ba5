//! `meshctl down`: delete the kind clusters `up` created (never others), keep the CA unless `--purge`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Exit;
use crate::cli::DownArgs;
use crate::executor::mesh_dir;
use crate::report::Reporter;
use crate::state::StateStore;
use crate::tools::ProcessRunner;
use crate::tools::kind::Kind;

pub(super) async fn run(args: DownArgs, workdir: &Path) -> Result<Exit> {
    let reporter = Arc::new(Reporter::new(super::report_format(args.output)));
    let dir = mesh_dir(workdir, &args.mesh_id);
    let state_path = dir.join("state.json");
    if !state_path.exists() {
        reporter.note(
            &args.mesh_id,
            &format!(
                "no mesh `{}` recorded in `{}`; nothing to delete",
                args.mesh_id,
                workdir.display()
            ),
        );
        if args.purge && dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove `{}`", dir.display()))?;
        }
        return Ok(Exit::Success);
    }
    let state = StateStore::load(&state_path)?;
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
            if existing.contains(name) {
                kind.delete(name, Duration::from_secs(300))
                    .await
                    .with_context(|| format!("cannot delete kind cluster `{name}`"))?;
            }
            Ok::<_, anyhow::Error>(name.clone())
        }
    });
    let mut failed = Vec::new();
    for result in futures::future::join_all(deletions).await {
        match result {
            Ok(name) => {
                if let Some(kubeconfig) = &snapshot.kubeconfig {
                    crate::kubeconfig::remove_context(kubeconfig, &name)?;
                }
                state.update(|s| {
                    s.created_kind_clusters.remove(&name);
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
    if let Some(e) = failed.into_iter().next() {
        return Err(e);
    }
    if args.purge {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove `{}`", dir.display()))?;
        reporter.ok(
            &args.mesh_id,
            &format!("state and certificate authorities removed (`{}`)", dir.display()),
        );
    } else {
        // Existing clusters were only joined, never created: forget their progress, keep the CA.
        state.update(|s| s.clusters.clear())?;
        reporter.note(
            &args.mesh_id,
            &format!(
                "certificate authorities kept in `{}` (--purge removes them)",
                dir.join("certs").display()
            ),
        );
    }
    Ok(Exit::Success)
}
