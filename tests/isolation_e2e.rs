//! A cluster that fails, on real API servers (tests/support/envtest/kind.rs): its API server is
//! stopped after `up`; `status` names it, `isolate` takes it out without asking it anything, `up`
//! keeps it out, and `rejoin` puts back what isolate removed. Skips with one line where
//! KUBEBUILDER_ASSETS provides no binaries (the same flow runs in process in
//! tests/isolation_in_process.rs).

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use support::envtest::block_on;
use support::envtest::kind::KindLab;
use support::fake_tools::FakeToolOptions;
use support::{stderr, stdout};

/// The remote secrets in cluster `i`, by name, each with its kubeconfig data.
fn remote_secrets(lab: &KindLab, i: usize) -> Vec<(String, String)> {
    let plane = lab.planes()[i].clone();
    block_on(async move {
        let api = Api::<Secret>::namespaced(plane.client().await, "istio-system");
        let mut found: Vec<(String, String)> = api
            .list(&kube::api::ListParams::default().labels("istio/multiCluster=true"))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| {
                let data = s
                    .data
                    .unwrap_or_default()
                    .values()
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .collect::<String>();
                (s.metadata.name.unwrap_or_default(), data)
            })
            .collect();
        found.sort();
        found
    })
}

#[test]
fn a_stopped_cluster_is_isolated_kept_out_by_up_and_rejoined_with_its_secrets() {
    let Some(lab) = KindLab::new(3, FakeToolOptions::default()) else {
        return;
    };
    let out = lab.run(&["up", "--clusters", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before: Vec<Vec<(String, String)>> = (0..2).map(|i| remote_secrets(&lab, i)).collect();
    assert!(before[0].iter().any(|(n, _)| n == "istio-remote-secret-cluster3"));

    lab.planes()[2].stop();
    let status = lab.run(&["status", "--clusters", "3", "-o", "json"]);
    assert_eq!(status.status.code(), Some(3), "{}", stderr(&status));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let rows: Vec<&serde_json::Value> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cluster"] == "cluster3")
        .collect();
    assert_eq!(rows.len(), 1, "one line for the cluster that is down: {rows:?}");

    let out = lab.run(&["isolate", "cluster3", "--clusters", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for i in 0..2 {
        assert!(
            remote_secrets(&lab, i)
                .iter()
                .all(|(n, _)| n != "istio-remote-secret-cluster3"),
            "cluster{} still reads cluster3",
            i + 1
        );
    }
    // `up` leaves the isolated cluster alone (it does not answer) and finishes the others.
    let out = lab.run(&["up", "--clusters", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("isolated since"), "{}", stderr(&out));
    let status = lab.run(&["status", "--clusters", "3"]);
    assert!(
        stdout(&status).contains("cluster3   mesh            isolated"),
        "{}",
        stdout(&status)
    );

    // Back while it is still down: exactly what isolate removed returns.
    let out = lab.run(&["rejoin", "cluster3", "--clusters", "3", "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    for (i, was) in before.iter().enumerate() {
        assert_eq!(&remote_secrets(&lab, i), was, "cluster{}", i + 1);
    }
}
