//! The mesh seen across clusters, for `meshctl status`: what each istiod says of every other
//! cluster (`/debug/clusterz`, read as `istioctl remote-clusters` reads it), the proxies connected
//! per cluster (`/debug/syncz`), each network's gateway addresses, each cluster's intermediate CA
//! expiry, and every problem with the cluster it lies in and what fixes it.
//!
//! Gathering asks the clusters that answer ([`gather`]); judging is pure ([`judge`]), so the rules
//! are tested on their own.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::check::{Check, Fix, State};
use crate::istio_revisions::{self, Held};
use crate::istio_version::IstioVersion;
use crate::istiod::{self, ClusterSync, ProxySync};
use crate::plan::Phase;
use crate::revision::Revision;
use crate::state::MeshState;
use crate::topology::{ISTIO_NAMESPACE, Mesh, Role};

/// An intermediate CA that expires within this many days is a problem: `certs rotate` takes a
/// restart of istiod and a rollout of every workload's certificate, to be planned ahead.
pub const CA_WARN_DAYS: i64 = 30;

/// What one primary's istiod said, or why it said nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IstiodSeen {
    pub cluster: String,
    /// `istio-system/<pod>` that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The clusters it reads, its own first.
    pub clusters: Vec<ClusterSync>,
    /// Its control planes: one istiod per revision (`default` for the unrevisioned one), with the
    /// release its image is tagged with.
    #[serde(default)]
    pub control_planes: Vec<ControlPlane>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One istiod Deployment of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlPlane {
    /// Its `istio.io/rev` label; `default` without one.
    pub revision: String,
    /// The tag of its image (`…/pilot:1.31.1`), or `unknown`.
    pub version: String,
}

/// A cluster's intermediate CA, as its `cacerts` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaExpiry {
    pub cluster: String,
    pub not_after: String,
    pub days_left: i64,
}

impl MeshHealth {
    /// The proxies istiod configures, by cluster and by release, as `status` shows them.
    pub fn proxy_lines(&self) -> Vec<String> {
        let counts = |map: &BTreeMap<String, usize>| {
            map.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let by_cluster = counts(&self.proxies);
        let mut lines = vec![format!(
            "  proxies connected: {}",
            if by_cluster.is_empty() {
                "none"
            } else {
                &by_cluster
            }
        )];
        if !self.proxy_versions.is_empty() {
            lines.push(format!("  proxies by release: {}", counts(&self.proxy_versions)));
        }
        lines
    }

    /// Each cluster's control-plane revisions (the one injection points at marked), its
    /// gateway's, and the upgrade under way, as `status` shows them.
    pub fn revision_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (cluster, held) in self.revisions.iter().filter(|(_, h)| !h.revisions.is_empty()) {
            let injection = held.injection();
            let revisions: Vec<String> = held
                .revisions
                .iter()
                .map(|r| {
                    let version = r.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
                    let mark = if r.revision == injection {
                        " (injecting)"
                    } else {
                        ""
                    };
                    format!("{}{version}{mark}", r.revision)
                })
                .collect();
            let gateway = held
                .gateway
                .as_ref()
                .map(|g| format!("; gateway on {g}"))
                .unwrap_or_default();
            lines.push(format!(
                "  revisions of {cluster:<10} {}{gateway}",
                revisions.join(", ")
            ));
        }
        if let Some(u) = &self.upgrade {
            lines.push(format!(
                "  upgrade under way since {}: Istio {} ({}) → {} ({}); `meshctl upgrade --to {}` resumes it, `--finish` ends it, `--rollback` undoes it",
                u.started, u.from.version, u.from.revision, u.to.version, u.to.revision, u.to.version
            ));
        }
        lines
    }
}

/// The mesh across clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MeshHealth {
    pub istiods: Vec<IstiodSeen>,
    /// Proxies connected to some istiod, by the cluster they run in.
    pub proxies: BTreeMap<String, usize>,
    /// The same proxies by the Istio release they run (`unknown` where istiod was not told).
    pub proxy_versions: BTreeMap<String, usize>,
    /// Each cluster's installed revisions, where injection points and its gateway's revision.
    pub revisions: BTreeMap<String, Held>,
    /// The upgrade under way (`meshctl upgrade`), as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<crate::state::UpgradeRecord>,
    /// East-west gateway addresses, by network: `cluster address` each.
    pub gateways: BTreeMap<String, Vec<String>>,
    pub cas: Vec<CaExpiry>,
    /// What is wrong across clusters, each in the cluster it lies in.
    pub problems: Vec<Check>,
}

/// Asks every primary in `reachable` (cluster name and its client) what its istiod sees, and reads
/// each one's `cacerts`; `state` gives the recorded gateway addresses. Clusters not in
/// `reachable` (down, or isolated) are not asked.
pub async fn gather(
    mesh: &Mesh,
    reachable: &[(String, kube::Client)],
    state: &MeshState,
    down: &BTreeSet<String>,
) -> MeshHealth {
    let primaries: Vec<&(String, kube::Client)> = reachable
        .iter()
        .filter(|(name, _)| mesh.cluster(name).is_some_and(|c| c.role != Role::Remote))
        .collect();
    let asked = primaries.iter().map(|(name, client)| async move {
        let namespace = mesh
            .cluster(name)
            .map_or(ISTIO_NAMESPACE, |c| mesh.istio_namespace(c));
        let (clusters, proxies) = tokio::join!(
            istiod::clusters(client, namespace),
            istiod::proxies(client, namespace)
        );
        let seen = match clusters {
            Ok(answer) => IstiodSeen {
                cluster: name.clone(),
                pod: Some(answer.pod),
                clusters: answer.value,
                control_planes: Vec::new(),
                error: None,
            },
            Err(e) => IstiodSeen {
                cluster: name.clone(),
                pod: None,
                clusters: Vec::new(),
                control_planes: Vec::new(),
                error: Some(e),
            },
        };
        let seen = IstiodSeen {
            control_planes: control_planes(client, namespace).await,
            ..seen
        };
        (
            seen,
            proxies.map(|p| p.value).unwrap_or_default(),
            intermediate_expiry(client, name, namespace).await,
        )
    });
    let answers = futures::future::join_all(asked).await;
    let mut health = MeshHealth::default();
    let mut proxies = Vec::new();
    for (seen, synced, ca) in answers {
        health.istiods.push(seen);
        proxies.extend(synced);
        health.cas.extend(ca);
    }
    (health.proxies, health.proxy_versions) = count_proxies(proxies);
    health.revisions = revisions(reachable).await;
    for c in &mesh.clusters {
        if let Some(address) = state.clusters.get(&c.name).and_then(|s| s.eastwest_ip.clone()) {
            health
                .gateways
                .entry(c.network.clone())
                .or_default()
                .push(format!("{} {address}", c.name));
        }
    }
    health.upgrade = state.upgrade.clone();
    health.problems = judge(mesh, &health, &state.isolated.keys().cloned().collect(), down);
    health
}

/// Proxies by the cluster they run in and by their release, each counted once (a proxy may be
/// listed by several istiods).
fn count_proxies(listed: Vec<ProxySync>) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let unique: BTreeMap<(String, String), String> = listed
        .into_iter()
        .map(|p| ((p.cluster_id, p.proxy_id), p.istio_version))
        .collect();
    let (mut by_cluster, mut by_release) = (BTreeMap::new(), BTreeMap::new());
    for ((cluster, _), version) in unique {
        *by_cluster.entry(cluster).or_default() += 1;
        let version = if version.is_empty() {
            "unknown".into()
        } else {
            version
        };
        *by_release.entry(version).or_default() += 1;
    }
    (by_cluster, by_release)
}

/// What each cluster that answers holds of Istio's revisions.
async fn revisions(reachable: &[(String, kube::Client)]) -> BTreeMap<String, Held> {
    let asked = reachable
        .iter()
        .map(|(name, client)| async move { (name.clone(), istio_revisions::gather(client).await) });
    futures::future::join_all(asked)
        .await
        .into_iter()
        .filter_map(|(name, held)| Some((name, held.ok()?)))
        .collect()
}

/// The istiod Deployments of a cluster in `namespace` (label `app=istiod`, as Istio's chart sets
/// it), one per revision.
pub async fn control_planes(client: &kube::Client, namespace: &str) -> Vec<ControlPlane> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let Ok(list) = deployments
        .list(&ListParams::default().labels("app=istiod"))
        .await
    else {
        return Vec::new();
    };
    let mut planes: Vec<ControlPlane> = list
        .items
        .iter()
        .map(|d| ControlPlane {
            revision: d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("istio.io/rev"))
                .cloned()
                .unwrap_or_else(|| "default".into()),
            version: d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.as_deref())
                .map(istio_revisions::image_tag)
                .unwrap_or_else(|| "unknown".into()),
        })
        .collect();
    planes.sort_by(|a, b| a.revision.cmp(&b.revision));
    planes
}

async fn intermediate_expiry(client: &kube::Client, cluster: &str, namespace: &str) -> Option<CaExpiry> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt("cacerts")
        .await
        .ok()??;
    let pem = secret.data?.get(crate::pki::layout::CA_CERT)?.0.clone();
    let facts = crate::pki::cert_facts(&String::from_utf8_lossy(&pem), "ca-cert.pem").ok()?;
    Some(CaExpiry {
        cluster: cluster.to_string(),
        not_after: facts.not_after,
        days_left: facts.days_left,
    })
}

/// A problem in cluster `cluster`: the mesh is not ready while it lasts.
fn problem(check: &str, cluster: &str, detail: String) -> Check {
    Check::new(check, State::Fail, detail).in_cluster(cluster)
}

/// Every problem in what was gathered. `down`: clusters whose API server did not answer.
pub fn judge(
    mesh: &Mesh,
    health: &MeshHealth,
    isolated: &BTreeSet<String>,
    down: &BTreeSet<String>,
) -> Vec<Check> {
    let mut problems = Vec::new();
    for seen in &health.istiods {
        let p = &seen.cluster;
        if let Some(error) = &seen.error {
            // An external control plane's istiod is its own phase's.
            let external = mesh.cluster(p).is_some_and(|c| c.role == Role::External);
            let phase = if external {
                Phase::ExternalIstiod
            } else {
                Phase::Istio
            };
            let detail = format!("istiod does not answer its debug endpoints: {error}");
            problems.push(
                problem("istiod", p, detail)
                    .of_phase(phase)
                    .fixed_by(Fix::UpOnly(phase)),
            );
            continue;
        }
        problems.extend(peer_problems(mesh, seen, isolated, down));
    }
    problems.extend(skew_problems(health));
    problems.extend(injection_problems(mesh, health));
    for ca in &health.cas {
        if ca.days_left < CA_WARN_DAYS {
            let detail = format!(
                "its intermediate CA expires on {} ({} days from now)",
                ca.not_after, ca.days_left
            );
            problems.push(
                problem("intermediate CA", &ca.cluster, detail)
                    .of_phase(Phase::Certs)
                    .on(format!(
                        "Secret {}/cacerts",
                        mesh.cluster(&ca.cluster)
                            .map_or(ISTIO_NAMESPACE, |c| mesh.istio_namespace(c))
                    ))
                    .fixed_by(Fix::RotateCa(ca.cluster.clone())),
            );
        }
    }
    problems
}

/// Control planes more than one minor release apart: the mesh runs on skew Istio does not support
/// between its control planes (an upgrade moves one minor at a time). Each cluster on the oldest
/// line is named.
fn skew_problems(health: &MeshHealth) -> Vec<Check> {
    let running: Vec<(&str, IstioVersion)> = health
        .istiods
        .iter()
        .flat_map(|s| {
            s.control_planes
                .iter()
                .map(move |p| (s.cluster.as_str(), &p.version))
        })
        .filter_map(|(cluster, v)| Some((cluster, v.parse::<IstioVersion>().ok()?)))
        .collect();
    let (Some(oldest), Some(newest)) = (
        running.iter().map(|(_, v)| *v).min(),
        running.iter().map(|(_, v)| *v).max(),
    ) else {
        return Vec::new();
    };
    if newest.major != oldest.major || newest.minor <= oldest.minor + 1 {
        return Vec::new();
    }
    let mut behind: Vec<&str> = running
        .iter()
        .filter(|(_, v)| v.major == oldest.major && v.minor == oldest.minor)
        .map(|(c, _)| *c)
        .collect();
    behind.dedup();
    behind
        .into_iter()
        .map(|cluster| {
            let detail = format!(
                "its control plane runs Istio {}, more than one minor behind {newest} elsewhere in the mesh",
                oldest.minor_line()
            );
            problem("skew", cluster, detail).fixed_by(Fix::ByHand(format!(
                "upgrade it one minor at a time (to {}.{}, then on) before the rest of the mesh moves further",
                oldest.major,
                oldest.minor + 1
            )))
        })
        .collect()
}

/// Clusters whose injection points at another revision than the rest of the mesh's, with no
/// upgrade under way to explain it (one mid-upgrade is expected, and shown as such): their new
/// pods get another release's proxies.
fn injection_problems(mesh: &Mesh, health: &MeshHealth) -> Vec<Check> {
    if health.upgrade.is_some() {
        return Vec::new();
    }
    let injecting: Vec<(&str, Revision)> = health
        .revisions
        .iter()
        .filter(|(_, held)| !held.revisions.is_empty())
        .map(|(cluster, held)| (cluster.as_str(), held.injection()))
        .collect();
    let mut counts: BTreeMap<&Revision, usize> = BTreeMap::new();
    for (_, revision) in &injecting {
        *counts.entry(revision).or_default() += 1;
    }
    // The revision most clusters inject with (the first, in name order, among equals).
    let Some((&common, _)) = counts.iter().max_by_key(|(r, n)| (**n, std::cmp::Reverse(**r))) else {
        return Vec::new();
    };
    injecting
        .iter()
        .filter(|(_, revision)| revision != common)
        .map(|(cluster, revision)| {
            let context = mesh.cluster(cluster).map_or(*cluster, |c| c.context.as_str());
            let detail = format!(
                "injects with revision {revision} while the rest of the mesh injects with {common}, and no upgrade is under way"
            );
            problem("injection", cluster, detail).fixed_by(Fix::ByHand(format!(
                "point it back: istioctl tag set default --revision {} --overwrite --context {context} (or move the whole mesh with `meshctl upgrade`)",
                common.label()
            )))
        })
        .collect()
}

/// What one answering istiod's view says is wrong with the clusters it should (or should no
/// longer) read.
fn peer_problems(
    mesh: &Mesh,
    seen: &IstiodSeen,
    isolated: &BTreeSet<String>,
    down: &BTreeSet<String>,
) -> Vec<Check> {
    let p = &seen.cluster;
    let mut problems = Vec::new();
    // An external istiod reads its config cluster through its own kubeconfig, not a remote secret.
    let config_cluster = mesh
        .cluster(p)
        .and_then(|c| mesh.config_cluster_of(c))
        .map(|c| c.name.clone());
    for r in mesh.clusters.iter().filter(|c| &c.name != p) {
        let reported = seen.clusters.iter().find(|s| s.id == r.name);
        if Some(&r.name) == config_cluster.as_ref() {
            problems.extend(config_cluster_problem(p, r, reported, down));
            continue;
        }
        let problem = match (isolated.contains(&r.name), reported) {
            (true, Some(_)) => Some((
                p.clone(),
                format!(
                    "{p}'s istiod still reads isolated cluster {}: its remote secret is still there (isolate again removes meshctl's; one meshctl did not apply is yours to delete)",
                    r.name
                ),
                Fix::Isolate(r.name.clone()),
            )),
            (true, None) => None,
            (false, None) => Some((
                p.clone(),
                format!("{p}'s istiod does not read {}: no remote secret for it", r.name),
                Fix::UpOnly(Phase::RemoteSecrets),
            )),
            (false, Some(s)) if s.sync_status == "synced" => None,
            (false, Some(s)) if down.contains(&r.name) => Some((
                r.name.clone(),
                format!(
                    "{p}'s istiod reports {} {}: its API server does not answer",
                    r.name, s.sync_status
                ),
                Fix::Isolate(r.name.clone()),
            )),
            (false, Some(s)) => Some((
                p.clone(),
                format!("{p}'s istiod reports {} {}", r.name, s.sync_status),
                Fix::UpOnly(Phase::RemoteSecrets),
            )),
        };
        if let Some((cluster, detail, fix)) = problem {
            problems.push(
                self::problem("peers", &cluster, detail)
                    .of_phase(Phase::RemoteSecrets)
                    .on(format!("remote secret for {}", r.name))
                    .fixed_by(fix),
            );
        }
    }
    problems
}

/// What is wrong with an external istiod's view of its config cluster `r`: unread or unsynced, it
/// needs its kubeconfig (phase `external-istiod`); down, it cannot be isolated (the mesh's
/// configuration lives there), only brought back.
fn config_cluster_problem(
    p: &str,
    r: &crate::topology::Cluster,
    reported: Option<&ClusterSync>,
    down: &BTreeSet<String>,
) -> Option<Check> {
    let status = reported.map_or("not listed", |s| s.sync_status.as_str());
    if status == "synced" {
        return None;
    }
    let (cluster, detail, fix) = if down.contains(&r.name) {
        (
            r.name.clone(),
            format!(
                "{p}'s external istiod reports its config cluster {} {status}: its API server does not answer",
                r.name
            ),
            Fix::ByHand(format!(
                "bring {}'s API server back: it holds the mesh's configuration, so it cannot be isolated",
                r.name
            )),
        )
    } else {
        (
            p.to_string(),
            format!(
                "{p}'s external istiod reports its config cluster {} {status}",
                r.name
            ),
            Fix::UpOnly(Phase::ExternalIstiod),
        )
    };
    Some(
        problem("config cluster", &cluster, detail)
            .of_phase(Phase::ExternalIstiod)
            .on(format!("kubeconfig of config cluster {}", r.name))
            .fixed_by(fix),
    )
}

/// A chosen release is for installing: a primary whose istiod already runs another release is not
/// moved by `up` (re-installing in place would skip the canary steps an upgrade needs), and says so
/// before anything changes. Clusters that do not answer or have no istiod yet are not in the way.
pub async fn refuse_another_running_release(
    mesh: &crate::topology::Mesh,
    clients: &crate::kube::Clients,
    chosen: &str,
    upgrading_from: Option<&str>,
) -> anyhow::Result<()> {
    for c in mesh
        .clusters
        .iter()
        .filter(|c| c.role != crate::topology::Role::Remote)
    {
        let Ok(Ok(client)) =
            tokio::time::timeout(std::time::Duration::from_secs(10), clients.get(&c.context)).await
        else {
            continue;
        };
        let running: Vec<String> = control_planes(&client, mesh.istio_namespace(c))
            .await
            .into_iter()
            .map(|p| p.version)
            // Mid-upgrade the release being replaced runs beside the chosen one.
            .filter(|v| v != chosen && v != "unknown" && Some(v.as_str()) != upgrading_from)
            .collect();
        if let Some(version) = running.first() {
            anyhow::bail!(
                "preflight: cluster `{}` runs Istio {version} (its istiod's image), and the chosen release is {chosen}; `up` installs a release but does not move a running mesh to another one\nhint: keep istio.version at {version} (or drop --istio-version) for this mesh; `meshctl upgrade --to {chosen}` moves it",
                c.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Mesh {
        Mesh::for_kind(3, "m").unwrap()
    }

    fn sync(id: &str, status: &str) -> ClusterSync {
        ClusterSync {
            id: id.into(),
            secret_name: format!("istio-system/istio-remote-secret-{id}"),
            sync_status: status.into(),
        }
    }

    fn seen(cluster: &str, clusters: Vec<ClusterSync>) -> IstiodSeen {
        IstiodSeen {
            cluster: cluster.into(),
            pod: Some("istio-system/istiod-1".into()),
            clusters,
            control_planes: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn control_planes_more_than_one_minor_apart_name_the_clusters_behind() {
        let with = |versions: &[(&str, &str)]| MeshHealth {
            istiods: versions
                .iter()
                .map(|(c, v)| IstiodSeen {
                    control_planes: vec![ControlPlane {
                        revision: "default".into(),
                        version: v.to_string(),
                    }],
                    ..seen(
                        c,
                        vec![
                            sync("cluster1", "synced"),
                            sync("cluster2", "synced"),
                            sync("cluster3", "synced"),
                        ],
                    )
                })
                .collect(),
            ..MeshHealth::default()
        };
        let none = BTreeSet::new();
        let mid_upgrade = with(&[("cluster1", "1.31.1"), ("cluster2", "1.30.5")]);
        assert_eq!(
            judge(&mesh(), &mid_upgrade, &none, &none),
            [],
            "one minor apart is supported"
        );
        let skewed = with(&[
            ("cluster1", "1.31.1"),
            ("cluster2", "1.29.3"),
            ("cluster3", "1.31.0"),
        ]);
        let problems = judge(&mesh(), &skewed, &none, &none);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].cluster.as_deref(), Some("cluster2"));
        assert!(
            problems[0]
                .detail
                .contains("Istio 1.29, more than one minor behind 1.31.1")
        );
        assert!(matches!(&problems[0].fix, Some(Fix::ByHand(w)) if w.contains("to 1.30")));
    }

    #[test]
    fn a_cluster_injecting_with_another_revision_is_a_problem_unless_an_upgrade_is_under_way() {
        let held = |tag: &str| Held {
            revisions: vec![crate::istio_revisions::RevisionHeld {
                revision: Revision::from_label(tag),
                version: None,
            }],
            tag: Some(Revision::from_label(tag)),
            ..Held::default()
        };
        let mesh = Mesh::for_kind(3, "mesh1").unwrap();
        let mut health = MeshHealth::default();
        health.revisions.insert("cluster1".into(), held("1-31-1"));
        health.revisions.insert("cluster2".into(), held("1-31-1"));
        health.revisions.insert("cluster3".into(), held("default"));
        let problems = injection_problems(&mesh, &health);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].cluster.as_deref(), Some("cluster3"));
        assert!(
            problems[0]
                .detail
                .contains("injects with revision default while the rest of the mesh injects with 1-31-1")
        );
        assert!(
            matches!(&problems[0].fix, Some(Fix::ByHand(w)) if w.contains("tag set default --revision 1-31-1 --overwrite --context cluster3"))
        );
        health.upgrade = Some(crate::state::UpgradeRecord {
            from: crate::state::IstioRelease {
                version: "1.30.3".into(),
                revision: Revision::default_revision(),
            },
            to: crate::state::IstioRelease {
                version: "1.31.1".into(),
                revision: Revision::from_label("1-31-1"),
            },
            started: String::new(),
            recorded_before: None,
        });
        assert!(
            injection_problems(&mesh, &health).is_empty(),
            "mid-upgrade the mix is expected"
        );
    }

    #[test]
    fn a_remote_in_timeout_is_the_fault_of_the_cluster_that_is_down_and_isolating_it_fixes_it() {
        let health = MeshHealth {
            istiods: vec![
                seen(
                    "cluster1",
                    vec![
                        sync("cluster1", "synced"),
                        sync("cluster2", "synced"),
                        sync("cluster3", "timeout"),
                    ],
                ),
                seen(
                    "cluster2",
                    vec![
                        sync("cluster2", "synced"),
                        sync("cluster1", "synced"),
                        sync("cluster3", "syncing"),
                    ],
                ),
            ],
            ..MeshHealth::default()
        };
        let down = BTreeSet::from(["cluster3".to_string()]);
        let problems = judge(&mesh(), &health, &BTreeSet::new(), &down);
        assert_eq!(problems.len(), 2, "{problems:?}");
        for p in &problems {
            assert_eq!(p.cluster.as_deref(), Some("cluster3"));
            assert_eq!(p.fix, Some(Fix::Isolate("cluster3".into())));
        }
        assert!(
            problems[0]
                .detail
                .contains("cluster1's istiod reports cluster3 timeout")
        );
        // Once it is isolated and its secrets are gone, nothing is wrong.
        let isolated = BTreeSet::from(["cluster3".to_string()]);
        let after = MeshHealth {
            istiods: vec![
                seen(
                    "cluster1",
                    vec![sync("cluster1", "synced"), sync("cluster2", "synced")],
                ),
                seen(
                    "cluster2",
                    vec![sync("cluster2", "synced"), sync("cluster1", "synced")],
                ),
            ],
            ..MeshHealth::default()
        };
        assert_eq!(judge(&mesh(), &after, &isolated, &down), []);
    }

    #[test]
    fn a_missing_or_unsynced_peer_that_answers_points_at_the_remote_secrets_phase() {
        let health = MeshHealth {
            istiods: vec![seen(
                "cluster1",
                vec![sync("cluster1", "synced"), sync("cluster2", "syncing")],
            )],
            ..MeshHealth::default()
        };
        let problems = judge(&mesh(), &health, &BTreeSet::new(), &BTreeSet::new());
        let found: Vec<(Option<&str>, Option<&Fix>)> = problems
            .iter()
            .map(|p| (p.cluster.as_deref(), p.fix.as_ref()))
            .collect();
        let fix = Fix::UpOnly(Phase::RemoteSecrets);
        assert_eq!(
            found,
            [(Some("cluster1"), Some(&fix)), (Some("cluster1"), Some(&fix))]
        );
        assert!(problems[0].detail.contains("reports cluster2 syncing"));
        assert!(problems[1].detail.contains("does not read cluster3"));
    }

    /// An external istiod reads its config cluster through its own kubeconfig: unsynced, the fix
    /// is that phase; down, it cannot be isolated. Its other remotes are judged as any remote.
    #[test]
    fn an_external_istiods_config_cluster_is_judged_by_its_kubeconfig_and_never_isolated() {
        let external = Mesh::from_yaml(
            "clusters:\n  - {role: external}\n  - {role: remote}\n  - {role: remote}\n",
            None,
        )
        .unwrap();
        let health = |config: &str, other: &str| MeshHealth {
            istiods: vec![seen(
                "cluster1",
                vec![sync("cluster2", config), sync("cluster3", other)],
            )],
            ..MeshHealth::default()
        };
        let none = BTreeSet::new();
        assert_eq!(judge(&external, &health("synced", "synced"), &none, &none), []);
        let unsynced = judge(&external, &health("timeout", "synced"), &none, &none);
        assert_eq!(unsynced.len(), 1, "{unsynced:?}");
        assert_eq!(unsynced[0].fix, Some(Fix::UpOnly(Phase::ExternalIstiod)));
        assert!(unsynced[0].detail.contains("config cluster cluster2 timeout"));
        let down = BTreeSet::from(["cluster2".to_string(), "cluster3".to_string()]);
        let fixes: Vec<(Option<String>, Option<Fix>)> =
            judge(&external, &health("timeout", "timeout"), &none, &down)
                .into_iter()
                .map(|p| (p.cluster, p.fix))
                .collect();
        assert!(
            matches!(&fixes[0], (Some(c), Some(Fix::ByHand(text))) if c == "cluster2" && text.contains("cannot be isolated"))
        );
        assert_eq!(
            fixes[1],
            (
                Some("cluster3".to_string()),
                Some(Fix::Isolate("cluster3".into()))
            )
        );
        let silent = MeshHealth {
            istiods: vec![IstiodSeen {
                error: Some("no running istiod pod in external-istiod".into()),
                ..seen("cluster1", Vec::new())
            }],
            ..MeshHealth::default()
        };
        assert_eq!(
            judge(&external, &silent, &none, &none)[0].fix,
            Some(Fix::UpOnly(Phase::ExternalIstiod))
        );
    }

    #[test]
    fn a_silent_istiod_and_a_ca_near_its_end_are_problems_of_their_own_cluster() {
        let health = MeshHealth {
            istiods: vec![IstiodSeen {
                cluster: "cluster2".into(),
                pod: None,
                clusters: Vec::new(),
                control_planes: Vec::new(),
                error: Some("no running istiod pod".into()),
            }],
            cas: vec![
                CaExpiry {
                    cluster: "cluster1".into(),
                    not_after: "2026-12-20".into(),
                    days_left: 17,
                },
                CaExpiry {
                    cluster: "cluster2".into(),
                    not_after: "2036-12-01".into(),
                    days_left: 3650,
                },
            ],
            ..MeshHealth::default()
        };
        let problems = judge(&mesh(), &health, &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            (problems[0].cluster.as_deref(), &problems[0].fix),
            (Some("cluster2"), &Some(Fix::UpOnly(Phase::Istio)))
        );
        assert_eq!(
            (problems[1].cluster.as_deref(), &problems[1].fix),
            (Some("cluster1"), &Some(Fix::RotateCa("cluster1".into())))
        );
    }
}
