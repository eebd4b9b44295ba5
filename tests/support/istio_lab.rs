//! A mesh of in-process API servers on loopback, each with a played istiod, built by `up`'s
//! phases with a played istioctl (tests/support/played_istioctl.rs): the clusters of the
//! in-process tests of `upgrade` and of the gateway models.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshctl::executor::{Executor, Prepared, RunEnd, Settings};
use meshctl::kube::Clients;
use meshctl::mesh_dir::MeshDir;
use meshctl::plan::{Phase, PlanInput};
use meshctl::report::{Format, Reporter};
use meshctl::state::StateStore;
use meshctl::topology::Mesh;
use meshctl::upgrade::Upgrader;
use serde_json::json;

use super::memory_apiserver::{Loopback, MemoryApiServer, kubeconfig_for};
use super::played_istioctl::PlayedIstioctl;
use super::played_istiod::PlayedIstiod;
use super::played_ztunnel::PlayedZtunnel;

/// Every phase `up` runs on existing clusters of a multi-primary mesh, in order.
pub const MULTI_PRIMARY_PHASES: [Phase; 5] = [
    Phase::Certs,
    Phase::Istio,
    Phase::Eastwest,
    Phase::Expose,
    Phase::RemoteSecrets,
];

/// The stand-in Gateway API CRD file in the lab's folder (`--gateway-api-crds`).
const GATEWAY_API_CRDS_FILE: &str = "gateway-api-crds.yaml";

pub struct Lab {
    pub servers: Vec<(String, MemoryApiServer)>,
    pub istiods: Vec<Arc<PlayedIstiod>>,
    loopbacks: Vec<Option<Loopback>>,
    _dir: tempfile::TempDir,
    pub dir: MeshDir,
    pub kubeconfig: PathBuf,
    pub mesh: Mesh,
    /// The meshctl.yaml the mesh was read from.
    topology: String,
}

/// Existing clusters `cluster1..` as `topology` describes them (`provider: existing`), each an
/// in-process API server with a played istiod.
pub fn lab(topology: &str) -> Lab {
    let mesh = Mesh::from_yaml(topology, None).unwrap();
    let istiods: Vec<Arc<PlayedIstiod>> = mesh.clusters.iter().map(|_| PlayedIstiod::new()).collect();
    let ztunnels: Vec<Arc<PlayedZtunnel>> = mesh
        .clusters
        .iter()
        .map(|c| PlayedZtunnel::new(&c.name))
        .collect();
    let servers: Vec<(String, MemoryApiServer)> = mesh
        .clusters
        .iter()
        .zip(istiods.iter().zip(&ztunnels))
        .map(|(c, (i, z))| {
            let server = MemoryApiServer::new()
                .with_istiod(i.clone())
                .with_rollouts()
                .with_token_controller();
            // An ambient mesh's ztunnels answer their config dump on their admin port.
            let server = if mesh.dataplane.is_sidecar() {
                server
            } else {
                server.with_ztunnel(z.clone())
            };
            (c.context.clone(), server)
        })
        .collect();
    for (i, ztunnel) in ztunnels.iter().enumerate() {
        let peers = mesh
            .clusters
            .iter()
            .zip(&servers)
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (c, (_, server)))| (c.name.clone(), server.clone()))
            .collect();
        ztunnel.knows(peers);
    }
    let loopbacks: Vec<Loopback> = servers.iter().map(|(_, s)| s.serve_on_loopback()).collect();
    let named: Vec<(&str, &Loopback)> = servers.iter().map(|(c, _)| c.as_str()).zip(&loopbacks).collect();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_for(&named)).unwrap();
    // An ambient mesh: the Gateway API CRDs from a stand-in file (tests download nothing), and
    // istiod's controller of the east-west class beside each server.
    std::fs::write(
        tmp.path().join(GATEWAY_API_CRDS_FILE),
        super::played_eastwest::GATEWAY_API_CRDS,
    )
    .unwrap();
    if !mesh.dataplane.is_sidecar() {
        for (_, server) in &servers {
            super::played_eastwest::run(server.clone());
        }
    }
    let dir = MeshDir::new(tmp.path(), &mesh.mesh_id);
    Lab {
        servers,
        istiods,
        loopbacks: loopbacks.into_iter().map(Some).collect(),
        _dir: tmp,
        dir,
        kubeconfig,
        mesh,
        topology: topology.to_string(),
    }
}

impl Lab {
    /// Stops the API server of `context` (it no longer accepts connections), as a cluster that
    /// died.
    pub fn stop(&mut self, context: &str) {
        let index = self.servers.iter().position(|(c, _)| c == context).unwrap();
        self.loopbacks[index] = None;
    }

    /// The work dir the mesh's folder is in (`--workdir`).
    pub fn workdir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn server(&self, context: &str) -> &MemoryApiServer {
        &self.servers.iter().find(|(c, _)| c == context).unwrap().1
    }

    pub fn pairs(&self) -> Vec<(&str, &MemoryApiServer)> {
        self.servers.iter().map(|(c, s)| (c.as_str(), s)).collect()
    }

    pub fn istioctl(&self, version: &str) -> Arc<PlayedIstioctl> {
        Arc::new(PlayedIstioctl::new(version, &self.pairs()))
    }

    pub fn settings(&self, version: &str) -> Settings {
        let mut settings = Settings::for_mesh(&self.dir, Some(&self.kubeconfig), Duration::from_secs(5));
        settings.istio_version = Some(version.into());
        settings.gateway_api_crds = Some(self._dir.path().join(GATEWAY_API_CRDS_FILE));
        settings.docker_network = "kind".into();
        settings
    }

    /// `up --only istio,eastwest,expose` with istioctl `version`, then every primary given the
    /// other clusters' remote secrets (what the remote-secrets phase leaves; istiod lists them).
    /// `up --only istio,eastwest,expose` with istioctl `version`, then every primary given the
    /// other clusters' remote secrets (what the remote-secrets phase leaves; istiod lists them).
    pub async fn build(&self, version: &str) {
        let (end, _, said) = self.up(version).await;
        assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
        let mesh = &self.mesh;
        for primary in mesh.clusters.iter().filter(|c| c.primary.is_none()) {
            for peer in mesh.clusters.iter().filter(|c| c.name != primary.name) {
                self.server(&primary.context).put(json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("istio-remote-secret-{}", peer.name), "namespace": "istio-system",
                                 "labels": {"istio/multiCluster": "true"}},
                    "data": {peer.name.clone(): "a3ViZWNvbmZpZw=="}}));
            }
        }
    }

    /// The same phases once more: how it ended, the istioctl it ran, what it said.
    pub async fn up(&self, version: &str) -> (RunEnd, Arc<PlayedIstioctl>, Vec<String>) {
        self.run(
            version,
            &[Phase::Istio, Phase::Eastwest, Phase::Expose],
            Vec::new(),
        )
        .await
    }

    /// `up --only <phases>` with istioctl `version` and `cas` as the CA folder's intermediates.
    pub async fn run(
        &self,
        version: &str,
        phases: &[Phase],
        cas: Vec<meshctl::pki::IntermediateCa>,
    ) -> (RunEnd, Arc<PlayedIstioctl>, Vec<String>) {
        let (end, tools, said) = self.try_run(version, phases, cas).await;
        (end.unwrap(), tools, said)
    }

    /// The same, with the run's error when it stopped.
    pub async fn try_run(
        &self,
        version: &str,
        phases: &[Phase],
        cas: Vec<meshctl::pki::IntermediateCa>,
    ) -> (anyhow::Result<RunEnd>, Arc<PlayedIstioctl>, Vec<String>) {
        let mesh = &self.mesh;
        let state = StateStore::load(&self.dir.state()).unwrap();
        let input = PlanInput {
            mesh,
            phases: phases.to_vec(),
            pools: Vec::new(),
            cas,
            timeout_secs: 5,
            docker_network: "kind".into(),
            gateway_ips: state.snapshot().gateway_ips(),
            // As `up`: the clusters `isolate` took out stay out.
            isolated: state.snapshot().isolated.keys().cloned().collect(),
            only_cluster: None,
        };
        let mut prepared = Prepared::written(input, self.dir.plan()).unwrap();
        let (reporter, said) = Reporter::capturing(Format::Text);
        let tools = self.istioctl(version);
        let executor = Executor::with_tools(
            self.settings(version),
            state,
            Arc::new(reporter),
            mesh.clone(),
            tools.clone(),
        );
        let end = executor.run(&mut prepared).await;
        (end, tools, said.lines())
    }

    /// What `meshctl diagnose` collects of every cluster (each bounded by 10 s): the bundle, a way
    /// to read one of its files as text (a missing one fails, naming what is there), and how each
    /// cluster's collection ended.
    pub async fn diagnose(
        &self,
    ) -> (
        impl Fn(&str) -> String,
        Vec<meshctl::diagnostic_bundle::Collected>,
        Vec<String>,
    ) {
        let clients = meshctl::kube::Clients::new(Some(&self.kubeconfig));
        let (bundle, collected) = meshctl::diagnostic_bundle::collect(
            &self.mesh,
            &clients,
            &self.dir,
            Duration::from_secs(10),
            &|_| {},
        )
        .await;
        let paths: Vec<String> = bundle.paths().into_iter().map(String::from).collect();
        let text = move |path: &str| {
            String::from_utf8_lossy(
                bundle
                    .file(path)
                    .unwrap_or_else(|| panic!("{path}: {:?}", bundle.paths())),
            )
            .into_owned()
        };
        (text, collected, paths)
    }

    /// Every cluster, as `down --uninstall` reaches it.
    pub fn targets(&self) -> Vec<meshctl::uninstall::Target<'_>> {
        self.mesh
            .clusters
            .iter()
            .map(|c| meshctl::uninstall::Target {
                cluster: c,
                istio_namespace: self.mesh.istio_namespace(c),
                client: self.server(&c.context).client(),
            })
            .collect()
    }

    /// `down --uninstall` of every cluster with `tools`: what went, per cluster.
    pub async fn uninstall(&self, tools: &PlayedIstioctl) -> Vec<(String, Vec<String>)> {
        meshctl::uninstall::uninstall(
            &self.targets(),
            &self.mesh.mesh_id,
            &self.dir.plan(),
            Some(&self.kubeconfig),
            Duration::from_secs(5),
            tools,
        )
        .await
        .unwrap()
    }

    pub fn upgrader<'a>(
        &'a self,
        tools: Arc<PlayedIstioctl>,
        clients: &'a Clients,
        reporter: Reporter,
    ) -> Upgrader<'a> {
        Upgrader {
            mesh: &self.mesh,
            dir: &self.dir,
            settings: self.settings(&tools.version),
            tools,
            reporter: Arc::new(reporter),
            clients,
            restart_namespaces: Vec::new(),
            verify: false,
            force: false,
            tools_back: Default::default(),
        }
    }

    /// The lab's meshctl.yaml, written in its work dir (for the binary's `--config`).
    pub fn config_file(&self) -> PathBuf {
        let path = self.workdir().join("meshctl.yaml");
        std::fs::write(&path, &self.topology).unwrap();
        path
    }

    /// `meshctl status --config <the lab's topology> -o json` (the binary) against its clusters.
    pub async fn status(&self) -> serde_json::Value {
        let config = self.config_file();
        let out = super::meshctl_off_runtime(&[
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--workdir",
            self.workdir().to_str().unwrap(),
            "status",
            "--config",
            config.to_str().unwrap(),
            "-o",
            "json",
        ])
        .await;
        serde_json::from_str(&super::stdout(&out))
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", super::stdout(&out), super::stderr(&out)))
    }

    pub fn state(&self) -> meshctl::state::MeshState {
        StateStore::load(&self.dir.state()).unwrap().snapshot()
    }
}
