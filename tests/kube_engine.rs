//! The apply/wait/retry engine against real kube-apiservers (envtest), through ordinary kubeconfigs.
//! Faults come from a proxy in front of a real server. Tests share the control planes of this binary
//! and keep apart by namespace.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshctl::kube::apply::{Applier, Change};
use meshctl::kube::retry::RetryPolicy;
use meshctl::kube::{KubeError, connect, wait};
use serde_json::json;
use support::envtest::proxy::Proxy;
use support::envtest::{ControlPlane, Envtest};

fn manifest(ns: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: cacerts, namespace: {ns}}}
stringData: {{a.pem: "A"}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{topology.istio.io/network: network1}}}}
"#
    )
}

/// The first shared control plane and a kubeconfig file for it.
struct Env {
    plane: &'static ControlPlane,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn env() -> Option<Env> {
    let envtest = Envtest::shared()?;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    envtest.write_kubeconfig(&path);
    Some(Env {
        plane: &envtest.planes[0],
        _dir: dir,
        path,
    })
}

impl Env {
    async fn client(&self) -> kube::Client {
        connect(Some(&self.path), &self.plane.name).await.unwrap()
    }

    async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&ns))
            .await
            .unwrap();
    }
}

/// `err` is the server's refusal `code`, its message holding `message`, naming the object `what`.
fn assert_rejected(err: &KubeError, wanted: u16, message_part: &str, what_part: &str) {
    match err {
        KubeError::Rejected {
            code, message, what, ..
        } => {
            assert_eq!(*code, wanted);
            assert!(message.contains(message_part), "{message}");
            assert!(what.contains(what_part), "{what}");
        }
        other => panic!("expected a rejection, got {other:?}"),
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
    let Some(e) = env() else { return };
    let ns = "ke-apply";
    let client = e.client().await;
    let applier = Applier::new(client.clone()).with_policy(fast());
    let first = applier.apply_yaml(&manifest(ns), "test.yaml").await.unwrap();
    assert_eq!(
        first[0].object,
        format!("Namespace {ns}"),
        "namespace applied before the secret in it"
    );
    assert!(first.iter().all(|a| a.change == Change::Created), "{first:?}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let rv = secrets.get("cacerts").await.unwrap().metadata.resource_version;

    let second = applier.apply_yaml(&manifest(ns), "test.yaml").await.unwrap();
    assert!(second.iter().all(|a| a.change == Change::Unchanged), "{second:?}");
    let after = secrets.get("cacerts").await.unwrap();
    assert_eq!(after.metadata.resource_version, rv, "resourceVersion unchanged");
    assert_eq!(
        after.data.unwrap()["a.pem"].0,
        b"A",
        "the real server turned stringData into data"
    );
    let managers: Vec<(String, String)> = after
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
        .collect();
    assert_eq!(
        managers,
        vec![("meshctl".to_string(), "Apply".to_string())],
        "every write is a server-side apply with the meshctl field manager"
    );

    let changed = applier
        .apply_yaml(&manifest(ns).replace("\"A\"", "\"B\""), "test.yaml")
        .await
        .unwrap();
    assert!(changed.iter().any(|a| a.change == Change::Updated), "{changed:?}");
}

#[tokio::test]
async fn custom_resources_apply_in_the_same_batch_as_their_crd() {
    let Some(e) = env() else { return };
    let Some(upstream) = support::schema::upstream_or_skip() else {
        return;
    };
    let crd =
        std::fs::read_to_string(upstream.join("metallb/v0.16.1/metallb.io_ipaddresspools.yaml")).unwrap();
    let docs = format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p, namespace: ke-crd}}\nspec: {{addresses: [172.18.255.1-172.18.255.254]}}\n---\n{crd}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ke-crd}}\n"
    );
    let client = e.client().await;
    // The pool comes first in the file, but is applied after its CRD is Established and
    // discovery has been run again.
    let applied = Applier::new(client.clone())
        .with_policy(fast())
        .apply_yaml(&docs, "metallb.yaml")
        .await
        .unwrap();
    assert_eq!(applied.len(), 3, "{applied:?}");
    let gvk = kube::api::GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool");
    let pools: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client,
        "ke-crd",
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "ipaddresspools"),
    );
    let pool = pools.get("p").await.unwrap();
    assert_eq!(pool.data["spec"]["addresses"][0], "172.18.255.1-172.18.255.254");
}

#[tokio::test]
async fn an_unknown_kind_is_named_in_the_error() {
    let Some(e) = env() else { return };
    let err = Applier::new(e.client().await)
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
async fn an_invalid_object_fails_with_the_servers_422_message() {
    let Some(e) = env() else { return };
    e.namespace("ke-invalid").await;
    let err = Applier::new(e.client().await)
        .with_policy(fast())
        .apply_yaml(
            "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: ke-invalid}\nspec: {ports: [{port: 99999}]}\n",
            "svc.yaml",
        )
        .await
        .unwrap_err();
    assert_rejected(&err, 422, "spec.ports[0].port", "Service ke-invalid/bad");
}

/// A kubeconfig file whose context goes through `proxy`.
fn proxied(proxy: &Proxy) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, proxy.kubeconfig("proxied")).unwrap();
    (dir, path)
}

#[tokio::test]
async fn retries_survive_refused_connections_and_5xx_429_409() {
    let Some(e) = env() else { return };
    let proxy = Proxy::start(e.plane);
    let (_dir, path) = proxied(&proxy);
    let client = connect(Some(&path), "proxied").await.unwrap();
    let applier = Applier::new(client.clone()).with_policy(fast());
    proxy.refuse_next_connections(2);
    proxy.fail_next_requests(&[500, 429, 409, 503]);
    let applied = applier
        .apply_yaml(&manifest("ke-retry"), "test.yaml")
        .await
        .unwrap();
    assert_eq!(applied.len(), 2);
    let secrets: Api<Secret> = Api::namespaced(e.client().await, "ke-retry");
    assert!(secrets.get_opt("cacerts").await.unwrap().is_some());
}

#[tokio::test]
async fn permanent_failures_fail_at_once_with_the_servers_message() {
    let Some(e) = env() else { return };
    let proxy = Proxy::start(e.plane);
    let (_dir, path) = proxied(&proxy);
    let applier = Applier::new(connect(Some(&path), "proxied").await.unwrap()).with_policy(fast());
    // The namespace does not exist: the real server's 404, not retried.
    let err = applier
        .apply_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: nowhere}\n",
            "s.yaml",
        )
        .await
        .unwrap_err();
    assert_rejected(&err, 404, "namespaces \"nowhere\" not found", "Secret nowhere/s");
    proxy.fail_next_requests(&[403]);
    let before = proxy.requests().len();
    assert!(matches!(
        applier.apply_yaml(&manifest("ke-forbidden"), "t.yaml").await,
        Err(KubeError::Rejected { code: 403, .. })
    ));
    assert_eq!(proxy.requests().len() - before, 1, "a 403 is not retried");
}

#[tokio::test]
async fn waits_succeed_when_the_real_controllers_or_a_status_write_deliver() {
    let Some(e) = env() else { return };
    let client = e.client().await;
    let ns = "ke-wait";
    e.namespace(ns).await;
    // A Deployment scaled to 0 is marked Available by the real deployment controller.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deploy: Deployment = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istiod"}, "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "istiod"}},
        "template": {"metadata": {"labels": {"app": "istiod"}}, "spec": {"containers": [{"name": "discovery", "image": "istio/pilot:1.31.1"}]}}}}))
    .unwrap();
    deployments.create(&PostParams::default(), &deploy).await.unwrap();
    wait::until(
        &deployments,
        wait::available(ns, "istiod"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    // MetalLB's part: the ingress IP written through the status subresource.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-eastwestgateway"}, "spec": {"type": "LoadBalancer", "ports": [{"name": "tls", "port": 15443}]}}))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let writer = {
        let services = services.clone();
        tokio::spawn(async move {
            let status =
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.1", "ipMode": "VIP"}]}}});
            services
                .patch_status(
                    "istio-eastwestgateway",
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .unwrap();
        })
    };
    let ip = wait::load_balancer_address(&client, ns, "istio-eastwestgateway", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ip, "172.18.255.1");
    writer.await.unwrap();

    // The real token controller fills a service-account token Secret.
    let token = Applier::new(client.clone())
        .with_policy(fast())
        .apply_yaml(
            &format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: reader, namespace: {ns}}}\n---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/service-account-token\nmetadata: {{name: reader-token, namespace: {ns}, annotations: {{kubernetes.io/service-account.name: reader}}}}\n"),
            "token.yaml",
        )
        .await;
    token.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let filled = wait::until_object(
        &secrets,
        wait::token_filled(ns, "reader-token"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(filled.data.unwrap().contains_key("namespace"));
}

#[tokio::test]
async fn nodes_ready_waits_for_every_registered_node() {
    let Some(envtest) = Envtest::shared() else { return };
    // The third control plane: the only test that registers nodes there.
    let client = envtest.planes[2].client().await;
    support::envtest::kubelet::register_node(&client, "ke-node-1", &BTreeMap::new()).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    wait::until(&nodes, wait::nodes_ready(), Duration::from_secs(10))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_wait_that_times_out_names_the_object_and_what_it_last_saw() {
    let Some(e) = env() else { return };
    let client = e.client().await;
    let ns = "ke-timeout";
    e.namespace(ns).await;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-eastwestgateway"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 15443}]}}))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let err = wait::load_balancer_address(&client, ns, "istio-eastwestgateway", Duration::from_millis(800))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{ns}/istio-eastwestgateway")) && err.contains("<pending>"),
        "{err}"
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let err = wait::until(
        &deployments,
        wait::available(ns, "istiod"),
        Duration::from_millis(500),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("{ns}/istiod")) && err.contains("does not exist"),
        "{err}"
    );

    Applier::new(client.clone())
        .with_policy(fast())
        .apply_yaml(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: ke-timeout-webhook}\nwebhooks: [{name: a.metallb.io, clientConfig: {service: {namespace: ke-timeout, name: metallb-webhook-service}}, sideEffects: None, admissionReviewVersions: [v1], objectSelector: {matchLabels: {never: matches}}}]\n",
            "hook.yaml",
        )
        .await
        .unwrap();
    let err = wait::webhook_service(
        &client,
        "ValidatingWebhookConfiguration",
        "ke-timeout-webhook",
        "ke-timeout-webhook has its CA bundle",
        Duration::from_millis(500),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("0 of 1 webhook(s) have a CA bundle"), "{err}");
}

#[tokio::test]
async fn webhook_endpoint_wait_follows_the_service_named_in_the_configuration() {
    let Some(e) = env() else { return };
    let client = e.client().await;
    let ns = "ke-endpoint";
    e.namespace(ns).await;
    Applier::new(client.clone())
        .with_policy(fast())
        .apply_yaml(
            &format!("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: ke-endpoint-webhook}}\nwebhooks: [{{name: a.metallb.io, clientConfig: {{caBundle: Q0E=, service: {{namespace: {ns}, name: webhook-service}}}}, sideEffects: None, admissionReviewVersions: [v1], objectSelector: {{matchLabels: {{never: matches}}}}}}]\n"),
            "hook.yaml",
        )
        .await
        .unwrap();
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client.clone(), ns);
    let writer = tokio::spawn(async move {
        let slice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "webhook-service-abc", "labels": {"kubernetes.io/service-name": "webhook-service"}},
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}]}))
        .unwrap();
        slices.create(&PostParams::default(), &slice).await.unwrap();
    });
    wait::webhook_endpoint_ready(
        &client,
        "ValidatingWebhookConfiguration",
        "ke-endpoint-webhook",
        "the service behind ke-endpoint-webhook has a ready endpoint",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    writer.await.unwrap();
}

#[tokio::test]
async fn exec_returns_stdout_while_the_command_floods_stderr() {
    use support::envtest::proxy::{ExecRequest, ExecResult};
    let Some(e) = env() else { return };
    let proxy = Proxy::start(e.plane);
    // 64 KiB on stderr: kube's remote-command pipes hold about 1 KiB each, so an exec that reads
    // only stdout blocks for good once stderr fills (the deadlock of issue 9, item 3).
    proxy.set_exec_handler(std::sync::Arc::new(|req: ExecRequest| {
        Box::pin(async move {
            ExecResult {
                stdout: format!("ran {}\n", req.command.join(" ")),
                stderr: "curl: (28) Operation timed out after 5000 milliseconds\n".repeat(1200),
                exit_code: 0,
            }
        })
    }));
    let (_dir, path) = proxied(&proxy);
    let client = connect(Some(&path), "proxied").await.unwrap();
    let out = meshctl::verification::exec(
        &client,
        "curl-1",
        "curl",
        vec!["sh".into(), "-c".into(), "echo hi".into()],
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(out, "ran sh -c echo hi\n");
}

#[tokio::test]
async fn verify_clears_what_an_earlier_run_left_and_waits_until_the_namespace_is_gone() {
    let Some(envtest) = Envtest::shared() else { return };
    let Some(upstream) = support::schema::upstream_or_skip() else {
        return;
    };
    // The second control plane: the only test that uses namespace `sample` there.
    let client = envtest.planes[1].client().await;
    let kubelet = support::envtest::kubelet::run_pods(client.clone(), "verify-node".into());
    support::envtest::kubelet::register_node(&client, "verify-node", &BTreeMap::new()).await;
    let crd = std::fs::read_to_string(
        upstream.join("istio/release-1.31/crds/destinationrules.networking.istio.io.yaml"),
    )
    .unwrap();
    // What `verify --failover --keep` leaves: the namespace, a running pod, the failover rule.
    let leftovers = format!(
        "{crd}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: sample, labels: {{app.kubernetes.io/managed-by: meshctl}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: helloworld-failover, namespace: sample}}\nspec: {{host: helloworld.sample.svc.cluster.local}}\n"
    );
    let applier = Applier::new(client.clone()).with_policy(fast());
    applier.apply_yaml(&leftovers, "leftovers.yaml").await.unwrap();
    // A pod needs the namespace's `default` ServiceAccount, which the real serviceaccount
    // controller creates a moment after the namespace (the admission plugin refuses the pod
    // until then).
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), "sample");
    wait::until(
        &accounts,
        wait::Condition::exists("default", "sa default"),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    applier
        .apply_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: helloworld-v1-abc, namespace: sample}\nspec: {containers: [{name: helloworld, image: docker.io/istio/examples-helloworld-v1:1.0}]}\n",
            "pod.yaml",
        )
        .await
        .unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "sample");
    wait::until(&pods, wait::some_pod_ready("sample", ""), Duration::from_secs(20))
        .await
        .unwrap();

    let cleared = meshctl::verification::clear_previous(&client, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(cleared);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces.get_opt("sample").await.unwrap().is_none(),
        "the namespace is really gone when clear_previous returns"
    );
    assert!(pods.list(&Default::default()).await.unwrap().items.is_empty());
    // So it can be created again at once (a terminating namespace would refuse its contents).
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sample"}});
    namespaces
        .patch("sample", &PatchParams::apply("test"), &Patch::Apply(&ns))
        .await
        .unwrap();
    kubelet.abort();
}

/// MetalLB's webhook race, for real: the real v0.16.1 manifest on a real apiserver, whose
/// webhook Service gets a loopback cluster IP. While nothing listens there (a fresh kind cluster
/// whose webhook server has not started), admission of a pool fails and the wait reports what the
/// apiserver last said; once a server answers on that IP and port with the injected CA, the same
/// wait passes and the pool applies.
#[tokio::test]
async fn pools_wait_until_metallbs_webhook_really_answers() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let Some(envtest) = Envtest::shared() else { return };
    let Some(upstream) = support::schema::upstream_or_skip() else {
        return;
    };
    // The third control plane: the only test that installs MetalLB there.
    let client = envtest.planes[2].client().await;
    let applier = Applier::new(client.clone()).with_policy(fast());
    let manifest = std::fs::read_to_string(upstream.join("metallb/v0.16.1/metallb-native.yaml")).unwrap();
    applier
        .apply_yaml(&manifest, "metallb-native.yaml")
        .await
        .unwrap();
    let pool = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: meshctl-pool, namespace: metallb-system}\nspec: {addresses: [172.18.255.1-172.18.255.254]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: meshctl-l2, namespace: metallb-system}\nspec: {ipAddressPools: [meshctl-pool]}\n";

    let err = applier
        .await_admission(pool, "address-pool.yaml", Duration::from_secs(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("IPAddressPool metallb-system/meshctl-pool")
            && err.contains("failed calling webhook")
            && err.contains("connection refused"),
        "{err}"
    );

    // Play MetalLB's controller: serve the webhook on its Service's cluster IP and inject the CA.
    let services: Api<Service> = Api::namespaced(client.clone(), "metallb-system");
    let svc = services.get("metallb-webhook-service").await.unwrap();
    let spec = svc.spec.unwrap();
    let ip = spec.cluster_ip.unwrap();
    assert!(ip.starts_with("127."), "loopback service range, got {ip}");
    let port = spec.ports.unwrap()[0].port as u16;
    let server = support::envtest::webhook::WebhookServer::start(
        format!("{ip}:{port}").parse().unwrap(),
        "metallb-webhook-service",
        "metallb-system",
    );
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut config = hooks.get("metallb-webhook-configuration").await.unwrap();
    for hook in config.webhooks.iter_mut().flatten() {
        hook.client_config.ca_bundle = Some(k8s_openapi::ByteString(server.ca_pem.clone().into_bytes()));
    }
    config.metadata.managed_fields = None;
    hooks
        .replace("metallb-webhook-configuration", &PostParams::default(), &config)
        .await
        .unwrap();

    let tries = applier
        .await_admission(pool, "address-pool.yaml", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(tries >= 2, "one try per document at least: {tries}");
    assert!(
        server.reviews.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the apiserver really called the webhook"
    );
    let applied = applier.apply_yaml(pool, "address-pool.yaml").await.unwrap();
    assert_eq!(applied.len(), 2, "{applied:?}");
}
