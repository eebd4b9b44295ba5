//! The apply and wait engine against the in-process API server (tests/support/memory_apiserver.rs):
//! decisions that tests/kube_engine.rs checks against real kube-apiservers, here run everywhere,
//! CI included, where no API server binary can be installed.

mod support;

use std::time::Duration;

use meshctl::kube::KubeError;
use meshctl::kube::apply::{Applier, Change};
use meshctl::kube::retry::RetryPolicy;
use support::memory_apiserver::MemoryApiServer;

fn fast() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    }
}

/// Istio's DestinationRule CRD as release-1.31 ships it, a namespace, and a rule of that type: the
/// batch `verify --failover` applies to a cluster that has no Istio CRDs yet.
fn crd_with_its_object() -> Option<String> {
    let upstream = support::schema::upstream_or_skip()?;
    let crd = std::fs::read_to_string(
        upstream.join("istio/release-1.31/crds/destinationrules.networking.istio.io.yaml"),
    )
    .unwrap();
    Some(format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: helloworld-failover, namespace: sample}}\nspec: {{host: helloworld.sample.svc.cluster.local}}\n---\n{crd}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: sample}}\n"
    ))
}

fn discovery_requests(server: &MemoryApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| *r == "GET /apis/networking.istio.io/v1")
        .count()
}

#[tokio::test]
async fn a_custom_resource_waits_until_discovery_serves_its_just_established_crd() {
    let Some(docs) = crd_with_its_object() else {
        return;
    };
    // Discovery answers 404 three more times after the CRD is Established, as when the
    // apiserver's discovery controller has not yet worked through its queue (the flake of
    // kube_engine's verify_clears_what_an_earlier_run_left… on a busy machine).
    let server = MemoryApiServer::new().discovery_lag(3);
    let applied = Applier::new(server.client())
        .with_policy(fast())
        .apply_yaml(&docs, "failover.yaml")
        .await
        .expect("the rule applies once discovery serves its type");
    let kinds: Vec<&str> = applied.iter().map(|a| a.object.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace sample",
            "CustomResourceDefinition destinationrules.networking.istio.io",
            "DestinationRule sample/helloworld-failover"
        ]
    );
    assert!(applied.iter().all(|a| a.change == Change::Created), "{applied:?}");
    let rule = server
        .object(
            "networking.istio.io/v1",
            "destinationrules",
            "sample",
            "helloworld-failover",
        )
        .expect("the rule is stored");
    assert_eq!(rule["spec"]["host"], "helloworld.sample.svc.cluster.local");
    // It asked until discovery answered: the three 404s and the answer that served the kind.
    assert!(discovery_requests(&server) >= 4, "{:#?}", server.requests());
}

#[tokio::test]
async fn discovery_that_never_serves_the_type_ends_in_a_timeout_naming_it() {
    let Some(docs) = crd_with_its_object() else {
        return;
    };
    let server = MemoryApiServer::new().discovery_lag(u32::MAX);
    let err = Applier::new(server.client())
        .with_policy(fast())
        .with_crd_timeout(Duration::from_millis(600))
        .apply_yaml(&docs, "failover.yaml")
        .await
        .expect_err("discovery never serves networking.istio.io/v1");
    assert!(matches!(err, KubeError::Wait(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("discovery of networking.istio.io/v1 DestinationRule")
            && message.contains("networking.istio.io/v1 is not served yet (404)"),
        "{message}"
    );
    assert!(
        server
            .object(
                "networking.istio.io/v1",
                "destinationrules",
                "sample",
                "helloworld-failover"
            )
            .is_none(),
        "nothing of the type is applied"
    );
}

#[tokio::test]
async fn applying_the_same_batch_again_changes_nothing() {
    let Some(docs) = crd_with_its_object() else {
        return;
    };
    let server = MemoryApiServer::new();
    let applier = Applier::new(server.client()).with_policy(fast());
    applier.apply_yaml(&docs, "failover.yaml").await.unwrap();
    let again = applier.apply_yaml(&docs, "failover.yaml").await.unwrap();
    assert!(again.iter().all(|a| a.change == Change::Unchanged), "{again:?}");
}

/// An API server that does not answer is asked once per command, however many phases and probes
/// ask for its client (each ask used to cost the probe's bound again); `forget` asks anew.
#[tokio::test]
async fn an_api_server_that_does_not_answer_is_asked_once_per_command() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        // Accepts, then hangs up at once: a server that never answers a request.
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://{addr}'}}\ncontexts:\n- name: stuck\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{}}\n"),
    )
    .unwrap();
    let clients = meshctl::kube::Clients::new(Some(&kubeconfig));
    let (a, b) = tokio::join!(clients.get("stuck"), clients.get("stuck"));
    let c = clients.get("stuck").await;
    for result in [a, b, c] {
        assert!(
            matches!(result, Err(KubeError::Unreachable { .. })),
            "{:?}",
            result.err()
        );
    }
    let asked = accepted.load(Ordering::SeqCst);
    assert!(asked >= 1, "it was asked");
    clients.forget("stuck");
    let _ = clients.get("stuck").await;
    assert!(accepted.load(Ordering::SeqCst) > asked, "forget asks anew");
    // One connection attempt per ask at most the connector's own retries: not one per caller.
    assert!(asked <= 2, "asked {asked} times for three callers");
}
