//! Phase `remote-secrets`: every istiod watches every other cluster's API server. The same Secrets
//! `istioctl create-remote-secret` writes, built natively (src/create_remote_secret.rs).
//!
//! Every primary holds every other cluster's secret: N primaries and R remotes give
//! N·(N+R−1) secrets (N·(N−1) in a multi-primary mesh). They carry a token that exists only at run time, so the plan
//! lists the pairs; the secrets themselves are built by `remote_secret` when the phase runs.

use anyhow::{Context as _, Result, anyhow};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams};

use super::{PhaseLogic, Preflight, RemoveContext, StepContext, StepResult, SummaryColumn};
use crate::kube::apply::summary;
use crate::kube::{delete_owned, wait};
use crate::plan::RemoteSecretsStep;
use crate::plan::{Condition, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};
use crate::remote_secret::create::{self, Account, Placement};
use crate::remote_secret::{self, api_address, kubeconfig_finding, meshctl_secret_for, secret_name};
use crate::topology::{Cluster, Mesh, Provider, Role};

/// Every istiod reads every other cluster's API server through a remote secret.
pub struct RemoteSecrets;

impl PhaseLogic for RemoteSecrets {
    /// Existing clusters have API addresses the other clusters can use (never a loopback address
    /// unless the user gave it explicitly).
    fn preflight(&self, cx: &Preflight<'_>) -> Result<()> {
        if cx.mesh.provider != Provider::Existing {
            return Ok(());
        }
        for c in &cx.mesh.clusters {
            let server = match &c.api_server {
                Some(s) => s.clone(),
                None => crate::kube::server_of(cx.kubeconfig_flag, &c.context)?,
            };
            create::check_server(&c.name, &server, c.api_server.is_some())
                .map_err(|e| anyhow!("preflight: {e}"))?;
        }
        Ok(())
    }

    /// Only istiods read remote secrets: a primary holds one per other cluster.
    fn summary(&self, mesh: &Mesh, cluster: &Cluster) -> Option<SummaryColumn> {
        let peers = match cluster.role {
            Role::Primary => mesh.clusters.len() - 1,
            // Every remote but the config cluster, read through istiod's own kubeconfig.
            Role::External => mesh.remotes_of(cluster).count().saturating_sub(1),
            Role::Remote => 0,
        };
        let value = match cluster.role {
            Role::Remote => "-".into(),
            _ => format!("{peers}/{peers}"),
        };
        Some(SummaryColumn {
            header: "REMOTE SECRETS",
            key: "remoteSecrets",
            value,
        })
    }

    fn next_step(&self) -> Option<&'static str> {
        Some("meshctl verify   (calls across every pair of clusters)")
    }

    plan_and_probe_are_the_modules!();

    /// The remote secrets meshctl applied here, then the reader account other clusters' secrets
    /// carried a token of.
    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let mut removed = remove_remote_secrets(&cx.client, cx.istio_namespace).await?;
            removed
                .extend(remove_reader(&cx.client, &Account::reader(cx.istio_namespace), cx.mesh_id).await?);
            Ok(removed)
        })
    }
}

/// Runs one of the phase's own steps.
pub(super) fn run<'a>(step: &'a RemoteSecretsStep, cx: StepContext<'a>) -> StepResult<'a> {
    match step {
        RemoteSecretsStep::PruneRemoteSecrets { keep } => Box::pin(prune(cx, keep)),
        RemoteSecretsStep::RemoteSecret { source, .. } => Box::pin(apply_remote_secret(cx, source)),
    }
}

/// How one of the phase's own steps reads.
pub(super) fn describe(step: &RemoteSecretsStep) -> String {
    match step {
        RemoteSecretsStep::PruneRemoteSecrets { keep } => format!(
            "prune: remote secrets meshctl applied for clusters no longer in the mesh (keeps {})",
            keep.join(", ")
        ),
        RemoteSecretsStep::RemoteSecret { source, preview } => format!(
            "remote secret: read `{source}`'s reader token, apply {} here (shape: {preview})",
            secret_name(source)
        ),
    }
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    // Only an istiod reads remote secrets; a remote's secret goes to the primaries (which is how
    // its primary takes it over: "Attach cluster2 as a remote cluster of cluster1").
    if b.cluster.role == Role::Remote {
        return Ok(());
    }
    let mesh = b.input.mesh;
    // An external istiod reads its config cluster through its own kubeconfig (phase
    // `external-istiod`), and every other remote through a secret here.
    let config_cluster = mesh.config_cluster_of(b.cluster).map(|c| c.name.clone());
    let placement = Placement {
        namespace: mesh.istio_namespace(b.cluster),
        config: false,
    };
    // An isolated cluster's secret goes like a departed cluster's: `up` keeps it isolated.
    let members = || {
        mesh.clusters
            .iter()
            .filter(|c| !b.input.isolated.contains(&c.name) && Some(&c.name) != config_cluster.as_ref())
    };
    b.step(Step::RemoteSecrets(RemoteSecretsStep::PruneRemoteSecrets {
        keep: members().map(|c| c.name.clone()).collect(),
    }));
    let mut peers = Vec::new();
    for source in members() {
        if source.name != b.cluster.name {
            let server = source
                .api_server
                .clone()
                .unwrap_or_else(|| match b.input.mesh.provider {
                    Provider::Kind => format!(
                        "<the address of `{}` on the docker network, recorded when it is created>",
                        source.name
                    ),
                    Provider::Existing => format!("<the server of kubeconfig context `{}`>", source.context),
                });
            let preview = b.render(
                &format!("{}.preview.yaml", secret_name(&source.name)),
                create::TEMPLATE,
                &create::preview_in(
                    placement,
                    &source.name,
                    &server,
                    &Account::reader(mesh.istio_namespace(source)),
                ),
                false,
            )?;
            b.step(Step::RemoteSecrets(RemoteSecretsStep::RemoteSecret {
                source: source.name.clone(),
                preview,
            }));
            peers.push(source.name.clone());
        }
    }
    // A secret that exists can still point at an address istiod cannot reach (a loopback server, an old node address): the
    // phase is done when istiod says every peer is synced. An external istiod lists its config
    // cluster too (Istio `pkg/kube/multicluster/secretcontroller.go`, `ListRemoteClusters`).
    peers.splice(0..0, config_cluster);
    if !peers.is_empty() {
        b.step(Step::Wait {
            until: Condition::RemoteClustersSynced { clusters: peers },
        });
    }
    Ok(())
}

/// One secret per peer, pointing at the peer's current API address and signed by its current CA
/// (a cluster created again has a new one, and the old token is worthless).
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![f],
    };
    let secrets: Api<Secret> = Api::namespaced(client, p.mesh.istio_namespace(p.cluster));
    let mut out = Vec::new();
    // One list answers for every peer's secret (istiod reads only those with its label); a peer
    // whose secret is not listed is asked by name, to tell a missing one from an unlabelled one.
    let listed = match secrets.list(&remote_secret::selector()).await {
        Ok(list) => {
            for gone in list
                .items
                .iter()
                .filter_map(meshctl_secret_for)
                .filter(|c| p.mesh.cluster(c).is_none())
            {
                out.push(Finding::different(
                    format!("remote secret for {gone}"),
                    format!("left over: `{gone}` is no longer in the mesh"),
                ));
            }
            list.items
        }
        Err(e) => {
            out.push(Finding::unreachable(
                "remote secrets",
                crate::kube::human_reason(&e),
            ));
            Vec::new()
        }
    };
    let peers = p.steps.iter().filter_map(|step| match step {
        Step::RemoteSecrets(RemoteSecretsStep::RemoteSecret { source, .. }) => {
            Some(probe_secret(p, &secrets, &listed, source))
        }
        _ => None,
    });
    out.extend(futures::future::join_all(peers).await);
    out
}

/// The remote secret of `source` here: there, pointing at `source`'s API server now, issued by
/// the cluster as it is now, and meshctl's to change.
async fn probe_secret(p: &Probe<'_>, secrets: &Api<Secret>, listed: &[Secret], source: &str) -> Finding {
    let object = format!("remote secret for {source}");
    let want = match api_address(p.mesh, p.state, p.clients.kubeconfig(), source) {
        Ok(w) => w,
        Err(e) => return Finding::unreachable(object, e),
    };
    let name = secret_name(source);
    let found = match listed
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
    {
        Some(secret) => Ok(Some(secret.clone())),
        None => secrets.get_opt(&name).await,
    };
    let secret = match found {
        Ok(Some(s)) => s,
        Ok(None) => {
            let namespace = p.mesh.istio_namespace(p.cluster);
            return Finding::missing(object, format!("no {namespace}/{}", secret_name(source)));
        }
        Err(e) => return Finding::unreachable(object, crate::kube::human_reason(&e)),
    };
    let theirs = meshctl_secret_for(&secret).is_none();
    let finding = kubeconfig_finding(p, object, &secret, (source, source), &want).await;
    // A remote secret someone else applied (`istioctl create-remote-secret | kubectl apply`)
    // that already does the job is left as it is; one that would need changing is theirs to
    // change: meshctl does not take it over.
    match finding {
        f if theirs && f.found != crate::probe::Found::Present => Finding::foreign(
            f.object,
            format!("applied by someone else, not by meshctl, and {}", f.detail),
        ),
        f => f,
    }
}

/// Deletes the remote secrets meshctl applied here for clusters no longer in the mesh (a user's
/// own remote secrets are never touched).
async fn prune(cx: StepContext<'_>, keep: &[String]) -> Result<Option<String>> {
    let namespace = cx.istio_namespace();
    let secrets: Api<Secret> = Api::namespaced(cx.client().await?, namespace);
    let list = secrets
        .list(&remote_secret::selector())
        .await
        .context("cannot list remote secrets")?;
    let mut pruned = Vec::new();
    for secret in &list.items {
        let Some(source) = meshctl_secret_for(secret).filter(|s| !keep.contains(s)) else {
            continue;
        };
        let name = secret.metadata.name.clone().unwrap_or_default();
        secrets
            .delete(&name, &Default::default())
            .await
            .with_context(|| format!("cannot delete secret {namespace}/{name}"))?;
        pruned.push(source);
    }
    Ok((!pruned.is_empty()).then(|| format!("pruned the remote secrets of {}", pruned.join(", "))))
}

/// Reads `source`'s reader token (once per run) and applies its remote secret here, unless a
/// remote secret of that name is someone else's (`--adopt` takes it over).
async fn apply_remote_secret(cx: StepContext<'_>, source: &str) -> Result<Option<String>> {
    let name = secret_name(source);
    let namespace = cx.istio_namespace();
    if !cx.settings().adopt {
        let secrets: Api<Secret> = Api::namespaced(cx.client().await?, namespace);
        if let Some(s) = secrets.get_opt(&name).await?
            && meshctl_secret_for(&s).is_none()
        {
            return Err(crate::kube::KubeError::Foreign {
                object: format!("Secret {namespace}/{name}"),
            }
            .into());
        }
    }
    let text = remote_secret_of(cx, source).await?;
    Ok(summary(&cx.apply(&text, &name).await?))
}

/// The remote secret of `source`, built once per run however many clusters receive it.
async fn remote_secret_of(cx: StepContext<'_>, source: &str) -> Result<String> {
    let run = cx.run;
    let build = async {
        let cluster = run
            .mesh
            .cluster(source)
            .ok_or_else(|| format!("cluster `{source}` is not in the topology"))?;
        let server = api_address(
            &run.mesh,
            &run.state.snapshot(),
            run.settings.kubeconfig_flag.as_deref(),
            source,
        )?;
        let client = run
            .clients
            .get(&cluster.context)
            .await
            .map_err(|e| e.to_string())?;
        // The reader account lives in Istio's namespace of the source; the secret goes to the
        // namespace of the istiod reading it (every istiod of one mesh shares it).
        let account = Account::reader(run.mesh.istio_namespace(cluster));
        let creds = create::credentials_of(&client, source, &account, run.settings.timeout)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let placement = Placement {
            namespace: run.mesh.istio_namespace(cx.cluster),
            config: false,
        };
        create::render_secret_in(placement, source, &server, &creds).map_err(|e| e.to_string())
    };
    run.memo
        .get_or_compute(&remote_secret::cache_key(source), build)
        .await
        .map_err(|e| anyhow!(e))
}

/// Waits until istiod here reports every peer synced; if not, says why for each pair.
pub(super) fn await_synced<'a>(cx: StepContext<'a>, clusters: &'a [String]) -> StepResult<'a> {
    Box::pin(await_peers_synced(cx, clusters))
}

async fn await_peers_synced(cx: StepContext<'_>, clusters: &[String]) -> Result<Option<String>> {
    let client = cx.client().await?;
    match crate::istiod::remote_clusters_synced(
        &client,
        cx.istio_namespace(),
        None,
        clusters,
        cx.settings().timeout,
    )
    .await
    {
        Ok(pod) => Ok(Some(format!(
            "istiod reports {} synced ({pod})",
            clusters.join(", ")
        ))),
        Err((err, missing)) => Err(unsynced_error(cx, err, &missing)),
    }
}

/// Why istiod in the cluster does not see its peers: each pair, with the address its remote secret
/// makes istiod dial, and what to check.
fn unsynced_error(cx: StepContext<'_>, err: wait::WaitError, missing: &[(String, String)]) -> anyhow::Error {
    let cluster: &Cluster = cx.cluster;
    if missing
        .iter()
        .all(|(_, status)| status == crate::istiod::NOT_ASKED)
    {
        // istiod could not be asked at all: the peers' addresses are not the question.
        return anyhow::Error::new(err).context(format!(
            "istiod in `{}` could not be asked which clusters it has synced\nhint: meshctl reads istiod's /debug/clusterz through a port-forward to a running istiod pod, as `istioctl remote-clusters` does; `kubectl --context {} -n {} get pods -l app=istiod` shows whether one runs",
            cluster.name,
            cluster.context,
            cx.istio_namespace()
        ));
    }
    let state = cx.run.state.snapshot();
    let pairs: Vec<String> = missing
        .iter()
        .map(|(peer, status)| {
            let address = api_address(
                &cx.run.mesh,
                &state,
                cx.settings().kubeconfig_flag.as_deref(),
                peer,
            )
            .unwrap_or_else(|_| "the server in its kubeconfig".into());
            format!(
                "istiod in `{}` reports `{peer}` {status}; its remote secret points at {address}",
                cluster.name
            )
        })
        .collect();
    anyhow::Error::new(err).context(format!(
        "{}\nhint: that address must be reachable from `{}`'s pods (never 127.0.0.1); `istioctl remote-clusters --context {}` shows the same view",
        pairs.join("\n"),
        cluster.name,
        cluster.context
    ))
}

/// The remote secrets meshctl applied in this cluster, deleted; their names.
async fn remove_remote_secrets(client: &kube::Client, namespace: &str) -> Result<Vec<String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&remote_secret::selector())
        .await
        .context("cannot list remote secrets")?;
    let mut removed = Vec::new();
    for secret in list.items.iter().filter(|s| meshctl_secret_for(s).is_some()) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        api.delete(&name, &DeleteParams::default())
            .await
            .with_context(|| format!("cannot delete secret {namespace}/{name}"))?;
        removed.push(format!("Secret {namespace}/{name}"));
    }
    Ok(removed)
}

/// The reader account meshctl created for other clusters' istiods, with its token and RBAC.
async fn remove_reader(client: &kube::Client, account: &Account, mesh_id: &str) -> Result<Vec<String>> {
    let namespace = account.namespace.as_str();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let (token, name) = (account.token_secret(), &account.service_account);
    let role = account.reader_role.clone().unwrap_or_default();
    let removed = [
        delete_owned(
            &secrets,
            (&token, mesh_id),
            &format!("Secret {namespace}/{token}"),
        )
        .await?,
        delete_owned(
            &accounts,
            (name, mesh_id),
            &format!("ServiceAccount {namespace}/{name}"),
        )
        .await?,
        delete_owned(&bindings, (&role, mesh_id), &format!("ClusterRoleBinding {role}")).await?,
        delete_owned(&roles, (&role, mesh_id), &format!("ClusterRole {role}")).await?,
    ];
    Ok(removed.into_iter().flatten().collect())
}
