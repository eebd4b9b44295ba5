//! How meshctl asks istiod what it sees, against the in-process API server with a played istiod
//! that answers as Istio 1.31's debug handlers do (tests/support/played_istiod.rs): refused
//! through the API server's service proxy, answered through a port-forward to its pod.

mod support;

use std::time::Duration;

use meshctl::istiod;
use meshctl::topology::ISTIO_NAMESPACE;
use serde_json::json;
use support::memory_apiserver::MemoryApiServer;
use support::played_istiod::PlayedIstiod;

/// A primary's istio-system: istiod's Deployment (cluster ID `cluster1`), one istiod pod in
/// `phase`, and the remote secret of `cluster2`.
fn primary(
    istiod: &std::sync::Arc<PlayedIstiod>,
    phase: &str,
    annotations: serde_json::Value,
) -> MemoryApiServer {
    let server = MemoryApiServer::new().with_istiod(istiod.clone());
    server.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istiod", "namespace": "istio-system"},
        "spec": {"selector": {"matchLabels": {"app": "istiod"}}, "template": {"metadata": {"labels": {"app": "istiod"}},
            "spec": {"containers": [{"name": "discovery", "image": "istio/pilot", "env": [{"name": "CLUSTER_ID", "value": "cluster1"}]}]}}}}));
    server.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "istiod-5d8f7c9b4-x2x7q", "namespace": "istio-system",
            "labels": {"app": "istiod", "istio": "pilot"}, "annotations": annotations},
        "spec": {"nodeName": "cluster1-control-plane", "containers": [{"name": "discovery", "image": "istio/pilot"}]},
        "status": {"phase": phase}}));
    server.put(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "istio-remote-secret-cluster2", "namespace": "istio-system",
            "labels": {"istio/multiCluster": "true"}},
        "data": {"cluster2": "a3ViZWNvbmZpZw=="}}));
    server
}

#[tokio::test]
async fn istiod_is_asked_through_a_port_forward_to_its_running_pod() {
    let played = PlayedIstiod::new();
    let server = primary(&played, "Running", json!({}));
    let answer = istiod::clusters(&server.client(), ISTIO_NAMESPACE)
        .await
        .expect("istiod answers its own loopback");
    assert_eq!(answer.pod, "istio-system/istiod-5d8f7c9b4-x2x7q");
    let seen: Vec<(String, String, String)> = answer
        .value
        .iter()
        .map(|c| (c.id.clone(), c.secret_name.clone(), c.sync_status.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("cluster1".into(), "".into(), "synced".into()),
            (
                "cluster2".into(),
                "istio-system/istio-remote-secret-cluster2".into(),
                "synced".into()
            )
        ]
    );
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r
            .starts_with("GET /api/v1/namespaces/istio-system/pods/istiod-5d8f7c9b4-x2x7q/portforward?")
            && r.ends_with("ports=15014")),
        "{requests:#?}"
    );
    assert!(!requests.iter().any(|r| r.contains("/proxy/")), "{requests:#?}");
}

#[tokio::test]
async fn through_the_service_proxy_istiod_answers_401() {
    let played = PlayedIstiod::new();
    let server = primary(&played, "Running", json!({}));
    let request =
        http::Request::get("/api/v1/namespaces/istio-system/services/istiod:15014/proxy/debug/clusterz")
            .body(Vec::new())
            .unwrap();
    let err = server
        .client()
        .request_text(request)
        .await
        .expect_err("istiod refuses");
    assert!(
        matches!(&err, kube::Error::Api(status) if status.code == 401),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_sync_wait_names_the_pod_it_asked_and_what_it_reported() {
    let played = PlayedIstiod::new();
    let server = primary(&played, "Running", json!({}));
    let client = server.client();
    let pod = istiod::remote_clusters_synced(
        &client,
        ISTIO_NAMESPACE,
        None,
        &["cluster2".into()],
        Duration::from_secs(2),
    )
    .await
    .expect("cluster2 is synced");
    assert_eq!(pod, "istio-system/istiod-5d8f7c9b4-x2x7q");

    played.set_remote_cluster_status("cluster2", "timeout");
    let (err, missing) = istiod::remote_clusters_synced(
        &client,
        ISTIO_NAMESPACE,
        None,
        &["cluster2".into()],
        Duration::from_millis(600),
    )
    .await
    .expect_err("cluster2 timed out");
    assert_eq!(missing, [("cluster2".to_string(), "timeout".to_string())]);
    assert!(
        err.to_string()
            .contains("cluster2 timeout (asked istio-system/istiod-5d8f7c9b4-x2x7q)"),
        "{err}"
    );
}

#[tokio::test]
async fn without_a_running_istiod_pod_it_says_so_and_asks_nothing() {
    let played = PlayedIstiod::new();
    let server = primary(&played, "Pending", json!({}));
    let client = server.client();
    let err = istiod::clusters(&client, ISTIO_NAMESPACE)
        .await
        .expect_err("no pod runs");
    assert_eq!(err, "no running istiod pod in istio-system (labels app=istiod)");
    let (_, missing) = istiod::remote_clusters_synced(
        &client,
        ISTIO_NAMESPACE,
        None,
        &["cluster2".into()],
        Duration::from_millis(300),
    )
    .await
    .expect_err("istiod could not be asked");
    assert_eq!(missing, [("cluster2".to_string(), istiod::NOT_ASKED.to_string())]);
    assert!(!server.requests().iter().any(|r| r.contains("portforward")));
}

#[tokio::test]
async fn a_port_where_nothing_listens_is_named_with_the_kubelets_refusal() {
    // istioctl asks on the port of the pod's `prometheus.io/port` annotation; nothing listens on
    // 15099 in this pod.
    let played = PlayedIstiod::new();
    let server = primary(&played, "Running", json!({"prometheus.io/port": "15099"}));
    let err = istiod::proxies(&server.client(), ISTIO_NAMESPACE)
        .await
        .expect_err("nothing listens");
    // The kubelet writes its refusal on the error channel and closes at once (kubernetes
    // `pkg/kubelet/cri/streaming/portforward/websocket.go`, `portForward`); kube's forwarder may end
    // on the request it was sending before it reads that message, so either wording can come.
    let refused = "pod istiod-5d8f7c9b4-x2x7q: port-forward to port 15099: error forwarding port 15099 to pod istiod-5d8f7c9b4-x2x7q";
    let closed = "pod istiod-5d8f7c9b4-x2x7q: port 15099 closed the connection without an answer";
    assert!(
        (err.starts_with(refused) && err.contains("connection refused")) || err == closed,
        "{err}"
    );
}

/// istiod with two replicas: each pod knows only the proxies connected to it and keeps its own
/// view of the remote clusters, so meshctl asks every running pod (as istioctl's
/// `AllDiscoveryDo`): both pods' proxies are counted, and a remote is synced only when both say so.
#[tokio::test]
async fn every_istiod_replica_is_asked_and_their_answers_joined() {
    let played = PlayedIstiod::new();
    let server = primary(&played, "Running", json!({}));
    let second = "istiod-5d8f7c9b4-z9z9z";
    server.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": second, "namespace": "istio-system", "labels": {"app": "istiod", "istio": "pilot"}},
        "spec": {"nodeName": "cluster1-control-plane", "containers": [{"name": "discovery", "image": "istio/pilot"}]},
        "status": {"phase": "Running"}}));
    played.set_syncz_handler(std::sync::Arc::new(|pod: &str| {
        let proxy = if pod == "istiod-5d8f7c9b4-x2x7q" {
            "curl-1.sample"
        } else {
            "curl-2.sample"
        };
        Box::pin(
            async move { json!([{"cluster_id": "cluster2", "proxy": proxy, "istio_version": "1.31.1"}]) },
        )
    }));
    let client = server.client();
    let proxies = istiod::proxies(&client, ISTIO_NAMESPACE).await.unwrap();
    let mut listed: Vec<&str> = proxies.value.iter().map(|p| p.proxy_id.as_str()).collect();
    listed.sort();
    assert_eq!(listed, ["curl-1.sample", "curl-2.sample"]);

    // The first replica has synced cluster2, the second has not.
    played.set_remote_cluster_status_of_pod(second, "cluster2", "syncing");
    let (err, missing) = istiod::remote_clusters_synced(
        &client,
        ISTIO_NAMESPACE,
        None,
        &["cluster2".into()],
        Duration::from_millis(600),
    )
    .await
    .expect_err("one replica still syncs cluster2");
    assert_eq!(
        missing,
        [("cluster2".to_string(), format!("syncing (istio-system/{second})"))]
    );
    assert!(err.to_string().contains(second), "{err}");
    played.set_remote_cluster_status_of_pod(second, "cluster2", "synced");
    let asked = istiod::remote_clusters_synced(
        &client,
        ISTIO_NAMESPACE,
        None,
        &["cluster2".into()],
        Duration::from_secs(2),
    )
    .await
    .expect("both replicas synced");
    assert_eq!(
        asked,
        format!("istio-system/istiod-5d8f7c9b4-x2x7q, istio-system/{second}")
    );
}
