//! The work dir's folder of one mesh, `<workdir>/<mesh-id>/`, and what lives in it. The one place
//! that knows the layout, for `up`, `down` and `status`:
//!
//! ```text
//! state.json        what meshctl recorded (facts and ownership; not progress: the clusters are asked)
//! kind-kubeconfig   where kind writes its own kubeconfig
//! plan/             the plan `up` runs from (artifacts by path)
//! certs/            root CA and one intermediate per cluster (Istio's tools/certs layout)
//! isolated/<c>/     the remote secrets of an isolated cluster, as `isolate` removed them
//! upgrade/<rev>/    the plans `upgrade` ran to move clusters to revision <rev>
//! ```

use std::path::{Path, PathBuf};

/// `<workdir>/<mesh-id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshDir {
    root: PathBuf,
}

impl MeshDir {
    /// The folder of mesh `mesh_id` in `workdir`.
    pub fn new(workdir: &Path, mesh_id: &str) -> MeshDir {
        MeshDir {
            root: workdir.join(mesh_id),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// kind's own kubeconfig (kept apart, so kind and meshctl never race on one file).
    pub fn kind_kubeconfig(&self) -> PathBuf {
        self.root.join("kind-kubeconfig")
    }

    /// The plan `up` runs from.
    pub fn plan(&self) -> PathBuf {
        self.root.join("plan")
    }

    /// The remote secrets `meshctl isolate` took out of the other clusters for `cluster`, one file
    /// per peer, kept (0600: they carry a token) until `meshctl rejoin` puts them back.
    pub fn isolated(&self, cluster: &str) -> PathBuf {
        self.isolated_root().join(cluster)
    }

    /// The folder of every isolated cluster's kept secrets.
    pub fn isolated_root(&self) -> PathBuf {
        self.root.join("isolated")
    }

    /// The plans `meshctl upgrade` ran to move clusters to `revision` (their IstioOperators, by
    /// cluster, what istioctl installed from).
    pub fn upgrade_plan(&self, revision: &str) -> PathBuf {
        self.root.join("upgrade").join(revision)
    }

    /// The certificate authorities, unless `--certs-dir` points elsewhere.
    pub fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// The certificate directory `up` last used for this mesh (recorded in `state`), else
    /// [`MeshDir::certs`].
    pub fn certs_in_use(&self, state: &crate::state::MeshState) -> PathBuf {
        state.certs_dir.clone().unwrap_or_else(|| self.certs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_lives_in_the_meshs_own_folder() {
        let dir = MeshDir::new(Path::new("/w"), "mesh1");
        for path in [dir.state(), dir.kind_kubeconfig(), dir.plan(), dir.certs()] {
            assert_eq!(path.parent(), Some(Path::new("/w/mesh1")), "{}", path.display());
        }
    }
}
