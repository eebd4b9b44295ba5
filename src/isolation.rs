//! Taking a cluster out of the mesh without touching it, and bringing it back.
//!
//! An istiod reads another cluster only through that cluster's remote secret in its own
//! `istio-system`: Istio's secret controller (`pkg/kube/multicluster/secretcontroller.go`) starts
//! a cluster per secret and, when the secret is deleted (`deleteSecret` → `deleteCluster`), stops
//! it and drops its registry. So `isolate X` removes X's remote
//! secret from every other primary, and only the ones meshctl applied: the other istiods forget
//! X's endpoints, on one network or several, and X itself is never called (it may not answer).
//! Each removed Secret is written first to the mesh folder (`isolated/X/<peer>.yaml`, 0600: it
//! carries a token), so nothing is lost; the isolation is recorded in the state, so `up` keeps
//! it (its plan leaves X out) and `status` shows it. `rejoin X` puts the recorded Secrets back
//! where nothing has taken their place, and clears the record.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Preconditions};

use crate::atomic_file::{self, PRIVATE};
use crate::kube::Clients;
use crate::kube::apply::Applier;
use crate::mesh_dir::MeshDir;
use crate::remote_secret::{meshctl_secret_for, secret_name};
use crate::state::{Isolation, StateStore};
use crate::topology::{Cluster, Mesh, Role};

/// What happened at one peer (a primary that read, or reads again, the isolated cluster).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum PeerOutcome {
    /// The remote secret was recorded, then removed (isolate) or put back (rejoin).
    Done,
    /// Nothing to do: no secret there (isolate), or one there already (rejoin).
    NothingToDo { detail: String },
    /// A remote secret of the same name that meshctl did not apply: left as it is.
    NotMeshctls,
    /// The peer's API server did not answer within the bound, or refused.
    Unreachable { error: String },
}

/// Every peer of `target`, with its outcome.
pub type PeerOutcomes = Vec<(String, PeerOutcome)>;

/// The clusters running an istiod other than `target` (primaries, an external control plane):
/// the istiods that read it.
pub fn peers<'m>(mesh: &'m Mesh, target: &str) -> Vec<&'m Cluster> {
    mesh.clusters
        .iter()
        .filter(|c| c.role != Role::Remote && c.name != target)
        .collect()
}

/// Why `target` cannot be isolated, when it cannot: an external control plane is the mesh's only
/// istiod, and its config cluster holds the mesh's configuration (read through the external
/// istiod's own kubeconfig, not a remote secret).
pub fn refusal(mesh: &Mesh, target: &str) -> Option<String> {
    let cluster = mesh.cluster(target)?;
    if cluster.role == Role::External {
        return Some(format!(
            "cluster `{target}` runs the mesh's external control plane: no other istiod reads it; isolate one of its remotes instead"
        ));
    }
    mesh.is_config_cluster(cluster).then(|| {
        format!(
            "cluster `{target}` is the config cluster of the external control plane: the mesh's configuration lives there, so the mesh cannot run without it"
        )
    })
}

/// What isolating `target` costs the cluster itself, when it is a remote: its control plane reads
/// it through the very remote secret isolation removes, and authenticates the remote's proxies
/// through it (Istio `security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go`: a proxy's token is
/// checked against the API server of the cluster it claims to be in, and a cluster istiod has no
/// client for is refused). `None` for a primary, whose own istiod keeps serving its proxies.
pub fn remote_cost(mesh: &Mesh, target: &str) -> Option<String> {
    let cluster = mesh.cluster(target).filter(|c| c.role == Role::Remote)?;
    let control = &mesh.control_plane_of(cluster).name;
    Some(format!(
        "cluster `{target}` is a remote: its proxies get their configuration and certificates from `{control}`'s istiod, which authenticates them through the remote secret isolation removes; isolated, `{target}`'s new pods never become ready, its running proxies lose their configuration at their next reconnect (within 30 min) and their certificates lapse within 24 h, until `meshctl rejoin {target}`"
    ))
}

/// What taking a cluster out of the mesh and bringing it back work with: the mesh, the work dir
/// that keeps each removed secret, the state that records the isolation, a client per cluster,
/// and how long a peer may take to answer.
pub struct Membership<'a> {
    mesh: &'a Mesh,
    dir: &'a MeshDir,
    pub state: StateStore,
    pub clients: Clients,
    timeout: Duration,
}

impl<'a> Membership<'a> {
    /// The mesh's membership as `dir` records it, its clusters reached through `kubeconfig`, each
    /// peer given `timeout` to answer.
    pub fn open(
        mesh: &'a Mesh,
        dir: &'a MeshDir,
        kubeconfig: Option<&Path>,
        timeout: Duration,
    ) -> Result<Membership<'a>> {
        Ok(Membership {
            mesh,
            dir,
            state: StateStore::load(&dir.state())?,
            clients: Clients::new(kubeconfig),
            timeout,
        })
    }

    /// Takes `target` out of the mesh: records, then removes, its remote secret in every peer that
    /// answers within `timeout`, and records the isolation (also when some peer did not answer: `up`
    /// removes the rest once it does).
    pub async fn isolate(&self, target: &str) -> Result<PeerOutcomes> {
        let (state, timeout) = (&self.state, self.timeout);
        // Each peer's removal is recorded as it happens: an isolation stopped half-way (a second
        // Ctrl-C, a crash) still names every peer whose secret is gone, for `rejoin` to put back.
        let record = |peer: &str| {
            state.update(|s| {
                isolation_of(s, target).removed_from.insert(peer.to_string());
            })
        };
        let outcomes = self
            .at_every_peer(
                target,
                |_| None,
                |client, at, file| async move {
                    let outcome = isolate_at(&client, (at.0, at.1), &file, timeout).await?;
                    // Best effort here: the whole record is written (and its failure said) below.
                    if outcome == PeerOutcome::Done {
                        let _ = record(at.2);
                    }
                    Ok(outcome)
                },
            )
            .await;
        // Isolated also where no peer answered: `up` removes the rest once they do.
        let removed: BTreeSet<String> = outcomes
            .iter()
            .filter(|(_, o)| *o == PeerOutcome::Done)
            .map(|(p, _)| p.clone())
            .collect();
        state.update(|s| isolation_of(s, target).removed_from.extend(removed))?;
        Ok(outcomes)
    }

    /// Brings `target` back: in every peer it was removed from, puts the recorded secret back unless
    /// something has taken its place, then clears the isolation. Peers that do not answer keep the
    /// isolation recorded for them (and their file), so a second `rejoin` finishes the job.
    pub async fn rejoin(&self, target: &str) -> Result<PeerOutcomes> {
        let (mesh, clients, state, timeout) = (self.mesh, &self.clients, &self.state, self.timeout);
        let isolation = state
            .snapshot()
            .isolated
            .get(target)
            .cloned()
            .ok_or_else(|| anyhow!("cluster `{target}` is not isolated"))?;
        refuse_secrets_in_the_way(mesh, target, &isolation.removed_from, clients, timeout).await?;
        let not_removed = |peer: &Cluster| {
            (!isolation.removed_from.contains(&peer.name)).then(|| PeerOutcome::NothingToDo {
                detail: "isolate removed nothing here".to_string(),
            })
        };
        let outcomes = self
            .at_every_peer(target, not_removed, |client, at, file| async move {
                rejoin_at(&client, (at.0, at.1), &file, timeout).await
            })
            .await;
        let pending: BTreeSet<String> = outcomes
            .iter()
            .filter(|(p, o)| {
                isolation.removed_from.contains(p) && matches!(o, PeerOutcome::Unreachable { .. })
            })
            .map(|(p, _)| p.clone())
            .collect();
        state.update(|s| {
            if pending.is_empty() {
                s.isolated.remove(target);
            } else if let Some(i) = s.isolated.get_mut(target) {
                i.removed_from = pending.clone();
            }
        })?;
        if pending.is_empty() {
            // Best effort: the folder held only what was put back.
            let _ = std::fs::remove_dir_all(self.dir.isolated(target));
        }
        Ok(outcomes)
    }

    /// `op` at every peer of `target` at once, each given its client, `(its Istio namespace, target,
    /// the peer's name)` and the file of `target`'s secret kept for it; a peer `skip` answers for is
    /// not asked, and one that does not answer within the timeout is reported so.
    async fn at_every_peer<'t, F, Fut>(
        &'t self,
        target: &'t str,
        skip: impl Fn(&Cluster) -> Option<PeerOutcome>,
        op: F,
    ) -> PeerOutcomes
    where
        F: Fn(kube::Client, (&'t str, &'t str, &'t str), std::path::PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<PeerOutcome>>,
    {
        let (mesh, clients, timeout) = (self.mesh, &self.clients, self.timeout);
        let folder = self.dir.isolated(target);
        let asked = peers(mesh, target).into_iter().map(|peer| {
            let file = folder.join(format!("{}.yaml", peer.name));
            let skipped = skip(peer);
            let op = &op;
            async move {
                let outcome = match skipped {
                    Some(outcome) => outcome,
                    None => {
                        let at = (mesh.istio_namespace(peer), target, peer.name.as_str());
                        at_peer(clients, peer, timeout, |client| op(client, at, file)).await
                    }
                };
                (peer.name.clone(), outcome)
            }
        });
        futures::future::join_all(asked).await
    }
}

/// Refuses a rejoin, before anything is put back and with the isolation kept as recorded, where a
/// peer `target` was removed from now holds a remote secret for it that meshctl did not apply:
/// putting the recorded one back would replace someone else's. Peers that do not answer are
/// left to the rejoin itself (they stay isolated until it reaches them).
async fn refuse_secrets_in_the_way(
    mesh: &Mesh,
    target: &str,
    removed_from: &BTreeSet<String>,
    clients: &Clients,
    timeout: Duration,
) -> Result<()> {
    let recorded = peers(mesh, target)
        .into_iter()
        .filter(|p| removed_from.contains(&p.name));
    let checked = futures::future::join_all(recorded.map(|peer| async move {
        let client = bounded(clients, peer, timeout).await.ok()?;
        let namespace = mesh.istio_namespace(peer);
        let name = secret_name(target);
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let found = tokio::time::timeout(timeout, secrets.get_opt(&name))
            .await
            .ok()?
            .ok()??;
        (meshctl_secret_for(&found).as_deref() != Some(target))
            .then(|| format!("cluster `{}`: Secret {namespace}/{name}", peer.name))
    }))
    .await;
    let foreign: Vec<String> = checked.into_iter().flatten().collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "rejoin `{target}`: a remote secret meshctl did not apply stands where the recorded one would go back; nothing was changed and `{target}` stays isolated:\n  - {}\nhint: delete it (or rename it) if `{target}` should be read through meshctl's secret, then run `meshctl rejoin {target}` again",
        foreign.join("\n  - ")
    ))
}

/// The isolation of `target` in `state`, begun now if there is none.
fn isolation_of<'s>(state: &'s mut crate::state::MeshState, target: &str) -> &'s mut Isolation {
    state
        .isolated
        .entry(target.to_string())
        .or_insert_with(|| Isolation {
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ..Isolation::default()
        })
}

/// Runs `op` against `peer` once it answers within `timeout`; a peer that does not answer, or an
/// `op` that fails on the way, is `Unreachable`, with why.
async fn at_peer<F, Fut>(clients: &Clients, peer: &Cluster, timeout: Duration, op: F) -> PeerOutcome
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<PeerOutcome>>,
{
    match bounded(clients, peer, timeout).await {
        Ok(client) => op(client).await.unwrap_or_else(|e| PeerOutcome::Unreachable {
            error: format!("{e:#}"),
        }),
        Err(error) => PeerOutcome::Unreachable { error },
    }
}

/// A client of `peer`, or why it did not answer within `timeout` (connecting asks the server
/// its version, so a stopped server is found here, not at the first read).
async fn bounded(clients: &Clients, peer: &Cluster, timeout: Duration) -> Result<kube::Client, String> {
    match tokio::time::timeout(timeout, clients.get(&peer.context)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

/// `target`'s remote secret at a peer whose remote secrets are in `namespace`, asked within
/// `timeout`: its client and name, and the Secret if there is one.
async fn target_secret(
    client: &kube::Client,
    (namespace, target): (&str, &str),
    timeout: Duration,
) -> Result<(Api<Secret>, String, Option<Secret>)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = secret_name(target);
    let found = within(timeout, secrets.get_opt(&name)).await?;
    Ok((secrets, name, found))
}

/// `call`, given up on after `timeout` (a frozen API server holds a connection open for ever).
async fn within<T, E>(timeout: Duration, call: impl std::future::Future<Output = Result<T, E>>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    Ok(tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| anyhow!("no answer within {}s", timeout.as_secs()))??)
}

/// At one peer, whose remote secrets are in `namespace`: `target`'s recorded, then removed.
async fn isolate_at(
    client: &kube::Client,
    (namespace, target): (&str, &str),
    file: &Path,
    timeout: Duration,
) -> Result<PeerOutcome> {
    let (secrets, name, found) = target_secret(client, (namespace, target), timeout).await?;
    let Some(secret) = found else {
        return Ok(PeerOutcome::NothingToDo {
            detail: format!("no {namespace}/{name}"),
        });
    };
    if meshctl_secret_for(&secret).as_deref() != Some(target) {
        return Ok(PeerOutcome::NotMeshctls);
    }
    // Recorded before it goes, so a failure in between loses nothing.
    let text = serde_saphyr::to_string(&portable(&secret)).context("render the recorded secret")?;
    atomic_file::create_dir_all(atomic_file::parent_of(file), 0o700)
        .with_context(|| format!("create `{}`", atomic_file::parent_of(file).display()))?;
    atomic_file::write(file, text.as_bytes(), PRIVATE)
        .with_context(|| format!("write `{}`", file.display()))?;
    // Only the object read above: a secret that replaced it since is not meshctl's to delete.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    within(timeout, secrets.delete(&name, &params)).await?;
    Ok(PeerOutcome::Done)
}

/// At one peer, whose remote secrets are in `namespace`: `target`'s recorded secret put back.
async fn rejoin_at(
    client: &kube::Client,
    (namespace, target): (&str, &str),
    file: &Path,
    timeout: Duration,
) -> Result<PeerOutcome> {
    let (_, name, current) = target_secret(client, (namespace, target), timeout).await?;
    if current.is_some() {
        return Ok(PeerOutcome::NothingToDo {
            detail: format!("{namespace}/{name} is there already; left as it is"),
        });
    }
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            return Ok(PeerOutcome::NothingToDo {
                detail: format!(
                    "no recorded secret (`{}`: {e}); `meshctl up --only remote-secrets` makes a new one",
                    file.display()
                ),
            });
        }
    };
    let applying = Applier::new(client.clone());
    tokio::time::timeout(timeout, applying.apply_yaml(&text, &file.display().to_string()))
        .await
        .map_err(|_| anyhow!("no answer within {}s", timeout.as_secs()))??;
    Ok(PeerOutcome::Done)
}

/// The Secret as it can be applied again: its name, namespace, labels, annotations, type and
/// data, without what the server assigned (uid, resource version, managed fields, timestamps).
fn portable(secret: &Secret) -> Secret {
    let meta = &secret.metadata;
    Secret {
        metadata: kube::api::ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            ..Default::default()
        },
        type_: secret.type_.clone(),
        data: secret.data.clone(),
        string_data: secret.string_data.clone(),
        immutable: secret.immutable,
    }
}

/// Each cluster `meshctl isolate` took out, said before the run leaves it alone.
pub fn note_isolated(state: &crate::state::MeshState, reporter: &crate::report::Reporter) {
    for (cluster, isolation) in &state.isolated {
        reporter.note(
            cluster,
            &format!(
                "isolated since {}: left as it is and read by no other istiod (`meshctl rejoin {cluster}` brings it back)",
                isolation.since
            ),
        );
    }
}

/// A cluster taken out of the topology is no longer isolated from anything: its record, and the
/// secrets kept for its rejoin (they carry tokens), go, said once.
pub fn forget_departed(
    state: &crate::state::StateStore,
    mesh: &crate::topology::Mesh,
    dir: &crate::mesh_dir::MeshDir,
    reporter: &crate::report::Reporter,
) -> std::io::Result<()> {
    let gone: Vec<String> = state
        .snapshot()
        .isolated
        .into_keys()
        .filter(|c| mesh.cluster(c).is_none())
        .collect();
    state.update(|s| s.isolated.retain(|c, _| !gone.contains(c)))?;
    for cluster in &gone {
        let _ = std::fs::remove_dir_all(dir.isolated(cluster));
        reporter.note(
            cluster,
            "no longer in the mesh: its isolation is forgotten (and the secrets kept for its rejoin removed)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_primaries_read_a_cluster() {
        let mesh = Mesh::from_yaml("clusters:\n  - {}\n  - {}\n  - {role: remote}\n", Some("m")).unwrap();
        let names = |t: &str| {
            peers(&mesh, t)
                .into_iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("cluster1"), ["cluster2"]);
        assert_eq!(names("cluster3"), ["cluster1", "cluster2"]);
    }

    #[test]
    fn a_recorded_secret_keeps_what_applies_and_drops_what_the_server_assigned() {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "istio-remote-secret-c", "namespace": "istio-system", "uid": "u1",
                "resourceVersion": "7", "labels": {"istio/multiCluster": "true"},
                "annotations": {"networking.istio.io/cluster": "c"},
                "managedFields": [{"manager": "meshctl", "operation": "Apply"}]},
            "data": {"c": "a3ViZWNvbmZpZw=="}}))
        .unwrap();
        let kept = portable(&secret);
        assert_eq!(kept.metadata.uid, None);
        assert_eq!(kept.metadata.resource_version, None);
        assert_eq!(kept.metadata.managed_fields, None);
        assert_eq!(kept.metadata.labels, secret.metadata.labels);
        assert_eq!(kept.data, secret.data);
    }
}
