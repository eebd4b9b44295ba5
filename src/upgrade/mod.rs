//! `meshctl upgrade`: a mesh moved to another Istio release without an outage, as Istio's canary
//! upgrade does it, one cluster at a time, each proven before the next.
//!
//! In each cluster (primaries first, each followed by its remotes): the new release's control
//! plane is installed as a revision beside the running one (`istiod-1-31-1`, same meshConfig,
//! cacerts, cluster and network names: the same templates as `up`); injection moves to it
//! (`istioctl tag set default --revision`); the east-west gateway is moved to it in place and
//! istiod is exposed to remotes as the revision's Service; then the gate: the cluster on the new
//! revision, its istiod synced with every cluster it reads, and (unless `--no-verify`) every pair
//! of clusters calling each other. A failed gate puts every cluster touched back on the old
//! revision. The old revision stays until `--finish` removes it (`istioctl uninstall --revision`,
//! which prunes only that revision's objects); `--rollback` undoes an upgrade under way.
//!
//! [`procedure`] is the upgrade as data (order, what is left, allowed moves);
//! [`crate::istio_revisions`] reads what the clusters hold; [`run`] changes them; [`preview`] writes
//! them out for `--dry-run`.

pub mod preview;
pub mod procedure;
pub mod run;

pub use run::{Outcome, Upgrader};

use k8s_openapi::api::core::v1::Pod;

use crate::revision::Revision;

/// An upgrade refused before anything changed: the user's request cannot be carried out as asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// `istioctl tag set default --revision <rev>`: the `default` tag (and with it namespaces labelled
/// `istio-injection=enabled`) now injects with `revision`. `--overwrite` because the tag exists
/// (the first install made it); `-y` because no one is there to confirm.
pub fn tag_set_args(context: &str, revision: &Revision) -> Vec<String> {
    [
        "tag",
        "set",
        "default",
        "--revision",
        revision.label(),
        "--overwrite",
        "-y",
        "--context",
        context,
    ]
    .map(String::from)
    .to_vec()
}

/// `istioctl uninstall --revision <rev>`: removes what that revision's install created (its
/// istiod, Services, injector, gateways still on it), nothing of another revision.
pub fn uninstall_revision_args(context: &str, revision: &Revision) -> Vec<String> {
    [
        "uninstall",
        "--revision",
        revision.label(),
        "-y",
        "--context",
        context,
    ]
    .map(String::from)
    .to_vec()
}

/// The revision whose injector gave `pod` its proxy: the `revision` of its
/// `sidecar.istio.io/status` annotation (what Istio's injector writes there).
pub fn injected_by(pod: &Pod) -> Option<Revision> {
    let status = pod
        .metadata
        .annotations
        .as_ref()?
        .get("sidecar.istio.io/status")?;
    let status: serde_json::Value = serde_json::from_str(status).ok()?;
    Some(Revision::from_label(status.get("revision")?.as_str()?))
}

/// The release `meshctl upgrade` moved the mesh to (recorded in its state), on `mesh`: every
/// command then plans, probes and removes what the clusters run, not the release before.
pub fn follow_recorded_release(mesh: &mut crate::topology::Mesh, state: &crate::state::MeshState) {
    if let Some(recorded) = state.dataplane {
        mesh.dataplane = recorded;
    }
    if let Some(recorded) = &state.istio {
        mesh.istio_version = Some(recorded.version.clone());
        mesh.istio_revision = recorded.revision.clone();
    }
    mesh.istio_revision_beside = state
        .upgrade
        .as_ref()
        .and_then(|u| u.beside(&mesh.istio_revision));
}

/// The data plane the mesh was built with: `up` keeps it. A mesh built with sidecars that the
/// topology now says is ambient (which is never a default) is refused: moving workloads between
/// data planes is a migration of its own (Istio's "migrating to ambient" guide), not a re-install.
/// A mesh built ambient is followed when the topology does not say otherwise (`--clusters N`
/// alone), and refused when `--dataplane sidecar` says so.
fn follow_dataplane_for_up(
    mesh: &mut crate::topology::Mesh,
    state: &crate::state::MeshState,
) -> Result<(), crate::exit::UsageError> {
    let Some(recorded) = state.dataplane.filter(|r| *r != mesh.dataplane) else {
        return Ok(());
    };
    if mesh.dataplane != crate::topology::Dataplane::default() || mesh.dataplane_asked {
        return Err(crate::exit::UsageError(format!(
            "mesh `{}` was built with the {} data plane, and this topology asks for {}: `up` does not move a mesh between data planes (its workloads would have to move too); build another mesh (`--mesh-id`), or `meshctl down` this one first",
            mesh.mesh_id,
            recorded.name(),
            mesh.dataplane.name()
        )));
    }
    let followed = mesh
        .clone()
        .with_dataplane(recorded)
        .map_err(crate::exit::UsageError::from_display)?;
    *mesh = followed;
    Ok(())
}

/// The release `meshctl upgrade` moved the mesh to: `up` installs it (and its revision), never the
/// one before, whatever meshctl.yaml still says; a flag asking for another is refused.
pub fn follow_for_up(
    mesh: &mut crate::topology::Mesh,
    asked: Option<&str>,
    state: &crate::state::MeshState,
    reporter: &crate::report::Reporter,
) -> Result<(), crate::exit::UsageError> {
    follow_dataplane_for_up(mesh, state)?;
    let Some(recorded) = &state.istio else {
        return Ok(());
    };
    if let Some(flag) = asked.filter(|f| *f != recorded.version) {
        return Err(crate::exit::UsageError(format!(
            "--istio-version {flag}: mesh `{}` runs Istio {} (revision {}) since `meshctl upgrade`; `meshctl upgrade --to {flag}` moves it to another release",
            mesh.mesh_id, recorded.version, recorded.revision
        )));
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
    follow_recorded_release(mesh, state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Dataplane, Mesh};

    fn built(dataplane: Dataplane) -> crate::state::MeshState {
        crate::state::MeshState {
            dataplane: Some(dataplane),
            ..Default::default()
        }
    }

    /// `up` keeps the data plane a mesh was built with: followed when the topology does not say,
    /// refused when it asks for the other one.
    #[test]
    fn up_keeps_the_data_plane_the_mesh_was_built_with() {
        let reporter = crate::report::Reporter::for_stderr();
        let mut plain = Mesh::for_kind(2, "mesh1").unwrap();
        follow_for_up(&mut plain, None, &built(Dataplane::Ambient), &reporter).unwrap();
        assert_eq!(plain.dataplane, Dataplane::Ambient);
        let mut asked = Mesh::for_kind(2, "mesh1")
            .unwrap()
            .with_dataplane(Dataplane::Sidecar)
            .unwrap();
        let err = follow_for_up(&mut asked, None, &built(Dataplane::Ambient), &reporter).unwrap_err();
        assert!(
            err.0.contains("built with the ambient data plane") && err.0.contains("asks for sidecar"),
            "{}",
            err.0
        );
        let mut ambient = Mesh::for_kind(2, "mesh1")
            .unwrap()
            .with_dataplane(Dataplane::Ambient)
            .unwrap();
        assert!(follow_for_up(&mut ambient, None, &built(Dataplane::Sidecar), &reporter).is_err());
        // Never built: whatever the topology says.
        let mut fresh = Mesh::for_kind(2, "mesh1")
            .unwrap()
            .with_dataplane(Dataplane::Ambient)
            .unwrap();
        follow_for_up(&mut fresh, None, &crate::state::MeshState::default(), &reporter).unwrap();
        assert_eq!(fresh.dataplane, Dataplane::Ambient);
        // An ambient mesh recorded, a topology that cannot be ambient: refused, naming why.
        let mut remote = Mesh::from_yaml("clusters:\n  - {}\n  - {role: remote}\n", None).unwrap();
        assert!(follow_for_up(&mut remote, None, &built(Dataplane::Ambient), &reporter).is_err());
    }
}
