//! `meshctl down`: delete the kind clusters `up` created (never others), keep the CA unless `--purge`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Exit, UsageError};
use crate::cli::DownArgs;
use crate::mesh_dir::MeshDir;
use crate::report::Reporter;
use crate::state::StateStore;

/// `--uninstall`: the mesh's clusters, after a confirmation, lose what meshctl put there: remote
/// secrets first in every cluster, then the rest in each.
async fn uninstall(
    args: &DownArgs,
    workdir: &Path,
    kubeconfig: Option<&Path>,
    reporter: &Reporter,
) -> Result<String> {
    let topology = crate::cli::TopologyArgs {
        clusters: None,
        config: args.config.clone(),
        contexts: args.contexts.clone(),
        mesh_id: args.mesh_id.clone(),
        // The data plane is the one the mesh's state recorded.
        dataplane: None,
    };
    if args.config.is_none() && args.contexts.is_empty() {
        return Err(UsageError("--uninstall needs the clusters: --contexts or --config".into()).into());
    }
    let mut mesh = super::resolve_topology(&topology)?;
    // What meshctl removes is what this mesh made: only a mesh recorded here.
    let dir = crate::work_dir::recorded_mesh(workdir, &mesh.mesh_id, "--uninstall")?;
    crate::upgrade::follow_recorded_release(
        &mut mesh,
        &crate::state::StateStore::load(&dir.state())?.snapshot(),
    );
    let names: Vec<&str> = mesh.clusters.iter().map(|c| c.context.as_str()).collect();
    if !args.yes {
        super::confirm(
            &format!("--uninstall changes clusters {}", names.join(", ")),
            &format!(
                "Remove what meshctl installed in {} (verify's sample namespace, remote secrets, reader account, Gateway, east-west gateway, Istio, cacerts)?",
                names.join(", ")
            ),
        )?;
    }
    let clients = crate::kube::Clients::new(kubeconfig);
    let connected = futures::future::join_all(mesh.clusters.iter().map(|c| clients.get(&c.context))).await;
    let mut targets = Vec::new();
    for (cluster, result) in mesh.clusters.iter().zip(connected) {
        let client = result.with_context(|| format!("down --uninstall: cluster `{}`", cluster.name))?;
        let istio_namespace = mesh.istio_namespace(cluster);
        targets.push(crate::uninstall::Target {
            cluster,
            istio_namespace,
            client,
        });
    }
    if !mesh.dataplane.is_sidecar() {
        crate::uninstall::refuse_enrolled_workloads(&targets).await?;
    }
    // The release the mesh runs removes it (istio.version of its meshctl.yaml, or the one
    // `meshctl upgrade` moved it to).
    let tools = crate::istioctl_choice::istioctl_runner(
        None,
        mesh.istio_version.as_deref(),
        false,
        &crate::upstream::cache_dir(),
        reporter,
    )
    .await
    .context("down --uninstall")?;
    let removed = crate::uninstall::uninstall(
        &targets,
        &mesh.mesh_id,
        &dir.plan(),
        kubeconfig,
        Duration::from_secs(600),
        tools.as_ref(),
    )
    .await?;
    for ((name, items), target) in removed.into_iter().zip(&targets) {
        for item in items {
            reporter.ok(&name, &format!("removed {item}"));
        }
        let namespace = target.istio_namespace;
        // An ambient mesh also leaves the Gateway API CRDs (and their admission policy) and the
        // GatewayClasses istiod made for itself, which carry no owner meshctl could go by.
        let ambient = if mesh.dataplane.is_sidecar() {
            ""
        } else {
            ", the Gateway API CRDs and the GatewayClasses istiod made"
        };
        reporter.note(
            &name,
            &format!("kept: namespace {namespace}, Istio's CRDs{ambient}, node labels (not only meshctl's to remove)"),
        );
    }
    Ok(mesh.mesh_id.clone())
}

pub(super) async fn run(args: DownArgs, workdir: &Path, kubeconfig: Option<&Path>) -> Result<Exit> {
    let reporter = Arc::new(Reporter::new(super::report_format(args.output)));
    // With --uninstall the topology names the mesh (its file may set meshID); else --mesh-id.
    let mesh_id = if args.uninstall {
        uninstall(&args, workdir, kubeconfig, &reporter).await?
    } else if let Some(config) = &args.config {
        // The mesh `up --config FILE` made: the file's meshID (or --mesh-id over it).
        crate::topology::Mesh::from_file(config, args.mesh_id.as_deref())
            .map_err(super::UsageError::from_display)?
            .mesh_id
    } else {
        args.mesh_id
            .clone()
            .unwrap_or_else(|| crate::topology::DEFAULT_MESH_ID.to_string())
    };
    let mesh_dir = MeshDir::new(workdir, &mesh_id);
    let dir = mesh_dir.root().to_path_buf();
    let state_path = mesh_dir.state();
    if !state_path.exists() {
        // Another mesh is recorded here: the user most likely meant it (`up --config lab.yaml`
        // made mesh `lab`, and a plain `down` asks for `mesh1`). Say which, instead of a success
        // that leaves its clusters running.
        let others = crate::work_dir::recorded_meshes(workdir);
        if !others.is_empty() && !args.uninstall {
            return Err(super::UsageError(format!(
                "no mesh `{mesh_id}` recorded in `{}`; recorded here: {}\nhint: `meshctl down --mesh-id {}` (or `--config` with the file `up` used)",
                workdir.display(),
                others.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                others[0]
            ))
            .into());
        }
        reporter.note(
            &mesh_id,
            &format!(
                "no mesh `{}` recorded in `{}`; nothing to delete",
                mesh_id,
                workdir.display()
            ),
        );
        if args.purge && dir.exists() {
            crate::teardown::purge(&mesh_dir, &reporter, &mesh_id)?;
        }
        return Ok(Exit::Success);
    }
    let state = StateStore::load(&state_path)?;
    crate::teardown::delete_created_kind_clusters(&state, &mesh_dir.kind_kubeconfig(), &reporter).await?;
    if args.purge {
        crate::teardown::purge(&mesh_dir, &reporter, &mesh_id)?;
    } else {
        // Existing clusters were only joined, never created: forget their progress, keep the CA.
        state.update(|s| s.clusters.clear())?;
        reporter.note(
            &mesh_id,
            &format!(
                "certificate authorities kept in `{}` (--purge removes them)",
                mesh_dir.certs().display()
            ),
        );
    }
    Ok(Exit::Success)
}
