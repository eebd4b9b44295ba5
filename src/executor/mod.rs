//! Runs a plan and owns the run: phases in order, the clusters of a phase at the same time,
//! cancellation, the facts learned on the way (API addresses, the docker network's pools), and the
//! state file.
//!
//! Each phase in each cluster starts with the phase's probe: where the cluster already holds what
//! the plan wants, nothing runs (no API write, no tool); where something is missing or different,
//! the phase's steps run (each is idempotent) and every repair is named. `--force` skips the probes
//! and runs everything. A cluster that fails does not stop the others of its phase; the phase then
//! fails as a whole and names every cluster that failed.

pub mod facts;
mod steps;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};

pub use crate::phases::Settings;
use facts::pools;

use crate::dry_run::describe;
use crate::kube::Clients;
use crate::phases::context::Memo;
use crate::phases::{self, Fact, RunContext, StepContext};
use crate::plan::{Artifact, ClusterSteps, Phase, Plan, PlanInput};
use crate::planner;
use crate::probe::{self, Finding, Found, Probe};
use crate::report::Reporter;
use crate::state::StateStore;
use crate::tools::istioctl::{self, Istioctl};
use crate::tools::{ProcessRunner, ToolRunner};
use crate::topology::Mesh;

/// A phase that failed in some clusters.
#[derive(Debug, thiserror::Error)]
#[error("phase {phase} failed in {} of {total} cluster(s):{}", failures.len(),
        failures.iter().map(|(c, e)| format!("\n  - cluster `{c}`: {}", e.replace('\n', "\n    "))).collect::<String>())]
pub struct PhaseFailed {
    pub phase: Phase,
    /// Clusters in the phase.
    pub total: usize,
    /// Cluster and error, for each that failed.
    pub failures: Vec<(String, String)>,
}

/// What happened to one cluster in one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was there yet; the steps ran.
    Done,
    /// Part of it was missing or different; the steps ran and these were repaired.
    Repaired(Vec<Finding>),
    /// The probe found everything in place; nothing ran.
    InPlace,
}

/// The plan, with what went into it, kept on disk in the plan directory.
pub struct Prepared<'m> {
    /// What the plan was built from.
    pub input: PlanInput<'m>,
    pub plan: Plan,
    /// What `verify` applies, written beside the plan.
    pub verify: Vec<Artifact>,
    /// The pools came from `--lb-subnet` because the docker network does not exist yet.
    pub provisional: bool,
    /// Where it is written.
    pub out: PathBuf,
}

impl<'m> Prepared<'m> {
    /// The plan of `input` (with no `verify` workloads), built once and written to `out`.
    pub fn written(input: PlanInput<'m>, out: PathBuf) -> Result<Prepared<'m>> {
        let plan = planner::build(&input)?;
        let prepared = Prepared {
            input,
            plan,
            verify: Vec::new(),
            provisional: false,
            out,
        };
        prepared.write()?;
        Ok(prepared)
    }

    /// Builds the plan from its input again and rewrites it on disk.
    pub fn rebuild(&mut self) -> Result<()> {
        self.plan = planner::build(&self.input)?;
        self.write()
    }

    fn write(&self) -> Result<()> {
        crate::dry_run::write(&self.out, &self.plan, &self.verify)
            .with_context(|| format!("cannot write the plan to `{}`", self.out.display()))
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every phase ran or was in place; `changed` says whether anything ran.
    Finished {
        /// Whether any phase ran steps in any cluster.
        changed: bool,
    },
    /// Ctrl-C: progress is in the clusters, a new `up` resumes from there.
    Interrupted,
}

/// What one phase's probe found, per cluster (in the order of the phase's clusters).
type PhaseFindings = Vec<Vec<Finding>>;

/// Runs plans against real clusters.
pub struct Executor {
    run: RunContext,
    reporter: Arc<Reporter>,
    /// Stops a run as Ctrl-C does; see [`Executor::interrupted_by`].
    interrupt: Arc<tokio::sync::Notify>,
    /// See [`Executor::carrying_out_a_change`].
    requested_change: bool,
    /// Whether the run got past its refusals (conflicts, foreign objects, istioctl) to its phases.
    began: std::sync::atomic::AtomicBool,
}

impl Executor {
    /// A new executor, running real programs.
    pub fn new(settings: Settings, state: StateStore, reporter: Arc<Reporter>, mesh: Mesh) -> Executor {
        Executor::with_tools(settings, state, reporter, mesh, Arc::new(ProcessRunner))
    }

    /// A new executor whose programs run through `tools`.
    pub fn with_tools(
        settings: Settings,
        state: StateStore,
        reporter: Arc<Reporter>,
        mesh: Mesh,
        tools: Arc<dyn ToolRunner>,
    ) -> Executor {
        let clients = Clients::new(settings.kubeconfig_flag.as_deref());
        Executor {
            run: RunContext {
                settings,
                mesh,
                clients,
                tools,
                state,
                memo: Memo::default(),
                kubeconfig_lock: tokio::sync::Mutex::new(()),
            },
            reporter,
            interrupt: Arc::default(),
            began: Default::default(),
            requested_change: false,
        }
    }

    /// The same executor, also stopped as Ctrl-C stops it when `interrupt` is notified
    /// (`notify_one`, so a notice given before the run waits for it): what was applied stays, and
    /// a new run resumes from what the clusters hold.
    pub fn interrupted_by(mut self, interrupt: Arc<tokio::sync::Notify>) -> Executor {
        self.interrupt = interrupt;
        self
    }

    /// The run carries out a change the user asked for (`meshctl upgrade` moving a cluster to
    /// another revision): what differs from the plan is that change, not drift, and is not
    /// reported as a repair.
    pub fn carrying_out_a_change(mut self) -> Executor {
        self.requested_change = true;
        self
    }

    /// Whether the last run got past the refusals made before anything changes to its phases:
    /// after a refusal, there is nothing in the clusters to collect for a bug report.
    pub fn began_phases(&self) -> bool {
        self.began.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Recorded facts and ownership.
    pub fn state(&self) -> &StateStore {
        &self.run.state
    }

    /// Runs the whole plan, phase by phase, until done, failed or interrupted (Ctrl-C).
    pub async fn run(&self, prepared: &mut Prepared<'_>) -> Result<RunEnd> {
        let settings = &self.run.settings;
        let work = async {
            // Every phase probed in every cluster at once: on a finished mesh this is the whole run.
            // Once a phase changed something, later phases are probed again before they run.
            let probed = self.probe_all(&prepared.plan).await;
            refuse_conflicts(&prepared.plan, &probed)?;
            if !settings.adopt {
                refuse_foreign(&prepared.plan, &probed, &self.run.mesh.mesh_id)?;
            }
            let mut known = (!settings.force).then_some(probed);
            self.check_istioctl_if_needed(&prepared.plan, known.as_deref())
                .await?;
            self.began.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut changed = false;
            for index in 0..prepared.plan.phases.len() {
                let logic = phases::logic(prepared.plan.phases[index].phase);
                if self.gather(prepared, logic.needs()).await? {
                    known = None;
                }
                let findings = known.as_mut().map(|k| std::mem::take(&mut k[index]));
                let outcomes = self.run_phase(&prepared.plan, index, findings).await?;
                if outcomes.iter().any(|(_, o)| *o != Outcome::InPlace) {
                    changed = true;
                    known = None;
                    self.invalidate(prepared, logic.invalidates())?;
                }
            }
            Ok::<bool, anyhow::Error>(changed)
        };
        // Ctrl-C reaches the tool a step runs too, which then fails: when both are ready at
        // once, the interruption is what happened (exit 130), not the step's failure.
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => Ok(RunEnd::Interrupted),
            _ = self.interrupt.notified() => Ok(RunEnd::Interrupted),
            result = work => Ok(RunEnd::Finished { changed: result? }),
        }
    }

    /// Gathers the facts a phase's plan needs that the plan does not hold yet, and plans again
    /// with them; says whether the plan changed.
    async fn gather(&self, prepared: &mut Prepared<'_>, needs: &[Fact]) -> Result<bool> {
        let mut replanned = false;
        for fact in needs {
            match fact {
                // The kind network exists now: plan the pools from its real subnet and containers.
                Fact::Pools if prepared.provisional => {
                    self.replan_pools(prepared).await?;
                    replanned = true;
                }
                // A remote's IstioOperator carries its primary's east-west gateway address,
                // recorded when that gateway got it (earlier in this run, or in another).
                Fact::GatewayAddresses => {
                    let recorded = self.run.state.snapshot().gateway_ips();
                    if recorded != prepared.input.gateway_ips {
                        prepared.input.gateway_ips = recorded;
                        prepared.rebuild()?;
                        replanned = true;
                    }
                }
                _ => {}
            }
        }
        Ok(replanned)
    }

    /// Forgets the facts a phase that changed something made stale.
    fn invalidate(&self, prepared: &mut Prepared<'_>, stale: &[Fact]) -> Result<()> {
        let planned: Vec<Phase> = prepared.plan.phases.iter().map(|p| p.phase).collect();
        if stale.contains(&Fact::Pools) && phases::any_needs(&planned, Fact::Pools) {
            // A cluster was (re)created: its docker network may be new; read it again.
            self.run.state.update(|s| s.docker_subnet = None)?;
            prepared.provisional = true;
        }
        Ok(())
    }

    /// What every phase's probe finds in each of its clusters, probed concurrently.
    async fn probe_all(&self, plan: &Plan) -> Vec<PhaseFindings> {
        let phases = plan.phases.iter().enumerate().map(|(index, p)| {
            futures::future::join_all(p.clusters.iter().map(move |cs| self.probe(plan, index, cs)))
        });
        futures::future::join_all(phases).await
    }

    async fn replan_pools(&self, prepared: &mut Prepared<'_>) -> Result<()> {
        let run = &self.run;
        let (pools, still) = pools(
            Some(run.tools.as_ref()),
            Some(&run.state),
            &run.mesh,
            run.settings.lb_subnet,
            &run.settings.docker_network,
        )
        .await?;
        prepared.provisional = still;
        prepared.input.pools = pools;
        prepared.rebuild()
    }

    /// istioctl is there and of the pinned minor, checked before anything changes, but only when
    /// a phase that runs it has work to do: a finished mesh runs no tool at all.
    async fn check_istioctl_if_needed(&self, plan: &Plan, known: Option<&[PhaseFindings]>) -> Result<()> {
        let needed = plan.phases.iter().enumerate().any(|(index, p)| {
            phases::logic(p.phase).runs_istioctl()
                && known.is_none_or(|k| k[index].iter().any(|f| !probe::in_place(f)))
        });
        if !needed {
            return Ok(());
        }
        let version = Istioctl::new(self.run.tools.as_ref())
            .version()
            .await
            .context("preflight: istioctl is needed for phases istio and eastwest")?;
        match &self.run.settings.istio_version {
            Some(chosen) if *chosen != version => Err(anyhow!(
                "preflight: istioctl {version} is not the chosen Istio {chosen}; meshctl installs with the istioctl of the chosen release (`--istioctl PATH` must be that release)"
            )),
            Some(_) => Ok(()),
            None => istioctl::check_skew(&version, self.run.settings.allow_version_skew)
                .map_err(|e| anyhow!("preflight: {e}")),
        }
    }

    /// Probes phase `index` of `plan` in one cluster.
    async fn probe(&self, plan: &Plan, index: usize, cs: &ClusterSteps) -> Vec<Finding> {
        let run = &self.run;
        let Some(cluster) = run.mesh.cluster(&cs.cluster) else {
            return vec![Finding::missing(&cs.cluster, "not in the topology")];
        };
        let state = run.state.snapshot();
        let probe = Probe {
            mesh: &run.mesh,
            cluster,
            plan,
            steps: &cs.steps,
            state: &state,
            clients: &run.clients,
            tools: run.tools.as_ref(),
            memo: &run.memo,
        };
        phases::probe(plan.phases[index].phase, &probe).await
    }

    /// Runs phase `index` of `plan` in every cluster at once; `known`: what its probe found in each
    /// cluster, when nothing changed since.
    pub async fn run_phase(
        &self,
        plan: &Plan,
        index: usize,
        known: Option<Vec<Vec<Finding>>>,
    ) -> Result<Vec<(String, Outcome)>, PhaseFailed> {
        let phase = &plan.phases[index];
        let mut known = known.map(|k| k.into_iter().map(Some).collect::<Vec<_>>());
        let runs = phase.clusters.iter().enumerate().map(|(i, cs)| {
            let findings = known.as_mut().and_then(|k| k.get_mut(i).and_then(Option::take));
            self.converge(plan, index, cs, findings)
        });
        let results = futures::future::join_all(runs.collect::<Vec<_>>()).await;
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

    /// One phase in one cluster: probe (unless `known`), then run the steps unless everything is
    /// in place.
    async fn converge(
        &self,
        plan: &Plan,
        index: usize,
        cs: &ClusterSteps,
        known: Option<Vec<Finding>>,
    ) -> Result<Outcome> {
        let phase = plan.phases[index].phase;
        let findings = match known {
            _ if self.run.settings.force => Vec::new(),
            Some(found) => found,
            None => self.probe(plan, index, cs).await,
        };
        let built_before = self
            .run
            .state
            .snapshot()
            .clusters
            .get(&cs.cluster)
            .is_some_and(|c| c.built.contains(phase.name()));
        if !self.run.settings.force && probe::in_place(&findings) {
            if !built_before {
                self.mark_built(&cs.cluster, phase)?;
            }
            self.reporter.skipped(
                phase.name(),
                &cs.cluster,
                &format!(
                    "in place ({} checked), nothing to change",
                    describe_findings(&findings)
                ),
            );
            return Ok(Outcome::InPlace);
        }
        let started = Instant::now();
        self.reporter.started(phase.name(), &cs.cluster);
        let details = match self.run_steps(phase, cs).await {
            Ok(details) => details,
            Err(e) => {
                self.reporter
                    .failed(phase.name(), &cs.cluster, started.elapsed(), &format!("{e:#}"));
                return Err(e);
            }
        };
        self.mark_built(&cs.cluster, phase)?;
        let outcome = self.report_repairs(phase, &cs.cluster, &findings, built_before);
        let detail = if details.is_empty() {
            "done".to_string()
        } else {
            details.join(", ")
        };
        self.reporter
            .finished(phase.name(), &cs.cluster, started.elapsed(), &detail);
        Ok(outcome)
    }

    /// Runs a phase's steps in one cluster, in order: each by its phase when it is the phase's
    /// own, else as a shared step. Returns the details worth showing.
    async fn run_steps(&self, phase: Phase, cs: &ClusterSteps) -> Result<Vec<String>> {
        let cluster = self
            .run
            .mesh
            .cluster(&cs.cluster)
            .ok_or_else(|| anyhow!("cluster `{}` is not in the topology", cs.cluster))?;
        let cx = StepContext {
            run: &self.run,
            cluster,
        };
        let mut details = Vec::new();
        for step in &cs.steps {
            let line = describe(step);
            self.reporter.step(phase.name(), &cs.cluster, &line);
            // A failed program already shows its command line; other steps are described here.
            let context = if step.runs_program() {
                format!("phase {phase}")
            } else {
                format!("phase {phase}: {line}")
            };
            let ran = match phases::run_own(step, cx) {
                Some(own) => own.await,
                None => steps::run(step, cx).await,
            };
            details.extend(ran.context(context)?);
        }
        Ok(details)
    }

    /// Names each repair when the phase had drifted: what a phase built before lacks now, what a
    /// partly built phase lacked, or anything that was there but different. A phase never built
    /// is simply new.
    fn report_repairs(
        &self,
        phase: Phase,
        cluster: &str,
        findings: &[Finding],
        built_before: bool,
    ) -> Outcome {
        let repaired: Vec<Finding> = findings
            .iter()
            .filter(|f| f.found != Found::Present)
            .cloned()
            .collect();
        let drift = built_before
            || findings.iter().any(|f| f.found == Found::Present)
            || repaired.iter().any(|f| f.found == Found::Different);
        if !drift || self.requested_change {
            return Outcome::Done;
        }
        for f in &repaired {
            self.reporter.repaired(phase.name(), cluster, f);
        }
        Outcome::Repaired(repaired)
    }
}

impl Executor {
    fn mark_built(&self, cluster: &str, phase: Phase) -> Result<()> {
        self.run
            .state
            .update(|s| {
                s.clusters
                    .entry(cluster.to_string())
                    .or_default()
                    .built
                    .insert(phase.name().to_string())
            })
            .context("cannot record progress")?;
        Ok(())
    }
}

/// Every probed finding of kind `found`, as `cluster `c`, phase p: object …` with `say`'s words
/// after the object.
fn findings_of(
    plan: &Plan,
    probed: &[PhaseFindings],
    found: Found,
    say: impl Fn(&Finding) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    for (phase, clusters) in plan.phases.iter().zip(probed) {
        for (cs, findings) in phase.clusters.iter().zip(clusters) {
            for f in findings.iter().filter(|f| f.found == found) {
                out.push(format!(
                    "cluster `{}`, phase {}: {} {}",
                    cs.cluster,
                    phase.phase,
                    f.object,
                    say(f)
                ));
            }
        }
    }
    out
}

/// Refuses, before anything changes, a plan that would take over objects meshctl did not create:
/// each is named with its cluster and phase, and the ways out.
fn refuse_foreign(plan: &Plan, probed: &[PhaseFindings], mesh_id: &str) -> Result<()> {
    let foreign = findings_of(plan, probed, Found::Foreign, |f| {
        format!(
            "already exists and meshctl did not create it for mesh `{mesh_id}` ({})",
            f.detail
        )
    });
    if foreign.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "meshctl would take over {} object(s) it did not create; nothing was changed:\n  - {}\nhint: remove or rename them, or run `meshctl up --adopt` to let meshctl overwrite them with its own and manage them from now on (`down --uninstall` then removes them)",
        foreign.len(),
        foreign.join("\n  - ")
    ))
}

/// Refuses, before anything changes and whatever `--adopt` says, a plan that would replace what
/// meshctl made with something that breaks the mesh (a `cacerts` under another root).
fn refuse_conflicts(plan: &Plan, probed: &[PhaseFindings]) -> Result<()> {
    let conflicts = findings_of(plan, probed, Found::Conflict, |f| f.detail.clone());
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "meshctl will not replace what the mesh runs on; nothing was changed:\n  - {}\nhint: {}",
        conflicts.join("\n  - "),
        crate::plugged_ca::CARRY_THE_ROOT_OVER
    ))
}

/// `3 objects` for the skip line.
fn describe_findings(findings: &[Finding]) -> String {
    match findings.len() {
        1 => "1 object".to_string(),
        n => format!("{n} objects"),
    }
}

/// The closing table: each cluster's network and east-west address, then one column per phase
/// that has one to show ("-" where the phase was not planned).
pub fn summary(reporter: &Reporter, mesh: &Mesh, snapshot: &crate::state::MeshState, plan: &Plan) {
    let planned = |phase: Phase| plan.phases.iter().any(|p| p.phase == phase);
    let mut headers = vec!["CLUSTER", "NETWORK", "EAST-WEST IP"];
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for (i, c) in mesh.clusters.iter().enumerate() {
        let cs = snapshot.clusters.get(&c.name).cloned().unwrap_or_default();
        let ip = cs.eastwest_ip.clone().unwrap_or_else(|| "-".into());
        let mut json = serde_json::json!({"cluster": c.name, "network": c.network,
            "eastwestIP": cs.eastwest_ip, "apiEndpoint": cs.api_endpoint});
        let mut row = vec![c.name.clone(), c.network.clone(), ip];
        for phase in Phase::ALL {
            let Some(mut column) = phases::logic(phase).summary(mesh, c) else {
                continue;
            };
            if !planned(phase) {
                column.value = "-".into();
            }
            if i == 0 {
                headers.push(column.header);
            }
            json[column.key] = serde_json::Value::from(column.value.clone());
            row.push(column.value);
        }
        json_rows.push(json);
        rows.push(row);
    }
    reporter.table(&headers, &rows);
    let phases: Vec<&str> = plan.phases.iter().map(|p| p.phase.name()).collect();
    reporter.event(
        "summary",
        serde_json::json!({"meshID": mesh.mesh_id, "phases": phases, "clusters": json_rows}),
    );
    for p in &plan.phases {
        if let Some(next) = phases::logic(p.phase).next_step() {
            reporter.note("next", next);
        }
    }
}
