//! What meshctl learned and owns, kept in `<workdir>/<mesh-id>/state.json` and rewritten atomically
//! after every step that changes it: facts found at run time (API addresses on the docker network,
//! the network's subnet, gateway IPs) and what meshctl created (kind clusters, kubeconfig entries),
//! so `down` removes only that.
//!
//! Progress is not kept here: whether a phase is done is asked of the clusters each run (every
//! phase's probe), so a repeated or resumed `up` converges on what the clusters really hold.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::atomic_file::{self, PRIVATE};
use crate::revision::Revision;

/// Per-cluster facts and progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// The kubeconfig context `up` reached the cluster by, so a second mesh recorded in the same
    /// work dir is refused the same clusters (absent in state written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The server that context named then: with it, a context of the same name in another
    /// kubeconfig (or a cluster made anew elsewhere) is not taken for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// API server address on the shared network (for remote secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// External address of the east-west gateway: its LoadBalancer IP, or hostname where the
    /// load balancer gives only a hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eastwest_ip: Option<String>,
    /// Phases that were complete in this cluster at least once. Never used to skip work (the
    /// probes decide that); only to call what a later run finds missing a repair, not a first build.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub built: BTreeSet<String>,
}

/// The whole state of one mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshState {
    #[serde(rename = "meshID", default)]
    pub mesh_id: String,
    /// kind clusters meshctl created (and `down` may delete). Pre-existing ones are never listed.
    #[serde(default)]
    pub created_kind_clusters: BTreeSet<String>,
    /// Kubeconfig file the contexts were imported into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Names of the context, cluster and user entries meshctl wrote into that file (one name for
    /// all three). Only these are ever replaced or removed; anything else in the file is the user's.
    #[serde(default)]
    pub kubeconfig_entries: BTreeSet<String>,
    /// The IPv4 subnet of the docker network the kind nodes are on, read once it exists; MetalLB
    /// pools are planned from it without asking docker again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_subnet: Option<ipnet::Ipv4Net>,
    /// The certificate directory `up` used (`--certs-dir`, else the mesh folder's `certs/`), so
    /// `status` compares `cacerts` with the same CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs_dir: Option<PathBuf>,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterState>,
    /// Clusters taken out of the mesh by `meshctl isolate`, until `meshctl rejoin`: desired state,
    /// so `up` keeps them out and `status` says so.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub isolated: BTreeMap<String, Isolation>,
    /// The Istio release and control-plane revision the mesh runs, once `meshctl upgrade` chose
    /// them: `up` installs these, never the ones before (until then: the release `up` was given,
    /// Istio's default revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRelease>,
    /// An upgrade begun and neither finished nor rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeRecord>,
    /// The data plane `up` built the mesh with: every later command works on it, and `up` does
    /// not move a mesh to the other one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<crate::topology::Dataplane>,
}

/// One Istio release as a mesh runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IstioRelease {
    pub version: String,
    pub revision: Revision,
}

/// Where an upgrade comes from and goes to; the old revision stays installed until `--finish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    pub from: IstioRelease,
    pub to: IstioRelease,
    /// When it began (RFC 3339).
    pub started: String,
    /// The release recorded before it began (none: the one `up` is given), restored by a
    /// rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_before: Option<IstioRelease>,
}

impl UpgradeRecord {
    /// The revision running beside `revision` while this upgrade is under way: the other of its
    /// two (none when `revision` is neither, or both are the same).
    pub fn beside(&self, revision: &Revision) -> Option<Revision> {
        let (from, to) = (&self.from.revision, &self.to.revision);
        match revision {
            r if r == to && from != to => Some(from.clone()),
            r if r == from && from != to => Some(to.clone()),
            _ => None,
        }
    }
}

/// What `meshctl isolate` did to take one cluster out of the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Isolation {
    /// The clusters whose istiod no longer reads it: its remote secret was removed from each, and
    /// kept in the mesh folder (`isolated/<cluster>/<peer>.yaml`) to be put back by `rejoin`.
    #[serde(default)]
    pub removed_from: BTreeSet<String>,
    /// When it was isolated (RFC 3339).
    #[serde(default)]
    pub since: String,
}

impl MeshState {
    /// The contexts of the clusters this mesh was built on, each with the server it named when
    /// recorded (`None` where none was): those recorded, and (for state written before contexts
    /// were) the kind clusters it created, whose contexts meshctl imports under the cluster's name.
    pub fn contexts(&self) -> BTreeMap<String, Option<String>> {
        let mut out: BTreeMap<String, Option<String>> = self
            .created_kind_clusters
            .iter()
            .map(|n| (n.clone(), None))
            .collect();
        out.extend(
            self.clusters
                .values()
                .filter_map(|c| Some((c.context.clone()?, c.server.clone()))),
        );
        out
    }

    /// East-west gateway IPs recorded so far, by cluster.
    pub fn gateway_ips(&self) -> BTreeMap<String, String> {
        self.clusters
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.eastwest_ip.clone()?)))
            .collect()
    }

    /// The kubeconfig entries meshctl wrote into [`MeshState::kubeconfig`]: those it recorded, and
    /// the contexts of the kind clusters it created (always imported under their names; state
    /// written before entries were recorded lists only these).
    pub fn owned_kubeconfig_entries(&self) -> BTreeSet<String> {
        self.kubeconfig_entries
            .union(&self.created_kind_clusters)
            .cloned()
            .collect()
    }
}

/// The state file, shared by the clusters of a phase running at once.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    inner: Mutex<MeshState>,
}

impl StateStore {
    /// Loads `path` (a missing file is an empty state).
    pub fn load(path: &Path) -> io::Result<StateStore> {
        let state = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                io::Error::other(format!(
                    "`{}` is not a meshctl state file (not the JSON meshctl writes: {} at line {}, column {}); restore it, or move it aside and run `meshctl up` again with the same topology (and `--certs-dir` if the mesh used one)",
                    path.display(),
                    match e.classify() {
                        serde_json::error::Category::Eof => "it ends too early",
                        serde_json::error::Category::Syntax => "the text is not JSON",
                        _ => "the data is not a mesh's state",
                    },
                    e.line(),
                    e.column()
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => MeshState::default(),
            Err(e) => return Err(e),
        };
        Ok(StateStore {
            path: path.to_path_buf(),
            inner: Mutex::new(state),
        })
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> MeshState {
        self.inner.lock().expect("state lock").clone()
    }

    /// Changes the state and writes it.
    pub fn update<T>(&self, f: impl FnOnce(&mut MeshState) -> T) -> io::Result<T> {
        let mut state = self.inner.lock().expect("state lock");
        let out = f(&mut state);
        atomic_file::create_dir_all(atomic_file::parent_of(&self.path), 0o700)?;
        let text = serde_json::to_string_pretty(&*state).map_err(io::Error::other)?;
        atomic_file::write(&self.path, format!("{text}\n").as_bytes(), PRIVATE)?;
        Ok(out)
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_survive_a_reload_and_old_progress_records_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh1/state.json");
        let store = StateStore::load(&path).unwrap();
        store
            .update(|s| {
                s.created_kind_clusters.insert("cluster1".into());
                s.docker_subnet = Some("172.18.0.0/16".parse().unwrap());
            })
            .unwrap();
        let again = StateStore::load(&path).unwrap().snapshot();
        assert!(again.created_kind_clusters.contains("cluster1"));
        assert_eq!(again.docker_subnet.unwrap().to_string(), "172.18.0.0/16");
        // State written by earlier versions recorded per-phase progress; it still loads.
        std::fs::write(
            &path,
            r#"{"meshID":"m","clusters":{"c":{"done":{"istio":"ab"}}}}"#,
        )
        .unwrap();
        assert!(
            StateStore::load(&path)
                .unwrap()
                .snapshot()
                .clusters
                .contains_key("c")
        );
    }

    #[test]
    fn created_clusters_contexts_are_owned_even_in_state_from_before_entries_were_recorded() {
        let old: MeshState = serde_json::from_str(
            r#"{"meshID": "mesh1", "createdKindClusters": ["cluster2"], "kubeconfig": "/k", "clusters": {}}"#,
        )
        .unwrap();
        assert_eq!(
            old.owned_kubeconfig_entries(),
            BTreeSet::from(["cluster2".to_string()])
        );
        let mut new = old.clone();
        new.kubeconfig_entries.insert("cluster1".into());
        assert_eq!(new.owned_kubeconfig_entries().len(), 2);
    }
}
