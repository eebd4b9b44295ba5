//! East-west gateways without a load balancer, built and removed through the executor's seams:
//! in-process API servers on loopback for the clusters, the played istioctl of
//! tests/support/played_istioctl.rs for istioctl (its gateway Service follows the IstioOperator's
//! `k8s.service`, as the gateway chart renders it).
//!
//! Not covered here: calls across the mesh (`verify`) — they need pods that run; the envtest
//! suite's data-plane play routes by LoadBalancer addresses only.

mod support;

use serde_json::Value;
use support::istio_lab::lab;

/// cluster1's gateway is a NodePort reached at a node's address; cluster2's sits behind an
/// address the user gives in front of a LoadBalancer; cluster3's is a plain LoadBalancer.
const DECLARED: &str = "provider: existing
clusters:
  - {context: cluster1, eastwest: {service: NodePort, address: 192.0.2.10}}
  - {context: cluster2, eastwest: {address: gw.example.com}}
  - {context: cluster3}
";

/// The addresses the gateways are declared at once the topology is read. meshctl dials a declared
/// address to say whether it answers, and a test may dial loopback only; a topology refuses these
/// (no other cluster could reach them), so they replace the valid ones above after it is read.
const NODE: &str = "127.0.0.1";
const FRONT: &str = "localhost";

fn declared_on_loopback() -> support::istio_lab::Lab {
    let mut lab = lab(DECLARED);
    lab.mesh.clusters[0].eastwest.address = Some(NODE.into());
    lab.mesh.clusters[1].eastwest.address = Some(FRONT.into());
    lab
}

fn control_plane(lab: &support::istio_lab::Lab, cluster: &str) -> Value {
    let text = std::fs::read_to_string(
        lab.dir
            .plan()
            .join(format!("{cluster}/05-istio/control-plane.yaml")),
    )
    .unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_nodeport_and_a_declared_gateway_are_built_recorded_converge_and_are_removed() {
    let lab = declared_on_loopback();
    lab.build("1.31.1").await;

    // The NodePort gateway: its Service's type and node port, as meshctl.yaml declares them.
    let service = lab
        .server("cluster1")
        .object("v1", "services", "istio-system", "istio-eastwestgateway")
        .unwrap();
    assert_eq!(service["spec"]["type"], "NodePort");
    let tls = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 15443)
        .cloned()
        .unwrap();
    assert_eq!(tls["nodePort"], 31443);
    // Every istiod is told the declared gateways (meshNetworks), the discovered one is not listed.
    for cluster in ["cluster1", "cluster2", "cluster3"] {
        let networks = &control_plane(&lab, cluster)["spec"]["values"]["global"]["meshNetworks"];
        assert_eq!(networks["network1"]["gateways"][0]["address"], NODE, "{cluster}");
        assert_eq!(networks["network1"]["gateways"][0]["port"], 31443, "{cluster}");
        assert_eq!(networks["network2"]["gateways"][0]["address"], FRONT, "{cluster}");
        assert!(networks.get("network3").is_none(), "{cluster}: {networks}");
    }
    // The addresses the remotes and status use: the declared ones, and the LoadBalancer's.
    let state = lab.state();
    assert_eq!(state.clusters["cluster1"].eastwest_ip.as_deref(), Some(NODE));
    assert_eq!(state.clusters["cluster2"].eastwest_ip.as_deref(), Some(FRONT));
    assert!(
        state.clusters["cluster3"]
            .eastwest_ip
            .as_deref()
            .is_some_and(|a| a.starts_with("172.18.255."))
    );

    // Run again: every phase is in place in every cluster, no istioctl runs.
    let (end, again, said) = lab.up("1.31.1").await;
    assert_eq!(
        end,
        meshctl::executor::RunEnd::Finished { changed: false },
        "{}",
        said.join("\n")
    );
    let installs: Vec<String> = again
        .calls()
        .into_iter()
        .filter(|c| c.contains(" install "))
        .collect();
    assert!(installs.is_empty(), "{installs:?}\n{}", said.join("\n"));

    // `down --uninstall`: each cluster's IstioOperators uninstalled, the gateway with its own.
    let tools = lab.istioctl("1.31.1");
    let removed = lab.uninstall(tools.as_ref()).await;
    for (cluster, what) in &removed {
        assert!(
            what.iter().any(|w| w.contains("eastwest-gateway.yaml")),
            "{cluster}: {what:?}"
        );
        assert!(
            what.iter().any(|w| w.contains("control-plane.yaml")),
            "{cluster}: {what:?}"
        );
        let server = lab.server(cluster);
        for (plural, name) in [
            ("deployments", "istio-eastwestgateway"),
            ("deployments", "istiod"),
        ] {
            assert!(
                server.object("apps/v1", plural, "istio-system", name).is_none(),
                "{cluster}: {name}"
            );
        }
        assert!(
            server
                .object("v1", "services", "istio-system", "istio-eastwestgateway")
                .is_none(),
            "{cluster}"
        );
    }
}
