//! The upgrade against the clusters: each cluster's steps (the phases on the new revision through
//! the executor, the tag through istioctl), its gate, and the way back when a gate fails.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::procedure::{self, Action};
use crate::executor::{Executor, Prepared, RunEnd, Settings};
use crate::istio_revisions::{self as held, Held};
use crate::kube::Clients;
use crate::mesh_dir::MeshDir;
use crate::plan::{Phase, PlanInput};
use crate::report::Reporter;
use crate::revision::Revision;
use crate::state::{IstioRelease, MeshState, StateStore, UpgradeRecord};
use crate::tools::{RunOptions, ToolRunner};
use crate::topology::{Cluster, Mesh, Role};

/// How long a cluster has to answer before the upgrade names it as down.
const ANSWER_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// How one upgrade command runs.
pub struct Upgrader<'a> {
    pub mesh: &'a Mesh,
    pub dir: &'a MeshDir,
    /// The executor's settings; `istio_version` is the target release's (the istioctl in
    /// `tools` is that release's: it installs the new revision, moves tags and removes revisions).
    pub settings: Settings,
    pub tools: Arc<dyn ToolRunner>,
    pub reporter: Arc<Reporter>,
    pub clients: &'a Clients,
    /// Namespaces whose Deployments are restarted onto the injection's revision, per cluster
    /// (workloads are theirs to schedule: none unless asked).
    pub restart_namespaces: Vec<String>,
    /// Prove every cluster pair still calls each other after each cluster (`meshctl verify`).
    pub verify: bool,
    /// `--finish` even while pods still run proxies of the old revision.
    pub force: bool,
    /// The istioctl of the release the upgrade comes from, once known: a rollback puts the
    /// gateways back on the old revision with it, as Istio's canary upgrade reinstalls a
    /// revision's gateways with that revision's own istioctl. Unset: the target's.
    pub tools_back: std::sync::OnceLock<Arc<dyn ToolRunner>>,
}

/// How an upgrade command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A gate failed in `cluster`; every cluster touched was put back on the old revision.
    RolledBack {
        cluster: String,
        reason: String,
    },
    Interrupted,
}

/// A step cut short by Ctrl-C: the clusters hold what was done, and the same command resumes.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

impl Upgrader<'_> {
    /// Keeps the istioctl of `from`, for a rollback to put the gateways back with (fetched and
    /// checked as `up` fetches one; usually cached since `up` used it). Not to be had, a rollback
    /// uses the target's, and says so now.
    pub async fn keep_tools_back(&self, from: &IstioRelease) {
        match crate::istioctl_choice::istioctl_runner(None, Some(&from.version), false, &self.settings.cache_dir, &self.reporter)
            .await
        {
            Ok(tools) => {
                let _ = self.tools_back.set(tools);
            }
            Err(e) => self.reporter.warn(
                "upgrade",
                &format!(
                    "istioctl {} cannot be had ({e:#}); a rollback would put the gateways back with istioctl of the target release",
                    from.version
                ),
            ),
        }
    }

    fn state(&self) -> Result<StateStore> {
        Ok(StateStore::load(&self.dir.state())?)
    }

    fn isolated(&self) -> Result<BTreeSet<String>> {
        Ok(self.state()?.snapshot().isolated.into_keys().collect())
    }

    async fn client(&self, cluster: &Cluster) -> Result<kube::Client> {
        self.clients
            .get(&cluster.context)
            .await
            .with_context(|| format!("cluster `{}` does not answer", cluster.name))
    }

    async fn held(&self, cluster: &Cluster) -> Result<Held> {
        let client = self.client(cluster).await?;
        held::gather(&client)
            .await
            .with_context(|| format!("cluster `{}`: cannot read its Istio revisions", cluster.name))
    }

    /// Every cluster the upgrade goes through answers, each within [`ANSWER_BOUND`]: one that does
    /// not would stop the upgrade half-way, so it is named before anything changes.
    async fn all_answer(&self) -> Result<()> {
        let isolated = self.isolated()?;
        let clusters = procedure::order(self.mesh, &isolated);
        let asked = clusters.iter().map(|c| async move {
            match tokio::time::timeout(ANSWER_BOUND, self.held(c)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some(format!(
                    "cluster `{}` did not answer within {}s",
                    c.name,
                    ANSWER_BOUND.as_secs()
                )),
            }
        });
        let silent: Vec<String> = futures::future::join_all(asked)
            .await
            .into_iter()
            .flatten()
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        bail!(
            "preflight: {}\nhint: an upgrade goes through every cluster; wait until it answers, or take it out of the mesh first (`meshctl isolate CLUSTER`: the upgrade then leaves it alone)",
            silent.join("; ")
        )
    }

    /// Where the mesh comes from: the upgrade under way (which must go to `to`), else the release
    /// the primaries run, which must be one minor release or less behind `to`.
    pub async fn from_release(&self, to: &IstioRelease) -> Result<IstioRelease> {
        self.all_answer().await?;
        if let Some(under_way) = self.state()?.snapshot().upgrade {
            if under_way.to != *to {
                bail!(super::Refusal(format!(
                    "an upgrade from {} to {} is under way: resume it with `meshctl upgrade --to {}`, or `--rollback` it, before another",
                    under_way.from.version, under_way.to.version, under_way.to.version
                )));
            }
            return Ok(under_way.from);
        }
        let mut primaries = Vec::new();
        for cluster in procedure::order(self.mesh, &self.isolated()?) {
            if cluster.role == Role::Primary {
                primaries.push((cluster.name.as_str(), self.held(cluster).await?));
            }
        }
        let views: Vec<(&str, &Held)> = primaries.iter().map(|(c, h)| (*c, h)).collect();
        let (revision, version) =
            procedure::running_release(&views).map_err(|e| anyhow!("preflight: {e}"))?;
        let target: crate::istio_version::IstioVersion =
            to.version.parse().map_err(|e: String| anyhow!(e))?;
        procedure::check_move(&version, &target).map_err(super::Refusal)?;
        Ok(IstioRelease {
            version: version.to_string(),
            revision,
        })
    }

    /// Moves every cluster, one at a time, from `from` to `to`; a failed gate puts every cluster
    /// touched back on `from` and stops.
    pub async fn upgrade(&self, from: &IstioRelease, to: &IstioRelease) -> Result<Outcome> {
        self.state()?.update(|s| {
            if s.upgrade.is_none() {
                s.upgrade = Some(UpgradeRecord {
                    from: from.clone(),
                    to: to.clone(),
                    started: now(),
                    recorded_before: s.istio.clone(),
                });
            }
            s.istio = Some(to.clone());
        })?;
        let isolated = self.isolated()?;
        let clusters = procedure::order(self.mesh, &isolated);
        let mut touched: Vec<&Cluster> = Vec::new();
        for cluster in clusters {
            let started = Instant::now();
            touched.push(cluster);
            match self.upgrade_cluster(cluster, to).await {
                Ok(()) => self.reporter.ok(
                    &cluster.name,
                    &format!(
                        "on Istio {} (revision {}) in {} s; gate passed",
                        to.version,
                        to.revision,
                        started.elapsed().as_secs()
                    ),
                ),
                Err(e) if e.is::<Interrupted>() => return Ok(Outcome::Interrupted),
                Err(e) => {
                    let reason = format!("{e:#}");
                    // A failed phase has said in full what failed; its first line names it.
                    let headline = reason.lines().next().unwrap_or_default().trim_end_matches(':');
                    self.reporter
                        .fail(&cluster.name, &format!("upgrade stopped: {headline}"));
                    self.reporter.note(
                        "upgrade",
                        &format!(
                            "putting every cluster touched back on {} (revision {})",
                            from.version, from.revision
                        ),
                    );
                    touched.reverse();
                    self.roll_back(&touched, from, to).await?;
                    return Ok(Outcome::RolledBack {
                        cluster: cluster.name.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(Outcome::Done)
    }

    async fn upgrade_cluster(&self, cluster: &Cluster, to: &IstioRelease) -> Result<()> {
        let held = self.held(cluster).await?;
        let steps = procedure::pending(cluster, &held, &to.revision, self.mesh);
        if steps.is_empty() {
            self.reporter
                .note(&cluster.name, &format!("already on revision {}", to.revision));
        }
        for step in steps {
            self.reporter.note(&cluster.name, &step.describe(&to.revision));
            match step.action() {
                Action::Converge(phases) => self.converge(cluster, &to.revision, phases.to_vec()).await?,
                Action::MoveInjection => self.move_injection(cluster, &held, &to.revision).await?,
            }
        }
        self.restart_workloads(cluster).await?;
        self.gate(cluster, &to.revision).await
    }

    /// Puts `clusters` (in the order given) back on `from`: injection, gateway and exposed istiod
    /// first, then the new revision removed, then the gate on `from`.
    async fn roll_back(&self, clusters: &[&Cluster], from: &IstioRelease, to: &IstioRelease) -> Result<()> {
        for cluster in clusters {
            let held = self.held(cluster).await?;
            if held.injection() != from.revision || !held.pinned_elsewhere(&from.revision).is_empty() {
                self.reporter.note(
                    &cluster.name,
                    &format!("point injection back at {}", from.revision),
                );
                self.move_injection(cluster, &held, &from.revision).await?;
            }
            if held.gateway.as_ref().is_some_and(|g| *g != from.revision)
                || self.mesh.controls_remotes(cluster)
            {
                self.converge(cluster, &from.revision, vec![Phase::Eastwest, Phase::Expose])
                    .await?;
            }
            self.restart_workloads(cluster).await?;
            if held.has(&to.revision) {
                // As `--finish` does for the old revision, and as `istioctl uninstall` warns
                // (`operator/cmd/mesh/uninstall.go`, `preCheckWarnings`): pods the new revision
                // injected would lose their control plane with it. The rollback stops here and
                // resumes once they are restarted.
                let stranded = self.pods_on(cluster, &to.revision).await?;
                if !stranded.is_empty() && !self.force {
                    bail!(
                        "cluster `{}`: {} pod(s) run proxies of revision {} ({}), and would lose their control plane if it were removed; revision {} stays installed there, injection already points back at {}\nhint: restart them (`--restart-namespaces NS,..`, or your own rollout), then run `meshctl upgrade --rollback` again, or pass --force",
                        cluster.name,
                        stranded.len(),
                        to.revision,
                        some_of(&stranded),
                        to.revision,
                        from.revision
                    );
                }
                self.reporter
                    .note(&cluster.name, &format!("remove revision {}", to.revision));
                self.uninstall_revision(cluster, &to.revision).await?;
            }
            self.gate(cluster, &from.revision).await?;
            self.reporter.ok(
                &cluster.name,
                &format!("back on Istio {} (revision {})", from.version, from.revision),
            );
        }
        self.state()?.update(|s| {
            s.istio = s.upgrade.take().and_then(|u| u.recorded_before);
        })?;
        Ok(())
    }

    /// `--rollback`: every cluster back on the release the upgrade under way came from, last
    /// cluster first.
    pub async fn rollback(&self) -> Result<Outcome> {
        let Some(under_way) = self.state()?.snapshot().upgrade else {
            bail!(super::Refusal(
                "no upgrade is under way: nothing to roll back (after `--finish` the old revision is gone)"
                    .into()
            ));
        };
        let isolated = self.isolated()?;
        let mut clusters = procedure::order(self.mesh, &isolated);
        clusters.reverse();
        // A finish that began removed the old revision somewhere: there is nothing to go back to
        // there, so nothing is changed anywhere.
        for cluster in &clusters {
            if !self.held(cluster).await?.has(&under_way.from.revision) {
                bail!(super::Refusal(format!(
                    "cluster `{}` no longer has revision {} (a `--finish` began): there is nothing to roll back to; run `meshctl upgrade --finish` to complete it",
                    cluster.name, under_way.from.revision
                )));
            }
        }
        match self.roll_back(&clusters, &under_way.from, &under_way.to).await {
            Err(e) if e.is::<Interrupted>() => Ok(Outcome::Interrupted),
            other => other.map(|()| Outcome::Done),
        }
    }

    /// `--finish`: the old revision removed from every cluster, once nothing runs on it.
    pub async fn finish(&self) -> Result<Outcome> {
        let Some(under_way) = self.state()?.snapshot().upgrade else {
            bail!(super::Refusal(
                "no upgrade is under way: nothing to finish".into()
            ));
        };
        let (from, to) = (&under_way.from, &under_way.to);
        let clusters = procedure::order(self.mesh, &self.isolated()?);
        // Every cluster first: a cluster not yet moved, or pods still on the old proxies, stop
        // the finish before anything is removed anywhere.
        let mut helds = Vec::new();
        for cluster in &clusters {
            let held = self.held(cluster).await?;
            if !procedure::pending(cluster, &held, &to.revision, self.mesh).is_empty() {
                bail!(
                    "cluster `{}` is not on revision {} yet: run `meshctl upgrade --to {}` to complete the upgrade first",
                    cluster.name,
                    to.revision,
                    to.version
                );
            }
            self.restart_workloads(cluster).await?;
            let old = self.pods_on(cluster, &from.revision).await?;
            if !old.is_empty() && !self.force {
                bail!(
                    "cluster `{}`: {} pod(s) still run proxies of revision {} ({}), and would lose their control plane\nhint: restart them (`--restart-namespaces NS,..`, or your own rollout), or pass --force",
                    cluster.name,
                    old.len(),
                    from.revision,
                    some_of(&old)
                );
            }
            helds.push(held);
        }
        for (cluster, held) in clusters.iter().zip(&helds) {
            if held.has(&from.revision) {
                self.reporter
                    .note(&cluster.name, &format!("remove revision {}", from.revision));
                self.uninstall_revision(cluster, &from.revision).await?;
            }
            self.gate(cluster, &to.revision).await?;
            self.reporter
                .ok(&cluster.name, &format!("only revision {} left", to.revision));
        }
        self.state()?.update(|s| s.upgrade = None)?;
        // The old revision's istiod is gone: its route through each exposed istiod goes too.
        for cluster in clusters.iter().filter(|c| self.mesh.controls_remotes(c)) {
            self.converge(cluster, &to.revision, vec![Phase::Expose]).await?;
        }
        Ok(Outcome::Done)
    }

    /// The phases on `revision`, in `cluster` alone, through the executor: probed first, so what
    /// is in place is left, and resumed like `up`. Its plan is kept in the mesh folder's
    /// `upgrade/<revision>/`.
    async fn converge(&self, cluster: &Cluster, revision: &Revision, phases: Vec<Phase>) -> Result<()> {
        let mut mesh = self.mesh.clone();
        mesh.istio_revision = revision.clone();
        let state = self.state()?;
        let snapshot = state.snapshot();
        // Both revisions run until `--finish` (or the rollback's uninstall): each stays reachable
        // by its own name through the exposed istiod.
        mesh.istio_revision_beside = snapshot.upgrade.as_ref().and_then(|u| u.beside(revision));
        let out = self.dir.upgrade_plan(revision.label());
        let mut settings = self.settings.clone();
        settings.plan_dir = out.clone();
        // Going back to the revision the upgrade came from: with that release's istioctl.
        let back = snapshot
            .upgrade
            .as_ref()
            .filter(|u| u.from.revision == *revision && u.to.revision != *revision)
            .zip(self.tools_back.get());
        let tools = match back {
            Some((under_way, old)) => {
                settings.istio_version = Some(under_way.from.version.clone());
                old.clone()
            }
            None => self.tools.clone(),
        };
        let input = cluster_input(&mesh, &cluster.name, phases, &snapshot, &settings);
        let mut prepared = Prepared::written(input, out)?;
        let executor = Executor::with_tools(settings, state, self.reporter.clone(), mesh.clone(), tools)
            .carrying_out_a_change();
        match executor.run(&mut prepared).await? {
            RunEnd::Interrupted => Err(Interrupted.into()),
            RunEnd::Finished { .. } => Ok(()),
        }
    }

    fn istioctl_options(&self) -> RunOptions {
        RunOptions {
            timeout: Some(self.settings.tool_timeout),
            env: crate::kubeconfig::for_tools(self.settings.kubeconfig_flag.as_deref())
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    /// The `default` tag pointed at `revision`, and namespaces labelled with another revision by
    /// name relabelled with it (as Istio's canary upgrade moves them: `istio.io/rev=<new>`).
    async fn move_injection(&self, cluster: &Cluster, held: &Held, revision: &Revision) -> Result<()> {
        if held.injection() != *revision {
            let args = super::tag_set_args(&cluster.context, revision);
            self.tools
                .run("istioctl", &args, &self.istioctl_options())
                .await
                .with_context(|| format!("cluster `{}`: moving injection to {revision}", cluster.name))?;
        }
        let pinned = held.pinned_elsewhere(revision);
        if pinned.is_empty() {
            return Ok(());
        }
        let namespaces = Api::<Namespace>::all(self.client(cluster).await?);
        let patch = serde_json::json!({"metadata": {"labels": {crate::revision::LABEL: revision.label()}}});
        let params = PatchParams {
            field_manager: Some(crate::kube::FIELD_MANAGER.into()),
            ..Default::default()
        };
        for namespace in &pinned {
            namespaces
                .patch(namespace, &params, &Patch::Merge(&patch))
                .await
                .with_context(|| {
                    format!("cluster `{}`: relabelling namespace `{namespace}`", cluster.name)
                })?;
        }
        self.reporter.note(
            &cluster.name,
            &format!(
                "namespace(s) {} now labelled {}={revision} (their pods move when restarted)",
                pinned.join(", "),
                crate::revision::LABEL
            ),
        );
        Ok(())
    }

    async fn uninstall_revision(&self, cluster: &Cluster, revision: &Revision) -> Result<()> {
        let args = super::uninstall_revision_args(&cluster.context, revision);
        self.tools
            .run("istioctl", &args, &self.istioctl_options())
            .await
            .with_context(|| format!("cluster `{}`: removing revision {revision}", cluster.name))?;
        Ok(())
    }

    /// `--restart-namespaces`: every Deployment there restarted (as `kubectl rollout restart`
    /// does) and waited on, so its pods are injected by the revision injection points at now.
    async fn restart_workloads(&self, cluster: &Cluster) -> Result<()> {
        for namespace in &self.restart_namespaces {
            self.restart_namespace(cluster, namespace).await?;
        }
        Ok(())
    }

    async fn restart_namespace(&self, cluster: &Cluster, namespace: &str) -> Result<()> {
        let client = self.client(cluster).await?;
        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .with_context(|| {
                format!(
                    "cluster `{}`: cannot list the Deployments of `{namespace}`",
                    cluster.name
                )
            })?;
        let names: Vec<String> = deployments
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect();
        for name in &names {
            crate::kube::apply::rollout_restart(&client, namespace, name).await?;
        }
        for name in &names {
            let deployments = kube::Api::namespaced(client.clone(), namespace);
            let done = crate::kube::wait::rolled_out(namespace, name);
            crate::kube::wait::until(&deployments, done, self.settings.timeout).await?;
        }
        if !names.is_empty() {
            self.reporter.note(
                &cluster.name,
                &format!("restarted {} Deployment(s) in `{namespace}`", names.len()),
            );
        }
        Ok(())
    }

    /// Pods whose proxy `revision` injected (`sidecar.istio.io/status`'s `revision`).
    async fn pods_on(&self, cluster: &Cluster, revision: &Revision) -> Result<Vec<String>> {
        let client = self.client(cluster).await?;
        let pods = Api::<Pod>::all(client)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("cluster `{}`: cannot list pods", cluster.name))?;
        Ok(pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| super::injected_by(p).is_some_and(|r| r == *revision))
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect())
    }

    /// What must hold after a cluster's step: the cluster on `revision` (installed, injecting,
    /// its gateway), a primary's istiod of it synced with every cluster it reads, and, when asked,
    /// every pair of clusters still calling each other.
    async fn gate(&self, cluster: &Cluster, revision: &Revision) -> Result<()> {
        let held = self.held(cluster).await?;
        let left = procedure::pending(cluster, &held, revision, self.mesh);
        if !left.is_empty() {
            let what: Vec<String> = left.iter().map(|s| s.describe(revision)).collect();
            bail!("gate: not done: {}", what.join("; "));
        }
        if cluster.role == Role::Primary {
            let client = self.client(cluster).await?;
            let isolated = self.isolated()?;
            let peers: Vec<String> = self
                .mesh
                .clusters
                .iter()
                .filter(|c| c.name != cluster.name && !isolated.contains(&c.name))
                .map(|c| c.name.clone())
                .collect();
            if !peers.is_empty() {
                crate::istiod::remote_clusters_synced(
                    &client,
                    self.mesh.istio_namespace(cluster),
                    Some(revision),
                    &peers,
                    self.settings.timeout,
                )
                .await
                .map_err(|(e, _)| anyhow!("gate: {e}"))?;
            }
        }
        if self.verify {
            // meshctl's own sample workloads in this cluster take the proxies of the revision it
            // injects with now, so the matrix calls between old and new proxies both.
            self.restart_namespace(cluster, crate::verification::workloads::NAMESPACE)
                .await?;
            self.matrix().await?;
        }
        Ok(())
    }

    async fn matrix(&self) -> Result<()> {
        let options = crate::verification::Options {
            calls_per_client: 20,
            timeout: self.settings.timeout,
            failover: false,
            distribute: false,
            keep: true,
            cluster_local: false,
            per_cluster_subsets: false,
        };
        let report = crate::verification::run(
            self.mesh,
            self.settings.kubeconfig_flag.as_deref(),
            &options,
            &self.reporter,
        )
        .await
        .context("gate: verify")?;
        if !report.passed() {
            bail!(
                "gate: not every pair of clusters calls each other: {}",
                report
                    .reasons
                    .iter()
                    .map(|r| r.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(())
    }
}

/// What planning the phases of one cluster of an upgrade needs: the other clusters are read for
/// what they contribute (networks, gateway addresses), and planned nothing.
pub fn cluster_input<'m>(
    mesh: &'m Mesh,
    cluster: &str,
    phases: Vec<Phase>,
    state: &MeshState,
    settings: &Settings,
) -> PlanInput<'m> {
    PlanInput::recorded(mesh, phases, state, settings.timeout, &settings.docker_network).only(cluster)
}

/// The first pods of `pods` by name, with `…` when there are more: enough to find them.
fn some_of(pods: &[String]) -> String {
    let shown: Vec<&str> = pods.iter().take(5).map(String::as_str).collect();
    format!(
        "{}{}",
        shown.join(", "),
        if pods.len() > shown.len() { ", …" } else { "" }
    )
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
