//! `up` converges on what the clusters hold, not on local state (issue 11): on real kube-apiservers
//! (tests/support/envtest/kind.rs says what is played around them), drift in everything meshctl
//! owns is made by hand, as a user or another tool would, and a plain `up` finds it, repairs it and
//! names each repair; a healthy mesh then gets zero writes and zero tool runs.

mod support;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;
use support::envtest::block_on;
use support::envtest::kind::KindLab;
use support::fake_tools::FakeToolOptions;
use support::stderr;

fn dynamic(client: &kube::Client, group: &str, kind: &str, plural: &str, ns: &str) -> Api<DynamicObject> {
    let (group, version) = group.split_once('/').unwrap();
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// A second `up` that must find everything in place: no tool run, no API write.
fn assert_nothing_to_change(lab: &KindLab) {
    let (calls, writes) = (lab.tools.calls().len(), lab.writes());
    let out = lab.run(&["up", "--clusters", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to change"), "{}", stderr(&out));
    assert_eq!(
        lab.tools.calls()[calls..].len(),
        0,
        "{:?}",
        &lab.tools.calls()[calls..]
    );
    assert_eq!(lab.writes(), writes, "no API writes");
}

/// Secret `name`'s `key` in cluster `i` (a client lives in the runtime that made it).
fn secret_text(lab: &KindLab, i: usize, name: &str, key: &str) -> String {
    let plane = lab.planes()[i].clone();
    block_on(async {
        let client = plane.client().await;
        let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, "istio-system")
            .get(name)
            .await
            .unwrap();
        String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
    })
}

#[test]
fn a_plain_up_repairs_every_drift_in_what_meshctl_owns_and_names_each_repair() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    assert!(lab.run(&["up", "--clusters", "2"]).status.success());
    let planes = lab.planes();

    // Drift, one kind per object meshctl owns, spread over both clusters.
    block_on(async {
        let (one, two) = (planes[0].client().await, planes[1].client().await);
        let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(one.clone(), "istio-system");
        secrets
            .delete("istio-remote-secret-cluster2", &DeleteParams::default())
            .await
            .unwrap();
        secrets.delete("cacerts", &DeleteParams::default()).await.unwrap();
        let unlabel = json!({"metadata": {"labels": {"topology.istio.io/network": null}}});
        Api::<k8s_openapi::api::core::v1::Namespace>::all(two.clone())
            .patch("istio-system", &PatchParams::default(), &Patch::Merge(&unlabel))
            .await
            .unwrap();
        dynamic(
            &two,
            "networking.istio.io/v1",
            "Gateway",
            "gateways",
            "istio-system",
        )
        .delete("cross-network-gateway", &DeleteParams::default())
        .await
        .unwrap();
        let moved = json!({"spec": {"addresses": ["172.18.200.1-172.18.200.254"]}});
        dynamic(
            &one,
            "metallb.io/v1beta1",
            "IPAddressPool",
            "ipaddresspools",
            "metallb-system",
        )
        .patch("meshctl-pool", &PatchParams::default(), &Patch::Merge(&moved))
        .await
        .unwrap();
        // istiod installed from another rendering (another meshctl version, or by hand).
        let other =
            json!({"metadata": {"annotations": {"meshctl.io/installed-operator-digest": "0123abcd"}}});
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(two.clone(), "istio-system")
            .patch("istiod", &PatchParams::default(), &Patch::Merge(&other))
            .await
            .unwrap();
    });

    let calls = lab.tools.calls().len();
    let out = lab.run(&["up", "--clusters", "2"]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    for repair in [
        "cluster1   metallb        repaired: IPAddressPool metallb-system/meshctl-pool was different (spec.addresses[0] differs",
        "cluster1   certs          repaired: Secret istio-system/cacerts was missing (not found)",
        "cluster2   certs          repaired: Namespace istio-system was different (metadata.labels.topology.istio.io/network differs",
        "cluster2   istio          repaired: Deployment istio-system/istiod was different (installed from another rendering",
        "cluster2   expose         repaired: Gateway istio-system/cross-network-gateway was missing (not found)",
        "cluster1   remote-secrets repaired: remote secret for cluster2 was missing (no istio-system/istio-remote-secret-cluster2)",
    ] {
        assert!(text.contains(repair), "`{repair}` in:\n{text}");
    }
    assert!(!text.contains("every phase is in place"), "{text}");
    // Only what drifted ran: one istioctl install (cluster2's control plane), no kind, no docker.
    let new_calls = lab.tools.calls()[calls..].to_vec();
    assert_eq!(
        new_calls,
        [
            "istioctl version --remote=false",
            "istioctl install -y --context cluster2 -f cluster2/05-istio/control-plane.yaml --readiness-timeout 60s"
        ],
        "{text}"
    );
    // What the clusters hold again.
    block_on(async {
        let (one, two) = (planes[0].client().await, planes[1].client().await);
        let pool = dynamic(
            &one,
            "metallb.io/v1beta1",
            "IPAddressPool",
            "ipaddresspools",
            "metallb-system",
        )
        .get("meshctl-pool")
        .await
        .unwrap();
        assert_eq!(pool.data["spec"]["addresses"][0], "172.18.255.1-172.18.255.254");
        let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(two.clone())
            .get("istio-system")
            .await
            .unwrap();
        assert_eq!(
            ns.metadata.labels.unwrap()["topology.istio.io/network"],
            "network2"
        );
        dynamic(
            &two,
            "networking.istio.io/v1",
            "Gateway",
            "gateways",
            "istio-system",
        )
        .get("cross-network-gateway")
        .await
        .unwrap();
    });
    let certs = lab.work.path().join("state/mesh1/certs/cluster1/ca-cert.pem");
    assert_eq!(
        secret_text(&lab, 0, "cacerts", "ca-cert.pem"),
        std::fs::read_to_string(certs).unwrap(),
        "the work dir's intermediate, not a new one"
    );
    assert!(
        secret_text(&lab, 0, "istio-remote-secret-cluster2", "cluster2")
            .contains("server: https://172.18.0.3:6443")
    );

    assert_nothing_to_change(&lab);

    // --force runs every step however healthy the mesh is.
    let calls = lab.tools.calls().len();
    let out = lab.run(&["up", "--clusters", "2", "--force", "--only", "istio"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let installs = lab.tools.calls()[calls..]
        .iter()
        .filter(|c| c.starts_with("istioctl install"))
        .count();
    assert_eq!(installs, 2, "{:?}", &lab.tools.calls()[calls..]);

    // `status` finds drift the same way, and each command it prints, followed as printed, repairs it.
    block_on(async {
        let (one, two) = (planes[0].client().await, planes[1].client().await);
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(two.clone(), "istio-system")
            .delete("cacerts", &DeleteParams::default())
            .await
            .unwrap();
        dynamic(
            &one,
            "networking.istio.io/v1",
            "Gateway",
            "gateways",
            "istio-system",
        )
        .delete("cross-network-gateway", &DeleteParams::default())
        .await
        .unwrap();
        let other = json!({"metadata": {"annotations": {"meshctl.io/installed-operator-digest": null}}});
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(one.clone(), "istio-system")
            .patch(
                "istio-eastwestgateway",
                &PatchParams::default(),
                &Patch::Merge(&other),
            )
            .await
            .unwrap();
    });
    let status = lab.run(&["status", "--clusters", "2"]);
    assert_eq!(status.status.code(), Some(3), "{}", support::stdout(&status));
    let fixes = support::fixes(&status);
    let phases: Vec<&str> = fixes.iter().map(|f| f.last().unwrap().as_str()).collect();
    assert_eq!(
        phases,
        ["eastwest", "expose", "certs"],
        "{}",
        support::stdout(&status)
    );
    for fix in &fixes {
        let words: Vec<&str> = fix.iter().map(String::as_str).collect();
        let out = lab.run_as_printed(&words);
        assert!(out.status.success(), "{fix:?}: {}", stderr(&out));
    }
    let healed = lab.run(&["status", "--clusters", "2"]);
    assert_eq!(healed.status.code(), Some(0), "{}", support::stdout(&healed));
}

#[test]
fn a_recreated_cluster_and_a_moved_api_server_are_followed_by_every_remote_secret() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    assert!(lab.run(&["up", "--clusters", "2"]).status.success());

    // cluster2 deleted behind meshctl's back, as `kind delete cluster` by hand: a plain `up`
    // creates it again, builds it, and gives cluster1 a secret with the new cluster's CA.
    let old = secret_text(&lab, 0, "istio-remote-secret-cluster2", "cluster2");
    lab.kind_delete_by_hand("cluster2");
    let out = lab.run(&["up", "--clusters", "2"]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("cluster2   clusters       repaired: kind cluster `cluster2` was missing")
            && text.contains("kind cluster `cluster2` created"),
        "{text}"
    );
    assert!(
        text.contains("cluster1   remote-secrets repaired: remote secret for cluster2 was different (was issued by an earlier cluster2"),
        "{text}"
    );
    let new = secret_text(&lab, 0, "istio-remote-secret-cluster2", "cluster2");
    assert_ne!(old, new, "a new token and CA");
    assert!(
        !text.contains("cluster1   istio          repaired"),
        "cluster1 untouched: {text}"
    );

    // Docker gives cluster2's node another address (a restart, kind#2246): the kubelet reports it,
    // `up` records it and rewrites the secret that points at the old one.
    block_on(async {
        let two = lab.planes()[1].client().await;
        support::envtest::kubelet::set_internal_ip(&two, "cluster2-control-plane", "172.18.0.9").await;
    });
    std::fs::write(lab.tools.dir.path().join("ips/cluster2"), "172.18.0.9").unwrap();
    let out = lab.run(&["up", "--clusters", "2"]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("cluster2   clusters       repaired: API address on the docker network was different (recorded https://172.18.0.3:6443, but node cluster2-control-plane is now at https://172.18.0.9:6443)"),
        "{text}"
    );
    assert!(
        text.contains("cluster1   remote-secrets repaired: remote secret for cluster2 was different (points at https://172.18.0.3:6443, but cluster2's API server is at https://172.18.0.9:6443)"),
        "{text}"
    );
    assert!(
        secret_text(&lab, 0, "istio-remote-secret-cluster2", "cluster2")
            .contains("server: https://172.18.0.9:6443")
    );
    assert_eq!(
        lab.state()["clusters"]["cluster2"]["apiEndpoint"],
        "https://172.18.0.9:6443"
    );
    assert_nothing_to_change(&lab);
}
