//! `meshctl verify` end to end: after a real (fake-backed) `up`, against the simulated data plane.

mod support;

use support::fake_tools::FakeToolOptions;
use support::lab::Lab;
use support::{stderr, stdout};

fn lab_with_mesh(n: usize) -> Lab {
    let lab = Lab::new(n, FakeToolOptions::default());
    let out = lab.run(&["up", "--clusters", &n.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    support::mesh_sim::install(&lab.clusters);
    lab
}

#[test]
fn every_cluster_reaches_every_other_and_the_workloads_are_cleaned_up() {
    let lab = lab_with_mesh(3);
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
    for c in &lab.clusters {
        assert!(
            c.get("", "namespaces", "", "sample").is_none(),
            "sample namespace removed without --keep"
        );
        let sent = c
            .requests()
            .iter()
            .filter(|r| r.contains("/pods/") && r.contains("/exec?"))
            .count();
        assert_eq!(sent, 1, "one exec per client runs all its calls");
    }
}

#[test]
fn a_missing_remote_secret_fails_verify_and_names_the_pair_and_the_fix() {
    let lab = lab_with_mesh(2);
    lab.clusters[0].with_store(|s| {
        let secrets = s.resource("", "secrets").unwrap();
        s.delete(&secrets, "istio-system", "istio-remote-secret-cluster2")
            .unwrap();
    });
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
    let reason = doc["report"]["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("cluster1 -> cluster2:")
            && reason.contains("no remote secret")
            && reason.contains("--only remote-secrets"),
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
    let lab = lab_with_mesh(2);
    lab.clusters[1].with_store(|s| {
        let pools = s.resource("metallb.io", "ipaddresspools").unwrap();
        s.delete(&pools, "metallb-system", "meshctl-pool").unwrap();
    });
    lab.clusters[1].set_status(
        "",
        "services",
        "istio-system",
        "istio-eastwestgateway",
        serde_json::json!({"loadBalancer": {"ingress": null}}),
    );
    let out = lab.run(&["verify", "--clusters", "2", "--timeout", "4s"]);
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    assert!(
        text.contains("✗ cluster1 -> cluster2: cluster2's east-west gateway has no LoadBalancer IP")
            && text.contains("FAIL: 1 of 4"),
        "{text}"
    );
}

#[test]
fn failover_moves_traffic_to_the_next_region_when_the_local_instance_fails() {
    let lab = lab_with_mesh(2);
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
    let c1 = &lab.clusters[0];
    let dr = c1
        .get(
            "networking.istio.io",
            "destinationrules",
            "sample",
            "helloworld-failover",
        )
        .expect("kept with --keep");
    assert!(dr["spec"]["trafficPolicy"]["outlierDetection"].is_object());
    // The drained pod was replaced by a healthy one.
    let pods: Vec<_> = c1
        .list("", "pods")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "helloworld")
        .collect();
    assert_eq!(pods.len(), 1);
}

#[test]
fn pods_without_a_sidecar_are_refused_with_a_hint() {
    let lab = lab_with_mesh(1);
    // istiod's injector is gone (its webhook configuration deleted): pods start without a proxy.
    lab.clusters[0].with_store(|s| {
        let hooks = s
            .resource("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
            .unwrap();
        s.delete(&hooks, "", "istio-sidecar-injector").unwrap();
    });
    let out = lab.run(&["verify", "--clusters", "1", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("has no istio-proxy sidecar") && text.contains("istio-injection=enabled"),
        "{text}"
    );
}

#[test]
fn a_pair_that_answers_only_after_the_first_round_still_passes() {
    let lab = lab_with_mesh(2);
    let c1 = lab.clusters[0].clone();
    let secret = c1
        .get("", "secrets", "istio-system", "istio-remote-secret-cluster2")
        .unwrap();
    c1.with_store(|s| {
        let secrets = s.resource("", "secrets").unwrap();
        s.delete(&secrets, "istio-system", "istio-remote-secret-cluster2")
            .unwrap();
    });
    // As if istiod were still syncing: the secret comes back once a first round came back
    // incomplete. The fake logs an exec when it arrives, before it is answered, so wait for the
    // second one: it is only sent after the first round's answers were counted.
    let restorer = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        while c1.requests().iter().filter(|r| r.contains("/exec?")).count() < 2 {
            assert!(started.elapsed() < std::time::Duration::from_secs(20));
            std::thread::yield_now();
        }
        let mut again = secret.clone();
        again["metadata"] = serde_json::json!({"name": "istio-remote-secret-cluster2", "labels": {"istio/multiCluster": "true"}});
        c1.create("", "secrets", "istio-system", again);
    });
    let out = lab.run(&["verify", "--clusters", "2", "--timeout", "20s"]);
    restorer.join().unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 pair(s) not answered yet"),
        "{}",
        stderr(&out)
    );
    assert!(text.contains("PASS"), "{text}");
}
