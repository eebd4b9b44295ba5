//! What a phase's steps may use while they run, handed down by the executor: the run's settings,
//! the connections, the program runner, the state file, and values computed once per run. Phases
//! sit below the executor, so they get these as one value instead of reaching up for them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::Mutex;

use crate::kube::Clients;
use crate::kube::apply::{Applied, Applier};
use crate::state::{MeshState, StateStore};
use crate::tools::{RunOptions, ToolRunner};
use crate::topology::{Cluster, Mesh};

/// What `--timeout` is when not given, for the commands that plan without one (`status`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything a run needs to know, resolved once by the command layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--kubeconfig`, if given (otherwise kube reads `KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig_flag: Option<PathBuf>,
    /// The file kind contexts are imported into.
    pub kubeconfig_target: PathBuf,
    /// Where kind writes its own kubeconfig (kept apart, so kind and meshctl never race on a file).
    pub kind_kubeconfig: PathBuf,
    /// The plan directory: artifacts live here and tools run here.
    pub plan_dir: PathBuf,
    /// Bound on each wait.
    pub timeout: Duration,
    /// Bound on each external program.
    pub tool_timeout: Duration,
    /// `--metallb-manifest`.
    pub metallb_manifest: Option<PathBuf>,
    /// `--gateway-api-crds`.
    pub gateway_api_crds: Option<PathBuf>,
    pub cache_dir: PathBuf,
    /// `--force`: run every step whatever the probes find.
    pub force: bool,
    /// `--allow-version-skew` for istioctl.
    pub allow_version_skew: bool,
    /// The Istio release chosen (`--istio-version`, `istio.version`): istioctl must be exactly it.
    /// `None`: the pinned minor, from whatever istioctl is on PATH.
    pub istio_version: Option<String>,
    /// `--adopt`: take over existing objects meshctl did not create.
    pub adopt: bool,
    /// `--lb-subnet`: pools until the docker network exists.
    pub lb_subnet: ipnet::IpNet,
    /// The docker network the kind nodes are on.
    pub docker_network: String,
}

impl Settings {
    /// The settings of a run on the mesh in `dir` with nothing asked beyond the defaults (no
    /// `--force`, `--adopt` or skew, the default `--lb-subnet`, the pinned Istio): `up` sets what
    /// its flags change over these; `rejoin` runs with them as they are.
    pub fn for_mesh(
        dir: &crate::mesh_dir::MeshDir,
        kubeconfig_flag: Option<&Path>,
        timeout: Duration,
    ) -> Settings {
        Settings {
            kubeconfig_flag: kubeconfig_flag.map(Path::to_path_buf),
            kubeconfig_target: crate::kubeconfig::target_path(kubeconfig_flag),
            kind_kubeconfig: dir.kind_kubeconfig(),
            plan_dir: dir.plan(),
            timeout,
            tool_timeout: timeout * 2 + Duration::from_secs(60),
            metallb_manifest: None,
            gateway_api_crds: None,
            cache_dir: crate::upstream::cache_dir(),
            force: false,
            allow_version_skew: false,
            istio_version: None,
            adopt: false,
            lb_subnet: crate::ipam::KIND_SUBNET.parse().expect("a valid subnet"),
            docker_network: crate::tools::docker::kind_network(),
        }
    }
}

pub use crate::memo::Memo;

/// What one run shares across its phases and clusters.
pub struct RunContext {
    pub settings: Settings,
    pub mesh: Mesh,
    pub clients: Clients,
    /// How external programs run.
    pub tools: Arc<dyn ToolRunner>,
    /// Recorded facts and ownership.
    pub state: StateStore,
    /// Values computed once per run.
    pub memo: Memo,
    /// Held while a kubeconfig file is rewritten: clusters import their contexts concurrently.
    pub kubeconfig_lock: Mutex<()>,
}

/// One step's view: the run, and the cluster it runs in.
#[derive(Clone, Copy)]
pub struct StepContext<'a> {
    pub run: &'a RunContext,
    /// Where the step runs.
    pub cluster: &'a Cluster,
}

impl StepContext<'_> {
    pub async fn client(&self) -> Result<kube::Client> {
        Ok(self.run.clients.get(&self.cluster.context).await?)
    }

    pub fn settings(&self) -> &Settings {
        &self.run.settings
    }

    /// The namespace of this cluster's Istio control-plane objects (istio-system, or
    /// `external-istiod` in the clusters of an external control plane).
    pub fn istio_namespace(&self) -> &'static str {
        self.run.mesh.istio_namespace(self.cluster)
    }

    /// A rendered file of the plan, as written in the plan directory.
    pub fn artifact_text(&self, file: &str) -> Result<String> {
        std::fs::read_to_string(self.run.settings.plan_dir.join(file))
            .with_context(|| format!("cannot read `{file}`"))
    }

    /// How planned programs run: in the plan directory, bounded, with `KUBECONFIG` set when given.
    pub fn tool_options(&self, kubeconfig: Option<&Path>) -> RunOptions {
        RunOptions {
            cwd: Some(self.run.settings.plan_dir.clone()),
            timeout: Some(self.run.settings.tool_timeout),
            env: crate::kubeconfig::for_tools(kubeconfig).into_iter().collect(),
            ..Default::default()
        }
    }

    /// Server-side applies every document of `text` (from `source`, for messages) in this
    /// cluster, taking over objects meshctl did not create only under `--adopt`.
    pub async fn apply(&self, text: &str, source: &str) -> Result<Vec<Applied>> {
        Ok(Applier::new(self.client().await?)
            .with_adoption(self.run.settings.adopt)
            .apply_yaml(text, source)
            .await?)
    }

    /// Records a fact learnt about this cluster in the state file.
    pub fn record(&self, change: impl FnOnce(&mut crate::state::ClusterState)) -> Result<()> {
        let name = self.cluster.name.clone();
        self.run
            .state
            .update(|s| change(s.clusters.entry(name).or_default()))
            .context("cannot record progress")?;
        Ok(())
    }
}

/// What removing a phase from one cluster may use (`down --uninstall`).
pub struct RemoveContext<'a> {
    pub cluster: &'a Cluster,
    /// The mesh being removed: another mesh's objects in the cluster stay.
    pub mesh_id: &'a str,
    /// The namespace of the cluster's Istio control-plane objects.
    pub istio_namespace: &'static str,
    pub client: kube::Client,
    /// The plan directory `up` ran in: the files it installed from.
    pub plan_dir: &'a Path,
    /// `--kubeconfig`, passed on to istioctl.
    pub kubeconfig: Option<&'a Path>,
    /// Bound on each program.
    pub timeout: Duration,
    /// How external programs run.
    pub tools: &'a dyn ToolRunner,
}

impl RemoveContext<'_> {
    /// Where the cluster's east-west gateway and what configures it live: istio-system for an
    /// external control plane's own gateway, else beside the cluster's Istio.
    pub fn gateway_namespace(&self) -> &'static str {
        match self.cluster.role {
            crate::topology::Role::External => crate::topology::ISTIO_NAMESPACE,
            _ => self.istio_namespace,
        }
    }
}

/// What a phase checks before a run changes anything, so `up` does not fail minutes in, after
/// clusters or Istio were installed.
pub struct Preflight<'a> {
    pub mesh: &'a Mesh,
    /// What meshctl recorded (the kubeconfig entries it created, and in which file).
    pub state: &'a MeshState,
    /// The file kind contexts are imported into.
    pub kubeconfig_target: &'a Path,
    /// `--kubeconfig`, if given: when it is not, every file of `KUBECONFIG` counts.
    pub kubeconfig_flag: Option<&'a Path>,
    pub metallb_manifest: Option<&'a Path>,
}

/// One column of `up`'s closing table, filled by the phase that owns what it shows.
pub struct SummaryColumn {
    pub header: &'static str,
    /// The key in the JSON `summary` event.
    pub key: &'static str,
    /// What the finished run left in one cluster.
    pub value: String,
}
