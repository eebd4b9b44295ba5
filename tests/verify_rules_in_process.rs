//! verify's checks each run under their own DestinationRule only: the rules of one check are
//! applied in every cluster before it and removed from every cluster, waited for until gone,
//! before the next check applies its own. Against in-process API servers
//! (tests/support/memory_apiserver.rs), with istiod's merge of a host's rules played as Istio
//! 1.31 does it (tests/support/played_destination_rules.rs: the oldest rule's traffic policy wins).

mod support;

use std::time::Duration;

use meshctl::kube::apply::Applier;
use meshctl::topology::Mesh;
use meshctl::verification::workloads;
use serde_json::Value;
use support::memory_apiserver::MemoryApiServer;
use support::played_destination_rules::merged;

const HOST: &str = "helloworld.sample.svc.cluster.local";

/// Two clusters in two regions, each an in-process API server that serves Istio's
/// DestinationRule and holds namespace `sample`.
async fn mesh_and_servers() -> Option<(Mesh, Vec<MemoryApiServer>, Vec<kube::Client>)> {
    let upstream = support::schema::upstream_or_skip()?;
    let crd = std::fs::read_to_string(
        upstream.join("istio/release-1.31/crds/destinationrules.networking.istio.io.yaml"),
    )
    .unwrap();
    let mesh = Mesh::for_kind(2, "mesh1").unwrap();
    assert!(
        workloads::distribute_localities(&mesh).is_some(),
        "the lab spans two regions"
    );
    let servers = vec![MemoryApiServer::new(), MemoryApiServer::new()];
    let clients: Vec<kube::Client> = servers.iter().map(MemoryApiServer::client).collect();
    for client in &clients {
        Applier::new(client.clone())
            .apply_yaml(
                &format!("{crd}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: sample}}\n"),
                "setup",
            )
            .await
            .unwrap();
    }
    Some((mesh, servers, clients))
}

fn rules(server: &MemoryApiServer) -> Vec<Value> {
    server.objects("networking.istio.io/v1", "destinationrules", "sample")
}

/// What the caller's proxy gets for the helloworld host: its locality policy's kind.
fn policy(server: &MemoryApiServer) -> &'static str {
    let Some(rule) = merged(&rules(server), HOST) else {
        return "none";
    };
    let locality = &rule["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"];
    if locality["distribute"].is_array() {
        "distribute"
    } else if locality["failover"].is_array() {
        "failover"
    } else {
        "other"
    }
}

#[tokio::test]
async fn each_check_runs_under_its_own_rule_and_leaves_none_behind() {
    let Some((mesh, servers, clients)) = mesh_and_servers().await else {
        return;
    };
    let artifacts = workloads::artifacts(&mesh).unwrap();
    let bound = Duration::from_secs(5);
    let seen = meshctl::verification::with_rules(
        &mesh,
        &clients,
        &artifacts,
        workloads::FAILOVER_FILE,
        bound,
        async { Ok(servers.iter().map(policy).collect::<Vec<_>>()) },
    )
    .await
    .unwrap();
    assert_eq!(seen, ["failover", "failover"]);
    assert!(
        servers.iter().all(|s| rules(s).is_empty()),
        "the failover rule is gone from every cluster"
    );

    let seen = meshctl::verification::with_rules(
        &mesh,
        &clients,
        &artifacts,
        workloads::DISTRIBUTE_FILE,
        bound,
        async { Ok(servers.iter().map(policy).collect::<Vec<_>>()) },
    )
    .await
    .unwrap();
    assert_eq!(
        seen,
        ["distribute", "distribute"],
        "distribute is measured under its own policy"
    );
    assert!(servers.iter().all(|s| rules(s).is_empty()));
}

#[tokio::test]
async fn a_rule_left_behind_would_decide_the_next_check_which_is_why_none_is() {
    // What `verify --failover --locality distribute` did before: the failover rule stayed while
    // distribute added its own; istiod keeps the older rule's traffic policy.
    let Some((mesh, servers, clients)) = mesh_and_servers().await else {
        return;
    };
    let artifacts = workloads::artifacts(&mesh).unwrap();
    let failover = artifacts
        .iter()
        .find(|a| a.path == format!("cluster1/verify/{}", workloads::FAILOVER_FILE))
        .unwrap();
    Applier::new(clients[0].clone())
        .apply_yaml(&failover.content, &failover.path)
        .await
        .unwrap();
    let seen = meshctl::verification::with_rules(
        &mesh,
        &clients,
        &artifacts,
        workloads::DISTRIBUTE_FILE,
        Duration::from_secs(5),
        async { Ok(policy(&servers[0])) },
    )
    .await
    .unwrap();
    assert_eq!(seen, "failover");
}

#[tokio::test]
async fn the_rules_are_removed_when_the_check_fails_and_its_error_is_kept() {
    let Some((mesh, servers, clients)) = mesh_and_servers().await else {
        return;
    };
    let artifacts = workloads::artifacts(&mesh).unwrap();
    let err = meshctl::verification::with_rules(
        &mesh,
        &clients,
        &artifacts,
        workloads::FAILOVER_FILE,
        Duration::from_secs(5),
        async { Err::<(), _>(anyhow::anyhow!("the drained pod was not replaced")) },
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "the drained pod was not replaced");
    assert!(servers.iter().all(|s| rules(s).is_empty()));
}

/// The play itself, against the merge rules it copies.
#[test]
fn the_played_merge_keeps_the_oldest_rules_traffic_policy_and_later_ones_add_subsets() {
    let host = HOST;
    let failover = serde_json::json!({"metadata": {"name": "helloworld-failover", "creationTimestamp": "2026-12-03T10:00:00Z"},
        "spec": {"host": host, "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 1}}}});
    let distribute = serde_json::json!({"metadata": {"name": "helloworld-distribute", "creationTimestamp": "2026-12-03T10:05:00Z"},
        "spec": {"host": host, "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": []}}},
            "subsets": [{"name": "v1"}]}});
    let rule = merged(&[distribute.clone(), failover.clone()], host).unwrap();
    assert_eq!(rule["metadata"]["name"], "helloworld-failover");
    assert_eq!(rule["spec"]["trafficPolicy"], failover["spec"]["trafficPolicy"]);
    assert_eq!(rule["spec"]["subsets"], serde_json::json!([{"name": "v1"}]));
    assert_eq!(
        merged(std::slice::from_ref(&distribute), host).unwrap(),
        distribute
    );
    assert!(merged(&[distribute], "other.host").is_none());
}
