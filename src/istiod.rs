//! What istiod itself says about the mesh: the remote clusters it watches (`/debug/clusterz`) and
//! the proxies it configures (`/debug/syncz`), asked the way istioctl asks (Istio
//! `pkg/kube/client.go`, `AllDiscoveryDo`): a port-forward to every running istiod pod (label
//! `app=istiod`, phase Running) on its monitoring port, where istiod answers its own loopback
//! callers, and every pod's answer counted (each knows only its own connections). Through the API server's service proxy istiod answers 401 instead: its debug handlers
//! serve only localhost or a caller with a token istiod authenticates (`pilot/pkg/xds/debug.go`,
//! `allowAuthenticatedOrLocalhost`), and the API server connects from its own address and does not
//! pass the caller's credentials on.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use crate::kube::port_forward;
use crate::kube::wait::WaitError;
use crate::revision::Revision;

/// istiod's monitoring port, where its debug endpoints are, unless the pod's `prometheus.io/port`
/// annotation names another (Istio `pkg/kube/client.go`, `FindIstiodMonitoringPort`).
const MONITORING_PORT: u16 = 15014;

/// How long one pod may take to answer one debug request.
const ASK_BOUND: Duration = Duration::from_secs(10);

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
    /// The Istio release of the proxy, as it told istiod (`istio_version`).
    #[serde(default, rename = "istio_version")]
    pub istio_version: String,
}

/// An answer, with the istiod pod that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered<T> {
    /// `<namespace>/<pod>`.
    pub pod: String,
    pub value: T,
}

/// istiod's view of the clusters it watches (every running istiod pod in `namespace`, any
/// revision: the mesh's Istio namespace of the cluster, `Mesh::istio_namespace`), merged
/// ([`merge_views`]).
pub async fn clusters(client: &Client, namespace: &str) -> Result<Answered<Vec<ClusterSync>>, String> {
    clusters_of(client, namespace, None).await
}

async fn clusters_of(
    client: &Client,
    namespace: &str,
    revision: Option<&Revision>,
) -> Result<Answered<Vec<ClusterSync>>, String> {
    let answers = debug_all::<Vec<ClusterSync>>(client, namespace, revision, "clusterz").await?;
    Ok(Answered {
        pod: pods_of(&answers),
        value: merge_views(&answers),
    })
}

/// The proxies istiod (in `namespace`) configures, from every cluster it serves: each istiod pod
/// lists only the proxies connected to it (Istio `pilot/pkg/xds/debug.go`, `SyncStatus` ranges
/// over the server's own connections), so every pod's list is joined.
pub async fn proxies(client: &Client, namespace: &str) -> Result<Answered<Vec<ProxySync>>, String> {
    let answers = debug_all::<Vec<ProxySync>>(client, namespace, None, "syncz").await?;
    Ok(Answered {
        pod: pods_of(&answers),
        value: answers.into_iter().flat_map(|a| a.value).collect(),
    })
}

/// The pods that answered, `ns/a, ns/b`.
fn pods_of<T>(answers: &[Answered<T>]) -> String {
    answers
        .iter()
        .map(|a| a.pod.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One view of the remote clusters out of every istiod pod's: each pod runs its own secret
/// controller, so a cluster counts as synced only where every pod reports it synced; otherwise
/// the least synced status is kept, naming the pod (`timeout (istio-system/istiod-…)`), and a
/// cluster some pod does not list is `not listed by <pod>`.
pub fn merge_views(answers: &[Answered<Vec<ClusterSync>>]) -> Vec<ClusterSync> {
    let rank = |status: &str| match status {
        "synced" => 0,
        "syncing" => 1,
        "timeout" => 2,
        "closed" => 3,
        _ => 4,
    };
    let mut merged: Vec<ClusterSync> = Vec::new();
    let mut worst: Vec<(usize, String)> = Vec::new();
    for answer in answers {
        for c in &answer.value {
            let at = match merged.iter().position(|m| m.id == c.id) {
                Some(at) => at,
                None => {
                    merged.push(ClusterSync {
                        sync_status: "synced".into(),
                        ..c.clone()
                    });
                    worst.push((0, String::new()));
                    merged.len() - 1
                }
            };
            let r = rank(&c.sync_status);
            if r > worst[at].0 {
                worst[at] = (r, answer.pod.clone());
                merged[at].sync_status = c.sync_status.clone();
            }
        }
    }
    for (at, cluster) in merged.iter_mut().enumerate() {
        let missing = answers
            .iter()
            .find(|a| !a.value.iter().any(|c| c.id == cluster.id));
        if let Some(a) = missing {
            cluster.sync_status = format!("not listed by {}", a.pod);
        } else if worst[at].0 > 0 && answers.len() > 1 {
            cluster.sync_status = format!("{} ({})", cluster.sync_status, worst[at].1);
        }
    }
    merged
}

/// A JSON debug endpoint of istiod in `namespace` (of `revision`, when given: its pods carry the
/// revision's `istio.io/rev` label), from every running istiod pod, asked at once, as istioctl
/// asks them (Istio `pkg/kube/client.go`, `AllDiscoveryDo`: a pod that cannot be asked fails the
/// whole, since its share of the mesh would be missing).
async fn debug_all<T: serde::de::DeserializeOwned>(
    client: &Client,
    namespace: &str,
    revision: Option<&Revision>,
    name: &str,
) -> Result<Vec<Answered<T>>, String> {
    let selector = match revision {
        None => "app=istiod".to_string(),
        Some(r) => format!("app=istiod,{}={}", crate::revision::LABEL, r.label()),
    };
    let path = format!("/debug/{name}");
    let answers = port_forward::json_of_every_pod(
        client,
        (namespace, "istiod", &selector),
        monitoring_port,
        &path,
        ASK_BOUND,
    )
    .await?;
    Ok(answers
        .into_iter()
        .map(|(pod, value)| Answered { pod, value })
        .collect())
}

fn monitoring_port(pod: &Pod) -> u16 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("prometheus.io/port"))
        .and_then(|p| p.parse().ok())
        .unwrap_or(MONITORING_PORT)
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

/// What istiod reported of a cluster it was asked about when it could not be asked at all.
pub const NOT_ASKED: &str = "unknown";

/// Asks istiod until every cluster of `expected` is `synced`. istiod serves its view only on
/// request (no object to watch), so it is asked again with growing pauses, up to `timeout`. The
/// error carries what was last reported, and the clusters still not synced ([`NOT_ASKED`] each
/// when istiod could not be asked).
pub async fn remote_clusters_synced(
    client: &Client,
    namespace: &str,
    revision: Option<&Revision>,
    expected: &[String],
    timeout: Duration,
) -> Result<String, (WaitError, Vec<(String, String)>)> {
    let who = revision.map_or("istiod".to_string(), Revision::istiod);
    let what = format!("{who}: remote clusters {} synced", expected.join(", "));
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let (last_seen, missing) = match clusters_of(client, namespace, revision).await {
            Ok(answer) => {
                let missing = unsynced(expected, &answer.value);
                if missing.is_empty() {
                    return Ok(answer.pod);
                }
                let text = missing
                    .iter()
                    .map(|(id, status)| format!("{id} {status}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                (format!("{text} (asked {})", answer.pod), missing)
            }
            Err(e) => (
                format!("istiod's /debug/clusterz could not be read: {e}"),
                expected
                    .iter()
                    .map(|id| (id.clone(), NOT_ASKED.to_string()))
                    .collect(),
            ),
        };
        if started.elapsed() + pause > timeout {
            return Err((
                WaitError::Timeout {
                    what,
                    after: timeout,
                    last_seen,
                },
                missing,
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
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

    #[test]
    fn a_cluster_is_synced_only_where_every_istiod_pod_says_so() {
        let view = |pod: &str, json: &str| Answered {
            pod: pod.to_string(),
            value: serde_json::from_str::<Vec<ClusterSync>>(json).unwrap(),
        };
        let a = view(
            "istio-system/istiod-a",
            r#"[{"id":"cluster1","syncStatus":"synced"},{"id":"cluster2","secretName":"istio-system/istio-remote-secret-cluster2","syncStatus":"synced"},{"id":"cluster3","syncStatus":"synced"}]"#,
        );
        let b = view(
            "istio-system/istiod-b",
            r#"[{"id":"cluster1","syncStatus":"synced"},{"id":"cluster2","secretName":"istio-system/istio-remote-secret-cluster2","syncStatus":"timeout"}]"#,
        );
        let merged = merge_views(&[a.clone(), b]);
        let seen: Vec<(&str, &str)> = merged
            .iter()
            .map(|c| (c.id.as_str(), c.sync_status.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("cluster1", "synced"),
                ("cluster2", "timeout (istio-system/istiod-b)"),
                ("cluster3", "not listed by istio-system/istiod-b")
            ]
        );
        assert_eq!(merged[1].secret_name, "istio-system/istio-remote-secret-cluster2");
        // One pod: its view as it is.
        assert_eq!(merge_views(std::slice::from_ref(&a)), a.value);
    }

    #[test]
    fn the_monitoring_port_follows_the_prometheus_annotation() {
        let mut pod = Pod::default();
        assert_eq!(monitoring_port(&pod), 15014);
        pod.metadata.annotations = Some([("prometheus.io/port".to_string(), "15015".to_string())].into());
        assert_eq!(monitoring_port(&pod), 15015);
    }
}
