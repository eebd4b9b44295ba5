//! A remote secret: what `istioctl create-remote-secret` writes ([`create`]), and how meshctl
//! knows one in a cluster: its name, the label istiod selects it by, whose it is, and whether the
//! kubeconfig inside still reaches the cluster it names. One home for the phase that applies
//! them, `isolate`/`rejoin`, `verify`, `diagnose` and the external control plane's kubeconfig.

pub mod create;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};

use crate::probe::{Finding, Probe};
use crate::state::MeshState;
use crate::topology::{Mesh, Provider};

/// The key of `source`'s remote secret among the values a run computes once.
pub fn cache_key(source: &str) -> String {
    format!("remote-secret/{source}")
}

/// Label istiod selects remote secrets by.
pub const MULTICLUSTER_LABEL: &str = "istio/multiCluster";
/// Annotation naming the cluster a remote secret is for.
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";

/// What istiod selects remote secrets by (`istio/multiCluster=true`), for listing them.
pub fn selector() -> ListParams {
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
            create::check_server(source, &server, false).map_err(|e| e.to_string())?;
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

/// The key of the CA `source`'s API server presents among the values one look shares.
pub fn published_ca_key(source: &str) -> String {
    format!("published-ca/{source}")
}

/// The CA `source`'s API server presents, as its controller-manager publishes it to every
/// namespace (ConfigMap `kube-root-ca.crt`), base64 as a kubeconfig carries it; read once per look
/// however many clusters' secrets are compared with it.
async fn published_ca(p: &Probe<'_>, source: &str) -> Option<String> {
    // The answer is kept, a CA or none published (an empty value); a cluster that did not answer
    // is asked again by the next probe that needs it.
    let read = async {
        let cluster = p.mesh.cluster(source).ok_or("not in the topology")?;
        let client = p.clients.get(&cluster.context).await.map_err(|e| e.to_string())?;
        let map = Api::<ConfigMap>::namespaced(client, p.mesh.istio_namespace(cluster))
            .get_opt("kube-root-ca.crt")
            .await
            .map_err(|e| e.to_string())?;
        let pem = map.and_then(|m| m.data).and_then(|d| d.get("ca.crt").cloned());
        Ok(pem
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem))
            .unwrap_or_default())
    };
    let key = published_ca_key(source);
    let read = p
        .memo
        .get_or_compute(&key, async { read.await.map_err(|e: String| e) })
        .await;
    if read.is_err() {
        p.memo.forget(&key);
    }
    read.ok().filter(|ca| !ca.is_empty())
}

/// What a Secret holding a kubeconfig of cluster `source` under data key `key` (a remote secret,
/// or an external istiod's kubeconfig of its config cluster) says against what it should: pointing
/// at `source`'s API server now (`want`), issued by the cluster as it is now (its CA changes when
/// it is created again, and the old token is worthless).
pub async fn kubeconfig_finding(
    p: &Probe<'_>,
    object: String,
    secret: &Secret,
    (source, key): (&str, &str),
    want: &str,
) -> Finding {
    match secret_target(secret, key) {
        None => Finding::different(object, format!("holds no kubeconfig under `{key}`")),
        Some((server, _)) if server != want => Finding::different(
            object,
            format!("points at {server}, but {source}'s API server is at {want}"),
        ),
        Some((_, ca)) => match published_ca(p, source).await {
            Some(now) if now != ca => Finding::different(
                object,
                format!("was issued by an earlier {source} (its CA changed: the cluster was created again)"),
            ),
            _ => Finding::present(object, format!("points at {want}")),
        },
    }
}
