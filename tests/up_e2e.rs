//! `meshctl up --clusters N` end to end on real kube-apiservers (envtest): the fake `kind` hands
//! out real control planes, the real MetalLB manifest is applied and its webhook really called, the
//! Istio CRDs really validate what meshctl applies. tests/support/envtest/kind.rs says what is played
//! around them (kind and docker themselves, istioctl, the kubelet, MetalLB's controller, istiod's
//! clusterz).

mod support;

use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;
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
            assert_eq!(
                meshctl::kube::inspect::service_address(
                    &client,
                    "istio-system",
                    meshctl::topology::GATEWAY_NAME
                )
                .await
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
        "kind create cluster --name cluster1 --config cluster1/01-clusters/kind-config.yaml --wait 60s",
        "kind create cluster --name cluster2 --config cluster2/01-clusters/kind-config.yaml --wait 60s",
        "kind get kubeconfig --name cluster1",
        "docker inspect --format {{json .NetworkSettings.Networks}} cluster2-control-plane",
        "docker network inspect kind",
        "istioctl version --remote=false",
        "istioctl install -y --context cluster1 -f cluster1/05-istio/control-plane.yaml --readiness-timeout 60s",
        "istioctl install -y --context cluster2 -f cluster2/06-eastwest/eastwest-gateway.yaml --readiness-timeout 60s",
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

    // Second run: the probes find every phase in place: no tool runs, no API writes.
    let calls_before = lab.tools.calls().len();
    let writes_before = lab.writes();
    let again = lab.run(&["up", "--clusters", "2"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("nothing to change"), "{}", stderr(&again));
    let new_calls: Vec<String> = lab.tools.calls()[calls_before..].to_vec();
    assert!(new_calls.is_empty(), "no tool runs: {new_calls:?}");
    assert_eq!(lab.writes(), writes_before, "no API writes on a finished mesh");
}

#[test]
fn up_three_clusters_makes_six_remote_secrets_and_json_events() {
    let Some(lab) = KindLab::new(3, FakeToolOptions::default()) else {
        return;
    };
    let out = lab.run(&["up", "--clusters", "3", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_mesh(&lab);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished = events.iter().filter(|e| e["event"] == "phase-finished").count();
    assert_eq!(finished, 7 * 3, "every phase in every cluster");
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary event");
    assert_eq!(summary["clusters"][2]["remoteSecrets"], "2/2");
    assert_eq!(summary["clusters"][2]["eastwestIP"], "172.18.253.1");

    // cluster3 leaves the mesh: the others' remote secrets for it are pruned; a remote secret
    // someone else applied (here for a cluster meshctl never heard of) is left alone.
    let planes = lab.planes();
    let secrets_of = |i: usize| {
        let plane = planes[i].clone();
        block_on(async move {
            let api = Api::<Secret>::namespaced(plane.client().await, "istio-system");
            let mut names: Vec<String> = api
                .list(&kube::api::ListParams::default().labels("istio/multiCluster=true"))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            names.sort();
            names
        })
    };
    let plane = planes[0].clone();
    block_on(async move {
        let theirs: Secret = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "istio-remote-secret-elsewhere", "namespace": "istio-system",
                "labels": {"istio/multiCluster": "true"}, "annotations": {"networking.istio.io/cluster": "elsewhere"}},
            "stringData": {"elsewhere": "apiVersion: v1\nkind: Config\n"}}))
        .unwrap();
        let params = kube::api::PostParams {
            field_manager: Some("kubectl-client-side-apply".into()),
            ..Default::default()
        };
        Api::<Secret>::namespaced(plane.client().await, "istio-system")
            .create(&params, &theirs)
            .await
            .unwrap();
    });
    let out = lab.run(&["up", "--clusters", "2"]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("cluster1   remote-secrets repaired: remote secret for cluster3 was different (left over: `cluster3` is no longer in the mesh)")
            && text.contains("pruned the remote secrets of cluster3"),
        "{text}"
    );
    assert_eq!(
        secrets_of(0),
        ["istio-remote-secret-cluster2", "istio-remote-secret-elsewhere"]
    );
    assert_eq!(secrets_of(1), ["istio-remote-secret-cluster1"]);
}

#[test]
fn a_failing_cluster_is_named_the_others_finish_and_up_resumes() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    lab.tools.fail("istioctl", "cluster2", true);
    let out = lab.run(&["up", "--clusters", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("phase istio failed in 1 of 2 cluster(s)") && text.contains("cluster `cluster2`"),
        "{text}"
    );
    assert!(
        text.contains("istioctl install -y --context cluster2") && text.contains("connection refused"),
        "the tool's command and stderr: {text}"
    );
    assert!(
        text.contains("diagnose") && text.contains(" diagnose --clusters 2"),
        "the command that collects what the clusters hold: {text}"
    );
    let state = lab.state();
    let built = |c: &str| {
        state["clusters"][c]["built"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        built("cluster1").contains(&"istio".into()),
        "cluster1 finished its istio phase"
    );
    assert!(!built("cluster2").contains(&"istio".into()));
    assert!(
        !built("cluster1").contains(&"eastwest".into()),
        "no phase runs after a failed one"
    );

    lab.tools.fail("istioctl", "cluster2", false);
    let calls_before = lab.tools.calls().len();
    let again = lab.run(&["up", "--clusters", "2"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_mesh(&lab);
    let new_calls = lab.tools.calls()[calls_before..].to_vec();
    assert!(
        !new_calls.iter().any(|c| c.starts_with("kind create")),
        "clusters are not created again: {new_calls:?}"
    );
    assert!(
        !new_calls
            .iter()
            .any(|c| c.contains("--context cluster1 -f cluster1/05-istio")),
        "cluster1's istio is not reinstalled"
    );
    assert!(
        new_calls
            .iter()
            .any(|c| c.contains("--context cluster2 -f cluster2/05-istio"))
    );
}

#[test]
fn an_existing_kind_cluster_is_reused_and_never_recorded_as_created() {
    let Some(lab) = KindLab::new(1, FakeToolOptions::default()) else {
        return;
    };
    lab.create("cluster1");
    let out = lab.run(&["up", "--clusters", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("exists, reused"), "{}", stderr(&out));
    assert!(!lab.tools.calls().iter().any(|c| c.starts_with("kind create")));
    assert_eq!(lab.state()["createdKindClusters"], serde_json::json!([]));
}

#[test]
fn istioctl_of_another_minor_version_is_refused_unless_allowed() {
    let Some(lab) = KindLab::new(
        1,
        FakeToolOptions {
            istioctl_version: "1.29.0".into(),
            ..Default::default()
        },
    ) else {
        return;
    };
    let out = lab.run(&["up", "--clusters", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("istioctl 1.29.0 does not match")
            && stderr(&out).contains("--allow-version-skew"),
        "{}",
        stderr(&out)
    );
    assert!(
        !lab.tools
            .calls()
            .iter()
            .any(|c| c.starts_with("istioctl install") || c.starts_with("kind create")),
        "refused before any cluster was created: {:?}",
        lab.tools.calls()
    );
    let out = lab.run(&["up", "--clusters", "1", "--allow-version-skew"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_users_context_of_the_same_name_stops_up_before_any_change_and_survives_down() {
    let Some(lab) = KindLab::new(1, FakeToolOptions::default()) else {
        return;
    };
    // Istio's own docs name contexts `cluster1`; this one points at the user's real cluster.
    let mine = "apiVersion: v1\nkind: Config\ncurrent-context: cluster1\nclusters:\n- name: cluster1\n  cluster: {server: https://prod.example:6443}\nusers:\n- name: cluster1\n  user: {token: mine}\ncontexts:\n- name: cluster1\n  context: {cluster: cluster1, user: cluster1}\n";
    std::fs::write(lab.kubeconfig(), mine).unwrap();
    let out = lab.run(&["up", "--clusters", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("already has a context named `cluster1` that meshctl did not create")
            && text.contains("--kubeconfig FILE"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(lab.kubeconfig()).unwrap(),
        mine,
        "untouched"
    );
    assert!(
        lab.tools.calls().is_empty(),
        "no tool ran: {:?}",
        lab.tools.calls()
    );
    let out = lab.run(&["down"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(lab.kubeconfig()).unwrap(),
        mine,
        "down leaves it too"
    );
}

#[test]
fn an_unreadable_metallb_manifest_is_refused_before_any_cluster_is_created() {
    let Some(lab) = KindLab::new(1, FakeToolOptions::default()) else {
        return;
    };
    let missing = lab.work.path().join("nowhere/metallb.yaml");
    let out = lab.run_with(
        &[
            "up",
            "--clusters",
            "1",
            "--metallb-manifest",
            missing.to_str().unwrap(),
        ],
        false,
        &[],
    );
    // A mistake in what was typed: exit 2 (docs/exit-codes.md), before any cluster is made.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--metallb-manifest") && stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!lab.tools.calls().iter().any(|c| c.starts_with("kind create")));
}

#[test]
fn kind_experimental_docker_network_is_used_for_pools_and_api_endpoints_alike() {
    let Some(lab) = KindLab::new(1, FakeToolOptions::default()) else {
        return;
    };
    // The fake docker, like kind, puts the nodes on this network and no other.
    let out = lab.run_with(
        &["up", "--clusters", "1"],
        true,
        &[("KIND_EXPERIMENTAL_DOCKER_NETWORK", "lab-net")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = lab.tools.calls();
    assert!(
        calls.iter().any(|c| c == "docker network inspect lab-net"),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c == "docker network inspect kind"),
        "{calls:?}"
    );
    assert_eq!(
        lab.state()["clusters"]["cluster1"]["apiEndpoint"],
        "https://172.18.0.2:6443",
        "the API endpoint is read on the same network"
    );
}

#[test]
fn up_fails_when_an_istiod_does_not_sync_a_peer_and_names_the_pair_and_address() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    // cluster1's istiod cannot reach cluster2's API server (e.g. a secret with a dead address).
    let out = lab.run(&["up", "--clusters", "2", "--skip", "remote-secrets"]);
    assert!(out.status.success(), "{}", stderr(&out));
    lab.proxies()[0].set_remote_cluster_status("cluster2", "timeout");
    let out = lab.run(&["up", "--clusters", "2", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("phase remote-secrets")
            && text.contains("istiod in `cluster1` reports `cluster2` timeout")
            && text.contains("points at https://172.18.0.3:6443")
            && text.contains("istioctl remote-clusters --context cluster1"),
        "{text}"
    );
    assert!(
        !text.contains("cluster `cluster2`: "),
        "cluster2's istiod sees cluster1: {text}"
    );
    // Fixed (the peer reachable again): the same `up` finishes the phase.
    lab.proxies()[0].set_remote_cluster_status("cluster2", "synced");
    let out = lab.run(&["up", "--clusters", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_kubeconfig_that_does_not_parse_is_named_as_the_fault_before_any_cluster_is_created() {
    let Some(lab) = KindLab::new(1, FakeToolOptions::default()) else {
        return;
    };
    std::fs::write(lab.kubeconfig(), "clusters: [unclosed\n").unwrap();
    let out = lab.run(&["up", "--clusters", "1"]);
    let text = stderr(&out);
    // A `--kubeconfig` that is not a kubeconfig is a mistake in the command: exit 2.
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "--kubeconfig: `{}` is not a usable kubeconfig",
            lab.kubeconfig().display()
        )),
        "{text}"
    );
    assert!(lab.tools.calls().is_empty(), "{:?}", lab.tools.calls());
    assert_eq!(
        std::fs::read_to_string(lab.kubeconfig()).unwrap(),
        "clusters: [unclosed\n",
        "left as it was"
    );
}
