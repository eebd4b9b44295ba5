//! Phase `remote-secrets`: every istiod watches every other cluster's API server. Reference section 9.
//!
//! Every primary holds every other cluster's secret: N primaries and R remotes give
//! N·(N+R−1) secrets (N·(N−1) in a multi-primary mesh). They carry a token that exists only at run time, so the plan
//! lists the pairs; the secrets themselves are built by `remote_secret` when the phase runs.

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};

use crate::plan::{Condition, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};
use crate::remote_secret::NAMESPACE;
use crate::state::MeshState;
use crate::topology::{Mesh, Provider, Role};

/// Label istiod selects remote secrets by.
pub const MULTICLUSTER_LABEL: &str = "istio/multiCluster";
/// Annotation naming the cluster a remote secret is for.
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";

/// What istiod selects remote secrets by (`istio/multiCluster=true`), for listing them.
pub fn remote_secrets_selector() -> ListParams {
    ListParams::default().labels(&format!("{MULTICLUSTER_LABEL}=true"))
}

/// The cluster a remote secret in this cluster is for, when meshctl applied it (its field manager
/// owns fields of it); `None` for anyone else's.
pub fn meshctl_secret_for(secret: &Secret) -> Option<String> {
    let ours = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(crate::kube::FIELD_MANAGER));
    let annotations = secret.metadata.annotations.as_ref()?;
    ours.then(|| annotations.get(CLUSTER_ANNOTATION).cloned())
        .flatten()
}

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    // Only an istiod reads remote secrets; a remote's secret goes to the primaries (which is how
    // its primary takes it over: "Attach cluster2 as a remote cluster of cluster1").
    if b.cluster.role == Role::Remote {
        return Ok(());
    }
    b.step(Step::PruneRemoteSecrets {
        keep: b.input.mesh.clusters.iter().map(|c| c.name.clone()).collect(),
    });
    let mut peers = Vec::new();
    for source in &b.input.mesh.clusters {
        if source.name != b.cluster.name {
            b.step(Step::RemoteSecret {
                source: source.name.clone(),
            });
            peers.push(source.name.clone());
        }
    }
    // A secret that exists can still point at an address istiod cannot reach (pitfall 1): the
    // phase is done when istiod says every peer is synced.
    if !peers.is_empty() {
        b.step(Step::Wait {
            until: Condition::RemoteClustersSynced { clusters: peers },
        });
    }
    Ok(())
}

/// Name of the remote secret of cluster `source`, as istioctl names it.
pub fn secret_name(source: &str) -> String {
    format!("istio-remote-secret-{source}")
}

/// The API server address the remote secret of `source` must carry: `apiServer` from the
/// topology, else (kind) the address recorded on the docker network, else (existing clusters) the
/// server of its kubeconfig context, refused when it is a loopback address.
pub fn api_address(
    mesh: &Mesh,
    state: &MeshState,
    kubeconfig: Option<&std::path::Path>,
    source: &str,
) -> Result<String, String> {
    let cluster = mesh
        .cluster(source)
        .ok_or_else(|| format!("cluster `{source}` is not in the topology"))?;
    let recorded = state.clusters.get(source).and_then(|c| c.api_endpoint.clone());
    match (mesh.provider, cluster.api_server.clone().or(recorded)) {
        (_, Some(server)) => Ok(server),
        (Provider::Kind, None) => Err(format!(
            "cluster `{source}`: no API server address recorded on the docker network; run `meshctl up --only clusters` first"
        )),
        (Provider::Existing, None) => {
            let server = crate::kube::server_of(kubeconfig, &cluster.context).map_err(|e| e.to_string())?;
            crate::remote_secret::check_server(source, &server, false).map_err(|e| e.to_string())?;
            Ok(server)
        }
    }
}

/// The server and CA inside a remote secret's kubeconfig.
fn secret_target(secret: &Secret, source: &str) -> Option<(String, String)> {
    let text = secret.data.as_ref()?.get(source)?;
    let docs = crate::render::parse_documents(&String::from_utf8_lossy(&text.0)).ok()?;
    let cluster = &docs.first()?["clusters"][0]["cluster"];
    Some((
        cluster["server"].as_str()?.to_string(),
        cluster["certificate-authority-data"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

/// The CA `source`'s API server presents, as its controller-manager publishes it to every
/// namespace (ConfigMap `kube-root-ca.crt`), base64 as a kubeconfig carries it.
async fn published_ca(p: &Probe<'_>, source: &str) -> Option<String> {
    let cluster = p.mesh.cluster(source)?;
    let client = p.clients.get(&cluster.context).await.ok()?;
    let map = Api::<ConfigMap>::namespaced(client, NAMESPACE)
        .get_opt("kube-root-ca.crt")
        .await
        .ok()??;
    let pem = map.data?.get("ca.crt")?.clone();
    Some(base64::engine::general_purpose::STANDARD.encode(pem))
}

/// One secret per peer, pointing at the peer's current API address and signed by its current CA
/// (a cluster created again has a new one, and the old token is worthless).
pub(super) async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![f],
    };
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    let mut out = Vec::new();
    match secrets.list(&remote_secrets_selector()).await {
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
        }
        Err(e) => out.push(Finding::unreachable(
            "remote secrets",
            crate::kube::human_reason(&e),
        )),
    }
    for step in p.steps {
        let Step::RemoteSecret { source } = step else {
            continue;
        };
        let object = format!("remote secret for {source}");
        let want = match api_address(p.mesh, p.state, p.clients.kubeconfig(), source) {
            Ok(w) => w,
            Err(e) => {
                out.push(Finding::unreachable(object, e));
                continue;
            }
        };
        let secret = match secrets.get_opt(&secret_name(source)).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                out.push(Finding::missing(
                    object,
                    format!("no {NAMESPACE}/{}", secret_name(source)),
                ));
                continue;
            }
            Err(e) => {
                out.push(Finding::unreachable(object, crate::kube::human_reason(&e)));
                continue;
            }
        };
        let theirs = meshctl_secret_for(&secret).is_none();
        let finding = match secret_target(&secret, source) {
            None => Finding::different(object, "holds no kubeconfig for the cluster"),
            Some((server, _)) if server != want => Finding::different(
                object,
                format!("points at {server}, but {source}'s API server is at {want}"),
            ),
            Some((_, ca)) => match published_ca(p, source).await {
                Some(now) if now != ca => Finding::different(
                    object,
                    format!(
                        "was issued by an earlier {source} (its CA changed: the cluster was created again)"
                    ),
                ),
                _ => Finding::present(object, format!("points at {want}")),
            },
        };
        // A remote secret someone else applied (`istioctl create-remote-secret | kubectl apply`)
        // that already does the job is left as it is; one that would need changing is theirs to
        // change: meshctl does not take it over.
        out.push(match finding {
            f if theirs && f.found != crate::probe::Found::Present => Finding::foreign(
                f.object,
                format!("applied by someone else, not by meshctl, and {}", f.detail),
            ),
            f => f,
        });
    }
    out
}
