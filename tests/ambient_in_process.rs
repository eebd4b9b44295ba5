//! An ambient mesh (`dataplane: ambient`) on existing clusters, built in process: the played
//! istioctl installs `profile: ambient` (istiod with the flags, istio-cni and ztunnel), istiod's
//! played controller makes the east-west gateway of the `istio-east-west` class, and a second
//! `up` finds everything in place and writes nothing.

mod support;

use meshctl::executor::RunEnd;
use meshctl::plan::Phase;
use support::istio_lab::lab;

const MESH: &str = "provider: existing
dataplane: ambient
clusters:
  - {network: network1, apiServer: 'https://10.0.0.1:6443'}
  - {network: network2, apiServer: 'https://10.0.0.2:6443'}
";

/// What `up` runs on existing clusters of an ambient mesh: no expose (it plans nothing there).
const PHASES: [Phase; 5] = support::istio_lab::MULTI_PRIMARY_PHASES;

#[tokio::test]
async fn an_ambient_mesh_converges_and_a_second_up_writes_nothing() {
    let lab = lab(MESH);
    let cas = support::fixed_cas(&lab.mesh);
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas.clone()).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    for (context, server) in &lab.servers {
        // The control plane of the ambient profile, with the flag the east-west class needs.
        let istiod = server
            .object("apps/v1", "deployments", "istio-system", "istiod")
            .unwrap();
        let env = istiod["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(env.contains("AMBIENT_ENABLE_MULTI_NETWORK"), "{context}: {env}");
        for daemonset in ["ztunnel", "istio-cni-node"] {
            assert!(
                server
                    .object("apps/v1", "daemonsets", "istio-system", daemonset)
                    .is_some(),
                "{context}: no {daemonset}"
            );
        }
        // The east-west gateway istiod made from meshctl's Gateway, programmed, and no
        // IstioOperator gateway or expose-services Gateway beside it.
        let gateway = server
            .object(
                "gateway.networking.k8s.io/v1",
                "gateways",
                "istio-system",
                "istio-eastwestgateway",
            )
            .unwrap();
        assert_eq!(gateway["spec"]["gatewayClassName"], "istio-east-west");
        let programmed = gateway["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True");
        assert!(programmed, "{context}: {gateway:#}");
        let service = server
            .object("v1", "services", "istio-system", "istio-eastwestgateway")
            .unwrap();
        assert_eq!(
            service["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
            "istio-eastwestgateway"
        );
        assert!(
            service["metadata"]["labels"]
                .get("app.kubernetes.io/managed-by")
                .is_none(),
            "istiod's Service carries the infrastructure labels only: {service:#}"
        );
        assert!(
            server
                .objects("networking.istio.io/v1", "gateways", "istio-system")
                .is_empty(),
            "{context}: an ambient mesh exposes no services through an Istio Gateway"
        );
    }
    let recorded = lab.state();
    assert!(
        recorded.clusters.values().all(|c| c.eastwest_ip.is_some()),
        "each gateway's address is recorded: {recorded:?}"
    );

    // status: ambient, and ztunnel and istio-cni named per cluster under phase istio, in place.
    let report = lab.status().await;
    assert_eq!(report["dataplane"], "ambient", "{report:#}");
    for cluster in ["cluster1", "cluster2"] {
        let istio = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cluster"] == cluster && c["phase"] == "istio")
            .unwrap();
        assert_eq!(istio["state"], "ok", "{istio:#}");
        let objects: Vec<&str> = istio["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["object"].as_str())
            .collect();
        assert!(
            objects.contains(&"DaemonSet istio-system/ztunnel")
                && objects.contains(&"DaemonSet istio-system/istio-cni-node"),
            "{cluster}: {objects:?}"
        );
    }

    let before: Vec<usize> = lab.servers.iter().map(|(_, s)| s.requests().len()).collect();
    let (end, tools, said) = lab.run("1.31.1", &PHASES, cas).await;
    assert_eq!(end, RunEnd::Finished { changed: false }, "{}", said.join("\n"));
    assert!(
        tools.calls().iter().all(|c| !c.contains("install")),
        "{:?}",
        tools.calls()
    );
    for ((context, server), from) in lab.servers.iter().zip(before) {
        let writes: Vec<String> = server
            .requests()
            .into_iter()
            .skip(from)
            .filter(|r| !r.starts_with("GET "))
            .collect();
        assert!(writes.is_empty(), "{context}: {writes:?}");
    }
}

/// Without the multi-network flag istiod registers no `istio-east-west` class: its Gateway is
/// never programmed, and `up` stops at that wait, naming it (a topology that drops the flag
/// would never get a gateway).
#[tokio::test]
async fn a_gateway_of_the_east_west_class_is_not_programmed_without_the_multi_network_flag() {
    let lab = lab(MESH);
    let cas = support::fixed_cas(&lab.mesh);
    let (end, _, said) = lab
        .run("1.31.1", &[Phase::Certs, Phase::Istio], cas.clone())
        .await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    // Take the flag out of istiod, as an install without it would leave it.
    for (_, server) in &lab.servers {
        let mut istiod = server
            .object("apps/v1", "deployments", "istio-system", "istiod")
            .unwrap();
        let env = &mut istiod["spec"]["template"]["spec"]["containers"][0]["env"];
        let kept: Vec<serde_json::Value> = env
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] != "AMBIENT_ENABLE_MULTI_NETWORK")
            .cloned()
            .collect();
        *env = serde_json::Value::Array(kept);
        server.put(istiod);
    }
    let (end, _, said) = lab.try_run("1.31.1", &[Phase::Eastwest], cas).await;
    let err = format!("{:#}", end.unwrap_err());
    assert!(
        err.contains("istio-eastwestgateway") && err.contains("not ready after"),
        "{err}\n{}",
        said.join("\n")
    );
}

/// The sample helloworld Service meshctl renders for an ambient mesh is global under the ambient
/// profile's scope rule, so the other cluster's istiod keeps it; without its label it would be
/// dropped there and no call would cross clusters.
#[test]
fn verifys_service_is_global_and_a_service_that_is_not_stays_in_its_cluster() {
    use support::played_service_scope::{ambient_profile_scopes, seen_from_another_cluster};
    let mesh = meshctl::topology::Mesh::from_yaml(MESH, None).unwrap();
    let all = meshctl::verification::workloads::artifacts(&mesh).unwrap();
    let doc = |suffix: &str| {
        let a = all.iter().find(|a| a.path.ends_with(suffix)).unwrap();
        meshctl::render::parse_documents(&a.content).unwrap()
    };
    let namespace = doc("cluster2/verify/namespace.yaml").remove(0);
    let service = doc("cluster2/verify/helloworld.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Service")
        .unwrap();
    let scopes = ambient_profile_scopes();
    assert!(
        seen_from_another_cluster(&scopes, Some(&namespace), &service),
        "{service:#}"
    );
    let mut local = service.clone();
    local["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("istio.io/global");
    assert!(!seen_from_another_cluster(&scopes, Some(&namespace), &local));
    // A namespace istiod does not know: the rule is skipped, the service stays local.
    assert!(!seen_from_another_cluster(&scopes, None, &service));
}

/// `down --uninstall` of an ambient mesh: the Gateway meshctl applied goes (istiod's Deployment and
/// Service for it are garbage collected by owner reference, which the in-process server does not
/// play), then `istioctl uninstall -f` takes istiod, istio-cni and ztunnel; the Gateway API CRDs stay.
#[tokio::test]
async fn down_removes_the_gateway_and_the_ambient_control_plane_and_keeps_gateway_api() {
    let lab = lab(MESH);
    let cas = support::fixed_cas(&lab.mesh);
    let (end, tools, said) = lab.run("1.31.1", &PHASES, cas).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    // Pods istio-cni still redirects stop it before anything goes (their traffic would go to the
    // ztunnel the uninstall removes), however they were enrolled: by their namespace's label or
    // their own. meshctl's verification namespace and pods istio-cni does not redirect (opted out
    // with `none`) do not count.
    let (_, cluster2) = &lab.servers[1];
    let namespace = |name: &str, labels: serde_json::Value| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
    let pod = |ns: &str, name: &str, labels: serde_json::Value, redirection: Option<&str>| {
        let annotations = redirection.map_or(
            serde_json::json!({}),
            |r| serde_json::json!({"ambient.istio.io/redirection": r}),
        );
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app"}]}})
    };
    cluster2.put(namespace(
        "sample",
        serde_json::json!({"istio.io/dataplane-mode": "ambient", "app.kubernetes.io/managed-by": "meshctl"}),
    ));
    cluster2.put(pod(
        "sample",
        "helloworld-0",
        serde_json::json!({}),
        Some("enabled"),
    ));
    cluster2.put(namespace(
        "shop",
        serde_json::json!({"istio.io/dataplane-mode": "ambient"}),
    ));
    cluster2.put(pod("shop", "cart-0", serde_json::json!({}), Some("enabled")));
    cluster2.put(pod(
        "shop",
        "batch-0",
        serde_json::json!({"istio.io/dataplane-mode": "none"}),
        None,
    ));
    cluster2.put(namespace("billing", serde_json::json!({})));
    cluster2.put(pod(
        "billing",
        "invoice-0",
        serde_json::json!({"istio.io/dataplane-mode": "ambient"}),
        Some("pending"),
    ));
    let refused = meshctl::uninstall::refuse_enrolled_workloads(&lab.targets())
        .await
        .unwrap_err();
    let why = format!("{refused:#}");
    assert!(
        why.contains("cluster `cluster2`: namespace `shop` (kubectl --context cluster2 label namespace shop istio.io/dataplane-mode-)")
            && why.contains("cluster `cluster2`: pod billing/invoice-0 (its own label istio.io/dataplane-mode")
            && !why.contains("sample")
            && !why.contains("batch-0")
            && why.matches("namespace `shop`").count() == 1,
        "{why}"
    );
    // Taken out of the mesh by their owners, as Istio's ambient uninstall does first; istio-cni
    // then undoes each pod and its annotation goes.
    cluster2.put(pod("shop", "cart-0", serde_json::json!({}), None));
    cluster2.put(pod("billing", "invoice-0", serde_json::json!({}), None));
    meshctl::uninstall::refuse_enrolled_workloads(&lab.targets())
        .await
        .unwrap();
    let removed = lab.uninstall(&tools).await;
    // verify's namespace, kept as `verify --keep` keeps it, goes first: its pods would lose their
    // traffic with ztunnel.
    assert_eq!(
        removed[1].1.first().map(String::as_str),
        Some("Namespace sample (verify's workloads)")
    );
    assert!(cluster2.object("v1", "namespaces", "", "sample").is_none());
    for ((context, server), (_, items)) in lab.servers.iter().zip(&removed) {
        assert!(
            items
                .iter()
                .any(|i| i == "Gateway istio-system/istio-eastwestgateway"),
            "{context}: {items:?}"
        );
        assert!(
            server
                .object(
                    "gateway.networking.k8s.io/v1",
                    "gateways",
                    "istio-system",
                    "istio-eastwestgateway"
                )
                .is_none()
        );
        for daemonset in ["ztunnel", "istio-cni-node"] {
            assert!(
                server
                    .object("apps/v1", "daemonsets", "istio-system", daemonset)
                    .is_none(),
                "{context}: {daemonset} is left; removed {items:?}"
            );
        }
        assert!(
            server
                .object("apps/v1", "deployments", "istio-system", "istiod")
                .is_none()
        );
        assert!(
            server
                .object(
                    "apiextensions.k8s.io/v1",
                    "customresourcedefinitions",
                    "",
                    "gateways.gateway.networking.k8s.io"
                )
                .is_some(),
            "{context}: the Gateway API CRDs are kept"
        );
    }
}

/// After `up`, verify's workloads in both clusters: each cluster's ztunnel (asked as `istioctl
/// ztunnel-config` asks it, through a port-forward to its admin port) sends helloworld's calls
/// to both networks, the other through its east-west gateway. With the label taken off one
/// cluster's Service, neither cluster's ztunnel sends to the other network, and meshctl's check
/// says which network each lacks.
#[tokio::test]
async fn each_ztunnel_sends_helloworld_to_every_network_only_while_it_is_global() {
    let lab = lab(MESH);
    let cas = support::fixed_cas(&lab.mesh);
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let artifacts = meshctl::verification::workloads::artifacts(&lab.mesh).unwrap();
    for (i, ((_, server), cluster)) in lab.servers.iter().zip(&lab.mesh.clusters).enumerate() {
        let applier = meshctl::kube::apply::Applier::new(server.client());
        for a in artifacts
            .iter()
            .filter(|a| a.path.starts_with(&format!("{}/verify/", cluster.name)))
        {
            if a.path.ends_with("namespace.yaml") || a.path.ends_with("helloworld.yaml") {
                applier.apply_yaml(&a.content, &a.path).await.unwrap();
            }
        }
        let version = meshctl::verification::workloads::version_of(i);
        server.put(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("helloworld-{version}-abc"), "namespace": "sample",
                         "labels": {"app": "helloworld", "version": version}},
            "spec": {"nodeName": "control-plane", "containers": [{"name": "helloworld", "image": "helloworld"}]},
            "status": {"phase": "Running", "podIP": format!("10.{}.0.5", 10 * (i + 1)),
                       "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    let host = meshctl::verification::workloads::HELLOWORLD_HOST;
    let networks = |server: &support::memory_apiserver::MemoryApiServer| {
        let client = server.client();
        async move {
            let views = meshctl::ztunnel::views_of(&client, "istio-system", host)
                .await
                .unwrap();
            assert_eq!(views.len(), 1, "{views:?}");
            views[0].networks.iter().cloned().collect::<Vec<String>>()
        }
    };
    for (context, server) in &lab.servers {
        assert_eq!(networks(server).await, ["network1", "network2"], "{context}");
    }
    // cluster2's helloworld no longer global: cluster1's ztunnel keeps only its own network.
    let other = &lab.servers[1].1;
    let mut service = other.object("v1", "services", "sample", "helloworld").unwrap();
    service["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("istio.io/global");
    other.put(service);
    assert_eq!(networks(&lab.servers[0].1).await, ["network1"]);
    let clients: Vec<kube::Client> = lab.servers.iter().map(|(_, s)| s.client()).collect();
    let checks = meshctl::verification::ztunnel_views(&lab.mesh, &clients).await;
    assert!(
        !checks[0].passed && checks[0].detail.contains("lacks network2"),
        "{checks:?}"
    );
    // And cluster2's own copy, not global, takes no endpoints of cluster1's either.
    assert!(
        !checks[1].passed && checks[1].detail.contains("lacks network1"),
        "{checks:?}"
    );
}

/// `meshctl diagnose` of an ambient mesh collects its data plane: the ztunnel and istio-cni
/// DaemonSets, the east-west Gateway with the status istiod gave it, and the logs of the node
/// agents' pods (found by their charts' labels; the sidecar mesh's `istio=eastwestgateway` finds
/// none of them).
#[tokio::test]
async fn diagnose_collects_the_ambient_data_plane() {
    let lab = lab(MESH);
    let cas = support::fixed_cas(&lab.mesh);
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let (text, _, paths) = lab.diagnose().await;
    for cluster in ["cluster1", "cluster2"] {
        let daemonsets = text(&format!("{cluster}/istio-system/daemonsets.yaml"));
        assert!(
            daemonsets.contains("name: ztunnel") && daemonsets.contains("name: istio-cni-node"),
            "{daemonsets}"
        );
        let gateways = text(&format!("{cluster}/istio-system/gateways.yaml"));
        assert!(
            gateways.contains("istio-east-west") && gateways.contains("Programmed"),
            "{gateways}"
        );
        let logs: Vec<&String> = paths
            .iter()
            .filter(|p| p.starts_with(&format!("{cluster}/logs/")))
            .collect();
        for agent in ["ztunnel-", "istio-cni-node-"] {
            assert!(logs.iter().any(|p| p.contains(agent)), "{cluster}: {logs:?}");
        }
    }
}

/// A verification pod counts as in the ambient mesh only once istio-cni says its traffic goes to
/// ztunnel (`ambient.istio.io/redirection: enabled`); `pending` (no ztunnel on its node has taken
/// it yet: cni/pkg/util/podutil.go, `AnnotatePartiallyEnrolledPod`) is waited out, and a pod
/// left there is named with what its annotation says.
#[tokio::test]
async fn a_pod_pending_redirection_is_waited_for_until_istio_cni_enables_it() {
    use meshctl::topology::Dataplane;
    let server = support::memory_apiserver::MemoryApiServer::new();
    let pod = |redirection: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "helloworld-0", "namespace": "sample", "labels": {"app": "helloworld"},
                         "annotations": {"ambient.istio.io/redirection": redirection}},
            "spec": {"containers": [{"name": "helloworld", "image": "helloworld"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    };
    server.put(pod("pending"));
    let client = server.client();
    let short = std::time::Duration::from_millis(300);
    let left =
        meshctl::verification::meshed_pod(&client, ("cluster1", Dataplane::Ambient), "app=helloworld", short)
            .await
            .unwrap_err();
    assert!(
        format!("{left:#}")
            .contains("annotation ambient.istio.io/redirection, last seen: helloworld-0: `pending`"),
        "{left:#}"
    );
    let enabling = {
        let server = server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            server.put(pod("enabled"));
        })
    };
    let name = meshctl::verification::meshed_pod(
        &client,
        ("cluster1", Dataplane::Ambient),
        "app=helloworld",
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(name, "helloworld-0");
    enabling.await.unwrap();
}

/// `verify --failover` in an ambient mesh sets ambient's own failover on every cluster's
/// helloworld Service (Istio's annotation `networking.istio.io/traffic-distribution: PreferClose`,
/// which istiod turns into ztunnel's network, region, zone preference) and takes it away
/// afterwards, leaving the rest of the Service as verify applied it.
#[tokio::test]
async fn ambient_failover_sets_prefer_close_and_takes_it_back() {
    let servers = [
        support::memory_apiserver::MemoryApiServer::new(),
        support::memory_apiserver::MemoryApiServer::new(),
    ];
    for server in &servers {
        server.put(serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "helloworld", "namespace": "sample", "labels": {"istio.io/global": "true"}},
            "spec": {"ports": [{"name": "http", "port": 5000}], "selector": {"app": "helloworld"}}}));
    }
    let clients: Vec<kube::Client> = servers.iter().map(|s| s.client()).collect();
    let distribution = |server: &support::memory_apiserver::MemoryApiServer| {
        server.object("v1", "services", "sample", "helloworld").unwrap()["metadata"]["annotations"]
            [meshctl::verification::ambient_failover::ANNOTATION]
            .clone()
    };
    meshctl::verification::ambient_failover::prefer_close(&clients, Some("PreferClose"))
        .await
        .unwrap();
    for server in &servers {
        assert_eq!(distribution(server), "PreferClose");
    }
    meshctl::verification::ambient_failover::prefer_close(&clients, None)
        .await
        .unwrap();
    for server in &servers {
        assert!(distribution(server).is_null(), "{}", distribution(server));
        let service = server.object("v1", "services", "sample", "helloworld").unwrap();
        assert_eq!(
            service["metadata"]["labels"]["istio.io/global"], "true",
            "{service:#}"
        );
        assert_eq!(service["spec"]["ports"][0]["port"], 5000);
    }
}
