//! Read-only facts about a cluster, for the phases' probes and `verify`.

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::Api;

/// Istio's namespace.
const ISTIO_NAMESPACE: &str = "istio-system";

/// The LoadBalancer IP of Service `namespace/name`, if it exists and has one.
pub async fn service_ip(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc = services.get_opt(name).await.ok().flatten()?;
    super::wait::ingress_ip(&svc)
}

/// One remote cluster as istiod reports it on `/debug/clusterz` (Istio `pkg/cluster/debug.go`
/// `DebugInfo`; what `istioctl remote-clusters` prints).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSync {
    /// The cluster ID (`multiCluster.clusterName`).
    pub id: String,
    /// `istio-system/istio-remote-secret-<id>` for a remote; empty for istiod's own cluster.
    #[serde(default)]
    pub secret_name: String,
    /// `synced`, `syncing`, `timeout` or `closed`.
    #[serde(default)]
    pub sync_status: String,
}

/// istiod's view of the clusters it watches, read through the API server's service proxy
/// (`services/istiod:15014/proxy/debug/clusterz`), so no port-forward is needed.
pub async fn istiod_clusters(client: &Client) -> Result<Vec<ClusterSync>, String> {
    istiod_debug(client, "clusterz").await
}

/// One proxy connected to istiod, as `/debug/syncz` lists it (Istio `pilot/pkg/xds/debug.go`
/// `SyncStatus`; what `istioctl proxy-status` prints).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ProxySync {
    /// The cluster the proxy runs in (its `ISTIO_META_CLUSTER_ID`).
    #[serde(default)]
    pub cluster_id: String,
    /// `<pod>.<namespace>`.
    #[serde(default, rename = "proxy")]
    pub proxy_id: String,
}

/// The proxies istiod configures, from every cluster it serves (`/debug/syncz`).
pub async fn istiod_proxies(client: &Client) -> Result<Vec<ProxySync>, String> {
    istiod_debug(client, "syncz").await
}

/// A JSON debug endpoint of istiod, through the API server's service proxy to port 15014.
async fn istiod_debug<T: serde::de::DeserializeOwned>(client: &Client, name: &str) -> Result<T, String> {
    let path = format!("/api/v1/namespaces/{ISTIO_NAMESPACE}/services/istiod:15014/proxy/debug/{name}");
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| super::human_reason(&e))?;
    serde_json::from_str(&text).map_err(|e| format!("istiod's /debug/{name} is not the expected JSON: {e}"))
}

/// The clusters of `expected` that istiod does not report as `synced`, each with what it reports
/// (`timeout`, `syncing`, or `not listed`).
pub fn unsynced(expected: &[String], seen: &[ClusterSync]) -> Vec<(String, String)> {
    expected
        .iter()
        .filter_map(|id| match seen.iter().find(|c| &c.id == id) {
            Some(c) if c.sync_status == "synced" => None,
            Some(c) => Some((id.clone(), c.sync_status.clone())),
            None => Some((id.clone(), "not listed".to_string())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clusters_reported_synced_pass() {
        // The shape istiod serves (DebugInfo's JSON tags), for a primary with two remotes.
        let seen: Vec<ClusterSync> = serde_json::from_str(
            r#"[{"id":"cluster1","secretName":"","syncStatus":"synced"},
                {"id":"cluster2","secretName":"istio-system/istio-remote-secret-cluster2","syncStatus":"synced"},
                {"id":"cluster3","secretName":"istio-system/istio-remote-secret-cluster3","syncStatus":"timeout"}]"#,
        )
        .unwrap();
        let want = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(unsynced(&want(&["cluster2"]), &seen).is_empty());
        assert_eq!(
            unsynced(&want(&["cluster2", "cluster3", "cluster4"]), &seen),
            vec![
                ("cluster3".to_string(), "timeout".to_string()),
                ("cluster4".to_string(), "not listed".to_string())
            ]
        );
    }
}
