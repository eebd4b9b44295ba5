//! The plan: what `up` will do, as data. Pure: building a plan touches nothing outside the process.
//!
//! A plan is phases × clusters × steps, plus the artifacts (rendered manifests) the steps refer to
//! by path. `--dry-run` writes it to disk; the executor runs it; tests snapshot it. These are the
//! types the phases plan with; [`crate::planner`], above the phases, puts a plan together. Facts that only exist at run time (a token, a container IP) are not in the plan:
//! the steps that need them say where they come from.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::ipam::Pool;
use crate::pki::IntermediateCa;
use crate::render::{self, RenderError};
use crate::topology::{Cluster, Mesh, Provider};

/// One phase of `up`, in the order they run: each needs what the ones before it leave behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Create kind clusters and record their API endpoints.
    Clusters,
    /// Install MetalLB and give each cluster its own address pool.
    Metallb,
    /// kind clusters on one Istio network: routes between their pod and service CIDRs.
    Routes,
    /// Namespace, network label, node locality labels, `cacerts`.
    Certs,
    /// Istio primary control plane.
    Istio,
    /// East-west gateway with an external IP.
    Eastwest,
    /// Expose `*.local` services through the east-west gateway.
    Expose,
    /// Every cluster's remote secret in every other cluster.
    RemoteSecrets,
    /// The istiod of an external control plane (it runs before `remote-secrets`, once the config
    /// cluster's Istio is installed; listed last so the other phases keep their folders).
    ExternalIstiod,
}

impl Phase {
    /// All phases in order.
    pub const ALL: [Phase; 9] = [
        Phase::Clusters,
        Phase::Metallb,
        Phase::Routes,
        Phase::Certs,
        Phase::Istio,
        Phase::Eastwest,
        Phase::Expose,
        Phase::RemoteSecrets,
        Phase::ExternalIstiod,
    ];

    /// The name used on the command line and in output.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Clusters => "clusters",
            Phase::Metallb => "metallb",
            Phase::Routes => "routes",
            Phase::Certs => "certs",
            Phase::Istio => "istio",
            Phase::Eastwest => "eastwest",
            Phase::Expose => "expose",
            Phase::RemoteSecrets => "remote-secrets",
            Phase::ExternalIstiod => "external-istiod",
        }
    }

    /// 1-based position, used to prefix dry-run folders (`04-certs`).
    pub fn ordinal(self) -> usize {
        Phase::ALL
            .iter()
            .position(|p| *p == self)
            .expect("every phase is listed")
            + 1
    }

    /// Folder name in dry-run output, e.g. `04-certs`.
    pub fn folder(self) -> String {
        format!("{:02}-{}", self.ordinal(), self.name())
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            format!(
                "unknown phase `{s}` (expected one of: {})",
                Phase::ALL.map(Phase::name).join(", ")
            )
        })
    }
}

/// A condition a step waits for (with the run's timeout), watched rather than polled where possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "condition", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Condition {
    /// Every node reports Ready.
    NodesReady,
    /// A Deployment has the Available condition.
    DeploymentAvailable { namespace: String, name: String },
    /// A DaemonSet has every scheduled pod ready.
    DaemonSetReady { namespace: String, name: String },
    /// Every webhook of a webhook configuration has a CA bundle injected.
    WebhookCaBundle {
        /// `ValidatingWebhookConfiguration` or `MutatingWebhookConfiguration`.
        kind: String,
        name: String,
    },
    /// The Service behind a webhook configuration has a ready endpoint.
    WebhookEndpointReady {
        /// `ValidatingWebhookConfiguration` or `MutatingWebhookConfiguration`.
        kind: String,
        name: String,
    },
    /// A LoadBalancer Service has an ingress IP.
    LoadBalancerIp { namespace: String, name: String },
    /// A Gateway API `Gateway` reports `Programmed=True` (its address assigned and its
    /// Deployment ready, as istiod's gateway controller reports it).
    GatewayProgrammed { namespace: String, name: String },
    /// istiod reports every one of these remote clusters as `synced` (`/debug/clusterz`, what
    /// `istioctl remote-clusters` shows): its remote secrets work, not merely exist.
    RemoteClustersSynced { clusters: Vec<String> },
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::NodesReady => write!(f, "every node Ready"),
            Condition::DeploymentAvailable { namespace, name } => {
                write!(f, "deployment {namespace}/{name} Available")
            }
            Condition::DaemonSetReady { namespace, name } => {
                write!(f, "daemonset {namespace}/{name} ready on every node")
            }
            Condition::WebhookCaBundle { kind, name } => write!(f, "{kind} {name} has its CA bundle"),
            Condition::WebhookEndpointReady { kind, name } => {
                write!(f, "the service behind {kind} {name} has a ready endpoint")
            }
            Condition::LoadBalancerIp { namespace, name } => {
                write!(f, "service {namespace}/{name} has a LoadBalancer IP or hostname")
            }
            Condition::GatewayProgrammed { namespace, name } => {
                write!(f, "Gateway {namespace}/{name} Programmed")
            }
            Condition::RemoteClustersSynced { clusters } => {
                write!(f, "istiod reports {} synced", clusters.join(", "))
            }
        }
    }
}

/// One thing to do in one cluster: a step every phase may use (run by the executor), or a step
/// that belongs to one phase (its type says which, and only that phase's file runs it, so a step
/// planned without a runner does not compile). The plan on disk reads the same either way: one
/// object per step, its kind under `do`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Step {
    /// Server-side apply every document of an artifact.
    Apply { file: String },
    /// Wait until admission (webhooks included) accepts every document of an artifact, proven by
    /// a server-side dry run, before it is applied.
    AwaitAdmission { file: String },
    /// Download (once, checksum-verified) and server-side apply an upstream manifest.
    ApplyUpstream {
        name: String,
        /// Where it comes from.
        url: String,
        /// Its sha256.
        sha256: String,
        /// Applied only where this CRD is missing: the cluster's own copy (another release, or
        /// its provider's) is left as it is.
        #[serde(skip_serializing_if = "Option::is_none")]
        unless_crd: Option<String>,
    },
    /// Wait for a condition.
    Wait { until: Condition },
    #[serde(untagged)]
    Clusters(ClustersStep),
    #[serde(untagged)]
    Routes(RoutesStep),
    #[serde(untagged)]
    Certs(CertsStep),
    #[serde(untagged)]
    Install(InstallStep),
    #[serde(untagged)]
    Eastwest(EastwestStep),
    #[serde(untagged)]
    RemoteSecrets(RemoteSecretsStep),
    #[serde(untagged)]
    ExternalIstiod(ExternalIstiodStep),
}

/// Phase `clusters`' own steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum ClustersStep {
    /// `kind create cluster` from a rendered config; a kind cluster of that name that already
    /// exists is reused (and never deleted by `down`: meshctl did not create it).
    CreateKindCluster {
        name: String,
        /// Artifact path of the kind config.
        config: String,
        /// `--wait`, in seconds.
        wait_secs: u64,
    },
    /// Merge the kind cluster's kubeconfig into meshctl's, with the context renamed.
    ImportKubeconfig {
        kind_cluster: String,
        /// Context name it gets.
        context: String,
    },
    /// Record the API server address other clusters use (`https://<container-ip>:6443`).
    RecordApiEndpoint {
        /// The control-plane node container.
        container: String,
        /// The docker network it is on.
        network: String,
    },
}

/// Phase `routes`' own step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum RoutesStep {
    /// On a kind node, route other clusters' pod and service CIDRs to their nodes (clusters on one
    /// Istio network: pods call each other directly).
    RoutePeers {
        node: String,
        /// The docker network the nodes are on.
        network: String,
        /// One entry per peer cluster.
        peers: Vec<PeerRoutes>,
    },
}

/// Phase `certs`' own steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum CertsStep {
    /// Set labels on every node.
    LabelNodes {
        labels: BTreeMap<String, String>,
        /// Replace values that differ (kind clusters); otherwise only add missing labels, so a
        /// cloud provider's own topology labels are never overwritten.
        overwrite: bool,
    },
    /// Server-side apply the plug-in CA (`cacerts`); when that replaced a CA an istiod already
    /// runs with, restart istiod and wait for its rollout: istiod takes up a new intermediate by
    /// itself, but ignores a new root (Istio `pilot/pkg/bootstrap/istio_ca.go`, `handleEvent`:
    /// "Updating new ROOT-CA not supported").
    ApplyPluggedCa { file: String },
}

/// The step the phases that install with istioctl share (`istio`, `eastwest`, `external-istiod`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
pub enum InstallStep {
    IstioctlInstall(IstioctlInstall),
}

/// `istioctl install` of a rendered IstioOperator, then a record of what was installed (a digest
/// of the file) as an annotation on `record_on`, so the next run can tell whether the cluster runs
/// this rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioctlInstall {
    pub context: String,
    /// Artifact path of the IstioOperator.
    pub file: String,
    /// The object the install creates and the record is kept on.
    pub record_on: RecordOn,
    /// Its namespace (istio-system, or `external-istiod` for an external control plane).
    pub namespace: String,
    /// `--readiness-timeout`, in seconds.
    pub timeout_secs: u64,
}

/// Phase `eastwest`'s own steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum EastwestStep {
    /// Record the east-west gateway address the topology declares, after checking that it answers.
    RecordGatewayAddress { address: String, port: u16 },
}

/// Phase `remote-secrets`' own steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum RemoteSecretsStep {
    /// Delete the remote secrets meshctl applied here for clusters that are no longer in the mesh
    /// (a user's own remote secrets are never touched).
    PruneRemoteSecrets {
        /// The clusters of the mesh: their secrets stay.
        keep: Vec<String>,
    },
    /// Read `source`'s reader token and apply its remote secret in this cluster.
    RemoteSecret {
        /// Cluster whose API server this cluster's istiod will watch.
        source: String,
        /// The Secret as it will be applied, with what only the run can read (the token, the
        /// cluster's CA, a kind cluster's in-network address) shown as placeholders. Never applied.
        preview: String,
    },
}

/// Phase `external-istiod`'s own step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "do", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum ExternalIstiodStep {
    /// Read the config cluster `source`'s `istiod` token and apply the external istiod's
    /// kubeconfig of it (`istio-kubeconfig`) in this cluster.
    ConfigKubeconfig {
        source: String,
        /// The Secret's shape, with the token and CA as placeholders. Never applied.
        preview: String,
    },
}

impl Step {
    /// Whether the step runs an external program, whose own error already shows its command line.
    pub fn runs_program(&self) -> bool {
        matches!(
            self,
            Step::Clusters(ClustersStep::CreateKindCluster { .. }) | Step::Install(_)
        )
    }
}

/// The object in istio-system an `istioctl install` creates and meshctl keeps its install record
/// on (the digest annotation): istiod or the gateway Deployment, or, for a remote, which runs no
/// istiod, its `istiod` Service. Shown as kubectl names it (`deployment/istiod`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum RecordOn {
    Deployment(String),
    Service(String),
}

impl fmt::Display for RecordOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordOn::Deployment(name) => write!(f, "deployment/{name}"),
            RecordOn::Service(name) => write!(f, "service/{name}"),
        }
    }
}

/// The CIDRs of one peer cluster and the node container they are routed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerRoutes {
    pub cluster: String,
    /// Its node container (its address is read from docker when the step runs).
    pub node: String,
    /// Its pod and service CIDRs.
    pub cidrs: Vec<String>,
}

/// A rendered manifest or config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Artifact {
    /// Path relative to the plan directory, e.g. `cluster1/04-certs/cacerts.yaml`.
    pub path: String,
    /// The template it came from.
    pub template: &'static str,
    /// Whether it holds a secret (written 0600).
    pub secret: bool,
    #[serde(skip)]
    pub content: String,
}

/// A short digest of a rendered text: what an install records of what it installed.
pub fn digest(text: &str) -> String {
    crate::upstream::sha256_hex(text.as_bytes())[..32].to_string()
}

impl Artifact {
    /// [`digest`] of the text.
    pub fn digest(&self) -> String {
        digest(&self.content)
    }
}

/// The steps of one cluster in one phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSteps {
    pub cluster: String,
    pub steps: Vec<Step>,
}

/// One phase across clusters (those with work in it). Clusters run concurrently inside a phase. A
/// phase appears twice when remotes run it after their primaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhasePlan {
    pub phase: Phase,
    pub clusters: Vec<ClusterSteps>,
}

/// Per-cluster facts shown at the top of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    /// Name (Istio cluster ID).
    pub name: String,
    pub context: String,
    pub network: String,
    /// `region/zone`.
    pub locality: String,
    /// MetalLB range, when meshctl installs MetalLB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metallb_pool: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    #[serde(rename = "meshID")]
    pub mesh_id: String,
    /// Where the clusters come from.
    pub provider: Provider,
    pub clusters: Vec<ClusterSummary>,
    /// Phases in order (only the selected ones).
    pub phases: Vec<PhasePlan>,
    /// Every rendered file (content omitted in the JSON summary).
    pub artifacts: Vec<Artifact>,
}

/// Everything planning needs. The caller gathers it (certificates from disk, the subnet from docker
/// or `--lb-subnet`); planning itself is pure.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub mesh: &'a Mesh,
    /// Phases to plan, in order.
    pub phases: Vec<Phase>,
    /// MetalLB pool per cluster (same order as the clusters); needed when `metallb` is planned.
    pub pools: Vec<Pool>,
    /// Plug-in CA per cluster (same order); needed when `certs` is planned.
    pub cas: Vec<IntermediateCa>,
    /// Bound on each wait, in seconds (also passed to kind and istioctl).
    pub timeout_secs: u64,
    /// The docker network the kind nodes are on (`kind`, or `KIND_EXPERIMENTAL_DOCKER_NETWORK`),
    /// resolved once by the command layer and used for the pools and the API endpoints alike.
    pub docker_network: String,
    /// East-west gateway IPs known so far, by cluster (recorded when a gateway got its IP): a
    /// remote's IstioOperator carries its primary's (`remotePilotAddress`).
    pub gateway_ips: BTreeMap<String, String>,
    /// Clusters `meshctl isolate` took out of the mesh: nothing is planned in them, and no other
    /// cluster reads them.
    pub isolated: std::collections::BTreeSet<String>,
    /// Plan this cluster alone (`meshctl upgrade` goes one cluster at a time); every other
    /// cluster is still read for what it contributes (its network, its gateway address).
    pub only_cluster: Option<String>,
}

impl<'a> PlanInput<'a> {
    /// What every plan of `phases` in `mesh` starts from: the gateway addresses and isolations
    /// `state` records, bounded by `timeout`. Pools and CAs are gathered only where a phase needs
    /// them (`executor::facts`), and set on it then.
    pub fn recorded(
        mesh: &'a Mesh,
        phases: Vec<Phase>,
        state: &crate::state::MeshState,
        timeout: std::time::Duration,
        docker_network: &str,
    ) -> PlanInput<'a> {
        PlanInput {
            mesh,
            phases,
            pools: Vec::new(),
            cas: Vec::new(),
            timeout_secs: timeout.as_secs(),
            docker_network: docker_network.to_string(),
            gateway_ips: state.gateway_ips(),
            isolated: state.isolated.keys().cloned().collect(),
            only_cluster: None,
        }
    }

    /// The same input, planning `cluster` alone.
    pub fn only(self, cluster: &str) -> PlanInput<'a> {
        PlanInput {
            only_cluster: Some(cluster.to_string()),
            ..self
        }
    }
}

/// Why a plan could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("phase {phase}, cluster `{cluster}`: {source}")]
    Render {
        phase: Phase,
        cluster: String,
        source: RenderError,
    },
    /// The phase selection makes no sense for this topology.
    #[error("{0}")]
    Selection(String),
    /// An input the selected phases need is missing.
    #[error("phase {phase}: {what} missing for cluster `{cluster}`")]
    MissingInput {
        phase: Phase,
        cluster: String,
        what: &'static str,
    },
}

/// Collects the steps and artifacts of one cluster in one phase.
pub struct PhaseBuilder<'a> {
    pub input: &'a PlanInput<'a>,
    /// 0-based position of the cluster.
    pub index: usize,
    pub cluster: &'a Cluster,
    pub phase: Phase,
    steps: Vec<Step>,
    artifacts: Vec<Artifact>,
}

impl<'a> PhaseBuilder<'a> {
    /// An empty builder for `phase` in the cluster at `index`.
    pub fn new(input: &'a PlanInput<'a>, index: usize, phase: Phase) -> PhaseBuilder<'a> {
        PhaseBuilder {
            input,
            index,
            cluster: &input.mesh.clusters[index],
            phase,
            steps: Vec::new(),
            artifacts: Vec::new(),
        }
    }

    /// What the phase planned: its steps and the files they refer to.
    pub fn finish(self) -> (Vec<Step>, Vec<Artifact>) {
        (self.steps, self.artifacts)
    }

    /// Renders `template` into `<cluster>/<NN-phase>/<file>` and returns that path.
    pub fn render<C: Serialize>(
        &mut self,
        file: &str,
        template: &'static str,
        context: &C,
        secret: bool,
    ) -> Result<String, PlanError> {
        // Every template may name the mesh its objects belong to (`meshctl.io/mesh`).
        let context = minijinja::context! {
            mesh_id => &self.input.mesh.mesh_id,
            ..minijinja::Value::from(minijinja::value::Serde(context))
        };
        let content = render::render(template, &context).map_err(|source| PlanError::Render {
            phase: self.phase,
            cluster: self.cluster.name.clone(),
            source,
        })?;
        let path = format!("{}/{}/{}", self.cluster.name, self.phase.folder(), file);
        self.artifacts.push(Artifact {
            path: path.clone(),
            template,
            secret,
            content,
        });
        Ok(path)
    }

    pub fn step(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// Error for an input the phase needs but did not get.
    pub fn missing(&self, what: &'static str) -> PlanError {
        PlanError::MissingInput {
            phase: self.phase,
            cluster: self.cluster.name.clone(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_matches_the_reference() {
        for p in Phase::ALL {
            assert_eq!(p.name().parse::<Phase>().unwrap(), p);
        }
        assert_eq!(Phase::RemoteSecrets.folder(), "08-remote-secrets");
        assert!(
            Phase::Certs < Phase::Istio,
            "cacerts must exist before istiod starts"
        );
        assert!("verify".parse::<Phase>().unwrap_err().contains("remote-secrets"));
    }
}
