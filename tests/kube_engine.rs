//! The apply/wait/retry engine against the fake API server, through an ordinary kubeconfig.

mod support;

use std::time::Duration;

use meshctl::kube::apply::{Applier, Change};
use meshctl::kube::retry::RetryPolicy;
use meshctl::kube::{KubeError, connect, wait};
use meshctl::plan::Condition;
use serde_json::json;
use support::fake_api::{FakeCluster, kubeconfig};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: cacerts, namespace: istio-system}
stringData: {a.pem: "A"}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system, labels: {topology.istio.io/network: network1}}
"#;

struct Env {
    cluster: FakeCluster,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn env(name: &str) -> Env {
    let cluster = FakeCluster::start(name);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig(&[&cluster])).unwrap();
    Env {
        cluster,
        _dir: dir,
        path,
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        attempts: 6,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn apply_orders_namespaces_first_and_a_second_apply_changes_nothing() {
    let e = env("c1");
    let client = connect(Some(&e.path), "c1").await.unwrap();
    let applier = Applier::new(client).with_policy(fast());
    let first = applier.apply_yaml(MANIFEST, "test.yaml").await.unwrap();
    assert_eq!(
        first[0].object, "Namespace istio-system",
        "namespace applied before the secret in it"
    );
    assert!(first.iter().all(|a| a.change == Change::Created));
    let rv = e.cluster.get("", "secrets", "istio-system", "cacerts").unwrap()["metadata"]["resourceVersion"]
        .clone();

    let second = applier.apply_yaml(MANIFEST, "test.yaml").await.unwrap();
    assert!(second.iter().all(|a| a.change == Change::Unchanged), "{second:?}");
    let after = e.cluster.get("", "secrets", "istio-system", "cacerts").unwrap();
    assert_eq!(
        after["metadata"]["resourceVersion"], rv,
        "resourceVersion unchanged"
    );
    assert_eq!(after["data"]["a.pem"], "QQ==", "stringData stored as data");

    let changed = applier
        .apply_yaml(&MANIFEST.replace("\"A\"", "\"B\""), "test.yaml")
        .await
        .unwrap();
    assert!(changed.iter().any(|a| a.change == Change::Updated));
    let patches = e
        .cluster
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH") && r.contains("fieldManager=meshctl"))
        .count();
    assert_eq!(
        patches, 6,
        "every write is a server-side apply with the meshctl field manager"
    );
}

#[tokio::test]
async fn custom_resources_apply_in_the_same_batch_as_their_crd() {
    let e = env("c1");
    let upstream = support::schema::upstream_dir();
    let crd = match &upstream {
        Some(dir) => std::fs::read_to_string(dir.join("metallb/v0.16.1/metallb.io_ipaddresspools.yaml")).unwrap(),
        None => "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: ipaddresspools.metallb.io}\nspec: {group: metallb.io, scope: Namespaced, names: {kind: IPAddressPool, plural: ipaddresspools, singular: ipaddresspool}, versions: [{name: v1beta1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]}\n".into(),
    };
    let docs = format!(
        "{crd}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: metallb-system}}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p, namespace: metallb-system}}\nspec: {{addresses: [172.18.255.1-172.18.255.254]}}\n"
    );
    let client = connect(Some(&e.path), "c1").await.unwrap();
    // The pool comes before its CRD in discovery order but is applied after it is Established.
    let applied = Applier::new(client)
        .with_policy(fast())
        .apply_yaml(&docs, "metallb.yaml")
        .await
        .unwrap();
    assert_eq!(applied.len(), 3);
    let pool = e
        .cluster
        .get("metallb.io", "ipaddresspools", "metallb-system", "p")
        .unwrap();
    assert_eq!(pool["spec"]["addresses"][0], "172.18.255.1-172.18.255.254");
}

#[tokio::test]
async fn an_unknown_kind_is_named_in_the_error() {
    let e = env("c1");
    let client = connect(Some(&e.path), "c1").await.unwrap();
    let err = Applier::new(client)
        .with_policy(fast())
        .apply_yaml(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: default}\n",
            "gw.yaml",
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("gw.yaml") && err.to_string().contains("networking.istio.io/v1 Gateway"),
        "{err}"
    );
}

#[tokio::test]
async fn retries_survive_refused_connections_and_5xx_429_409() {
    let e = env("c1");
    let client = connect(Some(&e.path), "c1").await.unwrap();
    let applier = Applier::new(client).with_policy(fast());
    e.cluster.refuse_next_connections(2);
    e.cluster.fail_next_requests(&[500, 429, 409, 503]);
    let applied = applier.apply_yaml(MANIFEST, "test.yaml").await.unwrap();
    assert_eq!(applied.len(), 2);
    assert!(e.cluster.get("", "secrets", "istio-system", "cacerts").is_some());
}

#[tokio::test]
async fn permanent_failures_fail_at_once_with_the_servers_message() {
    let e = env("c1");
    let client = connect(Some(&e.path), "c1").await.unwrap();
    let applier = Applier::new(client).with_policy(fast());
    // The namespace does not exist: 404 from the server, not retried.
    let err = applier
        .apply_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: nowhere}\n",
            "s.yaml",
        )
        .await
        .unwrap_err();
    match &err {
        KubeError::Rejected {
            code, message, what, ..
        } => {
            assert_eq!(*code, 404);
            assert!(message.contains("namespaces \"nowhere\" not found"), "{message}");
            assert!(what.contains("Secret nowhere/s"), "{what}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    e.cluster.fail_next_requests(&[403]);
    let before = e.cluster.requests().len();
    assert!(matches!(
        applier.apply_yaml(MANIFEST, "t.yaml").await,
        Err(KubeError::Rejected { code: 403, .. })
    ));
    assert_eq!(e.cluster.requests().len() - before, 1, "a 403 is not retried");
}

#[tokio::test]
async fn waits_succeed_when_the_condition_arrives() {
    let e = env("c1");
    let client = connect(Some(&e.path), "c1").await.unwrap();
    e.cluster.create_namespace("istio-system");
    e.cluster.create(
        "apps",
        "deployments",
        "istio-system",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istiod"}, "spec": {"selector": {}, "template": {}}}),
    );
    e.cluster.create(
        "",
        "services",
        "istio-system",
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-eastwestgateway"}, "spec": {"type": "LoadBalancer"}}),
    );
    let cluster = std::sync::Arc::new(e.cluster);
    let controller = cluster.clone();
    let playing = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        controller.mark_deployment_available("istio-system", "istiod");
        controller.set_load_balancer_ip("istio-system", "istio-eastwestgateway", "172.18.255.1");
    });
    let deploy = Condition::DeploymentAvailable {
        namespace: "istio-system".into(),
        name: "istiod".into(),
    };
    wait::wait_for(&client, &deploy, Duration::from_secs(10))
        .await
        .unwrap();
    let ip = wait::load_balancer_ip(
        &client,
        "istio-system",
        "istio-eastwestgateway",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(ip, "172.18.255.1");
    wait::wait_for(&client, &Condition::NodesReady, Duration::from_secs(5))
        .await
        .unwrap();
    playing.await.unwrap();
}

#[tokio::test]
async fn a_wait_that_times_out_names_the_object_and_what_it_last_saw() {
    let e = env("c1");
    let client = connect(Some(&e.path), "c1").await.unwrap();
    e.cluster.create_namespace("istio-system");
    e.cluster.create(
        "",
        "services",
        "istio-system",
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-eastwestgateway"}, "spec": {"type": "LoadBalancer"}}),
    );
    let lb = Condition::LoadBalancerIp {
        namespace: "istio-system".into(),
        name: "istio-eastwestgateway".into(),
    };
    let err = wait::wait_for(&client, &lb, Duration::from_millis(500))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("istio-system/istio-eastwestgateway") && err.contains("<pending>"),
        "{err}"
    );

    let missing = Condition::DeploymentAvailable {
        namespace: "istio-system".into(),
        name: "istiod".into(),
    };
    let err = wait::wait_for(&client, &missing, Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("istio-system/istiod") && err.contains("does not exist"),
        "{err}"
    );

    e.cluster.create("admissionregistration.k8s.io", "validatingwebhookconfigurations", "", json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "metallb-webhook-configuration"},
        "webhooks": [{"name": "a.metallb.io", "clientConfig": {"service": {"namespace": "metallb-system", "name": "metallb-webhook-service"}},
                      "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}));
    let hook = Condition::WebhookCaBundle {
        kind: "ValidatingWebhookConfiguration".into(),
        name: "metallb-webhook-configuration".into(),
    };
    let err = wait::wait_for(&client, &hook, Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("0 of 1 webhook(s) have a CA bundle"), "{err}");
}

#[tokio::test]
async fn webhook_endpoint_wait_follows_the_service_named_in_the_configuration() {
    let e = env("c1");
    let client = connect(Some(&e.path), "c1").await.unwrap();
    e.cluster.create_namespace("metallb-system");
    e.cluster.create("admissionregistration.k8s.io", "validatingwebhookconfigurations", "", json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "metallb-webhook-configuration"},
        "webhooks": [{"name": "a.metallb.io", "clientConfig": {"caBundle": "Q0E=", "service": {"namespace": "metallb-system", "name": "webhook-service"}},
                      "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}));
    let cluster = std::sync::Arc::new(e.cluster);
    let controller = cluster.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        controller.create("discovery.k8s.io", "endpointslices", "metallb-system", json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "webhook-service-abc", "labels": {"kubernetes.io/service-name": "webhook-service"}},
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}]}));
    });
    let cond = Condition::WebhookEndpointReady {
        kind: "ValidatingWebhookConfiguration".into(),
        name: "metallb-webhook-configuration".into(),
    };
    wait::wait_for(&client, &cond, Duration::from_secs(10))
        .await
        .unwrap();
}
