//! The mesh's CA in its clusters: what each cluster's `cacerts` holds against the CA folder
//! (`certs status`), and new intermediates, or the next root beside the old one, rolled out to
//! the clusters that sign with them (`certs rotate`), istiod restarted behind each.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::Serialize;

use crate::check::{Check, Fix, State};
use crate::exit::UsageError;
use crate::kube::Clients;
use crate::kube::apply::Applier;
use crate::pki::layout::{self, CertsRequest};
use crate::pki::{CertFacts, IntermediateCa, KeyType, Validity, normalize_pem};
use crate::plan::Phase;
use crate::plugged_ca;
use crate::report::Reporter;
use crate::topology::{Cluster, Mesh, Role};

/// The `cacerts` of `cluster` as the cluster holds it; `None` when there is no such Secret.
async fn cacerts_of(clients: &Clients, cluster: &Cluster, namespace: &str) -> Result<Option<IntermediateCa>> {
    let client = clients.get(&cluster.context).await?;
    let secret = Api::<Secret>::namespaced(client, namespace)
        .get_opt("cacerts")
        .await
        .with_context(|| {
            format!(
                "cluster `{}`: cannot read secret {namespace}/cacerts",
                cluster.name
            )
        })?;
    let Some(data) = secret.and_then(|s| s.data) else {
        return Ok(None);
    };
    let file = |name: &str| {
        data.get(name)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    Ok(Some(IntermediateCa {
        cluster: cluster.name.clone(),
        ca_cert_pem: file(layout::CA_CERT),
        ca_key_pem: file(layout::CA_KEY),
        cert_chain_pem: file(layout::CERT_CHAIN),
        root_cert_pem: file(layout::ROOT_CERT),
    }))
}

/// One cluster's line of `certs status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaStatus {
    pub cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediate: Option<CertFacts>,
    /// `ok`, or why the chain does not hold.
    pub chain: String,
    /// `mesh root`, `another root`, or `unknown` (no root in the CA directory to compare with).
    pub root: &'static str,
    /// For a remote: the primary whose istiod issues its proxies' certificates (it holds no CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates_from: Option<String>,
    /// What is wrong with it, each with what fixes it.
    pub problems: Vec<Check>,
}

async fn ca_status(
    clients: &Clients,
    cluster: &Cluster,
    namespace: &str,
    mesh_root: Option<&str>,
    warn_days: u32,
) -> (CaStatus, Option<String>) {
    let mut status = CaStatus {
        cluster: cluster.name.clone(),
        intermediate: None,
        chain: "-".into(),
        root: "unknown",
        certificates_from: None,
        problems: Vec::new(),
    };
    if cluster.role == Role::Remote {
        status.root = "-";
        status.certificates_from = cluster.primary.clone();
        return (status, None);
    }
    let ca = match cacerts_of(clients, cluster, namespace).await {
        Ok(Some(ca)) => ca,
        Ok(None) => {
            let detail = format!("no secret {namespace}/cacerts: istiod signs with a self-made root");
            status.problems.push(
                problem(&cluster.name, "cacerts", State::Missing, detail).fixed_by(Fix::UpOnly(Phase::Certs)),
            );
            return (status, None);
        }
        Err(e) => {
            let detail = format!("{e:#}");
            status
                .problems
                .push(problem(&cluster.name, "cacerts", State::Fail, detail));
            return (status, None);
        }
    };
    status.judge(&ca, &cluster.name, mesh_root, warn_days);
    (status, Some(normalize_pem(&ca.root_cert_pem)))
}

impl CaStatus {
    /// What the cluster's `cacerts` says: the intermediate's expiry, its chain, whether its root
    /// is the mesh's, and the root's expiry.
    fn judge(&mut self, ca: &IntermediateCa, cluster: &str, mesh_root: Option<&str>, warn_days: u32) {
        match crate::pki::cert_facts(&ca.ca_cert_pem, "ca-cert.pem") {
            Ok(facts) => {
                if facts.days_left < i64::from(warn_days) {
                    let detail = format!(
                        "the intermediate expires on {} ({} days from now, within --warn-days {warn_days})",
                        facts.not_after, facts.days_left
                    );
                    self.problems.push(
                        problem(cluster, "intermediate CA", State::Fail, detail)
                            .fixed_by(Fix::RotateCa(cluster.to_string())),
                    );
                }
                self.intermediate = Some(facts);
            }
            Err(e) => self
                .problems
                .push(problem(cluster, "intermediate CA", State::Fail, e.to_string())),
        }
        self.chain = match ca.check_against(&ca.root_cert_pem) {
            Ok(()) => "ok".into(),
            Err(e) => {
                self.problems.push(
                    problem(cluster, "chain", State::Fail, e.to_string())
                        .fixed_by(Fix::RotateCa(cluster.to_string())),
                );
                "broken".into()
            }
        };
        if let Some(root) = mesh_root {
            if crate::pki::bundle_contains(&ca.root_cert_pem, root) {
                self.root = if crate::pki::pem_blocks(&ca.root_cert_pem).len() > 1 {
                    "mesh root + next"
                } else {
                    "mesh root"
                };
            } else {
                self.root = "another root";
                let detail = "its root-cert.pem is not the mesh's root: workloads here do not trust the other clusters' certificates";
                self.problems.push(
                    problem(cluster, "root", State::Different, detail)
                        .fixed_by(Fix::RotateCa(cluster.to_string())),
                );
            }
        }
        if let Ok(root) = crate::pki::cert_facts(&ca.root_cert_pem, "root-cert.pem")
            && root.days_left < i64::from(warn_days)
        {
            let detail = format!(
                "the root CA expires on {} ({} days from now)",
                root.not_after, root.days_left
            );
            self.problems.push(problem(cluster, "root CA", State::Fail, detail).hinted(
                "plan a root rotation: `meshctl certs rotate --root`, then every intermediate (docs/certificates.md)",
            ));
        }
    }
}

/// Every cluster's CA status, and whether they share one root.
pub struct CaReport {
    pub statuses: Vec<CaStatus>,
    /// The distinct roots the clusters' `cacerts` hold.
    pub roots: usize,
    pub healthy: bool,
}

impl CaReport {
    pub fn shared_root(&self) -> bool {
        self.roots <= 1
    }

    /// Every problem found: each cluster's, and roots the clusters do not share.
    pub fn problems(&self) -> Vec<Check> {
        let mut all: Vec<Check> = self.statuses.iter().flat_map(|s| s.problems.clone()).collect();
        if !self.shared_root() {
            let detail = format!(
                "the clusters hold {} different roots: mTLS between them fails",
                self.roots
            );
            all.push(
                Check::new("shared root", State::Fail, detail)
                    .hinted("issue every intermediate from one root (`meshctl certs rotate`)"),
            );
        }
        all
    }
}

/// A problem of cluster `cluster`'s CA.
fn problem(cluster: &str, check: &str, state: State, detail: impl Into<String>) -> Check {
    Check::new(check, state, detail)
        .in_cluster(cluster)
        .of_phase(Phase::Certs)
}

/// Reads every cluster's `cacerts` (concurrently) and judges it against `mesh_root` (the root in
/// the CA folder, when there is one): expiry within `warn_days`, chain, root.
pub async fn status(mesh: &Mesh, clients: &Clients, mesh_root: Option<&str>, warn_days: u32) -> CaReport {
    let results = futures::future::join_all(
        mesh.clusters
            .iter()
            .map(|c| ca_status(clients, c, mesh.istio_namespace(c), mesh_root, warn_days)),
    )
    .await;
    let roots = results
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .collect::<BTreeSet<&String>>()
        .len();
    let statuses: Vec<CaStatus> = results.into_iter().map(|(s, _)| s).collect();
    let healthy = roots <= 1 && statuses.iter().all(|s| s.problems.is_empty());
    CaReport {
        statuses,
        roots,
        healthy,
    }
}

/// How `certs rotate` was asked to rotate.
pub struct Rotation {
    /// Start a root rotation (the next root bundled beside the old) instead of new intermediates.
    pub root: bool,
    pub key_type: KeyType,
    pub intermediate_days: u32,
    /// Bound on each istiod's restart.
    pub timeout: Duration,
}

/// Rotates the CA of `chosen` (see [`rotation_targets`]) from the folder `dir`, which must hold
/// the mesh's root: new intermediates (or the next root) written there, then applied in each
/// cluster, its istiods restarted; each cluster's outcome reported.
pub async fn rotate(
    mesh: &Mesh,
    chosen: &[&Cluster],
    dir: &Path,
    options: &Rotation,
    clients: &Clients,
    reporter: &Reporter,
) -> Result<()> {
    if layout::load_root(dir)?.is_none() {
        anyhow::bail!(
            "certs rotate: no root CA in `{}`; rotation issues new intermediates under the existing root and never makes a new one\nhint: pass --certs-dir with the mesh's CA directory",
            dir.display()
        );
    }
    // Every cluster must answer before anything is minted: new intermediates on disk that no
    // cluster holds would leave the folder and the mesh telling two stories.
    reach_every_cluster(mesh, chosen, clients).await?;
    let (cas, step) = if options.root {
        let (next, cas) = layout::start_root_transition(dir, options.key_type, Validity::default())
            .with_context(|| format!("certs rotate --root: cannot start in `{}`", dir.display()))?;
        let facts = crate::pki::cert_facts(&next.cert_pem, "next root")?;
        reporter.ok(
            "next root",
            &format!(
                "`{}/{}/` (serial {}, until {}); every cluster's root-cert.pem now bundles both roots",
                dir.display(),
                layout::NEXT_ROOT_DIR,
                facts.serial,
                facts.not_after
            ),
        );
        // The layout may hold clusters this topology does not name, or remotes: only the
        // primaries named here get cacerts now.
        let cas = cas
            .into_iter()
            .filter(|c| chosen.iter().any(|p| p.name == c.cluster))
            .collect();
        (cas, RotateStep::RootBundle)
    } else {
        (
            new_intermediates(options, dir, chosen, reporter)?,
            RotateStep::Intermediates,
        )
    };
    rollout(options, mesh, clients, dir, &cas, step, reporter).await
}

/// Reads `cacerts` in every cluster of `chosen` (what the rotation will replace), at once; fails
/// naming every cluster that did not answer, before anything is changed.
async fn reach_every_cluster(mesh: &Mesh, chosen: &[&Cluster], clients: &Clients) -> Result<()> {
    let reads = chosen.iter().map(|cluster| async move {
        let namespace = mesh.istio_namespace(cluster);
        let client = clients.get(&cluster.context).await?;
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        secrets.get_opt(plugged_ca::CACERTS).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot read Secret {namespace}/{}: {}",
                plugged_ca::CACERTS,
                crate::kube::human_reason(&e)
            )
        })?;
        Ok::<_, anyhow::Error>(())
    });
    let unreached: Vec<String> = chosen
        .iter()
        .zip(futures::future::join_all(reads).await)
        .filter_map(|(cluster, read)| {
            read.err()
                .map(|e| format!("cluster {} (context `{}`): {e:#}", cluster.name, cluster.context))
        })
        .collect();
    if unreached.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "certs rotate: {} of {} cluster(s) did not answer; nothing was changed (no new key was made)\n  {}",
        unreached.len(),
        chosen.len(),
        unreached.join("\n  ")
    )
}

/// The clusters a rotation changes: those running an istiod that signs with the mesh's CA
/// (primaries, an external control plane, whose `cacerts` is in `external-istiod`) named by
/// `--cluster` (every one when none is named). A remote runs no istiod and holds no CA: its proxies get their certificates from its
/// primary's istiod, so naming a remote is refused with its primary named instead.
pub fn rotation_targets<'m>(mesh: &'m Mesh, named: &[String]) -> Result<Vec<&'m Cluster>, UsageError> {
    for name in named {
        match mesh.cluster(name) {
            None => return Err(UsageError(format!("--cluster `{name}` is not in the topology"))),
            Some(c) if c.role == Role::Remote => {
                let primary = c.primary.as_deref().unwrap_or("its primary");
                return Err(UsageError(format!(
                    "--cluster `{name}` is a remote: it runs no istiod and holds no CA; its proxies get their certificates from `{primary}`'s istiod\nhint: `meshctl certs rotate --cluster {primary}`"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(mesh
        .clusters
        .iter()
        .filter(|c| c.role != Role::Remote && (named.is_empty() || named.contains(&c.name)))
        .collect())
}

/// What a rotation changes in `cacerts`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RotateStep {
    /// New intermediates under the same root.
    Intermediates,
    /// The same intermediates; root-cert.pem is the bundle of the root and the next root.
    RootBundle,
}

/// New intermediates for `chosen`, under the root in `dir` (which never changes here).
fn new_intermediates(
    options: &Rotation,
    dir: &Path,
    chosen: &[&Cluster],
    reporter: &Reporter,
) -> Result<Vec<IntermediateCa>> {
    // The root key stays in the work dir; only the new intermediates leave it, in `cacerts`.
    let request = CertsRequest {
        dir: dir.to_path_buf(),
        clusters: chosen.iter().map(|c| c.name.clone()).collect(),
        key_type: options.key_type,
        validity: Validity {
            intermediate_days: options.intermediate_days,
            ..Validity::default()
        },
        force: true,
        replace_root: false,
    };
    let (cas, warnings) = layout::ensure(&request)
        .with_context(|| {
            format!(
                "certs rotate: cannot issue new intermediates in `{}`",
                dir.display()
            )
        })?
        .into_cas();
    warnings.iter().for_each(|w| reporter.warn("certs", w));
    Ok(cas)
}

/// `cacerts` applied in every cluster of `cas`, istiod restarted and awaited there.
async fn rollout(
    options: &Rotation,
    mesh: &Mesh,
    clients: &Clients,
    dir: &Path,
    cas: &[IntermediateCa],
    step: RotateStep,
    reporter: &Reporter,
) -> Result<()> {
    let rollouts = cas.iter().map(|ca| {
        let timeout = options.timeout;
        async move {
            let cluster = mesh.cluster(&ca.cluster).expect("chosen from the topology");
            let client = clients.get(&cluster.context).await?;
            let namespace = mesh.istio_namespace(cluster);
            // Rotation keeps the root (or bundles the next one beside it): a `cacerts` under
            // another root means this folder is not the mesh's CA.
            plugged_ca::refuse_other_root(&client, (&mesh.mesh_id, namespace), &ca.root_cert_pem).await?;
            let text = plugged_ca::render(ca, (&mesh.mesh_id, namespace))?;
            Applier::new(client.clone()).apply_yaml(&text, "cacerts").await?;
            plugged_ca::restart_istiods(&client, namespace, timeout).await?;
            let facts = crate::pki::cert_facts(&ca.ca_cert_pem, "ca-cert.pem")?;
            Ok::<_, anyhow::Error>(facts)
        }
    });
    let mut failed = 0;
    for (ca, result) in cas.iter().zip(futures::future::join_all(rollouts).await) {
        match result {
            Ok(facts) if step == RotateStep::Intermediates => reporter.ok(
                &ca.cluster,
                &format!(
                    "new intermediate (serial {}, until {}) in cacerts; istiod restarted",
                    facts.serial, facts.not_after
                ),
            ),
            Ok(_) => reporter.ok(&ca.cluster, "cacerts trusts both roots; istiod restarted"),
            Err(e) => {
                failed += 1;
                reporter.fail(&ca.cluster, &format!("certs rotate: {e:#}"));
            }
        }
    }
    match step {
        _ if failed == cas.len() => {}
        RotateStep::Intermediates => reporter.note(
            "workloads",
            "sidecars and gateways get certificates from the new intermediate as they renew them (within 24 h by default); old and new chain to the same root, so traffic keeps flowing. To switch at once: kubectl rollout restart deployment -n <namespace>",
        ),
        RotateStep::RootBundle => reporter.note(
            "next steps",
            "step 1 of 3 of the root rotation is done: workloads trust both roots as they renew (within 24 h by default). Steps 2 (intermediates from the next root) and 3 (drop the old root) are not automated yet: docs/certificates.md lists them",
        ),
    }
    if failed > 0 {
        anyhow::bail!(
            "certs rotate failed in {failed} cluster(s); the new material is in `{}` and a plain `meshctl up` applies it",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rotation_targets;
    use crate::topology::Mesh;

    fn primary_remote() -> Mesh {
        Mesh::from_yaml(
            "clusters:\n  - {name: cluster1}\n  - {name: cluster2, role: remote, primary: cluster1}\n  - {name: cluster3}\n",
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_rotation_changes_no_remote() {
        let mesh = primary_remote();
        let names = |named: &[&str]| -> Vec<String> {
            let named: Vec<String> = named.iter().map(|s| s.to_string()).collect();
            rotation_targets(&mesh, &named)
                .unwrap()
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names(&[]), ["cluster1", "cluster3"]);
        assert_eq!(names(&["cluster3"]), ["cluster3"]);
    }

    /// An external control plane's istiod signs with the mesh's CA (in `external-istiod`): a
    /// rotation reaches it, named or not.
    #[test]
    fn a_rotation_reaches_an_external_control_plane() {
        let mesh = Mesh::from_yaml(
            "clusters:
  - {name: cluster1, role: external}
  - {name: cluster2, role: remote}
",
            None,
        )
        .unwrap();
        for named in [vec![], vec!["cluster1".to_string()]] {
            let chosen = rotation_targets(&mesh, &named).unwrap();
            assert_eq!(
                chosen.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                ["cluster1"]
            );
            assert_eq!(mesh.istio_namespace(chosen[0]), "external-istiod");
        }
    }

    #[test]
    fn naming_a_remote_is_refused_with_its_primary_named() {
        let mesh = primary_remote();
        let err = rotation_targets(&mesh, &["cluster2".to_string()]).unwrap_err();
        assert!(
            err.0.contains("`cluster2` is a remote")
                && err.0.contains("meshctl certs rotate --cluster cluster1"),
            "{}",
            err.0
        );
        let err = rotation_targets(&mesh, &["cluster9".to_string()]).unwrap_err();
        assert!(err.0.contains("`cluster9` is not in the topology"), "{}", err.0);
    }
}
