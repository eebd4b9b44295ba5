//! `meshctl verify` end to end: after a real `up` on real apiservers (KindLab), with the sample
//! workloads scheduled, injected by a played istiod injector and run by the kubelet stand-in, and
//! the calls answered by the simulated data plane (tests/support/envtest/data_plane.rs).

mod support;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use support::envtest::block_on;
use support::envtest::kind::KindLab;
use support::fake_tools::FakeToolOptions;
use support::{stderr, stdout};

fn lab_with_mesh(n: usize) -> Option<KindLab> {
    let lab = KindLab::new(n, FakeToolOptions::default())?;
    let out = lab.run(&["up", "--clusters", &n.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    support::envtest::data_plane::install(&lab);
    Some(lab)
}

/// Deletes `istio-system/<name>` secret of cluster `i` and returns it.
fn take_secret(lab: &KindLab, i: usize, name: &str) -> Secret {
    block_on(async {
        let secrets: Api<Secret> = Api::namespaced(lab.planes()[i].client().await, "istio-system");
        let secret = secrets.get(name).await.unwrap();
        secrets.delete(name, &DeleteParams::default()).await.unwrap();
        secret
    })
}

#[test]
fn every_cluster_reaches_every_other_and_the_workloads_are_cleaned_up() {
    let Some(lab) = lab_with_mesh(3) else { return };
    let junit = lab.work.path().join("verify.xml");
    let out = lab.run(&[
        "verify",
        "--clusters",
        "3",
        "--timeout",
        "20s",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("PASS: every cluster reached every cluster"),
        "{text}"
    );
    assert!(
        text.contains("FROM \\ TO") && text.lines().filter(|l| l.starts_with("cluster")).count() == 3,
        "{text}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"9\" failures=\"0\"") && xml.contains("name=\"cluster3 -> cluster1\""),
        "{xml}"
    );
    for (plane, proxy) in lab.planes().iter().zip(lab.proxies()) {
        let ns = block_on(async {
            Api::<Namespace>::all(plane.client().await)
                .get_opt("sample")
                .await
                .unwrap()
        });
        assert!(
            ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
            "sample namespace removed without --keep"
        );
        let sent = proxy
            .requests()
            .iter()
            .filter(|r| r.contains("/pods/") && r.contains("/exec?"))
            .count();
        assert_eq!(sent, 1, "one exec per client runs all its calls");
    }
}

#[test]
fn a_missing_remote_secret_fails_verify_and_names_the_pair_and_the_fix() {
    let Some(lab) = lab_with_mesh(2) else { return };
    take_secret(&lab, 0, "istio-remote-secret-cluster2");
    let junit = lab.work.path().join("verify.xml");
    let out = lab.run(&[
        "verify",
        "--clusters",
        "2",
        "--timeout",
        "4s",
        "--junit",
        junit.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    let doc: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(doc["event"], "verify-result");
    assert_eq!(doc["passed"], false);
    assert_eq!(
        doc["report"]["matrix"]["counts"][0][1], 0,
        "cluster1 never reached cluster2"
    );
    assert!(
        doc["report"]["matrix"]["counts"][1][0].as_u64().unwrap() > 0,
        "the other direction still works"
    );
    let reason = &doc["report"]["reasons"][0];
    assert!(
        reason["object"] == "cluster1 -> cluster2"
            && reason["detail"].as_str().unwrap().contains("no remote secret")
            && reason["fix"].as_str().unwrap().ends_with("--only remote-secrets"),
        "{reason}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("no remote secret"),
        "{xml}"
    );
}

#[test]
fn a_gateway_without_an_ip_is_the_reason_given() {
    let Some(lab) = lab_with_mesh(2) else { return };
    lab.take_gateway_ip(1);
    let out = lab.run(&["verify", "--clusters", "2", "--timeout", "4s"]);
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("✗ cluster1")
            && l.contains("cluster1 -> cluster2: cluster2's east-west gateway has no LoadBalancer IP"))
            && text.contains("FAIL: 1 of 4"),
        "{text}"
    );
}

#[test]
fn failover_moves_traffic_to_the_next_region_when_the_local_instance_fails() {
    let Some(lab) = lab_with_mesh(2) else { return };
    let out = lab.run(&[
        "verify",
        "--clusters",
        "2",
        "--timeout",
        "20s",
        "--failover",
        "--keep",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("✓ failover: cluster1 drained, traffic moved to cluster2"),
        "{text}"
    );
    block_on(async {
        let client = lab.planes()[0].client().await;
        let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule");
        let rules: Api<kube::api::DynamicObject> = Api::namespaced_with(
            client.clone(),
            "sample",
            &kube::api::ApiResource::from_gvk_with_plural(&gvk, "destinationrules"),
        );
        // Each check's rule is removed once it is done, `--keep` or not: only the workloads stay.
        assert!(
            rules.get_opt("helloworld-failover").await.unwrap().is_none(),
            "the failover rule is removed after its check"
        );
        // The drained pod was replaced by a healthy one.
        let pods: Api<Pod> = Api::namespaced(client, "sample");
        let live: Vec<Pod> = pods
            .list(&ListParams::default().labels("app=helloworld"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        assert_eq!(live.len(), 1);
    });
}

#[test]
fn pods_without_a_sidecar_are_refused_with_a_hint() {
    let Some(lab) = lab_with_mesh(1) else { return };
    // istiod's injector is gone (its webhook configuration deleted): pods start without a proxy.
    block_on(async {
        let hooks: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
            Api::all(lab.planes()[0].client().await);
        hooks
            .delete("istio-sidecar-injector", &DeleteParams::default())
            .await
            .unwrap();
    });
    let out = lab.run(&["verify", "--clusters", "1", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("has no istio-proxy sidecar") && text.contains("istio-injection=enabled"),
        "{text}"
    );
    assert!(text.contains(" diagnose --clusters 1"), "{text}");
}

#[test]
fn a_pair_that_answers_only_after_the_first_round_still_passes() {
    let Some(lab) = lab_with_mesh(2) else { return };
    let secret = take_secret(&lab, 0, "istio-remote-secret-cluster2");
    // As if istiod were still syncing: the secret comes back once a first round came back
    // incomplete. The proxy logs an exec when it arrives, before it is answered, so wait for the
    // second one: it is only sent after the first round's answers were counted.
    let plane = lab.planes()[0].kubeconfig(&lab.planes()[0].name);
    let name = lab.planes()[0].name.clone();
    let proxy_log = {
        let proxy = lab.proxies()[0].clone();
        move || proxy.requests().iter().filter(|r| r.contains("/exec?")).count()
    };
    let out = std::thread::scope(|scope| {
        let restorer = scope.spawn(|| {
            let started = std::time::Instant::now();
            while proxy_log() < 2 {
                assert!(started.elapsed() < std::time::Duration::from_secs(60));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            block_on(async {
                let client = support::envtest::client_from(&plane, &name).await;
                let mut again = secret.clone();
                again.metadata = kube::api::ObjectMeta {
                    name: Some("istio-remote-secret-cluster2".into()),
                    labels: secret.metadata.labels.clone(),
                    annotations: secret.metadata.annotations.clone(),
                    ..Default::default()
                };
                Api::<Secret>::namespaced(client, "istio-system")
                    .create(&PostParams::default(), &again)
                    .await
                    .unwrap();
            });
        });
        let out = lab.run(&["verify", "--clusters", "2", "--timeout", "30s"]);
        restorer.join().unwrap();
        out
    });
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 pair(s) not answered yet"),
        "{}",
        stderr(&out)
    );
    assert!(text.contains("PASS"), "{text}");
}

/// The JSON result of a passing two-cluster `verify -o json` run whose clients were each answered,
/// and only by their own cluster.
fn answered_locally_only(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(out), stderr(out));
    let last: serde_json::Value = serde_json::from_str(stdout(out).lines().last().unwrap()).unwrap();
    let counts = &last["report"]["matrix"]["counts"];
    assert!(
        counts[0][0].as_u64().unwrap() > 0 && counts[1][1].as_u64().unwrap() > 0,
        "{counts}"
    );
    assert_eq!(
        (counts[0][1].as_u64(), counts[1][0].as_u64()),
        (Some(0), Some(0)),
        "{counts}"
    );
    last
}

#[test]
fn a_cluster_local_host_is_answered_only_by_the_callers_own_cluster() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    // Refused on a topology that does not make the host cluster-local, before touching a cluster.
    let plain = lab.run(&["verify", "--clusters", "2", "--cluster-local"]);
    assert_eq!(plain.status.code(), Some(2), "{}", stderr(&plain));
    assert!(
        stderr(&plain).contains("meshConfig.serviceSettings"),
        "{}",
        stderr(&plain)
    );

    let config = lab.work.path().join("meshctl.yaml");
    std::fs::write(
        &config,
        "clusters: [{}, {}]\nmeshConfig:\n  serviceSettings:\n    - settings: {clusterLocal: true}\n      hosts: ['*.sample.svc.cluster.local']\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = lab.run(&["up", "--config", config]);
    assert!(out.status.success(), "{}", stderr(&out));
    support::envtest::data_plane::install(&lab);
    let out = lab.run(&[
        "verify",
        "--config",
        config,
        "--cluster-local",
        "--timeout",
        "20s",
        "-o",
        "json",
    ]);
    let last = answered_locally_only(&out);
    assert_eq!(last["report"]["clusterLocal"], true);
    assert_eq!(last["passed"], true);
}

#[test]
fn per_cluster_subsets_keep_each_clusters_callers_local() {
    let Some(lab) = lab_with_mesh(2) else { return };
    let out = lab.run(&[
        "verify",
        "--clusters",
        "2",
        "--per-cluster-subsets",
        "--timeout",
        "20s",
        "--keep",
        "-o",
        "json",
    ]);
    answered_locally_only(&out);
    // The rules went into both clusters, as rendered, and came out once the calls were done
    // (`--keep` keeps the workloads, not a check's rules).
    for proxy in lab.proxies() {
        let requests = proxy.requests();
        let applied = |path: &str| requests.iter().any(|r| r.starts_with(&format!("PATCH {path}")));
        let deleted = |path: &str| requests.iter().any(|r| r.starts_with(&format!("DELETE {path}")));
        let vs = "/apis/networking.istio.io/v1/namespaces/sample/virtualservices/helloworld-per-cluster";
        let dr = "/apis/networking.istio.io/v1/namespaces/sample/destinationrules/helloworld-per-cluster";
        assert!(
            applied(vs) && applied(dr) && deleted(vs) && deleted(dr),
            "{requests:#?}"
        );
    }
    block_on(async {
        for plane in lab.planes() {
            let vs = Api::<kube::api::DynamicObject>::namespaced_with(
                plane.client().await,
                "sample",
                &kube::api::ApiResource::from_gvk_with_plural(
                    &kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
                    "virtualservices",
                ),
            )
            .get_opt("helloworld-per-cluster")
            .await
            .unwrap();
            assert!(
                vs.is_none(),
                "the subsets' VirtualService is gone after the check"
            );
        }
    });
}

/// `verify --locality distribute`: Istio's weighted locality rule (80% to the caller's own
/// locality, 20% to the other region) applied in every cluster, the split measured over at least
/// 200 calls from cluster1 and judged within the stated tolerance; the rule is removed afterwards.
#[test]
fn locality_distribute_splits_calls_by_the_weights_within_the_stated_tolerance() {
    let Some(lab) = lab_with_mesh(2) else { return };
    let out = lab.run(&[
        "verify",
        "--clusters",
        "2",
        "--locality",
        "distribute",
        "--keep",
        "--timeout",
        "30s",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("✓ locality distribute from cluster1: cluster1 80% (observed 80.0%), cluster2 20% (observed 20.0%) over 200 answers, 0 failed calls")
            && text.contains("tolerance ±10 points"),
        "{text}"
    );
    block_on(async {
        for plane in lab.planes() {
            let rules: Api<kube::api::DynamicObject> = Api::namespaced_with(
                plane.client().await,
                "sample",
                &kube::api::ApiResource::from_gvk_with_plural(
                    &kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule"),
                    "destinationrules",
                ),
            );
            assert!(
                rules.get_opt("helloworld-distribute").await.unwrap().is_none(),
                "the rule is removed after the check"
            );
        }
    });
}

/// What `scripts/smoke.sh` runs: failover, then weighted distribution, in one verify. istiod keeps
/// the older of two DestinationRules' traffic policy for a host (the played data plane merges them
/// as it does), so distribute passes only because the failover rule is gone before it is applied.
#[test]
fn failover_then_distribute_each_pass_under_their_own_rule() {
    let Some(lab) = lab_with_mesh(2) else { return };
    let out = lab.run(&[
        "verify",
        "--clusters",
        "2",
        "--failover",
        "--locality",
        "distribute",
        "--timeout",
        "30s",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("✓ failover: cluster1 drained, traffic moved to cluster2")
            && text.contains("✓ locality distribute from cluster1: cluster1 80% (observed 80.0%), cluster2 20% (observed 20.0%)"),
        "{text}"
    );
}

/// Under `discoverySelectors` that leave `sample` out by name, verify's namespace joins the
/// label selector (istiod would ignore it otherwise: the played istiod does), and under
/// `defaultServiceExportTo: [".", "istio-system"]` the callers in `sample` still see helloworld
/// and the east-west gateways still route to it; `["."]` alone on this two-network mesh, or a mesh
/// config that hides the workloads whatever verify does, is refused before any cluster is touched.
#[test]
fn discovery_selectors_and_export_defaults_are_honoured_and_verified() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    let config = lab.work.path().join("meshctl.yaml");
    let write = |mesh_config: &str| {
        std::fs::write(
            &config,
            format!("clusters: [{{}}, {{}}]\nmeshConfig:\n{mesh_config}"),
        )
        .unwrap();
    };
    write("  defaultServiceExportTo: ['~']\n");
    let cfg = config.to_str().unwrap();
    let hidden = lab.run(&["verify", "--config", cfg]);
    assert_eq!(hidden.status.code(), Some(2), "{}", stderr(&hidden));
    assert!(
        stderr(&hidden).contains("defaultServiceExportTo"),
        "{}",
        stderr(&hidden)
    );

    // Rules hidden from their own namespace: refused only when the run applies them.
    write("  defaultDestinationRuleExportTo: ['~']\n");
    let hidden = lab.run(&["verify", "--config", cfg, "--locality", "distribute"]);
    assert_eq!(hidden.status.code(), Some(2), "{}", stderr(&hidden));
    assert!(
        stderr(&hidden).contains("defaultDestinationRuleExportTo"),
        "{}",
        stderr(&hidden)
    );

    // Services visible in their own namespace only: the east-west gateways (istio-system) of this
    // two-network mesh would route to none of them, so `up` refuses before touching a cluster.
    write("  defaultServiceExportTo: ['.']\n");
    let refused = lab.run(&["up", "--config", cfg]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("meshConfig.defaultServiceExportTo")
            && stderr(&refused).contains("istio-system"),
        "{}",
        stderr(&refused)
    );

    write(concat!(
        "  discoverySelectors:\n",
        "    - matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [istio-system]}]\n",
        "    - matchLabels: {istio-discovery: enabled}\n",
        "  defaultServiceExportTo: ['.', 'istio-system']\n",
        "  defaultDestinationRuleExportTo: ['.']\n",
    ));
    let out = lab.run(&["up", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    support::envtest::data_plane::install(&lab);
    // The weighted rule applies under the narrowed default: the split proves it.
    let out = lab.run(&[
        "verify",
        "--config",
        cfg,
        "--locality",
        "distribute",
        "--timeout",
        "20s",
        "--keep",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("PASS: every cluster reached every cluster"),
        "{text}"
    );
    assert!(text.contains("✓ locality distribute from cluster1"), "{text}");
    block_on(async {
        for plane in lab.planes() {
            let ns = Api::<Namespace>::all(plane.client().await)
                .get("sample")
                .await
                .unwrap();
            assert_eq!(ns.metadata.labels.unwrap()["istio-discovery"], "enabled");
        }
    });
}
