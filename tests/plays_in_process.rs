//! The plays of tests/support/envtest (run with the real-server tests) checked here, against the
//! in-process API server, for the upstream behaviour they copy, refusals included.

mod support;

use meshctl::kube::apply::Applier;
use serde_json::{Value, json};
use support::envtest::istioctl::{objects_of, owned, prune};
use support::memory_apiserver::MemoryApiServer;

fn control_plane_iop() -> Value {
    json!({"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "metadata": {"name": "control-plane"},
        "spec": {"values": {"global": {"meshID": "mesh1", "multiCluster": {"clusterName": "cluster1"}, "network": "network1"}}}})
}

fn remote_iop() -> Value {
    json!({"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "metadata": {"name": "control-plane"},
        "spec": {"profile": "remote", "values": {"global": {"meshID": "mesh1", "multiCluster": {"clusterName": "cluster2"},
            "remotePilotAddress": "172.18.255.1"}, "istiodRemote": {"injectionPath": "/inject/cluster/cluster2/net/network2"}}}})
}

fn names(server: &MemoryApiServer, gv: &str, plural: &str, ns: &str) -> Vec<String> {
    server
        .objects(gv, plural, ns)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `istioctl uninstall -f control-plane.yaml` prunes what that IstioOperator installed of the
/// components it prunes, by label (Istio 1.31 `operator/pkg/uninstall/prune.go`): never the Base
/// component (the reader ServiceAccount), never an object it did not label, never a kind outside
/// its lists (an EndpointSlice), never what another IstioOperator installed.
#[tokio::test]
async fn the_played_uninstall_prunes_by_owner_and_component_as_istioctl_does() {
    let server = MemoryApiServer::new();
    let client = server.client();
    let (objects, _) = objects_of(&control_plane_iop()).unwrap();
    let installed: Vec<Value> = objects.into_iter().map(|o| owned(o, "control-plane")).collect();
    let text = installed
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n");
    let applier = Applier::new(client.clone()).with_field_manager("istio-operator");
    applier.apply_yaml(&text, "control-plane").await.unwrap();
    // Somebody else's ConfigMap in istio-system, and a slice istioctl labelled (the remote profile's).
    applier
        .apply_yaml(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: team-settings, namespace: istio-system}\ndata: {a: b}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: istiod, namespace: istio-system, labels: {install.operator.istio.io/owning-resource: control-plane, operator.istio.io/component: Pilot}}\naddressType: IPv4\nendpoints: []\n",
            "others",
        )
        .await
        .unwrap();
    let gateway = owned(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system"}}),
        "eastwest",
    );
    applier
        .apply_yaml(&gateway.to_string(), "eastwest")
        .await
        .unwrap();

    prune(&client, "control-plane").await.unwrap();

    assert!(names(&server, "apps/v1", "deployments", "istio-system").is_empty());
    assert_eq!(
        names(&server, "v1", "services", "istio-system"),
        ["istio-eastwestgateway"]
    );
    assert_eq!(
        names(&server, "v1", "configmaps", "istio-system"),
        ["team-settings"]
    );
    assert_eq!(
        names(&server, "v1", "serviceaccounts", "istio-system"),
        ["istio-reader-service-account"],
        "Base is never pruned"
    );
    assert_eq!(
        names(&server, "discovery.k8s.io/v1", "endpointslices", "istio-system"),
        ["istiod"]
    );
    assert!(
        names(
            &server,
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            ""
        )
        .is_empty()
    );
    assert!(names(&server, "rbac.authorization.k8s.io/v1", "clusterroles", "").is_empty());
    assert_eq!(names(&server, "v1", "namespaces", ""), ["istio-system"]);
}

/// The remote profile renders no mesh ConfigMap (`configMap: false` in Istio 1.31's
/// `manifests/helm-profiles/remote.yaml`) and no istiod; its istiod Service points elsewhere.
#[test]
fn the_played_remote_profile_renders_no_mesh_config_map_and_no_istiod() {
    let (objects, _) = objects_of(&remote_iop()).unwrap();
    let kinds: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        !kinds.iter().any(|(k, _)| k == "ConfigMap" || k == "Deployment"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("Service".into(), "istiod".into())), "{kinds:?}");
    assert!(
        kinds.contains(&("EndpointSlice".into(), "istiod".into())),
        "{kinds:?}"
    );
}

/// With a hostname for `remotePilotAddress` (a cloud load balancer's), the remote's `istiod`
/// Service is an ExternalName and no EndpointSlice is rendered (Istio 1.31
/// `remote-istiod-service.yaml`, `remote-istiod-endpointslices.yaml`).
#[test]
fn the_played_remote_profile_points_at_a_hostname_through_an_external_name() {
    let mut iop = remote_iop();
    iop["spec"]["values"]["global"]["remotePilotAddress"] = json!("a1b2-123.elb.eu-west-1.amazonaws.com");
    let (objects, _) = objects_of(&iop).unwrap();
    let service = objects.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(service["spec"]["type"], "ExternalName");
    assert_eq!(
        service["spec"]["externalName"],
        "a1b2-123.elb.eu-west-1.amazonaws.com"
    );
    assert!(!objects.iter().any(|o| o["kind"] == "EndpointSlice"));
    let (with_ip, _) = objects_of(&remote_iop()).unwrap();
    let service = with_ip.iter().find(|o| o["kind"] == "Service").unwrap();
    assert!(
        service["spec"]["type"].is_null(),
        "an IP keeps a plain Service with its slice"
    );
}
