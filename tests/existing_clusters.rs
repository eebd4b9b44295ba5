//! `meshctl up`, `status` and `down` on clusters that already exist, against real kube-apiservers
//! (envtest). Real: discovery, server-side apply, the Istio CRDs' validation, admission, the
//! deployment and token controllers, resource versions. Played by the test, because nothing here
//! can run them: istioctl (writes what Istio's charts install, tests/support/envtest/istioctl.rs),
//! the kubelet and scheduler (pods reported running), the clusters' own load balancer, and istiod's
//! `/debug/clusterz` (answered by the proxy each context goes through).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kube::api::{Api, DeleteParams};
use support::envtest::proxy::Proxy;
use support::envtest::{ControlPlane, Envtest, block_on};
use support::fake_tools::{FakeToolOptions, FakeTools};
use support::{meshctl_in, stderr, stdout};

/// Two existing clusters, `east` and `west`, each behind a proxy, with their stand-ins running.
struct Existing {
    planes: Vec<&'static ControlPlane>,
    proxies: Vec<Proxy>,
    istioctl: FakeTools,
    work: tempfile::TempDir,
    kubeconfig: String,
    config: PathBuf,
    _stand_ins: std::sync::mpsc::Sender<()>,
}

fn existing() -> Option<Existing> {
    let envtest = Envtest::shared()?;
    let planes: Vec<&'static ControlPlane> = envtest.planes[..2].iter().collect();
    let proxies: Vec<Proxy> = planes.iter().map(|p| Proxy::start(p)).collect();
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (proxy, name) in proxies.iter().zip(["east", "west"]) {
        let path = work.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, proxy.kubeconfig(name)).unwrap();
        files.push(path.display().to_string());
    }
    use support::envtest::istioctl::Target;
    let contexts: HashMap<String, Target> = [
        ("east".to_string(), Target::of(planes[0])),
        ("west".to_string(), Target::of(planes[1])),
    ]
    .into();
    let istioctl = FakeTools::with(
        Vec::new(),
        FakeToolOptions::default(),
        support::envtest::istioctl::install_handler(contexts),
        None,
    );
    // The existing clusters' own nodes, kubelets and load balancers, for as long as the test runs.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let clients_of = planes.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for (i, plane) in clients_of.iter().enumerate() {
                let client = plane.client().await;
                let node = format!("{}-node", plane.name);
                support::envtest::kubelet::register_node(&client, &node, &BTreeMap::new()).await;
                support::envtest::kubelet::run_pods(client.clone(), node);
                support::envtest::loadbalancer::run(client, format!("10.99.{i}"));
            }
        });
        let _ = stopped.recv();
        drop(rt);
    });
    let config = work.path().join("meshctl.yaml");
    // The API addresses other clusters' istiods would dial (never dialled here: clusterz is played).
    std::fs::write(
        &config,
        "meshID: corp\nprovider: existing\nclusters:\n  - name: east\n    context: east\n    apiServer: https://172.18.0.10:6443\n  - name: west\n    context: west\n    apiServer: https://172.18.0.11:6443\n",
    )
    .unwrap();
    Some(Existing {
        planes,
        proxies,
        istioctl,
        work,
        kubeconfig: files.join(":"),
        config,
        _stand_ins: stop,
    })
}

impl Existing {
    fn run(&self, args: &[&str]) -> std::process::Output {
        self.run_bounded(args, "30s")
    }

    /// Like [`Existing::run`]; `up` gets `--timeout timeout`.
    fn run_bounded(&self, args: &[&str], timeout: &str) -> std::process::Output {
        let state = self.work.path().join("state");
        let mut all = vec!["--workdir", state.to_str().unwrap()];
        all.extend_from_slice(args);
        if args.first() == Some(&"up") {
            all.extend_from_slice(&["--key-type", "ecdsa-p256", "--timeout", timeout]);
        }
        let path = self.istioctl.path_env();
        meshctl_in(
            self.work.path(),
            &all,
            &[("KUBECONFIG", &self.kubeconfig), ("PATH", &path), ("CI", "true")],
        )
    }

    fn writes(&self) -> usize {
        self.proxies
            .iter()
            .map(|p| p.requests().iter().filter(|r| !r.starts_with("GET")).count())
            .sum()
    }
}

#[test]
fn existing_clusters_get_the_whole_mesh_and_a_second_up_writes_nothing() {
    let Some(lab) = existing() else { return };
    let cfg = lab.config.to_str().unwrap().to_string();

    // Contexts alone: their kubeconfig servers are loopback addresses no other cluster can dial,
    // so `up` refuses before it changes anything, and says what to give instead.
    let out = lab.run(&["up", "--contexts", "east,west"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("preflight")
            && stderr(&out).contains("loopback")
            && stderr(&out).contains("--server"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lab.writes(), 0, "refused before any write");
    assert!(lab.istioctl.calls().is_empty(), "{:?}", lab.istioctl.calls());

    // west's istiod cannot sync east yet: the phase fails and names the pair and the address.
    lab.proxies[1].set_remote_cluster_status("east", "timeout");
    let out = lab.run_bounded(&["up", "--config", &cfg], "15s");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("istiod in `west` reports `east` timeout")
            && text.contains("points at https://172.18.0.10:6443"),
        "{text}"
    );

    // Reachable again: the same command resumes and finishes.
    lab.proxies[1].set_remote_cluster_status("east", "synced");
    let out = lab.run(&["up", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = lab.istioctl.calls();
    // Istio is installed from the same rendering in both clusters (its recorded digest says so):
    // another --timeout is no reason to install it again.
    assert!(
        !calls.iter().any(|c| c.contains("--readiness-timeout 30s")),
        "{calls:?}"
    );
    assert!(stderr(&out).contains("in place"), "{}", stderr(&out));
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("kind") || c.starts_with("docker")),
        "{calls:?}"
    );
    // No MetalLB on clusters that exist.
    let pools = block_on(async {
        let client = lab.planes[0].client().await;
        kube::discovery::Discovery::new(client)
            .run()
            .await
            .unwrap()
            .groups()
            .any(|g| g.name() == "metallb.io")
    });
    assert!(!pools, "MetalLB was not installed");

    block_on(async {
        for (i, plane) in lab.planes.iter().enumerate() {
            let (me, other) = if i == 0 {
                ("east", "west")
            } else {
                ("west", "east")
            };
            let client = plane.client().await;
            let ns = Api::<Namespace>::all(client.clone())
                .get("istio-system")
                .await
                .unwrap();
            let labels = ns.metadata.labels.unwrap_or_default();
            assert_eq!(
                labels.get("topology.istio.io/network").map(String::as_str),
                Some(format!("network{}", i + 1).as_str()),
                "{labels:?}"
            );
            let cacerts = Api::<Secret>::namespaced(client.clone(), "istio-system")
                .get("cacerts")
                .await
                .unwrap();
            let keys: Vec<String> = cacerts.data.unwrap().into_keys().collect();
            assert_eq!(
                keys,
                ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
            );
            let node = Api::<Node>::all(client.clone())
                .get(&format!("{}-node", plane.name))
                .await
                .unwrap();
            assert!(
                node.metadata
                    .labels
                    .unwrap()
                    .contains_key("topology.kubernetes.io/region"),
                "region label added where missing"
            );
            assert_eq!(
                meshctl::kube::inspect::service_address(
                    &client,
                    "istio-system",
                    meshctl::topology::GATEWAY_NAME
                )
                .await
                .as_deref(),
                Some(format!("10.99.{i}.10").as_str()),
                "the cluster's own load balancer, no MetalLB"
            );
            // The Gateway passed the real Istio CRD's schema validation.
            let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway");
            let gateways: Api<kube::api::DynamicObject> = Api::namespaced_with(
                client.clone(),
                "istio-system",
                &kube::api::ApiResource::from_gvk_with_plural(&gvk, "gateways"),
            );
            let gateway = gateways.get("cross-network-gateway").await.unwrap();
            assert_eq!(
                gateway.data["spec"]["servers"][0]["tls"]["mode"],
                "AUTO_PASSTHROUGH"
            );
            let secret = Api::<Secret>::namespaced(client.clone(), "istio-system")
                .get(&format!("istio-remote-secret-{other}"))
                .await
                .unwrap_or_else(|e| panic!("{me} holds {other}'s remote secret: {e}"));
            let inner = String::from_utf8(secret.data.unwrap()[other].0.clone()).unwrap();
            let address = if other == "east" {
                "https://172.18.0.10:6443"
            } else {
                "https://172.18.0.11:6443"
            };
            assert!(inner.contains(&format!("server: {address}")), "{inner}");
        }
    });

    // A second `up` on the healthy mesh: no write to any cluster, no istioctl run.
    let (writes, installs) = (lab.writes(), lab.istioctl.calls().len());
    let out = lab.run(&["up", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to change"), "{}", stderr(&out));
    assert_eq!(lab.writes(), writes, "zero API writes");
    assert_eq!(lab.istioctl.calls().len(), installs, "zero istioctl runs");

    // status: ready; a deleted remote secret is found (in the cluster, not in local state).
    let out = lab.run(&["status", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    block_on(async {
        Api::<Secret>::namespaced(lab.planes[1].client().await, "istio-system")
            .delete("istio-remote-secret-east", &DeleteParams::default())
            .await
            .unwrap();
    });
    let out = lab.run(&["status", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(3), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("remote secret for east: missing (no istio-system/istio-remote-secret-east)"),
        "{text}"
    );
    // The fix status prints is a command that really fixes it, followed as printed.
    let fixes = support::fixes(&out);
    assert_eq!(fixes.len(), 1, "{text}");
    assert!(
        fixes[0].ends_with(&["--only".to_string(), "remote-secrets".to_string()]),
        "{fixes:?}"
    );
    let path = lab.istioctl.path_env();
    let words: Vec<&str> = fixes[0].iter().map(String::as_str).collect();
    let fixed = meshctl_in(
        lab.work.path(),
        &words,
        &[("KUBECONFIG", &lab.kubeconfig), ("PATH", &path), ("CI", "true")],
    );
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    assert!(
        stderr(&fixed).contains("repaired: remote secret for east was missing"),
        "{}",
        stderr(&fixed)
    );
    let out = lab.run(&["status", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // meshConfig options in the topology: rendered into the IstioOperator, so the installed
    // rendering differs and `up` installs Istio again in both clusters; istiod's mesh config holds them.
    let with_options = lab.work.path().join("meshctl-options.yaml");
    std::fs::write(
        &with_options,
        format!(
            "{}meshConfig:\n  discoverySelectors:\n    - matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [istio-system, sample]}}]\n  defaultServiceExportTo: ['*']\n  serviceSettings:\n    - settings: {{clusterLocal: true}}\n      hosts: ['*.kube-system.svc.cluster.local']\n",
            std::fs::read_to_string(&lab.config).unwrap()
        ),
    )
    .unwrap();
    let installs = lab.istioctl.calls().len();
    let out = lab.run(&["up", "--config", with_options.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "repaired: Deployment istio-system/istiod was different (installed from another rendering"
        ),
        "{}",
        stderr(&out)
    );
    let reinstalled = lab.istioctl.calls()[installs..]
        .iter()
        .filter(|c| c.contains("05-istio/control-plane.yaml"))
        .count();
    assert_eq!(reinstalled, 2, "{:?}", lab.istioctl.calls());
    block_on(async {
        let client = lab.planes[0].client().await;
        let mesh = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, "istio-system")
            .get("istio")
            .await
            .unwrap();
        let text = &mesh.data.unwrap()["mesh"];
        assert!(
            text.contains("discoverySelectors")
                && text.contains("clusterLocal")
                && text.contains("meshId: corp"),
            "{text}"
        );
    });

    // down on existing clusters forgets local progress and touches no cluster.
    let writes = lab.writes();
    let out = lab.run(&["down", "--mesh-id", "corp"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.writes(), writes, "down wrote nothing to existing clusters");

    // down --uninstall removes what meshctl put there, and nothing else: a remote secret and a
    // Gateway someone else made stay.
    let east = lab.planes[0];
    block_on(async {
        let client = east.client().await;
        let params = kube::api::PostParams {
            field_manager: Some("kubectl-client-side-apply".into()),
            ..Default::default()
        };
        let theirs: Secret = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "istio-remote-secret-elsewhere", "namespace": "istio-system",
                "labels": {"istio/multiCluster": "true"}, "annotations": {"networking.istio.io/cluster": "elsewhere"}},
            "stringData": {"elsewhere": "apiVersion: v1\nkind: Config\n"}}))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), "istio-system")
            .create(&params, &theirs)
            .await
            .unwrap();
        let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway");
        let gateways: Api<kube::api::DynamicObject> = Api::namespaced_with(
            client,
            "istio-system",
            &kube::api::ApiResource::from_gvk_with_plural(&gvk, "gateways"),
        );
        let mine: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "mine", "namespace": "istio-system"},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}))
        .unwrap();
        gateways.create(&params, &mine).await.unwrap();
    });
    // Not on a terminal and not confirmed: refused before any change.
    let writes = lab.writes();
    let out = lab.run(&["down", "--config", &cfg, "--uninstall"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(lab.writes(), writes, "nothing changed");
    let out = lab.run(&["down", "--config", &cfg, "--uninstall", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = lab.istioctl.calls();
    for name in ["east", "west"] {
        for file in ["06-eastwest/eastwest-gateway.yaml", "05-istio/control-plane.yaml"] {
            let call = format!("istioctl uninstall -y --context {name} -f {name}/{file}");
            assert!(calls.contains(&call), "{call} in {calls:?}");
        }
    }
    block_on(async {
        for (i, plane) in lab.planes.iter().enumerate() {
            let client = plane.client().await;
            let secrets = Api::<Secret>::namespaced(client.clone(), "istio-system");
            let mut names: Vec<String> = secrets
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .filter(|n| !n.starts_with("istio-ca-root") && !n.starts_with("default-token"))
                .collect();
            names.sort();
            let expected: Vec<&str> = if i == 0 {
                vec!["istio-remote-secret-elsewhere"]
            } else {
                vec![]
            };
            assert_eq!(names, expected, "only someone else's secret is left");
            let deployments =
                Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "istio-system");
            assert!(deployments.get_opt("istiod").await.unwrap().is_none());
            assert!(
                deployments
                    .get_opt("istio-eastwestgateway")
                    .await
                    .unwrap()
                    .is_none()
            );
            let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway");
            let gateways: Api<kube::api::DynamicObject> = Api::namespaced_with(
                client,
                "istio-system",
                &kube::api::ApiResource::from_gvk_with_plural(&gvk, "gateways"),
            );
            assert!(gateways.get_opt("cross-network-gateway").await.unwrap().is_none());
            assert_eq!(gateways.get_opt("mine").await.unwrap().is_some(), i == 0);
        }
    });
}
