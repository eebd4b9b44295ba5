//! The deployment models on real kube-apiservers (envtest, KindLab): `up` from a `meshctl.yaml` for
//! primary-remote on two networks and multi-primary on one network, what each cluster then holds,
//! that a second `up` changes nothing and that drift is repaired, and `verify` against the played
//! data plane (tests/support/envtest/data_plane.rs), which routes by the model the clusters really
//! hold: who configures a proxy, which networks are flat, which gateways exist.

mod support;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use support::envtest::block_on;
use support::envtest::kind::KindLab;
use support::fake_tools::FakeToolOptions;
use support::{stderr, stdout};

/// Primary `cluster1` (network1), remote `cluster2` (network2): Istio's "Install Primary-Remote on
/// different networks".
const PRIMARY_REMOTE: &str = "clusters:\n  - name: cluster1\n  - name: cluster2\n    role: remote\n";
/// Two primaries on one network: Istio's "Install Multi-Primary".
const FLAT: &str =
    "clusters:\n  - {name: cluster1, network: network1}\n  - {name: cluster2, network: network1}\n";

fn up_from(lab: &KindLab, yaml: &str) -> String {
    let cfg = lab.work.path().join("meshctl.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let out = lab.run(&["up", "--config", &cfg]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    cfg
}

/// An admin client of cluster `i` (a client lives in the runtime that made it: make one per use).
async fn client(lab: &KindLab, i: usize) -> kube::Client {
    lab.planes()[i].client().await
}

fn istio_objects(lab: &KindLab, i: usize, kind: &str, plural: &str) -> Vec<String> {
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", kind);
    block_on(async {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client(lab, i).await,
            "istio-system",
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        );
        api.list(&ListParams::default()).await
    })
    .map(|l| l.items.into_iter().filter_map(|o| o.metadata.name).collect())
    .unwrap_or_default()
}

fn remote_secrets(lab: &KindLab, i: usize) -> Vec<String> {
    block_on(async {
        Api::<Secret>::namespaced(client(lab, i).await, "istio-system")
            .list(&ListParams::default().labels("istio/multiCluster=true"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect()
    })
}

fn istiod_count(lab: &KindLab, i: usize) -> usize {
    block_on(async {
        Api::<Deployment>::namespaced(client(lab, i).await, "istio-system")
            .get_opt("istiod")
            .await
            .unwrap()
            .map_or(0, |_| 1)
    })
}

fn gateway_ip(lab: &KindLab, i: usize) -> Option<String> {
    block_on(async {
        meshctl::kube::inspect::service_address(
            &client(lab, i).await,
            "istio-system",
            meshctl::topology::GATEWAY_NAME,
        )
        .await
    })
}

/// Waits until the `sample` namespace a finished verify deleted is gone everywhere (the namespace
/// controller takes its time on a loaded machine), so the next verify's bound measures the mesh.
fn sample_namespaces_gone(lab: &KindLab) {
    for i in 0..lab.planes().len() {
        block_on(async {
            let api = Api::<Namespace>::all(client(lab, i).await);
            for _ in 0..120 {
                if api.get_opt("sample").await.unwrap().is_none() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            panic!("namespace sample of cluster{} still there after 60s", i + 1);
        });
    }
}

/// Plays the data plane, runs `verify` and expects it to pass: every pair answered, and `lines`.
fn verified(lab: &KindLab, cfg: &str, lines: &[&str]) {
    support::envtest::data_plane::install(lab);
    let out = lab.run(&["verify", "--config", cfg, "--timeout", "30s"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    for line in ["PASS: every cluster reached every cluster"].iter().chain(lines) {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
}

fn installs(lab: &KindLab) -> Vec<String> {
    lab.tools
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("istioctl install"))
        .collect()
}

#[test]
fn primary_remote_on_two_networks_is_built_in_the_docs_order_and_verified() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    // Clusters made by hand: `up` adopts them and `down` keeps them (meshctl deletes only the
    // clusters it created), so what `down --uninstall` leaves can be read at the end.
    lab.create("cluster1");
    lab.create("cluster2");
    let cfg = up_from(&lab, PRIMARY_REMOTE);

    // The remote runs no istiod; its istiod Service points at the primary's east-west gateway.
    assert_eq!(istiod_count(&lab, 0), 1);
    assert_eq!(istiod_count(&lab, 1), 0);
    let primary_gateway = gateway_ip(&lab, 0).expect("primary gateway IP");
    let slice = block_on(async {
        Api::<EndpointSlice>::namespaced(client(&lab, 1).await, "istio-system")
            .get("istiod")
            .await
            .unwrap()
    });
    assert_eq!(
        slice.endpoints.unwrap()[0].addresses,
        std::slice::from_ref(&primary_gateway)
    );
    // The remote is attached: named in its namespace, its secret in the primary, its injector's
    // CA bundle patched by the primary's istiod.
    let ns = block_on(async {
        Api::<Namespace>::all(client(&lab, 1).await)
            .get("istio-system")
            .await
            .unwrap()
    });
    assert_eq!(
        ns.metadata.annotations.unwrap()["topology.istio.io/controlPlaneClusters"],
        "cluster1"
    );
    assert_eq!(remote_secrets(&lab, 0), ["istio-remote-secret-cluster2"]);
    assert!(
        remote_secrets(&lab, 1).is_empty(),
        "a remote has no istiod to read secrets"
    );
    // Nor a CA: its proxies get their certificates from the primary's istiod, so no CA key is
    // written where nothing reads it; `certs rotate` changes the primary only.
    let remote_cacerts = block_on(async {
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client(&lab, 1).await, "istio-system")
            .get_opt("cacerts")
            .await
            .unwrap()
    });
    assert!(remote_cacerts.is_none(), "no intermediate CA key in the remote");
    let rotated = lab.run(&[
        "certs",
        "rotate",
        "--config",
        &cfg,
        "--key-type",
        "ecdsa-p256",
        "--timeout",
        "60s",
    ]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(
        stderr(&rotated).contains("cluster1") && !stderr(&rotated).contains("cluster2"),
        "{}",
        stderr(&rotated)
    );
    let hook = block_on(async {
        Api::<MutatingWebhookConfiguration>::all(client(&lab, 1).await)
            .get("istio-sidecar-injector")
            .await
            .unwrap()
    });
    let webhook = &hook.webhooks.unwrap()[0];
    assert!(
        webhook.client_config.ca_bundle.is_some(),
        "the primary took the remote over"
    );
    assert_eq!(
        webhook.client_config.service.as_ref().unwrap().path.as_deref(),
        Some("/inject/cluster/cluster2/net/network2")
    );
    // The primary exposes istiod and the services; the remote exposes nothing of its own but has a
    // gateway for its network.
    assert_eq!(
        istio_objects(&lab, 0, "Gateway", "gateways"),
        ["cross-network-gateway", "istiod-gateway"]
    );
    assert_eq!(
        istio_objects(&lab, 0, "VirtualService", "virtualservices"),
        ["istiod-vs"]
    );
    assert!(istio_objects(&lab, 1, "Gateway", "gateways").is_empty());
    assert!(gateway_ip(&lab, 1).is_some());

    // The docs' order: the primary's control plane and gateway, then the remote's install (with
    // the gateway IP in it), then the remote's gateway.
    let calls = installs(&lab);
    let at = |needle: &str| {
        calls
            .iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {calls:#?}"))
    };
    assert!(at("cluster1/06-eastwest") < at("cluster2/05-istio"), "{calls:#?}");
    assert!(at("cluster2/05-istio") < at("cluster2/06-eastwest"), "{calls:#?}");
    let rendered = std::fs::read_to_string(
        lab.work
            .path()
            .join("state/mesh1/plan/cluster2/05-istio/control-plane.yaml"),
    )
    .unwrap();
    assert!(
        rendered.contains(&format!("remotePilotAddress: \"{primary_gateway}\"")),
        "{rendered}"
    );

    // status reads the same model: everything ready, the remote included.
    let out = lab.run(&["status", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));

    // A second run finds everything in place and runs no installer.
    let before = installs(&lab).len();
    let out = lab.run(&["up", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(installs(&lab).len(), before, "{}", stderr(&out));

    // verify: calls both ways, and the remote's proxies are configured by the primary's istiod.
    verified(
        &lab,
        &cfg,
        &["PASS: cluster2's proxies are configured by cluster1's istiod"],
    );

    // Without the remote's secret the primary cannot authenticate the remote's proxies: verify
    // says so and fails.
    block_on(async {
        Api::<Secret>::namespaced(client(&lab, 0).await, "istio-system")
            .delete("istio-remote-secret-cluster2", &Default::default())
            .await
            .unwrap();
    });
    sample_namespaces_gone(&lab);
    let out = lab.run(&["verify", "--config", &cfg, "--timeout", "8s"]);
    let text = stdout(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "FAIL: cluster2's proxies are configured by cluster1's istiod (cluster1's istiod lists 0 of 2"
        ),
        "{text}\n{}",
        stderr(&out)
    );

    // down --uninstall takes back the model's pieces too: istiod's Gateway and VirtualService in
    // the primary, the remote profile (recorded on the remote's istiod Service) in the remote.
    let out = lab.run(&["down", "--config", &cfg, "--uninstall", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        lab.tools
            .calls()
            .iter()
            .any(|c| c == "istioctl uninstall -y --context cluster2 -f cluster2/05-istio/control-plane.yaml"),
        "{:#?}",
        lab.tools.calls()
    );
    assert!(istio_objects(&lab, 0, "Gateway", "gateways").is_empty());
    assert!(istio_objects(&lab, 0, "VirtualService", "virtualservices").is_empty());
    let left = block_on(async {
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(client(&lab, 1).await, "istio-system")
            .get_opt("istiod")
            .await
            .unwrap()
    });
    assert!(left.is_none(), "the remote's istiod Service is uninstalled");
}

#[test]
fn flat_multi_primary_routes_pods_between_nodes_repairs_a_lost_route_and_is_verified() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    let cfg = up_from(&lab, FLAT);
    // Each node routes the other cluster's pod and service CIDRs to the other node.
    assert_eq!(
        lab.tools.routes("cluster1-control-plane"),
        [
            ("10.20.0.0/16".to_string(), "172.18.0.3".to_string()),
            ("10.255.20.0/24".to_string(), "172.18.0.3".to_string())
        ]
    );
    assert_eq!(
        lab.tools.routes("cluster2-control-plane"),
        [
            ("10.10.0.0/16".to_string(), "172.18.0.2".to_string()),
            ("10.255.10.0/24".to_string(), "172.18.0.2".to_string())
        ]
    );
    for i in 0..2 {
        assert_eq!(istiod_count(&lab, i), 1);
        assert!(
            gateway_ip(&lab, i).is_none(),
            "a flat mesh has no east-west gateway"
        );
        assert_eq!(
            remote_secrets(&lab, i),
            [format!("istio-remote-secret-cluster{}", 2 - i)]
        );
    }
    assert!(!installs(&lab).iter().any(|c| c.contains("eastwest")));

    // A node that lost its routes (a container restart): status names the missing routes and the
    // command that restores them; up repairs them, and names each.
    lab.tools.clear_routes("cluster2-control-plane");
    let out = lab.run(&["status", "--config", &cfg]);
    let text = stdout(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("route 10.10.0.0/16 on cluster2-control-plane: missing")
            && text.contains("--only routes"),
        "{text}"
    );
    let out = lab.run(&["up", "--config", &cfg]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("repaired: route 10.10.0.0/16 on cluster2-control-plane was missing"),
        "{err}"
    );
    assert_eq!(lab.tools.routes("cluster2-control-plane").len(), 2);

    verified(&lab, &cfg, &[]);

    // Without the routes, pods of one network cannot reach each other: verify fails.
    lab.tools.clear_routes("cluster1-control-plane");
    sample_namespaces_gone(&lab);
    let out = lab.run(&["verify", "--config", &cfg, "--timeout", "8s"]);
    let text = stdout(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("cluster1 -> cluster2: both are on network network1: pods call each other directly; are the routes between their nodes in place?")
            && !text.contains("cluster2 -> cluster1"),
        "{text}\n{}",
        stderr(&out)
    );
}

/// Primary `cluster1` and remote `cluster2` on one network: Istio's "Install Primary-Remote". The
/// primary's gateway exposes istiod only; the remote has no gateway; pods call each other through
/// the kind routes; verify proves both directions and who configures the remote.
#[test]
fn primary_remote_on_one_network_is_built_without_a_services_gateway_and_verified() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    let cfg = up_from(
        &lab,
        "clusters:\n  - {name: cluster1, network: network1}\n  - {name: cluster2, network: network1, role: remote}\n",
    );
    assert_eq!(istio_objects(&lab, 0, "Gateway", "gateways"), ["istiod-gateway"]);
    assert!(gateway_ip(&lab, 0).is_some());
    assert!(
        gateway_ip(&lab, 1).is_none(),
        "a remote on the primary's network needs no gateway"
    );
    assert_eq!(lab.tools.routes("cluster2-control-plane").len(), 2);
    verified(
        &lab,
        &cfg,
        &["PASS: cluster2's proxies are configured by cluster1's istiod"],
    );
}

/// A remote cannot be installed before its primary's east-west gateway has an address (that
/// address is the remote's istiod): with the gateway skipped, `up` stops at the remote's install,
/// naming the cluster, the phase, the file and what to run, and installs nothing with a
/// placeholder in it.
#[test]
fn a_remote_whose_primary_has_no_gateway_ip_is_refused_with_the_reason() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    let cfg = lab.work.path().join("meshctl.yaml");
    std::fs::write(&cfg, PRIMARY_REMOTE).unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = lab.run(&["up", "--config", cfg, "--skip", "eastwest"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("phase istio failed in 1 of 1 cluster(s)")
            && err.contains("cluster `cluster2`")
            && err.contains("cluster2/05-istio/control-plane.yaml: the east-west gateway of `cluster1` has no IP recorded yet"),
        "{err}"
    );
    assert!(
        !installs(&lab).iter().any(|c| c.contains("cluster2/05-istio")),
        "{:#?}",
        installs(&lab)
    );
}
