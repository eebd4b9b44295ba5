//! The executor through its seams, in the test process: the in-process API server stands in for
//! the cluster, and a [`ToolRunner`] stands in for istioctl (no script on PATH, no spool). What is
//! checked is the executor's and the phases' own logic: probe first, run the phase's own step
//! (istioctl install, then the install record), converge, and run no tool on a finished mesh.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use meshctl::executor::{Executor, Prepared, RunEnd, Settings};
use meshctl::plan::{Phase, PlanInput};
use meshctl::report::{Format, Reporter};
use meshctl::state::StateStore;
use meshctl::tools::{Output, RunOptions, ToolError, ToolRunner};
use meshctl::topology::Mesh;
use serde_json::json;
use support::memory_apiserver::MemoryApiServer;

/// Stands in for `istioctl`: `version` answers the pinned release, `install` creates what the
/// control plane's chart creates that meshctl then reads: Deployment `istiod`, available
/// (manifests/charts/istio-control/istio-discovery/templates/deployment.yaml), and the injector
/// webhook, whose CA bundle istiod patches in itself once it runs (pilot/pkg/webhooks/
/// webhookpatch.go, `patchMutatingWebhookConfig`); here it comes with the install.
struct PlayedIstioctl {
    server: MemoryApiServer,
    calls: Mutex<Vec<String>>,
}

impl PlayedIstioctl {
    fn new(server: &MemoryApiServer) -> Arc<PlayedIstioctl> {
        Arc::new(PlayedIstioctl {
            server: server.clone(),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn install(&self) {
        self.server.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istiod", "namespace": "istio-system", "labels": {"app": "istiod"}},
            "spec": {"selector": {"matchLabels": {"app": "istiod"}},
                     "template": {"metadata": {"labels": {"app": "istiod"}}, "spec": {"containers": [{"name": "discovery", "image": "pilot"}]}}},
            "status": {"replicas": 1, "availableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "True"}]}}));
        self.server.put(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "istio-sidecar-injector"},
            "webhooks": [{"name": "rev.namespace.sidecar-injector.istio.io", "admissionReviewVersions": ["v1"],
                          "sideEffects": "None",
                          "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system"}, "caBundle": "Y2E="}}]}));
    }
}

impl ToolRunner for PlayedIstioctl {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        _options: &'a RunOptions,
    ) -> BoxFuture<'a, Result<Output, ToolError>> {
        Box::pin(async move {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap().push(line.clone());
            match (program, args.first().map(String::as_str)) {
                ("istioctl", Some("version")) => Ok(Output {
                    stdout: format!("client version: {}\n", meshctl::versions::ISTIO_VERSION),
                    stderr: String::new(),
                }),
                ("istioctl", Some("install")) => {
                    self.install();
                    Ok(Output::default())
                }
                // What `istioctl uninstall -f` prunes of this install (the objects carrying its
                // install labels: operator/pkg/uninstall/prune.go); here the two it made.
                ("istioctl", Some("uninstall")) => {
                    let client = self.server.client();
                    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
                        kube::Api::namespaced(client.clone(), "istio-system");
                    deployments.delete("istiod", &Default::default()).await.unwrap();
                    let webhooks: kube::Api<
                        k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
                    > = kube::Api::all(client);
                    webhooks
                        .delete("istio-sidecar-injector", &Default::default())
                        .await
                        .unwrap();
                    Ok(Output::default())
                }
                _ => Err(ToolError::Other {
                    command: line,
                    reason: "not played".into(),
                }),
            }
        })
    }
}

struct Fixture {
    _server: support::memory_apiserver::Loopback,
    _dir: tempfile::TempDir,
    settings: Settings,
    state_path: std::path::PathBuf,
    mesh: Mesh,
}

fn fixture(server: &MemoryApiServer) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let loopback = server.serve_on_loopback();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, loopback.kubeconfig("cluster1")).unwrap();
    let mesh = Mesh::for_contexts(&["cluster1".to_string()], "mesh1").unwrap();
    let settings = Settings {
        kubeconfig_flag: Some(kubeconfig.clone()),
        kubeconfig_target: kubeconfig,
        kind_kubeconfig: dir.path().join("kind-kubeconfig"),
        plan_dir: dir.path().join("plan"),
        timeout: Duration::from_secs(5),
        tool_timeout: Duration::from_secs(5),
        metallb_manifest: None,
        cache_dir: dir.path().join("cache"),
        force: false,
        allow_version_skew: false,
        adopt: false,
        lb_subnet: "172.18.0.0/16".parse().unwrap(),
        docker_network: "kind".into(),
    };
    Fixture {
        _server: loopback,
        state_path: dir.path().join("state.json"),
        _dir: dir,
        settings,
        mesh,
    }
}

/// Runs `up --only istio` as the command layer does: plan, write it, run it.
async fn up_istio(f: &Fixture, tools: Arc<PlayedIstioctl>) -> RunEnd {
    let input = PlanInput {
        mesh: &f.mesh,
        phases: vec![Phase::Istio],
        pools: Vec::new(),
        cas: Vec::new(),
        timeout_secs: 5,
        docker_network: "kind".into(),
        gateway_ips: Default::default(),
    };
    let plan = meshctl::planner::build(&input).unwrap();
    let mut prepared = Prepared {
        input,
        plan,
        verify: Vec::new(),
        provisional: false,
        out: f.settings.plan_dir.clone(),
    };
    prepared.rebuild().unwrap();
    let executor = Executor::with_tools(
        f.settings.clone(),
        StateStore::load(&f.state_path).unwrap(),
        Arc::new(Reporter::new(Format::Text)),
        f.mesh.clone(),
        tools,
    );
    executor.run(&mut prepared).await.unwrap()
}

/// `down --uninstall` of the fixture's one cluster, with `tools` as its programs.
async fn uninstall(
    f: &Fixture,
    server: &MemoryApiServer,
    tools: &PlayedIstioctl,
) -> Vec<(String, Vec<String>)> {
    let targets = [meshctl::uninstall::Target {
        cluster: &f.mesh.clusters[0],
        client: server.client(),
    }];
    meshctl::uninstall::uninstall(
        &targets,
        &f.settings.plan_dir,
        f.settings.kubeconfig_flag.as_deref(),
        Duration::from_secs(5),
        tools,
    )
    .await
    .unwrap()
}

fn installed_digest(server: &MemoryApiServer) -> Option<String> {
    let istiod = server.object("apps/v1", "deployments", "istio-system", "istiod")?;
    istiod["metadata"]["annotations"]["meshctl.io/installed-operator-digest"]
        .as_str()
        .map(String::from)
}

#[tokio::test]
async fn the_istio_phase_installs_once_records_it_and_a_second_run_runs_no_tool() {
    let server = MemoryApiServer::new();
    let f = fixture(&server);
    let istioctl = PlayedIstioctl::new(&server);

    assert_eq!(
        up_istio(&f, istioctl.clone()).await,
        RunEnd::Finished { changed: true }
    );
    let calls = istioctl.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("istioctl version"), "{calls:?}");
    assert!(
        calls[1].starts_with("istioctl install") && calls[1].contains("cluster1/05-istio/control-plane.yaml"),
        "{calls:?}"
    );
    let rendered =
        std::fs::read_to_string(f.settings.plan_dir.join("cluster1/05-istio/control-plane.yaml")).unwrap();
    assert_eq!(
        installed_digest(&server),
        Some(meshctl::plan::digest(&rendered)),
        "the install is recorded on istiod"
    );

    let second = PlayedIstioctl::new(&server);
    assert_eq!(
        up_istio(&f, second.clone()).await,
        RunEnd::Finished { changed: false }
    );
    assert_eq!(
        second.calls(),
        Vec::<String>::new(),
        "a finished mesh runs no tool"
    );
}

#[tokio::test]
async fn an_istiod_installed_from_another_rendering_is_installed_again() {
    let server = MemoryApiServer::new();
    let f = fixture(&server);
    let istioctl = PlayedIstioctl::new(&server);
    up_istio(&f, istioctl.clone()).await;
    // Someone installed istiod by hand since: the record no longer matches the plan.
    let mut istiod = server
        .object("apps/v1", "deployments", "istio-system", "istiod")
        .unwrap();
    istiod["metadata"]["annotations"]["meshctl.io/installed-operator-digest"] = json!("0000");
    server.put(istiod);

    let again = PlayedIstioctl::new(&server);
    assert_eq!(
        up_istio(&f, again.clone()).await,
        RunEnd::Finished { changed: true }
    );
    assert!(
        again.calls().iter().any(|c| c.starts_with("istioctl install")),
        "{:?}",
        again.calls()
    );
    assert_ne!(installed_digest(&server).as_deref(), Some("0000"));
}

#[tokio::test]
async fn uninstall_removes_phase_by_phase_only_what_meshctl_installed() {
    let server = MemoryApiServer::new();
    let f = fixture(&server);
    let istioctl = PlayedIstioctl::new(&server);
    up_istio(&f, istioctl.clone()).await;
    let ours = json!({"app.kubernetes.io/managed-by": "meshctl"});
    server.put(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "istio-system", "labels": ours}}));
    // Someone else's reader account: same name, no label. It stays.
    server.put(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "istio-reader-service-account", "namespace": "istio-system"}}));

    let removal = PlayedIstioctl::new(&server);
    let removed = uninstall(&f, &server, &removal).await;
    assert_eq!(
        removed,
        [(
            "cluster1".to_string(),
            vec![
                "deployment/istiod (istioctl uninstall -f cluster1/05-istio/control-plane.yaml)".to_string(),
                "Secret istio-system/cacerts".to_string(),
            ]
        )],
        "istio before certs: istiod goes before the CA it signs with"
    );
    assert_eq!(removal.calls().len(), 1, "{:?}", removal.calls());
    assert!(
        server
            .object("apps/v1", "deployments", "istio-system", "istiod")
            .is_none()
    );
    assert!(
        server
            .object("v1", "secrets", "istio-system", "cacerts")
            .is_none()
    );
    assert!(
        server
            .object(
                "v1",
                "serviceaccounts",
                "istio-system",
                "istio-reader-service-account"
            )
            .is_some(),
        "someone else's reader account stays"
    );

    // Nothing of meshctl's is left: a second removal runs no tool and removes nothing.
    let again = PlayedIstioctl::new(&server);
    let removed = uninstall(&f, &server, &again).await;
    assert_eq!(removed, [("cluster1".to_string(), Vec::<String>::new())]);
    assert_eq!(again.calls(), Vec::<String>::new());
}
