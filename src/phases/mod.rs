//! The phases of `meshctl up`, in order, one type per file. Each owns what meshctl knows of it:
//! its names and constants, its plan (pure: from the topology and the facts gathered so far to the
//! artifacts and steps it will apply), its probe (read-only: what the cluster holds of it now, as
//! [`Finding`]s), how its own steps run and read in `--dry-run`, what it records, and how it is
//! removed. The steps every phase shares (apply a file, wait for a condition, fetch a pinned
//! manifest) are run by the executor, which loops over phases through [`PhaseLogic`] and knows
//! none by name.

/// A phase's `plan` and `probe`, in its [`PhaseLogic`] impl, are the functions of those names in
/// its module: `fn plan(&mut PhaseBuilder) -> Result<(), PlanError>` and `async fn probe(&Probe)
/// -> Vec<Finding>`. (Every phase writes them as module functions, so the impl reads as what is
/// particular to the phase.)
macro_rules! plan_and_probe_are_the_modules {
    () => {
        fn plan(&self, b: &mut crate::plan::PhaseBuilder<'_>) -> Result<(), crate::plan::PlanError> {
            plan(b)
        }

        fn probe<'a>(
            &'a self,
            p: &'a crate::probe::Probe<'a>,
        ) -> futures::future::BoxFuture<'a, Vec<crate::probe::Finding>> {
            Box::pin(probe(p))
        }
    };
}

pub mod context;

mod ambient;
mod certs;
mod clusters;
mod eastwest;
mod expose;
mod external_istiod;
mod istio;
mod istioctl_install;
mod metallb;
mod remote_secrets;
mod routes;

use anyhow::Result;
use futures::future::BoxFuture;

use crate::plan::{Condition, Phase, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};
use crate::topology::{Cluster, Mesh};

pub use context::{Preflight, RemoveContext, RunContext, Settings, StepContext, SummaryColumn};

/// A fact the planner cannot know by itself; a phase that needs one says so, and the run gathers
/// it before the phase is planned for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// The MetalLB pools, from the docker network's real subnet (it exists once a kind cluster does).
    Pools,
    /// The intermediate CAs, from the CA folder.
    Cas,
    /// The east-west gateways' addresses, recorded when each got one.
    GatewayAddresses,
}

/// Whether a phase runs on clusters meshctl did not create (`--contexts`, `provider: existing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExistingClusters {
    Runs,
    /// Only when named with `--only`: such clusters usually bring their own.
    WhenAsked,
    /// It works on kind clusters only.
    Never,
}

/// A step's outcome for the phase's status line: a short detail, or nothing to add.
pub type StepResult<'a> = BoxFuture<'a, Result<Option<String>>>;

/// Everything meshctl knows of one phase.
pub trait PhaseLogic: Sync {
    /// The phase's steps and files in one cluster (pure).
    fn plan(&self, b: &mut PhaseBuilder<'_>) -> Result<(), PlanError>;

    /// What the cluster holds of the phase now (read-only).
    fn probe<'a>(&'a self, p: &'a Probe<'a>) -> BoxFuture<'a, Vec<Finding>>;

    /// Whether the phase runs on clusters meshctl did not create.
    fn on_existing_clusters(&self) -> OnExistingClusters {
        OnExistingClusters::Runs
    }

    /// Facts the plan of this phase needs from the run.
    fn needs(&self) -> &'static [Fact] {
        &[]
    }

    /// Facts that go stale when this phase changed something.
    fn invalidates(&self) -> &'static [Fact] {
        &[]
    }

    /// Whether repairing the phase makes the cluster anew, so every later phase runs again too:
    /// `status` then points at a whole `up`, not `up --only` this phase.
    fn repair_makes_the_cluster_anew(&self) -> bool {
        false
    }

    /// Whether the phase runs istioctl (checked once, before anything changes).
    fn runs_istioctl(&self) -> bool {
        false
    }

    /// Checks what can be checked before anything changes (files named on the command line, the
    /// kubeconfig meshctl writes to, addresses other clusters will use).
    fn preflight(&self, _cx: &Preflight<'_>) -> Result<()> {
        Ok(())
    }

    /// This phase's column in `up`'s closing table: what it left in `cluster` once the run
    /// finished (every planned phase in place).
    fn summary(&self, _mesh: &Mesh, _cluster: &Cluster) -> Option<SummaryColumn> {
        None
    }

    /// The command to run next once this phase is in place, for `up`'s last line.
    fn next_step(&self) -> Option<&'static str> {
        None
    }

    /// Removes from one cluster what this phase put there, and only that; returns what went.
    fn remove<'a>(&'a self, _cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The type of each phase.
pub fn logic(phase: Phase) -> &'static dyn PhaseLogic {
    match phase {
        Phase::Clusters => &clusters::Clusters,
        Phase::Metallb => &metallb::Metallb,
        Phase::Routes => &routes::Routes,
        Phase::Certs => &certs::Certs,
        Phase::Istio => &istio::Istio,
        Phase::Eastwest => &eastwest::Eastwest,
        Phase::Expose => &expose::Expose,
        Phase::RemoteSecrets => &remote_secrets::RemoteSecrets,
        Phase::ExternalIstiod => &external_istiod::ExternalIstiod,
    }
}

/// Plans one phase for one cluster.
pub fn plan(builder: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    logic(builder.phase).plan(builder)
}

/// Probes one phase in one cluster.
pub async fn probe(phase: Phase, p: &Probe<'_>) -> Vec<Finding> {
    logic(phase).probe(p).await
}

/// Whether any of `phases` needs `fact`.
pub fn any_needs(phases: &[Phase], fact: Fact) -> bool {
    phases.iter().any(|p| logic(*p).needs().contains(&fact))
}

/// Everything `up` can check before it changes anything, asked of every phase of `phases`: one
/// error that says every refusal at once, each as a check of its phase with its hint.
pub fn preflight(phases: &[Phase], cx: &Preflight<'_>) -> anyhow::Result<()> {
    let refused = refusals(phases, cx);
    if refused.is_empty() {
        return Ok(());
    }
    let words = |fix: &crate::check::Fix| match fix {
        crate::check::Fix::ByHand(words) => words.clone(),
        other => format!("{other:?}"),
    };
    let lines = crate::check::lines(&refused, &words).join("\n");
    anyhow::bail!(
        "preflight: {} phase(s) refused, before anything changed:\n{lines}",
        refused.len()
    )
}

/// Every phase's refusal, as a check of that phase.
pub fn refusals(phases: &[Phase], cx: &Preflight<'_>) -> Vec<crate::check::Check> {
    phases
        .iter()
        .filter_map(|phase| {
            let refused = logic(*phase).preflight(cx).err()?;
            let text = format!("{refused:#}");
            let text = text.strip_prefix("preflight: ").unwrap_or(&text);
            let (detail, hint) = text.split_once("\nhint: ").unwrap_or((text, ""));
            Some(
                crate::check::Check::new(phase.name(), crate::check::State::Fail, detail)
                    .of_phase(*phase)
                    .hinted(hint),
            )
        })
        .collect()
}

/// Runs a phase's own step in one cluster, in the file of the phase its type names; `None` for
/// the steps every phase shares, which the executor runs. Two shared waits are a phase's to
/// complete: the east-west gateway's address (recorded once it has one) and istiod's view of its
/// peers (asked of every istiod pod).
pub fn run_own<'a>(step: &'a Step, cx: StepContext<'a>) -> Option<StepResult<'a>> {
    Some(match step {
        Step::Clusters(own) => clusters::run(own, cx),
        Step::Routes(own) => routes::run(own, cx),
        Step::Certs(own) => certs::run(own, cx),
        Step::Install(own) => istioctl_install::run(own, cx),
        Step::Eastwest(own) => eastwest::run(own, cx),
        Step::RemoteSecrets(own) => remote_secrets::run(own, cx),
        Step::ExternalIstiod(own) => external_istiod::run(own, cx),
        Step::Wait {
            until: Condition::LoadBalancerIp { namespace, name },
        } => eastwest::record_address(cx, namespace, name),
        Step::Wait {
            until: Condition::RemoteClustersSynced { clusters },
        } => remote_secrets::await_synced(cx, clusters),
        Step::Apply { .. } | Step::AwaitAdmission { .. } | Step::ApplyUpstream { .. } | Step::Wait { .. } => {
            return None;
        }
    })
}

/// How a step reads in `--dry-run` and in progress lines.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Apply { file } => format!("apply: {file}"),
        Step::AwaitAdmission { file } => {
            format!("wait: admission webhooks accept {file} (server-side dry run)")
        }
        Step::ApplyUpstream {
            name,
            url,
            unless_crd: None,
            ..
        } => format!("apply: {name} from {url} (sha256-checked)"),
        Step::ApplyUpstream {
            name,
            url,
            unless_crd: Some(crd),
            ..
        } => format!("apply: {name} from {url} (sha256-checked), unless CRD {crd} is there already"),
        Step::Wait { until } => format!("wait: {until}"),
        Step::Clusters(own) => clusters::describe(own),
        Step::Routes(own) => routes::describe(own),
        Step::Certs(own) => certs::describe(own),
        Step::Install(own) => istioctl_install::describe(own),
        Step::Eastwest(own) => eastwest::describe(own),
        Step::RemoteSecrets(own) => remote_secrets::describe(own),
        Step::ExternalIstiod(own) => external_istiod::describe(own),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up`'s closing table: a remote's istiod column names its primary, and only primaries hold
    /// remote secrets (one per other cluster).
    #[test]
    fn summary_columns_follow_each_clusters_role() {
        let mesh = Mesh::from_yaml("clusters:\n  - {}\n  - {}\n  - {role: remote}\n", Some("m")).unwrap();
        let column = |phase: Phase, i: usize| logic(phase).summary(&mesh, &mesh.clusters[i]).map(|c| c.value);
        assert_eq!(column(Phase::Istio, 0).as_deref(), Some("ready"));
        assert_eq!(
            column(Phase::Istio, 2),
            Some(format!("of {}", mesh.clusters[0].name))
        );
        assert_eq!(column(Phase::RemoteSecrets, 1).as_deref(), Some("2/2"));
        assert_eq!(column(Phase::RemoteSecrets, 2).as_deref(), Some("-"));
        assert_eq!(column(Phase::Certs, 0), None, "certs has no column");
        let nexts: Vec<_> = Phase::ALL.iter().filter_map(|p| logic(*p).next_step()).collect();
        assert_eq!(
            nexts.len(),
            1,
            "one next step, after the remote secrets: {nexts:?}"
        );
    }

    /// Existing clusters whose kubeconfig points at a loopback address are refused before anything
    /// changes (another cluster's istiod would dial itself); kind clusters are not asked, their
    /// in-network address is learnt when they are created.
    #[test]
    fn remote_secrets_preflight_refuses_a_loopback_api_server_of_existing_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kc.yaml");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster: {server: 'https://127.0.0.1:6443'}\n- name: b\n  cluster: {server: 'https://10.1.2.3:6443'}\ncontexts:\n- name: a\n  context: {cluster: a, user: u}\n- name: b\n  context: {cluster: b, user: u}\nusers:\n- name: u\n  user: {token: t}\n",
        )
        .unwrap();
        let state = crate::state::MeshState::default();
        let check = |mesh: &Mesh| {
            logic(Phase::RemoteSecrets).preflight(&Preflight {
                mesh,
                state: &state,
                kubeconfig_target: &kubeconfig,
                kubeconfig_flag: Some(&kubeconfig),
                metallb_manifest: None,
            })
        };
        let existing = Mesh::for_contexts(&["a".into(), "b".into()], "m").unwrap();
        let err = check(&existing).unwrap_err().to_string();
        assert!(
            err.starts_with("preflight:") && err.contains("127.0.0.1"),
            "{err}"
        );
        let reachable = Mesh::for_contexts(&["b".into()], "m").unwrap();
        check(&reachable).unwrap();
        check(&Mesh::for_kind(2, "m").unwrap()).unwrap();
    }

    /// Every phase that refuses is said at once, as a check of its phase with its hint apart.
    #[test]
    fn every_refusal_before_anything_changes_is_a_check_of_its_phase() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kc.yaml");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster1\n  cluster: {server: 'https://10.1.2.3:6443'}\ncontexts:\n- name: cluster1\n  context: {cluster: cluster1, user: u}\nusers:\n- name: u\n  user: {token: t}\n",
        )
        .unwrap();
        let state = crate::state::MeshState::default();
        let missing = dir.path().join("no-such-manifest.yaml");
        let mesh = Mesh::for_kind(2, "m").unwrap();
        let refused = refusals(
            &[Phase::Clusters, Phase::Metallb, Phase::Certs],
            &Preflight {
                mesh: &mesh,
                state: &state,
                kubeconfig_target: &kubeconfig,
                kubeconfig_flag: Some(&kubeconfig),
                metallb_manifest: Some(&missing),
            },
        );
        let phases: Vec<Option<&str>> = refused.iter().map(|c| c.phase).collect();
        assert_eq!(phases, [Some("clusters"), Some("metallb")], "{refused:?}");
        assert!(
            refused[0]
                .detail
                .contains("already has a context named `cluster1`"),
            "{refused:?}"
        );
        assert!(
            matches!(&refused[0].fix, Some(crate::check::Fix::ByHand(hint)) if hint.contains("--kubeconfig FILE")),
            "{refused:?}"
        );
        assert!(refused[1].detail.starts_with("--metallb-manifest"), "{refused:?}");
    }
}
