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
    /// The API server behind each kubeconfig context.
    servers: Vec<(String, MemoryApiServer)>,
    /// Contexts whose `istioctl install` fails, as istioctl does when istiod never gets ready.
    failing: Vec<String>,
    /// A context whose `istioctl install` never ends, and what it notifies once it started (the
    /// run's Ctrl-C) after the other clusters recorded their installs.
    interrupting: Option<(String, Arc<tokio::sync::Notify>)>,
    calls: Mutex<Vec<String>>,
}

impl PlayedIstioctl {
    fn new(server: &MemoryApiServer) -> Arc<PlayedIstioctl> {
        PlayedIstioctl::for_clusters(&[("cluster1", server)], &[])
    }

    fn for_clusters(servers: &[(&str, &MemoryApiServer)], failing: &[&str]) -> Arc<PlayedIstioctl> {
        Arc::new(PlayedIstioctl {
            servers: servers
                .iter()
                .map(|(c, s)| (c.to_string(), (*s).clone()))
                .collect(),
            failing: failing.iter().map(|c| c.to_string()).collect(),
            interrupting: None,
            calls: Mutex::default(),
        })
    }

    /// The server of the `--context` in `args`.
    fn server_of(&self, args: &[String]) -> &MemoryApiServer {
        let context = args
            .iter()
            .position(|a| a == "--context")
            .map(|i| args[i + 1].as_str())
            .expect("meshctl always names the context");
        &self
            .servers
            .iter()
            .find(|(c, _)| c == context)
            .expect("a known context")
            .1
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The `istioctl install` calls, in order.
    fn installs(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with("istioctl install"))
            .collect()
    }

    fn install(server: &MemoryApiServer) {
        server.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istiod", "namespace": "istio-system", "labels": {"app": "istiod"}},
            "spec": {"selector": {"matchLabels": {"app": "istiod"}},
                     "template": {"metadata": {"labels": {"app": "istiod"}}, "spec": {"containers": [{"name": "discovery", "image": "pilot"}]}}},
            "status": {"replicas": 1, "availableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "True"}]}}));
        server.put(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
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
                ("istioctl", Some("install"))
                    if self
                        .failing
                        .iter()
                        .any(|c| line.contains(&format!("--context {c} "))) =>
                {
                    // What istioctl prints when its readiness wait runs out (operator/pkg/install/
                    // wait.go): the components it waited for, and exit status 1.
                    Err(ToolError::Failed {
                        command: line,
                        code: 1,
                        stderr_tail: "✘ Istiod encountered an error: failed to wait for resource: resources not ready after 5s: context deadline exceeded\nDeployment/istio-system/istiod (containers with unready status: [discovery])".into(),
                    })
                }
                ("istioctl", Some("install"))
                    if self
                        .interrupting
                        .as_ref()
                        .is_some_and(|(c, _)| line.contains(&format!("--context {c} "))) =>
                {
                    let (_, interrupt) = self.interrupting.as_ref().unwrap();
                    // Ctrl-C once every other cluster has its install recorded: the run is cut
                    // in the middle of the phase, with one cluster done and one not.
                    for (context, server) in &self.servers {
                        if !line.contains(&format!("--context {context} ")) {
                            support::eventually(|| installed_digest(server).is_some()).await;
                        }
                    }
                    interrupt.notify_one();
                    std::future::pending().await
                }
                ("istioctl", Some("install")) => {
                    PlayedIstioctl::install(self.server_of(args));
                    Ok(Output::default())
                }
                // What `istioctl uninstall -f` prunes of this install (the objects carrying its
                // install labels: operator/pkg/uninstall/prune.go); here the two it made.
                ("istioctl", Some("uninstall")) => {
                    let client = self.server_of(args).client();
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
    _servers: Vec<support::memory_apiserver::Loopback>,
    _dir: tempfile::TempDir,
    settings: Settings,
    state_path: std::path::PathBuf,
    mesh: Mesh,
}

fn fixture(server: &MemoryApiServer) -> Fixture {
    fixture_for(&[("cluster1", server)])
}

/// Existing clusters, one per context, each an in-process API server on loopback.
fn fixture_for(servers: &[(&str, &MemoryApiServer)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let loopbacks: Vec<_> = servers.iter().map(|(_, s)| s.serve_on_loopback()).collect();
    let (mut clusters, mut contexts, mut users) = (String::new(), String::new(), String::new());
    for ((context, _), loopback) in servers.iter().zip(&loopbacks) {
        clusters += &format!(
            "- name: {context}\n  cluster:\n    server: http://{}\n",
            loopback.addr
        );
        contexts += &format!("- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n");
        users += &format!("- name: {context}\n  user: {{}}\n");
    }
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}users:\n{users}"),
    )
    .unwrap();
    let names: Vec<String> = servers.iter().map(|(c, _)| c.to_string()).collect();
    let mesh = Mesh::for_contexts(&names, "mesh1").unwrap();
    let settings = Settings {
        kubeconfig_flag: Some(kubeconfig.clone()),
        kubeconfig_target: kubeconfig,
        kind_kubeconfig: dir.path().join("kind-kubeconfig"),
        plan_dir: dir.path().join("plan"),
        timeout: Duration::from_secs(5),
        tool_timeout: Duration::from_secs(5),
        metallb_manifest: None,
        gateway_api_crds: None,
        cache_dir: dir.path().join("cache"),
        force: false,
        allow_version_skew: false,
        istio_version: None,
        adopt: false,
        lb_subnet: "172.18.0.0/16".parse().unwrap(),
        docker_network: "kind".into(),
    };
    Fixture {
        _servers: loopbacks,
        state_path: dir.path().join("state.json"),
        _dir: dir,
        settings,
        mesh,
    }
}

/// Runs `up --only istio` as the command layer does: plan, write it, run it.
async fn up_istio(f: &Fixture, tools: Arc<PlayedIstioctl>) -> RunEnd {
    let (reporter, _) = Reporter::capturing(Format::Text);
    up_istio_reported(f, tools, reporter).await.unwrap()
}

/// The same, reporting to `reporter`, with the run's error if it failed.
async fn up_istio_reported(
    f: &Fixture,
    tools: Arc<PlayedIstioctl>,
    reporter: Reporter,
) -> anyhow::Result<RunEnd> {
    let interrupt = tools
        .interrupting
        .as_ref()
        .map(|(_, i)| i.clone())
        .unwrap_or_default();
    let input = PlanInput {
        mesh: &f.mesh,
        phases: vec![Phase::Istio],
        pools: Vec::new(),
        cas: Vec::new(),
        timeout_secs: 5,
        docker_network: "kind".into(),
        gateway_ips: Default::default(),
        isolated: Default::default(),
        only_cluster: None,
    };
    let mut prepared = Prepared::written(input, f.settings.plan_dir.clone()).unwrap();
    let executor = Executor::with_tools(
        f.settings.clone(),
        StateStore::load(&f.state_path).unwrap(),
        Arc::new(reporter),
        f.mesh.clone(),
        tools,
    )
    .interrupted_by(interrupt);
    executor.run(&mut prepared).await
}

/// `down --uninstall` of the fixture's one cluster, with `tools` as its programs.
async fn uninstall(
    f: &Fixture,
    server: &MemoryApiServer,
    tools: &PlayedIstioctl,
) -> Vec<(String, Vec<String>)> {
    let targets = [meshctl::uninstall::Target {
        cluster: &f.mesh.clusters[0],
        istio_namespace: f.mesh.istio_namespace(&f.mesh.clusters[0]),
        client: server.client(),
    }];
    meshctl::uninstall::uninstall(
        &targets,
        &f.mesh.mesh_id,
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
    let (reporter, said) = Reporter::capturing(Format::Text);
    assert_eq!(
        up_istio_reported(&f, again.clone(), reporter).await.unwrap(),
        RunEnd::Finished { changed: true }
    );
    // The repair is named: which cluster, which phase, what was found.
    let repairs: Vec<String> = said
        .lines()
        .into_iter()
        .filter(|l| l.contains("repaired:"))
        .collect();
    assert_eq!(repairs.len(), 1, "{:?}", said.lines());
    assert!(
        repairs[0].contains("cluster1") && repairs[0].contains("istio") && repairs[0].contains("istiod"),
        "{repairs:?}"
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
    // A namespace named as verify's that meshctl did not make stays too.
    server.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sample"}}));

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
    assert!(
        server.object("v1", "namespaces", "", "sample").is_some(),
        "someone else's sample stays"
    );

    // Nothing of meshctl's is left: a second removal runs no tool and removes nothing.
    let again = PlayedIstioctl::new(&server);
    let removed = uninstall(&f, &server, &again).await;
    assert_eq!(removed, [("cluster1".to_string(), Vec::<String>::new())]);
    assert_eq!(again.calls(), Vec::<String>::new());
}

/// A cluster whose install fails is named (cluster, phase, the command and istioctl's own words); the other cluster's install
/// finishes and is recorded; the next run installs only the cluster that failed.
#[tokio::test]
async fn a_failed_install_names_its_cluster_the_other_finishes_and_the_next_run_installs_only_it() {
    let (east, west) = (MemoryApiServer::new(), MemoryApiServer::new());
    let f = fixture_for(&[("east", &east), ("west", &west)]);
    let clusters = [("east", &east), ("west", &west)];
    let failing = PlayedIstioctl::for_clusters(&clusters, &["west"]);
    let (reporter, said) = Reporter::capturing(Format::Text);
    let err = up_istio_reported(&f, failing.clone(), reporter)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("phase istio failed in 1 of 2 cluster(s)")
            && text.contains("cluster `cluster2`: phase istio: `istioctl install -y --context west")
            && text.contains("resources not ready after 5s"),
        "{text}"
    );
    assert!(!text.contains("cluster `cluster1`"), "{text}");
    let lines = said.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("✓ cluster1") && l.contains("istio")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("✗ cluster2") && l.contains("istio")),
        "{lines:?}"
    );
    assert!(
        installed_digest(&east).is_some(),
        "east finished and recorded its install"
    );
    assert!(installed_digest(&west).is_none());

    let fixed = PlayedIstioctl::for_clusters(&clusters, &[]);
    assert_eq!(
        up_istio(&f, fixed.clone()).await,
        RunEnd::Finished { changed: true }
    );
    let installs = fixed.installs();
    assert_eq!(installs.len(), 1, "{installs:?}");
    assert!(installs[0].contains("--context west "), "{installs:?}");
    assert!(installed_digest(&west).is_some());
}

/// Ctrl-C in the middle of the istio phase: the run ends as interrupted, the cluster that finished
/// keeps its recorded install, and the next run installs only the other one.
#[tokio::test]
async fn an_interrupted_run_keeps_what_finished_and_the_next_run_resumes() {
    let (east, west) = (MemoryApiServer::new(), MemoryApiServer::new());
    let f = fixture_for(&[("east", &east), ("west", &west)]);
    let clusters = [("east", &east), ("west", &west)];
    let mut cut = PlayedIstioctl::for_clusters(&clusters, &[]);
    Arc::get_mut(&mut cut).unwrap().interrupting = Some(("west".into(), Arc::default()));
    assert_eq!(up_istio(&f, cut).await, RunEnd::Interrupted);
    assert!(installed_digest(&east).is_some());
    assert!(installed_digest(&west).is_none());

    let resumed = PlayedIstioctl::for_clusters(&clusters, &[]);
    assert_eq!(
        up_istio(&f, resumed.clone()).await,
        RunEnd::Finished { changed: true }
    );
    let installs = resumed.installs();
    assert_eq!(installs.len(), 1, "{installs:?}");
    assert!(installs[0].contains("--context west "), "{installs:?}");
}

/// A chosen Istio release (`--istio-version`, `istio.version`) is installed only with that
/// release's istioctl: any other version is refused before anything changes.
#[tokio::test]
async fn an_istioctl_of_another_release_than_the_chosen_one_is_refused_before_anything_changes() {
    let server = MemoryApiServer::new();
    let mut f = fixture(&server);
    f.settings.istio_version = Some("1.30.5".into());
    let istioctl = PlayedIstioctl::new(&server);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let err = up_istio_reported(&f, istioctl.clone(), reporter)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "istioctl {} is not the chosen Istio 1.30.5",
            meshctl::versions::ISTIO_VERSION
        )),
        "{text}"
    );
    assert_eq!(
        istioctl.calls().len(),
        1,
        "only `istioctl version`: {:?}",
        istioctl.calls()
    );
    assert!(installed_digest(&server).is_none());

    f.settings.istio_version = Some(meshctl::versions::ISTIO_VERSION.into());
    assert_eq!(
        up_istio(&f, PlayedIstioctl::new(&server)).await,
        RunEnd::Finished { changed: true }
    );
}
