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
        meshctl::phases::eastwest::gateway_ip(&server.client())
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
