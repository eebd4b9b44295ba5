//! The kind path of `meshctl up` on real control planes: a lab for clusters `cluster1..N` whose
//! fake `kind` (tests/support/fake_tools.rs) starts a real control plane when asked to create a
//! cluster and stops it when asked to delete it. Each cluster sits behind a [`Proxy`] (which plays
//! exec and istiod's clusterz and keeps the request log); `kind get kubeconfig` prints the proxy's
//! address under kind's `kind-<name>` names; node containers get 172.18.0.<i+2> on the docker
//! network; the fake `istioctl` writes into the cluster. What a kind node runs is played: the
//! kubelet registers node `<name>-control-plane` and runs pods, and MetalLB's controller
//! (certificate rotator and webhook server, address allocation). Everything stops when the lab is
//! dropped.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::istioctl::{Target, install_handler_for};
use super::proxy::Proxy;
use super::{ControlPlane, addresses, assets_or_skip};
use crate::support::fake_tools::{FakeToolOptions, FakeTools, KindHandler};
use crate::support::meshctl_in;

/// One created cluster.
struct Running {
    // Dropped first: the stand-ins stop before their cluster does.
    _stand_ins: std::sync::mpsc::Sender<()>,
    proxy: Arc<Proxy>,
    plane: Arc<ControlPlane>,
}

type Registry = Arc<Mutex<BTreeMap<String, Running>>>;

/// A kind lab on real control planes.
pub struct KindLab {
    /// The fake tools (dropped first: no request reaches a cluster being stopped).
    pub tools: FakeTools,
    clusters: Registry,
    assets: PathBuf,
    /// Loopback address and service range of each cluster, by name.
    slots: BTreeMap<String, (Ipv4Addr, String)>,
    /// Work folder: kubeconfig, state, MetalLB manifest.
    pub work: tempfile::TempDir,
}

/// The docker-network address of a lab node, as the fake docker reports it: `clusterN-…` gets
/// 172.18.0.<N+1>.
pub fn node_ip(node: &str) -> String {
    let n: u32 = node
        .trim_start_matches("cluster")
        .split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("lab clusters are named clusterN");
    format!("172.18.0.{}", n + 1)
}

/// Starts cluster `name`: its control plane, its proxy, and what its node runs.
fn start(assets: &Path, name: &str, (ip, range): &(Ipv4Addr, String)) -> Running {
    let plane = Arc::new(ControlPlane::start(assets, name, *ip, range));
    let proxy = Arc::new(Proxy::start(&plane));
    let target = Target::of(&plane);
    let node = format!("{name}-control-plane");
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (ready, started) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let client = target.client().await;
            super::kubelet::register_node(&client, &node, &Default::default()).await;
            super::kubelet::set_internal_ip(&client, &node, &node_ip(&node)).await;
            super::kubelet::run_pods(client.clone(), node);
            super::metallb::run(client);
        });
        ready.send(()).unwrap();
        let _ = stopped.recv();
        drop(rt);
    });
    started.recv().unwrap();
    Running {
        _stand_ins: stop,
        proxy,
        plane,
    }
}

impl KindLab {
    /// A lab for `n` clusters (none running yet), or `None` (with a skip line) without the envtest
    /// binaries.
    pub fn new(n: usize, options: FakeToolOptions) -> Option<KindLab> {
        let assets = assets_or_skip()?;
        let names: Vec<String> = (1..=n).map(|i| format!("cluster{i}")).collect();
        let slots: BTreeMap<String, (Ipv4Addr, String)> = names.iter().cloned().zip(addresses(n)).collect();
        let clusters: Registry = Arc::default();
        let kind: KindHandler = {
            let (clusters, slots, assets) = (clusters.clone(), slots.clone(), assets.clone());
            Arc::new(move |verb: &str, name: &str| match verb {
                "create" => {
                    let slot = slots
                        .get(name)
                        .ok_or_else(|| format!("the lab has no cluster named {name}"))?;
                    let running = start(&assets, name, slot);
                    let kubeconfig = running.proxy.kubeconfig(&format!("kind-{name}"));
                    clusters.lock().unwrap().insert(name.to_string(), running);
                    Ok(Some(kubeconfig))
                }
                "delete" => {
                    let gone = clusters.lock().unwrap().remove(name);
                    drop(gone);
                    Ok(None)
                }
                other => Err(format!("fake kind: unsupported {other}")),
            })
        };
        let lookup = {
            let clusters = clusters.clone();
            Arc::new(move |name: &str| clusters.lock().unwrap().get(name).map(|r| Target::of(&r.plane)))
        };
        let tools = FakeTools::with(
            names.iter().map(|n| (n.clone(), None)).collect(),
            options,
            install_handler_for(lookup),
            Some(kind),
        );
        let work = tempfile::tempdir().unwrap();
        // The lab's `--kubeconfig`, empty until `up` adds its clusters: every command refuses a
        // `--kubeconfig` that does not exist (only `up` and `down` may make it), as kubectl would.
        std::fs::write(work.path().join("kubeconfig"), "").unwrap();
        if let Some(dir) = crate::support::schema::upstream_dir() {
            std::fs::copy(
                dir.join("metallb/v0.16.1/metallb-native.yaml"),
                work.path().join("metallb-native.yaml"),
            )
            .unwrap();
        }
        Some(KindLab {
            tools,
            clusters,
            assets,
            slots,
            work,
        })
    }

    /// A kind cluster that exists before `meshctl up` runs (as `kind create cluster` by hand).
    pub fn create(&self, name: &str) {
        let running = start(&self.assets, name, &self.slots[name]);
        let kubeconfig = running.proxy.kubeconfig(&format!("kind-{name}"));
        std::fs::write(
            self.tools
                .dir
                .path()
                .join("kubeconfig")
                .join(format!("{name}.yaml")),
            kubeconfig,
        )
        .unwrap();
        self.tools.preexisting_kind_cluster(name);
        self.clusters.lock().unwrap().insert(name.to_string(), running);
    }

    /// The control planes of the clusters that exist, in name order.
    pub fn planes(&self) -> Vec<Arc<ControlPlane>> {
        let clusters = self.clusters.lock().unwrap();
        clusters.values().map(|r| r.plane.clone()).collect()
    }

    /// Their proxies, in the same order.
    pub fn proxies(&self) -> Vec<Arc<Proxy>> {
        let clusters = self.clusters.lock().unwrap();
        clusters.values().map(|r| r.proxy.clone()).collect()
    }

    /// The kubeconfig meshctl writes the kind contexts into.
    pub fn kubeconfig(&self) -> PathBuf {
        self.work.path().join("kubeconfig")
    }

    /// Runs `meshctl` in the lab (for `up`: fast keys, a 60s bound, the real MetalLB manifest).
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
            // Generous: a bound, not a speed target; a loaded 2-core CI machine runs several
            // control planes at once.
            if !args.contains(&"--timeout") {
                all.extend_from_slice(&["--timeout", "60s"]);
            }
        }
        let path = self.tools.path_env();
        let cache = self.work.path().join("cache");
        // The same environment as `run_as_printed`.
        let mut vars = vec![
            ("PATH", path.as_str()),
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
            ("CI", "true"),
        ];
        vars.extend_from_slice(env);
        meshctl_in(self.work.path(), &all, &vars)
    }

    /// Runs `meshctl` with exactly these arguments (a command meshctl printed) in the lab's
    /// environment: its fake tools on PATH, its download cache.
    pub fn run_as_printed(&self, args: &[&str]) -> Output {
        let path = self.tools.path_env();
        let cache = self.work.path().join("cache");
        meshctl_in(
            self.work.path(),
            args,
            &[
                ("PATH", path.as_str()),
                ("XDG_CACHE_HOME", cache.to_str().unwrap()),
                ("CI", "true"),
            ],
        )
    }

    /// `kind delete cluster --name <name>` typed by the user, not run by meshctl: the cluster and
    /// its control plane are gone, meshctl's kubeconfig entry and state still name it.
    pub fn kind_delete_by_hand(&self, name: &str) {
        let out = std::process::Command::new(self.tools.dir.path().join("bin/kind"))
            .args(["delete", "cluster", "--name", name])
            .env("PATH", self.tools.path_env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Takes cluster `i`'s east-west gateway address away, as when MetalLB lost its pool: the pool
    /// is deleted and the Service's `status.loadBalancer` cleared.
    pub fn take_gateway_ip(&self, i: usize) {
        use kube::api::{Api, DeleteParams, Patch, PatchParams};
        let plane = self.planes()[i].clone();
        super::block_on(async {
            let client = plane.client().await;
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
        self.proxies()
            .iter()
            .map(|p| p.requests().iter().filter(|r| !r.starts_with("GET")).count())
            .sum()
    }
}
