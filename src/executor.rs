//! Runs a plan: phases in order, the clusters of a phase at the same time, each step through the one
//! `match` in [`Executor::execute`]. Progress is recorded per cluster and phase (with a fingerprint
//! of what the phase does), so an interrupted `up` resumes and a finished mesh is left alone. A
//! cluster that fails does not stop the others of its phase; the phase then fails as a whole and
//! names every cluster that failed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell};

use crate::dry_run::describe;
use crate::kube::apply::{Applier, Change};
use crate::kube::wait;
use crate::phases::Phase;
use crate::phases::eastwest::GATEWAY_NAME;
use crate::plan::{ClusterSteps, Condition, PhasePlan, Plan, Step, Tool};
use crate::remote_secret;
use crate::report::Reporter;
use crate::state::StateStore;
use crate::tools::docker::Docker;
use crate::tools::kind::Kind;
use crate::tools::{RunOptions, ToolRunner};
use crate::topology::{Mesh, Provider};
use crate::{kubeconfig, upstream};

/// Everything the executor needs to know, resolved once by the command layer.
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
    /// Download cache.
    pub cache_dir: PathBuf,
}

/// A phase that failed in some clusters.
#[derive(Debug, thiserror::Error)]
#[error("phase {phase} failed in {} of {total} cluster(s):{}", failures.len(),
        failures.iter().map(|(c, e)| format!("\n  - cluster `{c}`: {}", e.replace('\n', "\n    "))).collect::<String>())]
pub struct PhaseFailed {
    /// The phase.
    pub phase: Phase,
    /// Clusters in the phase.
    pub total: usize,
    /// Cluster and error, for each that failed.
    pub failures: Vec<(String, String)>,
}

/// What happened to one cluster in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The steps ran.
    Done,
    /// Already done with the same fingerprint.
    Skipped,
}

/// One download per URL and run; its result (text or error message) is shared.
type FetchOnce = OnceCell<Result<String, String>>;

/// Runs plans against real clusters.
pub struct Executor {
    settings: Settings,
    runner: Arc<dyn ToolRunner>,
    /// Recorded progress and facts.
    pub state: StateStore,
    reporter: Arc<Reporter>,
    mesh: Mesh,
    clients: Mutex<HashMap<String, kube::Client>>,
    secrets: std::sync::Mutex<HashMap<String, Arc<OnceCell<String>>>>,
    kubeconfig_lock: Mutex<()>,
    /// Upstream manifests fetched in this run, by URL: downloaded once however many clusters apply them.
    /// A failed download is shared too: the other clusters report it instead of trying again.
    manifests: std::sync::Mutex<HashMap<String, Arc<FetchOnce>>>,
}

impl Executor {
    /// A new executor.
    pub fn new(
        settings: Settings,
        runner: Arc<dyn ToolRunner>,
        state: StateStore,
        reporter: Arc<Reporter>,
        mesh: Mesh,
    ) -> Executor {
        Executor {
            settings,
            runner,
            state,
            reporter,
            mesh,
            clients: Mutex::default(),
            secrets: std::sync::Mutex::default(),
            kubeconfig_lock: Mutex::new(()),
            manifests: std::sync::Mutex::default(),
        }
    }

    /// Runs one phase in every cluster at once.
    pub async fn run_phase(
        &self,
        plan: &Plan,
        phase: &PhasePlan,
    ) -> Result<Vec<(String, Outcome)>, PhaseFailed> {
        let results = futures::future::join_all(
            phase
                .clusters
                .iter()
                .map(|cs| self.run_cluster(plan, phase.phase, cs)),
        )
        .await;
        let mut outcomes = Vec::new();
        let mut failures = Vec::new();
        for (cs, result) in phase.clusters.iter().zip(results) {
            match result {
                Ok(o) => outcomes.push((cs.cluster.clone(), o)),
                Err(e) => failures.push((cs.cluster.clone(), format!("{e:#}"))),
            }
        }
        if failures.is_empty() {
            Ok(outcomes)
        } else {
            Err(PhaseFailed {
                phase: phase.phase,
                total: phase.clusters.len(),
                failures,
            })
        }
    }

    /// Whether some cluster of `phase` has not done it yet with its current fingerprint.
    pub fn pending(&self, plan: &Plan, phase: &PhasePlan) -> bool {
        phase.clusters.iter().any(|cs| {
            let fingerprint = self.fingerprint(plan, phase.phase, cs);
            !self.state.is_done(&cs.cluster, phase.phase.name(), &fingerprint)
        })
    }

    /// Digest of what a phase does in a cluster: its steps, its rendered files, and for remote
    /// secrets the addresses they will carry.
    pub fn fingerprint(&self, plan: &Plan, phase: Phase, cs: &ClusterSteps) -> String {
        let mut hash = Sha256::new();
        hash.update(serde_json::to_string(&cs.steps).unwrap_or_default());
        let prefix = format!("{}/{}/", cs.cluster, phase.folder());
        for a in plan.artifacts.iter().filter(|a| a.path.starts_with(&prefix)) {
            hash.update(&a.path);
            hash.update(&a.content);
        }
        if phase == Phase::RemoteSecrets {
            let state = self.state.snapshot();
            for (name, c) in &state.clusters {
                hash.update(name);
                hash.update(c.api_endpoint.as_deref().unwrap_or_default());
            }
        }
        hash.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    async fn run_cluster(&self, plan: &Plan, phase: Phase, cs: &ClusterSteps) -> Result<Outcome> {
        let fingerprint = self.fingerprint(plan, phase, cs);
        if self.state.is_done(&cs.cluster, phase.name(), &fingerprint) {
            self.reporter
                .skipped(phase.name(), &cs.cluster, "already done, nothing to change");
            return Ok(Outcome::Skipped);
        }
        let cluster = self
            .mesh
            .cluster(&cs.cluster)
            .ok_or_else(|| anyhow!("cluster `{}` is not in the topology", cs.cluster))?;
        let started = Instant::now();
        self.reporter.started(phase.name(), &cs.cluster);
        let mut details = Vec::new();
        for step in &cs.steps {
            self.reporter.step(phase.name(), &cs.cluster, &describe(step));
            // A failed program already shows its command line; other steps are described here.
            let context = match step {
                Step::Run { .. } => format!("phase {phase}"),
                other => format!("phase {phase}: {}", describe(other)),
            };
            match self.execute(cluster, phase, step).await.context(context) {
                Ok(Some(detail)) => details.push(detail),
                Ok(None) => {}
                Err(e) => {
                    self.reporter
                        .failed(phase.name(), &cs.cluster, started.elapsed(), &format!("{e:#}"));
                    return Err(e);
                }
            }
        }
        self.state
            .mark_done(&cs.cluster, phase.name(), &fingerprint)
            .context("cannot record progress")?;
        let detail = if details.is_empty() {
            "done".to_string()
        } else {
            details.join(", ")
        };
        self.reporter
            .finished(phase.name(), &cs.cluster, started.elapsed(), &detail);
        Ok(Outcome::Done)
    }

    async fn client(&self, context: &str) -> Result<kube::Client> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(context) {
            return Ok(c.clone());
        }
        let client = crate::kube::connect(self.settings.kubeconfig_flag.as_deref(), context).await?;
        clients.insert(context.to_string(), client.clone());
        Ok(client)
    }

    fn applied_detail(applied: &[crate::kube::apply::Applied]) -> Option<String> {
        let word = Change::as_str;
        if applied.len() <= 2 {
            let parts: Vec<String> = applied
                .iter()
                .map(|a| format!("{} {}", a.object, word(a.change)))
                .collect();
            return (!parts.is_empty()).then(|| parts.join(", "));
        }
        let parts: Vec<String> = [Change::Created, Change::Updated, Change::Unchanged]
            .into_iter()
            .map(|c| (applied.iter().filter(|a| a.change == c).count(), word(c)))
            .filter(|(n, _)| *n > 0)
            .map(|(n, w)| format!("{n} objects {w}"))
            .collect();
        Some(parts.join(", "))
    }

    /// How planned programs run: in the plan directory, bounded, with `KUBECONFIG` set when given.
    fn tool_options(&self, kubeconfig: Option<&Path>) -> RunOptions {
        RunOptions {
            cwd: Some(self.settings.plan_dir.clone()),
            timeout: Some(self.settings.tool_timeout),
            env: kubeconfig
                .map(|p| ("KUBECONFIG".to_string(), p.to_string_lossy().into_owned()))
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    /// Runs one step in one cluster; returns a short detail for the step line.
    async fn execute(
        &self,
        cluster: &crate::topology::Cluster,
        phase: Phase,
        step: &Step,
    ) -> Result<Option<String>> {
        let runner = self.runner.as_ref();
        let plan_dir = self.settings.plan_dir.as_path();
        match step {
            Step::Run {
                tool: Tool::Kind,
                args,
                ..
            } => {
                let kind = Kind::new(runner);
                if kind.clusters().await?.contains(&cluster.name) {
                    // Reused, and never deleted by `down`: meshctl did not create it.
                    return Ok(Some(format!("kind cluster `{}` exists, reused", cluster.name)));
                }
                runner
                    .run(
                        "kind",
                        args,
                        &self.tool_options(Some(&self.settings.kind_kubeconfig)),
                    )
                    .await?;
                self.state
                    .update(|s| s.created_kind_clusters.insert(cluster.name.clone()))?;
                Ok(Some(format!("kind cluster `{}` created", cluster.name)))
            }
            Step::Run {
                tool: Tool::Istioctl,
                args,
                ..
            } => {
                // Its version was checked before anything changed (`up`'s preflight).
                // istioctl reads KUBECONFIG; point it at the file meshctl was given.
                runner
                    .run(
                        "istioctl",
                        args,
                        &self.tool_options(self.settings.kubeconfig_flag.as_deref()),
                    )
                    .await?;
                Ok(None)
            }
            Step::Run {
                tool: Tool::Docker,
                args,
                ..
            } => {
                runner.run("docker", args, &self.tool_options(None)).await?;
                Ok(None)
            }
            Step::Apply { file } => {
                let text = std::fs::read_to_string(plan_dir.join(file))
                    .with_context(|| format!("cannot read `{file}`"))?;
                let applied = Applier::new(self.client(&cluster.context).await?)
                    .apply_yaml(&text, file)
                    .await?;
                Ok(Self::applied_detail(&applied))
            }
            Step::AwaitAdmission { file } => {
                let text = std::fs::read_to_string(plan_dir.join(file))
                    .with_context(|| format!("cannot read `{file}`"))?;
                let tries = Applier::new(self.client(&cluster.context).await?)
                    .await_admission(&text, file, self.settings.timeout)
                    .await?;
                Ok((tries > 1).then(|| format!("webhook answered after {tries} tries")))
            }
            Step::ApplyUpstream { name, url, sha256 } => {
                let cell = self
                    .manifests
                    .lock()
                    .expect("manifests lock")
                    .entry(url.clone())
                    .or_default()
                    .clone();
                let fetched = cell
                    .get_or_init(|| async {
                        upstream::fetch(
                            runner,
                            url,
                            sha256,
                            self.settings.metallb_manifest.as_deref(),
                            &self.settings.cache_dir,
                        )
                        .await
                        .map_err(|e| e.to_string())
                    })
                    .await;
                let text = fetched.as_ref().map_err(|e| anyhow!("{e}"))?;
                let applied = Applier::new(self.client(&cluster.context).await?)
                    .apply_yaml(text, name)
                    .await?;
                Ok(Self::applied_detail(&applied).map(|d| format!("{name}: {d}")))
            }
            Step::Wait { until } => {
                let client = self.client(&cluster.context).await?;
                match until {
                    Condition::LoadBalancerIp { namespace, name } => {
                        let ip =
                            wait::load_balancer_ip(&client, namespace, name, self.settings.timeout).await?;
                        if name == GATEWAY_NAME {
                            self.state.update(|s| {
                                s.clusters.entry(cluster.name.clone()).or_default().eastwest_ip =
                                    Some(ip.clone())
                            })?;
                        }
                        Ok(Some(format!("{name} at {ip}")))
                    }
                    Condition::RemoteClustersSynced { clusters } => {
                        match wait::remote_clusters_synced(&client, clusters, self.settings.timeout).await {
                            Ok(()) => Ok(Some(format!("istiod reports {} synced", clusters.join(", ")))),
                            Err((err, missing)) => Err(self.unsynced_error(cluster, err, &missing)),
                        }
                    }
                    other => {
                        wait::wait_for(&client, other, self.settings.timeout).await?;
                        Ok(None)
                    }
                }
            }
            Step::ImportKubeconfig {
                kind_cluster,
                context,
            } => {
                let text = Kind::new(runner).kubeconfig(kind_cluster).await?;
                let _guard = self.kubeconfig_lock.lock().await;
                kubeconfig::import_context(
                    &self.settings.kubeconfig_target,
                    &text,
                    &format!("kind-{kind_cluster}"),
                    context,
                )
                .with_context(|| {
                    format!(
                        "cannot import context `{context}` into `{}`",
                        self.settings.kubeconfig_target.display()
                    )
                })?;
                self.state.update(|s| {
                    s.kubeconfig = Some(self.settings.kubeconfig_target.clone());
                    s.kubeconfig_entries.insert(context.clone());
                })?;
                self.clients.lock().await.remove(context);
                Ok(None)
            }
            Step::RecordApiEndpoint { container, network } => {
                let ip = Docker::new(runner).container_ip(container, network).await?;
                let endpoint = format!("https://{ip}:6443");
                self.state.update(|s| {
                    s.clusters.entry(cluster.name.clone()).or_default().api_endpoint = Some(endpoint.clone())
                })?;
                Ok(Some(format!("API server {endpoint}")))
            }
            Step::LabelNodes { labels, overwrite } => {
                let nodes: Api<Node> = Api::all(self.client(&cluster.context).await?);
                let list = nodes
                    .list(&ListParams::default())
                    .await
                    .context("cannot list nodes")?;
                let mut changed = 0;
                for node in list.items {
                    let current = node.metadata.labels.clone().unwrap_or_default();
                    let wanted: BTreeMap<&String, &String> = labels
                        .iter()
                        .filter(|(k, v)| match current.get(*k) {
                            None => true,
                            Some(have) => *overwrite && have != *v,
                        })
                        .collect();
                    if wanted.is_empty() {
                        continue;
                    }
                    let name = node.metadata.name.clone().unwrap_or_default();
                    let patch = serde_json::json!({"metadata": {"labels": wanted}});
                    nodes
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .with_context(|| format!("cannot label node `{name}`"))?;
                    changed += 1;
                }
                Ok((changed > 0).then(|| format!("{changed} node(s) labelled")))
            }
            Step::RemoteSecret { source } => {
                let text = self.remote_secret_of(source).await?;
                let applied = Applier::new(self.client(&cluster.context).await?)
                    .apply_yaml(&text, &format!("istio-remote-secret-{source}"))
                    .await?;
                let _ = phase;
                Ok(Self::applied_detail(&applied))
            }
        }
    }

    /// Why istiod in `cluster` does not see its peers: each pair, with the address its remote secret
    /// makes istiod dial, and what to check.
    fn unsynced_error(
        &self,
        cluster: &crate::topology::Cluster,
        err: wait::WaitError,
        missing: &[(String, String)],
    ) -> anyhow::Error {
        let state = self.state.snapshot();
        let pairs: Vec<String> = missing
            .iter()
            .map(|(peer, status)| {
                let address = self
                    .mesh
                    .cluster(peer)
                    .and_then(|c| c.api_server.clone())
                    .or_else(|| state.clusters.get(peer).and_then(|c| c.api_endpoint.clone()))
                    .unwrap_or_else(|| "the server in its kubeconfig".into());
                format!(
                    "istiod in `{}` reports `{peer}` {status}; its remote secret points at {address}",
                    cluster.name
                )
            })
            .collect();
        anyhow::Error::new(err).context(format!(
            "{}\nhint: that address must be reachable from `{}`'s pods (never 127.0.0.1); `istioctl remote-clusters --context {}` shows the same view",
            pairs.join("\n"),
            cluster.name,
            cluster.context
        ))
    }

    /// The remote secret of `source`, built once per run however many clusters receive it.
    async fn remote_secret_of(&self, source: &str) -> Result<String> {
        let cell = self
            .secrets
            .lock()
            .expect("secrets lock")
            .entry(source.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let cluster = self.mesh.cluster(source).ok_or_else(|| anyhow!("cluster `{source}` is not in the topology"))?;
            let recorded = self.state.snapshot().clusters.get(source).and_then(|c| c.api_endpoint.clone());
            let server = match (self.mesh.provider, cluster.api_server.clone().or(recorded)) {
                (_, Some(server)) => server,
                (Provider::Kind, None) => {
                    return Err(anyhow!(
                        "cluster `{source}`: no API server address recorded on the docker network; run `meshctl up --only clusters` first"
                    ));
                }
                (Provider::Existing, None) => {
                    let server = crate::kube::server_of(self.settings.kubeconfig_flag.as_deref(), &cluster.context)?;
                    remote_secret::check_server(source, &server, false)?;
                    server
                }
            };
            let client = self.client(&cluster.context).await?;
            let creds = remote_secret::reader_credentials(&client, source, self.settings.timeout).await?;
            Ok(remote_secret::render_secret(source, &server, &creds)?)
        })
        .await
        .cloned()
    }
}

/// `<workdir>/<mesh-id>`.
pub fn mesh_dir(workdir: &Path, mesh_id: &str) -> PathBuf {
    workdir.join(mesh_id)
}
