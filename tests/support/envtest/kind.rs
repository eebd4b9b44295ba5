//! The kind path of `meshctl up` on real control planes: a lab of N envtest clusters named
//! `cluster1..N`, each behind a [`Proxy`] (which plays exec and istiod's clusterz and keeps the
//! request log), with the fake `kind`/`docker` of tests/support/fake_tools.rs answering for them
//! (`kind get kubeconfig` prints the proxy's address under kind's `kind-<name>` names; node
//! containers get 172.18.0.<i+2> on the docker network) and the fake `istioctl` writing into them.
//! What a kind node runs is played: the kubelet registers node `<name>-control-plane` and runs pods,
//! and MetalLB's controller (certificate rotator and webhook server, address allocation).
//! Every process and task stops when the lab is dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use super::istioctl::{Target, install_handler};
use super::proxy::Proxy;
use super::{ControlPlane, Envtest, assets_or_skip};
use crate::support::fake_tools::{FakeToolOptions, FakeTools};
use crate::support::meshctl_in;

/// A kind lab on real control planes.
pub struct KindLab {
    // Dropped first: the stand-ins stop before their clusters do.
    _stand_ins: std::sync::mpsc::Sender<()>,
    /// The fake tools.
    pub tools: FakeTools,
    /// One proxy per cluster, in order.
    pub proxies: Vec<Proxy>,
    /// The control planes, in order (`cluster1..N`).
    pub envtest: Envtest,
    /// Work folder: kubeconfig, state, MetalLB manifest.
    pub work: tempfile::TempDir,
}

impl KindLab {
    /// `n` fresh clusters, or `None` (with a skip line) without the envtest binaries.
    pub fn new(n: usize, options: FakeToolOptions) -> Option<KindLab> {
        let assets = assets_or_skip()?;
        let envtest = Envtest::start(&assets, n);
        let proxies: Vec<Proxy> = envtest.planes.iter().map(Proxy::start).collect();
        let kubeconfigs = envtest
            .planes
            .iter()
            .zip(&proxies)
            .map(|(p, proxy)| (p.name.clone(), proxy.kubeconfig(&format!("kind-{}", p.name))))
            .collect();
        let contexts: HashMap<String, Target> = envtest
            .planes
            .iter()
            .map(|p| (p.name.clone(), Target::of(p)))
            .collect();
        let tools = FakeTools::with(kubeconfigs, options, install_handler(contexts));
        let targets: Vec<Target> = envtest.planes.iter().map(Target::of).collect();
        let names: Vec<String> = envtest.planes.iter().map(|p| p.name.clone()).collect();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                for (target, name) in targets.iter().zip(&names) {
                    let client = target.client().await;
                    let node = format!("{name}-control-plane");
                    super::kubelet::register_node(&client, &node, &Default::default()).await;
                    super::kubelet::run_pods(client.clone(), node);
                    super::metallb::run(client);
                }
            });
            ready.send(()).unwrap();
            let _ = stopped.recv();
            drop(rt);
        });
        started.recv().unwrap();
        let work = tempfile::tempdir().unwrap();
        if let Some(dir) = crate::support::schema::upstream_dir() {
            std::fs::copy(
                dir.join("metallb/v0.16.1/metallb-native.yaml"),
                work.path().join("metallb-native.yaml"),
            )
            .unwrap();
        }
        Some(KindLab {
            _stand_ins: stop,
            tools,
            proxies,
            envtest,
            work,
        })
    }

    /// The control planes.
    pub fn planes(&self) -> &[ControlPlane] {
        &self.envtest.planes
    }

    /// The kubeconfig meshctl writes the kind contexts into.
    pub fn kubeconfig(&self) -> PathBuf {
        self.work.path().join("kubeconfig")
    }

    /// Runs `meshctl` in the lab (for `up`: fast keys, a 30s bound, the real MetalLB manifest).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, true, &[])
    }

    /// Like [`KindLab::run`], choosing whether `up` gets `--metallb-manifest`, with extra
    /// environment.
    pub fn run_with(&self, args: &[&str], manifest_file: bool, env: &[(&str, &str)]) -> Output {
        let kc = self.kubeconfig();
        let state = self.work.path().join("state");
        let manifest = self.work.path().join("metallb-native.yaml");
        let mut all = vec![
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--workdir",
            state.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        if args.first() == Some(&"up") {
            all.extend_from_slice(&["--key-type", "ecdsa-p256"]);
            if manifest_file {
                all.extend_from_slice(&["--metallb-manifest", manifest.to_str().unwrap()]);
            }
            if !args.contains(&"--timeout") {
                all.extend_from_slice(&["--timeout", "30s"]);
            }
        }
        let path = self.tools.path_env();
        let cache = self.work.path().join("cache");
        let mut vars = vec![
            ("PATH", path.as_str()),
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
            ("CI", "true"),
        ];
        vars.extend_from_slice(env);
        meshctl_in(self.work.path(), &all, &vars)
    }

    /// Takes cluster `i`'s east-west gateway address away, as when MetalLB lost its pool: the pool
    /// is deleted and the Service's `status.loadBalancer` cleared.
    pub fn take_gateway_ip(&self, i: usize) {
        use kube::api::{Api, DeleteParams, Patch, PatchParams};
        super::block_on(async {
            let client = self.planes()[i].client().await;
            let gvk = kube::api::GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool");
            let pools: Api<kube::api::DynamicObject> = Api::namespaced_with(
                client.clone(),
                "metallb-system",
                &kube::api::ApiResource::from_gvk_with_plural(&gvk, "ipaddresspools"),
            );
            pools
                .delete("meshctl-pool", &DeleteParams::default())
                .await
                .unwrap();
            let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client, "istio-system");
            let gone = serde_json::json!({"status": {"loadBalancer": {"ingress": null}}});
            services
                .patch_status(
                    "istio-eastwestgateway",
                    &PatchParams::default(),
                    &Patch::Merge(&gone),
                )
                .await
                .unwrap();
        });
    }

    /// meshctl's state file.
    pub fn state(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.work.path().join("state/mesh1/state.json")).unwrap(),
        )
        .unwrap()
    }

    /// Requests that changed something, over every cluster, as the proxies saw them.
    pub fn writes(&self) -> usize {
        self.proxies
            .iter()
            .map(|p| p.requests().iter().filter(|r| !r.starts_with("GET")).count())
            .sum()
    }
}
