//! `meshctl up --clusters N` end to end on real kube-apiservers (envtest): the fake `kind` hands
//! out real control planes, the real MetalLB manifest is applied and its webhook really called, the
//! Istio CRDs really validate what meshctl applies. See tests/support/envtest/kind.rs for what is
//! played around them.

mod support;

use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use support::envtest::block_on;
use support::envtest::kind::KindLab;
use support::fake_tools::FakeToolOptions;
use support::stderr;

/// What every cluster holds after a finished `up`, read from the real servers.
fn assert_mesh(lab: &KindLab) {
    let n = lab.planes().len();
    block_on(async {
        for (i, plane) in lab.planes().iter().enumerate() {
            let name = format!("cluster{}", i + 1);
            let client = plane.client().await;
            // metallb: this cluster's pool from the docker network, and its advertisement.
            let gvk = GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool");
            let pools: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                "metallb-system",
                &ApiResource::from_gvk_with_plural(&gvk, "ipaddresspools"),
            );
            let pool = pools.get("meshctl-pool").await.expect("pool");
            assert_eq!(
                pool.data["spec"]["addresses"][0],
                format!("172.18.{}.1-172.18.{}.254", 255 - i, 255 - i)
            );
            // certs: network label, node locality, cacerts created before istiod.
            let ns = Api::<Namespace>::all(client.clone())
                .get("istio-system")
                .await
                .unwrap();
            assert_eq!(
                ns.metadata.labels.unwrap()["topology.istio.io/network"],
                format!("network{}", i + 1)
            );
            let node = Api::<Node>::all(client.clone())
                .get(&format!("{name}-control-plane"))
                .await
                .unwrap();
            let labels = node.metadata.labels.unwrap();
            assert_eq!(
                labels["topology.kubernetes.io/region"],
                format!("region{}", i + 1)
            );
            assert_eq!(labels["topology.kubernetes.io/zone"], format!("zone{}", i + 1));
            let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
            let cacerts = secrets.get("cacerts").await.unwrap();
            let istiod =
                Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "istio-system")
                    .get("istiod")
                    .await
                    .unwrap();
            assert!(
                cacerts.metadata.creation_timestamp.unwrap().0
                    <= istiod.metadata.creation_timestamp.unwrap().0,
                "cacerts exists before istiod"
            );
            // eastwest: an address from this cluster's pool, given by MetalLB's allocator.
            let gw = Api::<Service>::namespaced(client.clone(), "istio-system")
                .get("istio-eastwestgateway")
                .await
                .unwrap();
            assert_eq!(
                gw.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0]
                    .ip
                    .as_deref(),
                Some(format!("172.18.{}.1", 255 - i).as_str())
            );
            // remote secrets: one per other cluster, carrying its docker-network address.
            for j in (0..n).filter(|j| *j != i) {
                let other = format!("cluster{}", j + 1);
                let secret = secrets
                    .get(&format!("istio-remote-secret-{other}"))
                    .await
                    .unwrap_or_else(|e| panic!("{name} lacks {other}'s remote secret: {e}"));
                let inner = String::from_utf8(secret.data.unwrap()[&other].0.clone()).unwrap();
                assert!(
                    inner.contains(&format!("server: https://172.18.0.{}:6443", j + 2)),
                    "{inner}"
                );
            }
        }
    });
}

#[test]
fn up_two_clusters_builds_the_mesh_with_the_exact_tool_calls_and_a_second_up_changes_nothing() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    let out = lab.run(&["up", "--clusters", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_mesh(&lab);

    let calls = lab.tools.calls();
    for expected in [
        "kind create cluster --name cluster1 --config cluster1/01-clusters/kind-config.yaml --wait 30s",
        "kind create cluster --name cluster2 --config cluster2/01-clusters/kind-config.yaml --wait 30s",
        "kind get kubeconfig --name cluster1",
        "docker inspect --format {{json .NetworkSettings.Networks}} cluster2-control-plane",
        "docker network inspect kind",
        "istioctl version --remote=false",
        "istioctl install -y --context cluster1 -f cluster1/04-istio/control-plane.yaml --readiness-timeout 30s",
        "istioctl install -y --context cluster2 -f cluster2/05-eastwest/eastwest-gateway.yaml --readiness-timeout 30s",
    ] {
        assert!(
            calls.iter().any(|c| c == expected),
            "missing `{expected}` in:\n{}",
            calls.join("\n")
        );
    }
    let state = lab.state();
    assert_eq!(
        state["createdKindClusters"],
        serde_json::json!(["cluster1", "cluster2"])
    );
    assert_eq!(
        state["clusters"]["cluster2"]["apiEndpoint"],
        "https://172.18.0.3:6443"
    );
    assert_eq!(state["clusters"]["cluster1"]["eastwestIp"], "172.18.255.1");
    let text = stderr(&out);
    assert!(
        text.contains("EAST-WEST IP") && text.contains("172.18.254.1") && text.contains("meshctl verify"),
        "{text}"
    );

    // Second run: nothing is created, installed or written; only the docker network is read.
    let calls_before = lab.tools.calls().len();
    let writes_before = lab.writes();
    let again = lab.run(&["up", "--clusters", "2"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("nothing to change"), "{}", stderr(&again));
    let new_calls: Vec<String> = lab.tools.calls()[calls_before..].to_vec();
    assert!(
        new_calls.iter().all(|c| c == "docker network inspect kind"),
        "only a read: {new_calls:?}"
    );
    assert_eq!(lab.writes(), writes_before, "no API writes on a finished mesh");
}
