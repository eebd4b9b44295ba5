//! The east-west gateway's address where the load balancer gives a hostname and no IP (AWS
//! ELB/NLB): meshctl waits for an IP or a hostname, as Istio takes a gateway's address.

mod support;

use std::time::Duration;

use meshctl::kube::wait;
use serde_json::json;
use support::memory_apiserver::MemoryApiServer;

fn gateway(ingress: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "tls", "port": 15443}]},
        "status": {"loadBalancer": {"ingress": ingress}}})
}

#[tokio::test]
async fn a_load_balancer_that_gives_only_a_hostname_is_an_address() {
    let server = MemoryApiServer::new();
    server.put(gateway(
        json!([{"hostname": "a1b2c3-123456.elb.eu-west-1.amazonaws.com"}]),
    ));
    let address = wait::load_balancer_address(
        &server.client(),
        "istio-system",
        "istio-eastwestgateway",
        Duration::from_secs(2),
    )
    .await
    .expect("a hostname is an address");
    assert_eq!(address, "a1b2c3-123456.elb.eu-west-1.amazonaws.com");
    assert_eq!(
        wait::describe_address(&address),
        "LoadBalancer hostname a1b2c3-123456.elb.eu-west-1.amazonaws.com"
    );
    assert_eq!(
        meshctl::kube::inspect::service_address(
            &server.client(),
            "istio-system",
            meshctl::topology::GATEWAY_NAME
        )
        .await
        .as_deref(),
        Some("a1b2c3-123456.elb.eu-west-1.amazonaws.com")
    );
}

#[tokio::test]
async fn an_ip_comes_first_and_empty_entries_are_skipped() {
    let server = MemoryApiServer::new();
    server.put(gateway(
        json!([{"ip": "", "hostname": ""}, {"ip": "172.18.255.1", "hostname": "lb.example"}]),
    ));
    let address = wait::load_balancer_address(
        &server.client(),
        "istio-system",
        "istio-eastwestgateway",
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(address, "172.18.255.1");
    assert_eq!(wait::describe_address(&address), "LoadBalancer IP 172.18.255.1");
}

#[tokio::test]
async fn a_pending_load_balancer_is_waited_for_until_its_address_arrives() {
    let server = MemoryApiServer::new();
    server.put(gateway(json!([])));
    let client = server.client();
    let waiting = tokio::spawn(async move {
        wait::load_balancer_address(
            &client,
            "istio-system",
            "istio-eastwestgateway",
            Duration::from_secs(5),
        )
        .await
    });
    // The cloud controller publishes the hostname later: the watch sees it.
    tokio::task::yield_now().await;
    server.put(gateway(json!([{"hostname": "lb-7.example.net"}])));
    assert_eq!(waiting.await.unwrap().unwrap(), "lb-7.example.net");
}

/// A gateway at a declared address (`eastwest: {service: NodePort, address: …}`): the probe asks
/// for a NodePort Service with 15443 on the declared node port and the address recorded, not for
/// a LoadBalancer address; a LoadBalancer Service where a NodePort is declared is a difference to
/// repair.
#[tokio::test]
async fn a_declared_node_port_gateway_is_probed_for_its_service_and_record() {
    let server = MemoryApiServer::new();
    let loopback = server.serve_on_loopback();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, loopback.kubeconfig("cluster1")).unwrap();
    let mesh = meshctl::topology::Mesh::from_yaml(
        "clusters:\n  - eastwest: {service: NodePort, address: 172.18.0.2}\n  - {}\n",
        Some("m"),
    )
    .unwrap();
    let plan = meshctl::plan::Plan {
        mesh_id: "m".into(),
        provider: mesh.provider,
        clusters: Vec::new(),
        phases: Vec::new(),
        artifacts: Vec::new(),
    };
    let clients = meshctl::kube::Clients::new(Some(&kubeconfig));
    let mut state = meshctl::state::MeshState::default();
    let service_finding = |state: meshctl::state::MeshState| {
        let (mesh, plan, clients) = (&mesh, &plan, &clients);
        async move {
            let probe = meshctl::probe::Probe {
                mesh,
                cluster: &mesh.clusters[0],
                plan,
                steps: &[],
                state: &state,
                clients,
                tools: &meshctl::tools::ProcessRunner,
                memo: &meshctl::memo::Memo::default(),
            };
            meshctl::phases::probe(meshctl::plan::Phase::Eastwest, &probe)
                .await
                .into_iter()
                .find(|f| f.object == "Service istio-system/istio-eastwestgateway")
                .unwrap()
        }
    };
    let node_port = |kind: &str| {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system"},
            "spec": {"type": kind, "ports": [{"name": "tls", "port": 15443, "nodePort": 31443}]}})
    };
    use meshctl::probe::Found;
    assert_eq!(
        service_finding(state.clone()).await.found,
        Found::Missing,
        "no Service yet"
    );
    server.put(node_port("NodePort"));
    assert_eq!(
        service_finding(state.clone()).await.found,
        Found::Missing,
        "address not recorded"
    );
    state.clusters.entry("cluster1".into()).or_default().eastwest_ip = Some("172.18.0.2".into());
    let found = service_finding(state.clone()).await;
    assert_eq!(found.found, Found::Present, "{found:?}");
    assert!(found.detail.contains("172.18.0.2:31443"), "{found:?}");
    server.put(node_port("LoadBalancer"));
    assert_eq!(service_finding(state).await.found, Found::Different);
}
