//! The topology: what mesh to build, described once.
//!
//! Every phase reads a [`Mesh`]. It is built from `--clusters N`, from `--contexts a,b` (clusters that
//! already exist) or from a `meshctl.yaml` file (format in `docs/configuration.md`), then validated as a
//! whole: all problems are reported at once, each naming the field and the value, as kind does.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::revision::Revision;
use crate::versions;

pub mod api_server;
mod dataplane;
mod eastwest;
mod mesh_options;
pub use dataplane::Dataplane;
pub use eastwest::{DeclaredGateway, DeclaredNetwork, Eastwest, GATEWAY_NAME, GatewayService};
pub use mesh_options::{LabelSelector, MeshOptions, Requirement, ServiceSetting, ServiceSettingFlags};

/// Most clusters one mesh may have. Bounded by the per-cluster pod/service subnets below
/// (`10.<10*i>.0.0/16`) and by what a laptop can run; the MetalLB address plan supports it on the
/// default `/16` kind network.
pub const MAX_CLUSTERS: usize = 16;

/// Mesh ID used when none is given (the value in Istio's docs).
pub const DEFAULT_MESH_ID: &str = "mesh1";

/// Istio's namespace in every cluster: istiod, the east-west gateway, `cacerts` and the remote
/// secrets live there. Declared once; everything that names it reads it from here.
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// Istio's namespace in the clusters of an external control plane: the external istiod runs there
/// (its cluster's own istiod, which only configures the gateway in front of it, keeps
/// istio-system), and so does each remote's Istio, since the external istiod reads its own
/// namespace's objects (mesh config, webhooks) in the config cluster (Istio's docs, "Install Istio
/// with an External Control Plane").
pub const EXTERNAL_ISTIOD_NAMESPACE: &str = "external-istiod";

/// Where the clusters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// meshctl creates the clusters with kind and installs MetalLB in them.
    Kind,
    /// The clusters exist already, reached through kubeconfig contexts.
    Existing,
}

/// What a cluster runs of Istio's control plane (Istio's deployment models, "Control plane models").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs istiod, which configures its own proxies (and those of the remotes it controls).
    #[default]
    Primary,
    /// Runs no istiod: its proxies are configured by its primary's istiod, reached through the
    /// primary's east-west gateway (`profile: remote`, `remotePilotAddress`).
    Remote,
    /// Runs istiod for its remotes and no workloads of its own (Istio's external control plane,
    /// the model managed offerings use): the istiod in `external-istiod`, reached through this
    /// cluster's gateway; the first remote naming it is the config cluster, whose API server holds
    /// the mesh's configuration.
    External,
}

/// One Istio mesh spanning several clusters: multi-primary or primary-remote, on one network or
/// several (Istio's deployment models).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mesh {
    /// `values.global.meshID`, identical in every cluster of the mesh.
    pub mesh_id: String,
    /// Whether meshctl creates the clusters.
    pub provider: Provider,
    /// The clusters, in order; the order decides default names, networks and address pools.
    pub clusters: Vec<Cluster>,
    /// `meshConfig` options, the same in every cluster.
    #[serde(skip_serializing_if = "MeshOptions::is_empty")]
    pub mesh_config: MeshOptions,
    /// `istio.version`: the Istio release the mesh runs, when chosen (else the pinned one, with
    /// whatever istioctl is on PATH). Checked against the pinned Kubernetes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_version: Option<String>,
    /// The control-plane revision the mesh runs: Istio's default one until `meshctl upgrade`
    /// moves the mesh to a revisioned control plane (recorded in the mesh's state, not written
    /// in meshctl.yaml).
    #[serde(skip_serializing_if = "Revision::is_default")]
    pub istio_revision: Revision,
    /// The other revision whose istiod runs beside `istio_revision` while `meshctl upgrade` is
    /// under way (the one it comes from, or during a rollback the one it goes back from): proxies
    /// and injectors of both must still reach their own istiod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_revision_beside: Option<Revision>,
    /// `dataplane`: sidecars, or Istio's ambient mode.
    #[serde(skip_serializing_if = "Dataplane::is_sidecar")]
    pub dataplane: Dataplane,
    /// Whether the data plane was asked for (`--dataplane`, `dataplane:`), not taken by default.
    #[serde(skip)]
    pub dataplane_asked: bool,
}

/// One cluster of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Primary (runs istiod), remote (configured by its primary's istiod) or external (runs
    /// istiod for remotes only).
    pub role: Role,
    /// For a remote: the primary (or external control plane) whose istiod configures it. `None`
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Istio cluster ID (`values.global.multiCluster.clusterName`), kind cluster name and remote
    /// secret key: one value for all three, so they can never disagree (istiod keys
    /// a remote by the secret's data key and compares it with the cluster ID).
    pub name: String,
    /// kubeconfig context used to reach the cluster.
    pub context: String,
    /// Istio network (`values.global.network`, label `topology.istio.io/network`).
    pub network: String,
    /// Node label `topology.kubernetes.io/region`.
    pub region: String,
    /// Node label `topology.kubernetes.io/zone`.
    pub zone: String,
    /// API server address the other clusters reach this one at, when the kubeconfig's is not
    /// (existing clusters; kind clusters have theirs recorded from docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// How kind creates the cluster; `None` for existing clusters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<KindSpec>,
    /// How other networks reach its east-west gateway.
    #[serde(skip_serializing_if = "is_default_eastwest")]
    pub eastwest: Eastwest,
}

fn is_default_eastwest(e: &Eastwest) -> bool {
    *e == Eastwest::default()
}

/// The kind-specific part of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindSpec {
    /// Node image, pinned by digest.
    pub node_image: String,
    /// Pod CIDR, distinct per cluster (Istio CI does the same; overlapping pod ranges are fatal
    /// on one network and make every other mesh ambiguous to debug).
    pub pod_subnet: Ipv4Net,
    /// Service CIDR, distinct per cluster.
    pub service_subnet: Ipv4Net,
}

/// One thing wrong with a topology: which field, what value, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the field, e.g. `clusters[1].name`.
    pub field: String,
    /// The offending value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() && self.reason.starts_with("is required") {
            write!(f, "{} {}", self.field, self.reason)
        } else if self.value.is_empty() {
            write!(f, "{}: (empty) {}", self.field, self.reason)
        } else {
            write!(f, "{}: `{}` {}", self.field, self.value, self.reason)
        }
    }
}

/// Why a topology could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// One or more fields are invalid; every problem is listed.
    #[error("invalid topology:{}", .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid(Vec<Problem>),
    /// The configuration file could not be read or parsed.
    #[error("cannot read topology file `{path}`: {reason}")]
    File {
        path: String,
        /// The I/O or parse error.
        reason: String,
    },
}

impl TopologyError {
    fn one(field: &str, value: impl fmt::Display, reason: &str) -> Self {
        TopologyError::Invalid(vec![Problem {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }])
    }
}

/// The `meshctl.yaml` file. Every field is optional; a missing one takes the default for the
/// cluster's position, exactly as `--clusters N` would.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MeshFile {
    #[serde(rename = "meshID", alias = "meshId")]
    mesh_id: Option<String>,
    provider: Option<Provider>,
    #[serde(default)]
    clusters: Vec<ClusterFile>,
    #[serde(default)]
    mesh_config: MeshOptions,
    istio: Option<IstioFile>,
    dataplane: Option<Dataplane>,
}

/// `istio:` of meshctl.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IstioFile {
    version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterFile {
    name: Option<String>,
    role: Option<Role>,
    primary: Option<String>,
    context: Option<String>,
    network: Option<String>,
    region: Option<String>,
    zone: Option<String>,
    node_image: Option<String>,
    pod_subnet: Option<String>,
    service_subnet: Option<String>,
    api_server: Option<String>,
    eastwest: Option<eastwest::EastwestFile>,
}

impl Mesh {
    /// `--clusters N`: kind clusters `cluster1..N` with every default.
    pub fn for_kind(count: usize, mesh_id: &str) -> Result<Mesh, TopologyError> {
        check_count(count)?;
        let clusters = (1..=count)
            .map(|i| default_cluster(i, None, None, Provider::Kind))
            .collect();
        Mesh::validated(mesh_id, Provider::Kind, clusters)
    }

    /// Kind clusters with the given names (e.g. `certs gen --cluster east --cluster west`).
    pub fn for_names(names: &[String], mesh_id: &str) -> Result<Mesh, TopologyError> {
        check_count(names.len())?;
        let clusters = names
            .iter()
            .enumerate()
            .map(|(i, n)| default_cluster(i + 1, Some(n.clone()), None, Provider::Kind))
            .collect();
        Mesh::validated(mesh_id, Provider::Kind, clusters)
    }

    /// `--contexts a,b`: existing clusters, named `cluster1..N` in the order given.
    pub fn for_contexts(contexts: &[String], mesh_id: &str) -> Result<Mesh, TopologyError> {
        check_count(contexts.len())?;
        let clusters = contexts
            .iter()
            .enumerate()
            .map(|(i, c)| default_cluster(i + 1, None, Some(c.clone()), Provider::Existing))
            .collect();
        Mesh::validated(mesh_id, Provider::Existing, clusters)
    }

    /// Reads a `meshctl.yaml` file. `mesh_id_override` (from `--mesh-id`) wins over the file.
    pub fn from_file(path: &Path, mesh_id_override: Option<&str>) -> Result<Mesh, TopologyError> {
        let text = read_topology_file(path).map_err(|reason| TopologyError::File {
            path: path.display().to_string(),
            reason,
        })?;
        Mesh::from_yaml(&text, mesh_id_override).map_err(|e| match e {
            TopologyError::File { reason, .. } => TopologyError::File {
                path: path.display().to_string(),
                reason: reason.replace("the topology", &path.display().to_string()),
            },
            other => other,
        })
    }

    /// Parses the `meshctl.yaml` format from text.
    pub fn from_yaml(text: &str, mesh_id_override: Option<&str>) -> Result<Mesh, TopologyError> {
        let file: MeshFile = serde_saphyr::from_str(text).map_err(|e| TopologyError::File {
            path: "<input>".into(),
            reason: crate::render::yaml_error(&e.to_string(), "the topology"),
        })?;
        let provider = file.provider.unwrap_or(Provider::Kind);
        if file.clusters.is_empty() {
            return Err(TopologyError::one(
                "clusters",
                "",
                &format!(
                    "is required: one entry per cluster (1 to {MAX_CLUSTERS}; `- {{}}` takes every default)"
                ),
            ));
        }
        check_count(file.clusters.len())?;
        let mut problems = Vec::new();
        let mut clusters = Vec::with_capacity(file.clusters.len());
        let networks_given: Vec<bool> = file.clusters.iter().map(|c| c.network.is_some()).collect();
        for (i, c) in file.clusters.into_iter().enumerate() {
            clusters.push(cluster_from_file(i, c, provider, &mut problems));
        }
        // A remote without `primary` is configured by the first cluster that runs istiod.
        let first_primary = clusters
            .iter()
            .find(|c| c.role != Role::Remote)
            .map(|c| c.name.clone());
        for c in clusters.iter_mut().filter(|c| c.role == Role::Remote) {
            if c.primary.is_none() {
                c.primary = first_primary.clone();
            }
        }
        one_network_for_an_external_control_plane(&mut clusters, &networks_given);
        let mesh_id = mesh_id_override
            .map(str::to_string)
            .or(file.mesh_id)
            .unwrap_or_else(|| DEFAULT_MESH_ID.to_string());
        let istio_version = file.istio.and_then(|i| i.version);
        if let Some(v) = &istio_version
            && let Err(reason) = v
                .parse::<crate::istio_version::IstioVersion>()
                .and_then(|parsed| crate::istio_version::check_supported(&parsed, versions::KUBERNETES_MINOR))
        {
            // The version's own words name it already; said once, after the field.
            let reason = match (
                reason.strip_prefix(&format!("`{v}` ")),
                reason.strip_prefix(&format!("Istio {v}: ")),
            ) {
                (Some(rest), _) => rest.to_string(),
                (None, Some(rest)) => format!("is not supported: {rest}"),
                (None, None) => reason,
            };
            problems.push(Problem {
                field: "istio.version".into(),
                value: v.clone(),
                reason,
            });
        }
        let mesh = Mesh {
            mesh_id,
            provider,
            clusters,
            mesh_config: file.mesh_config,
            istio_version,
            istio_revision: Revision::default(),
            istio_revision_beside: None,
            dataplane: file.dataplane.unwrap_or_default(),
            dataplane_asked: file.dataplane.is_some(),
        };
        problems.extend(mesh.problems());
        problems.extend(mesh_options::problems(&mesh.mesh_config, &mesh));
        if problems.is_empty() {
            Ok(mesh)
        } else {
            Err(TopologyError::Invalid(problems))
        }
    }

    /// Looks a cluster up by name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The cluster whose istiod configures `c`'s proxies: `c` itself for a primary.
    pub fn control_plane_of<'m>(&'m self, c: &'m Cluster) -> &'m Cluster {
        c.primary.as_deref().and_then(|p| self.cluster(p)).unwrap_or(c)
    }

    /// The mesh without its external control plane: the clusters that run workloads.
    pub fn data_plane(&self) -> Mesh {
        let mut mesh = self.clone();
        mesh.clusters.retain(|c| c.role != Role::External);
        mesh
    }

    /// The external control plane, when the mesh has one (then it has no primary).
    pub fn external_control_plane(&self) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.role == Role::External)
    }

    /// The config cluster of an external control plane `c`: its first remote, whose API server
    /// holds the mesh's configuration and whose name is the external istiod's cluster ID.
    pub fn config_cluster_of<'m>(&'m self, c: &'m Cluster) -> Option<&'m Cluster> {
        (c.role == Role::External)
            .then(|| self.remotes_of(c).next())
            .flatten()
    }

    /// Whether `c` is the config cluster of the mesh's external control plane.
    pub fn is_config_cluster(&self, c: &Cluster) -> bool {
        self.external_control_plane()
            .and_then(|e| self.config_cluster_of(e))
            .is_some_and(|config| config.name == c.name)
    }

    /// The namespace Istio's control-plane objects of `c` live in: `external-istiod` in the
    /// clusters of an external control plane, istio-system everywhere else.
    pub fn istio_namespace(&self, c: &Cluster) -> &'static str {
        let external = c.role == Role::External
            || c.primary
                .as_deref()
                .and_then(|p| self.cluster(p))
                .is_some_and(|p| p.role == Role::External);
        if external {
            EXTERNAL_ISTIOD_NAMESPACE
        } else {
            ISTIO_NAMESPACE
        }
    }

    /// The cluster holding the Gateway that exposes `c`'s services on `c`'s east-west gateway:
    /// its control plane's cluster, or an external control plane's config cluster (where the
    /// external istiod reads Istio configuration).
    pub fn exposing_cluster_of<'m>(&'m self, c: &'m Cluster) -> &'m Cluster {
        let control_plane = self.control_plane_of(c);
        self.config_cluster_of(control_plane).unwrap_or(control_plane)
    }

    /// Where `c`'s east-west gateway runs: beside its Istio, except an external control plane's,
    /// which that cluster's own istiod in istio-system configures.
    pub fn gateway_namespace(&self, c: &Cluster) -> &'static str {
        match c.role {
            Role::External => ISTIO_NAMESPACE,
            _ => self.istio_namespace(c),
        }
    }

    /// The injector webhook that injects `c`'s gateways and workloads, as the chart names it: its
    /// revision's, suffixed with the namespace outside istio-system
    /// (`istio-sidecar-injector-external-istiod` in a remote of an external control plane; an
    /// external control plane's own gateway is injected by its own istiod in istio-system).
    pub fn injector_webhook(&self, c: &Cluster) -> String {
        let name = self.istio_revision.injector_webhook();
        match self.gateway_namespace(c) {
            ISTIO_NAMESPACE => name,
            namespace => format!("{name}-{namespace}"),
        }
    }

    /// The remotes whose proxies `c`'s istiod configures (none unless `c` is a primary or an
    /// external control plane).
    pub fn remotes_of<'m>(&'m self, c: &'m Cluster) -> impl Iterator<Item = &'m Cluster> + 'm {
        self.clusters
            .iter()
            .filter(move |r| r.role == Role::Remote && r.primary.as_deref() == Some(c.name.as_str()))
    }

    /// Whether `c`'s istiod configures remotes (then it is exposed through `c`'s east-west gateway
    /// and installed with `externalIstiod`).
    pub fn controls_remotes(&self, c: &Cluster) -> bool {
        self.remotes_of(c).next().is_some()
    }

    /// Whether the mesh is multi-network: not every cluster on one shared network (then traffic
    /// between networks goes through east-west gateways). A single cluster counts as its own
    /// network, ready for clusters on other networks to join.
    pub fn multi_network(&self) -> bool {
        self.clusters.len() == 1
            || self
                .clusters
                .iter()
                .any(|c| c.network != self.clusters[0].network)
    }

    /// Whether `c` needs an east-west gateway: other networks reach its workloads through it, or
    /// (a primary with remotes) the remotes reach its istiod through it (Istio's install docs for
    /// each model: a flat multi-primary mesh has none).
    pub fn needs_eastwest(&self, c: &Cluster) -> bool {
        self.clusters.len() == 1
            || self.clusters.iter().any(|o| o.network != c.network)
            || self.controls_remotes(c)
    }

    /// Whether `c` holds the Gateway exposing `*.local` services on the east-west gateways: its
    /// istiod configures gateways that other networks call. A remote never does: the Gateway in its
    /// primary configures the remote's east-west gateway too (docs, "Install Primary-Remote on
    /// different networks"); an external istiod reads it from its config cluster instead (docs,
    /// "Install Istio with an External Control Plane": expose-services in the config cluster).
    pub fn exposes_services(&self, c: &Cluster) -> bool {
        // An ambient gateway serves the global services without one (its istiod programs it
        // from the services' scope: pilot/pkg/serviceregistry/ambient, `AllLocalNetworkGlobalServices`).
        self.dataplane.is_sidecar()
            && (c.role == Role::Primary || self.is_config_cluster(c))
            && self.multi_network()
    }

    /// Other clusters on `c`'s network: pods reach each other directly, without a gateway.
    pub fn same_network_peers<'m>(&'m self, c: &'m Cluster) -> impl Iterator<Item = &'m Cluster> + 'm {
        self.clusters
            .iter()
            .filter(move |o| o.name != c.name && o.network == c.network)
    }

    fn validated(mesh_id: &str, provider: Provider, clusters: Vec<Cluster>) -> Result<Mesh, TopologyError> {
        let mesh = Mesh {
            mesh_id: mesh_id.to_string(),
            provider,
            clusters,
            mesh_config: MeshOptions::default(),
            istio_version: None,
            istio_revision: Revision::default(),
            istio_revision_beside: None,
            dataplane: Dataplane::default(),
            dataplane_asked: false,
        };
        let problems = mesh.problems();
        if problems.is_empty() {
            Ok(mesh)
        } else {
            Err(TopologyError::Invalid(problems))
        }
    }

    /// Every problem with this mesh; empty when it is valid.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(reason) = dns1123_label_problem(&self.mesh_id) {
            push(&mut problems, "meshID".into(), &self.mesh_id, &reason);
        }
        let mut seen = [HashSet::new(), HashSet::new()];
        for (i, c) in self.clusters.iter().enumerate() {
            if let Some(reason) = dns1123_label_problem(&c.name) {
                push(&mut problems, format!("clusters[{i}].name"), &c.name, &reason);
            }
            if c.context.trim().is_empty() {
                push(
                    &mut problems,
                    format!("clusters[{i}].context"),
                    &c.context,
                    "is required: the kubeconfig context of the cluster",
                );
            }
            for (field, value) in [("network", &c.network), ("region", &c.region), ("zone", &c.zone)] {
                if let Some(reason) = label_value_problem(value) {
                    push(&mut problems, format!("clusters[{i}].{field}"), value, &reason);
                }
            }
            let mut name_taken = false;
            for (slot, (field, value)) in [("name", &c.name), ("context", &c.context)]
                .into_iter()
                .enumerate()
            {
                // A context that is the name (its default) is the same mistake, said once.
                let same_as_name = slot == 1 && name_taken && c.context == c.name;
                if !seen[slot].insert(value.clone()) && !same_as_name {
                    name_taken = slot == 0;
                    let reason = format!("is used by another cluster; every cluster needs its own {field}");
                    push(&mut problems, format!("clusters[{i}].{field}"), value, &reason);
                }
            }
        }
        problems.extend(self.role_problems());
        problems.extend(self.eastwest_problems());
        problems.extend(self.subnet_problems());
        problems.extend(dataplane::problems(self));
        problems
    }

    /// The same mesh on `dataplane` (`--dataplane`, which wins over meshctl.yaml), checked again.
    pub fn with_dataplane(mut self, dataplane: Dataplane) -> Result<Mesh, TopologyError> {
        self.dataplane = dataplane;
        self.dataplane_asked = true;
        let problems = self.problems();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(TopologyError::Invalid(problems))
        }
    }

    /// At least one istiod, and every remote names a primary of this mesh.
    fn role_problems(&self) -> Vec<Problem> {
        let mut problems = self.external_problems();
        if !self.clusters.is_empty() && self.clusters.iter().all(|c| c.role == Role::Remote) {
            push(
                &mut problems,
                "clusters[*].role".into(),
                "remote",
                "leaves the mesh without a primary: at least one cluster must run istiod",
            );
        }
        for (i, c) in self.clusters.iter().enumerate() {
            match (c.role, &c.primary) {
                (Role::Primary | Role::External, Some(p)) => push(
                    &mut problems,
                    format!("clusters[{i}].primary"),
                    p,
                    "is only for `role: remote` (a primary or external cluster runs its own istiod)",
                ),
                (Role::Remote, Some(p)) if self.cluster(p).is_none_or(|t| t.role == Role::Remote) => push(
                    &mut problems,
                    format!("clusters[{i}].primary"),
                    p,
                    "does not name a cluster of this mesh with `role: primary` or `role: external`",
                ),
                _ => {}
            }
        }
        problems
    }

    /// What meshctl builds of the external control plane model: one external cluster with its
    /// remotes, and no primary beside it.
    fn external_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let externals: Vec<(usize, &Cluster)> = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.role == Role::External)
            .collect();
        let Some(&(first, external)) = externals.first() else {
            return problems;
        };
        for (i, c) in &externals[1..] {
            push(
                &mut problems,
                format!("clusters[{i}].role"),
                &c.name,
                &format!(
                    "is a second external control plane: meshctl builds one (`{}`)",
                    external.name
                ),
            );
        }
        if let Some((i, c)) = self
            .clusters
            .iter()
            .enumerate()
            .find(|(_, c)| c.role == Role::Primary)
        {
            push(
                &mut problems,
                format!("clusters[{i}].role"),
                &c.name,
                &format!(
                    "is a primary beside the external control plane `{}`: make it `role: remote` of it (meshctl does not build both models in one mesh)",
                    external.name
                ),
            );
        }
        if self.remotes_of(external).next().is_none() {
            push(
                &mut problems,
                format!("clusters[{first}].role"),
                "external",
                if self.clusters.iter().any(|c| c.role == Role::Remote) {
                    "runs istiod for remote clusters only, and no `role: remote` cluster has it as its `primary` (a remote's `primary` is the first primary unless it names one)"
                } else {
                    "runs istiod for remote clusters only: add a `role: remote` cluster (the first is the config cluster)"
                },
            );
        }
        problems
    }

    fn subnet_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        // Pod and service CIDRs must not overlap anywhere in the mesh: an endpoint address would
        // name a pod in two clusters, and one-network routes would send it to the wrong one.
        let mut nets: Vec<(String, Ipv4Net)> = Vec::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let Some(kind) = &c.kind else { continue };
            for (field, net) in [
                ("podSubnet", kind.pod_subnet),
                ("serviceSubnet", kind.service_subnet),
            ] {
                let here = format!("clusters[{i}].{field}");
                // kube-controller-manager gives each node a /24 of the pod subnet (kubeadm's
                // default node CIDR mask); kube-apiserver takes a service range of /12 to /28
                // (larger is refused, and kind puts cluster DNS at its tenth address).
                let prefix = net.prefix_len();
                match field {
                    "podSubnet" if prefix > 24 => push(
                        &mut problems,
                        here.clone(),
                        &net.to_string(),
                        "is smaller than one node's /24 of pod addresses: use /24 or larger, such as /16",
                    ),
                    "serviceSubnet" if !(12..=28).contains(&prefix) => push(
                        &mut problems,
                        here.clone(),
                        &net.to_string(),
                        "must be a /12 to /28 range (kube-apiserver's limits, with room for cluster DNS)",
                    ),
                    _ => {}
                }
                if let Some((other, _)) = nets.iter().find(|(_, n)| n.contains(&net) || net.contains(n)) {
                    let reason = format!("overlaps {other}");
                    push(&mut problems, here.clone(), &net.to_string(), &reason);
                }
                nets.push((here, net));
            }
        }
        problems
    }
}

fn push(problems: &mut Vec<Problem>, field: String, value: &str, reason: &str) {
    problems.push(Problem {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    })
}

/// The clusters of an external control plane are one network unless the file says otherwise:
/// the external cluster runs no workloads, and its remotes reach each other's pods directly. Each
/// cluster whose `network` was not given takes the config cluster's.
fn one_network_for_an_external_control_plane(clusters: &mut [Cluster], networks_given: &[bool]) {
    let Some(external) = clusters
        .iter()
        .find(|c| c.role == Role::External)
        .map(|c| c.name.clone())
    else {
        return;
    };
    let Some(network) = clusters
        .iter()
        .find(|c| c.role == Role::Remote && c.primary.as_deref() == Some(external.as_str()))
        .map(|c| c.network.clone())
    else {
        return;
    };
    for (c, given) in clusters.iter_mut().zip(networks_given) {
        let of_external = c.name == external || c.primary.as_deref() == Some(external.as_str());
        if of_external && !given {
            c.network = network.clone();
        }
    }
}

/// One cluster of the topology file over its defaults; what is wrong with it goes to `problems`.
fn cluster_from_file(i: usize, c: ClusterFile, provider: Provider, problems: &mut Vec<Problem>) -> Cluster {
    let mut cluster = default_cluster(i + 1, c.name, c.context, provider);
    let field = |f: &str| format!("clusters[{i}].{f}");
    if provider == Provider::Existing {
        let kind_only = [
            ("nodeImage", &c.node_image),
            ("podSubnet", &c.pod_subnet),
            ("serviceSubnet", &c.service_subnet),
        ];
        for (name, value) in kind_only {
            if let Some(value) = value {
                problems.push(Problem {
                    field: field(name),
                    value: value.clone(),
                    reason: "applies to `provider: kind` only; existing clusters keep their own".into(),
                });
            }
        }
    }
    if provider == Provider::Kind && c.api_server.is_some() {
        problems.push(Problem {
            field: field("apiServer"),
            value: c.api_server.clone().unwrap_or_default(),
            reason: "is for `provider: existing`: a kind cluster's API server is the address kind gives it on the docker network, which meshctl records when it creates the cluster".into(),
        });
    }
    if let Some(server) = c.api_server {
        if let Some(reason) = api_server::server_problem(&server) {
            problems.push(Problem {
                field: field("apiServer"),
                value: server.clone(),
                reason,
            });
        }
        cluster.api_server = Some(server);
    }
    cluster.role = c.role.unwrap_or_default();
    cluster.primary = c.primary;
    cluster.network = c.network.unwrap_or(cluster.network);
    cluster.region = c.region.unwrap_or(cluster.region);
    cluster.zone = c.zone.unwrap_or(cluster.zone);
    cluster.eastwest = eastwest::from_file(i, c.eastwest, problems);
    if let Some(kind) = cluster.kind.as_mut() {
        kind_overrides(
            kind,
            &field,
            c.node_image,
            c.pod_subnet,
            c.service_subnet,
            problems,
        );
    }
    cluster
}

/// A kind cluster's node image and subnets, where the file sets them.
fn kind_overrides(
    kind: &mut KindSpec,
    field: &dyn Fn(&str) -> String,
    node_image: Option<String>,
    pod_subnet: Option<String>,
    service_subnet: Option<String>,
    problems: &mut Vec<Problem>,
) {
    if let Some(image) = node_image {
        // An image reference: registry/name[:tag][@digest], no spaces or line breaks
        // (kind would pass them on to docker, which names the whole value back).
        let fine = !image.is_empty()
            && image
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-/:@".contains(ch));
        if !fine {
            problems.push(Problem {
                field: field("nodeImage"),
                value: image.escape_debug().to_string(),
                reason: "is not an image reference such as kindest/node:v1.36.0".into(),
            });
        }
        kind.node_image = image;
    }
    for (name, given, slot) in [
        ("podSubnet", pod_subnet, &mut kind.pod_subnet),
        ("serviceSubnet", service_subnet, &mut kind.service_subnet),
    ] {
        if let Some(text) = given {
            match text.parse::<Ipv4Net>() {
                Ok(net) => *slot = net.trunc(),
                Err(_) => problems.push(Problem {
                    field: field(name),
                    value: text,
                    reason: "is not an IPv4 CIDR such as 10.10.0.0/16".into(),
                }),
            }
        }
    }
}

impl Mesh {
    /// The kind clusters' pod and service ranges against the docker network `subnet` their nodes
    /// and MetalLB pools live on: an overlap makes node or gateway addresses look like pods or
    /// services inside each cluster, and traffic to them never leaves it.
    pub fn docker_network_problems(&self, subnet: Ipv4Net) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let Some(kind) = &c.kind else { continue };
            for (field, net) in [
                ("podSubnet", kind.pod_subnet),
                ("serviceSubnet", kind.service_subnet),
            ] {
                if net.contains(&subnet) || subnet.contains(&net) {
                    out.push(Problem {
                        field: format!("clusters[{i}].{field}"),
                        value: net.to_string(),
                        reason: format!(
                            "overlaps the docker network {subnet}, where the nodes and MetalLB's addresses are"
                        ),
                    });
                }
            }
        }
        out
    }
}

fn check_count(count: usize) -> Result<(), TopologyError> {
    if (1..=MAX_CLUSTERS).contains(&count) {
        Ok(())
    } else {
        Err(TopologyError::one(
            "clusters",
            count,
            &format!("is not a valid number of clusters (1 to {MAX_CLUSTERS})"),
        ))
    }
}

/// The defaults for the cluster at 1-based `index`: `clusterI`, `networkI`, `regionI`/`zoneI`, and
/// for kind the context kind's naming gives after meshctl renames it (the cluster name) and
/// Istio CI's subnet scheme (`10.<10i>.0.0/16` pods, `10.255.<10i>.0/24` services).
fn default_cluster(
    index: usize,
    name: Option<String>,
    context: Option<String>,
    provider: Provider,
) -> Cluster {
    let name = name.unwrap_or_else(|| format!("cluster{index}"));
    let octet = u8::try_from(10 * index).unwrap_or(u8::MAX);
    let kind = (provider == Provider::Kind).then(|| KindSpec {
        node_image: versions::KIND_NODE_IMAGE.to_string(),
        pod_subnet: Ipv4Net::new([10, octet, 0, 0].into(), 16).expect("prefix 16 is valid"),
        service_subnet: Ipv4Net::new([10, 255, octet, 0].into(), 24).expect("prefix 24 is valid"),
    });
    Cluster {
        role: Role::Primary,
        primary: None,
        context: context.unwrap_or_else(|| name.clone()),
        network: format!("network{index}"),
        region: format!("region{index}"),
        zone: format!("zone{index}"),
        name,
        api_server: None,
        kind,
        eastwest: Eastwest::default(),
    }
}

/// Why `value` is not a DNS-1123 label (RFC 1123, as Kubernetes and istioctl check cluster names).
pub fn dns1123_label_problem(value: &str) -> Option<String> {
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = value.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && value.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if value.is_empty() || value.len() > 63 || !ok_chars || !ok_ends {
        Some(
            "is not a DNS-1123 label (1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
                .into(),
        )
    } else {
        None
    }
}

/// Why `value` is not a valid Kubernetes label value (it becomes `topology.*` labels).
pub(crate) fn label_value_problem(value: &str) -> Option<String> {
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ok_ends = value.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && value.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if value.is_empty() {
        Some("must not be empty".into())
    } else if value.len() > 63 || !ok_chars || !ok_ends {
        Some("is not a Kubernetes label value (1-63 of [A-Za-z0-9-_.], alphanumeric at both ends)".into())
    } else {
        None
    }
}

/// The most a topology file may hold: a mesh of the largest size meshctl builds fits in a few
/// KiB, so anything near this is not a topology (and reading it whole would take the memory).
const MAX_TOPOLOGY_BYTES: u64 = 1 << 20;

/// The text of the topology file at `path`: a regular file (a device such as `/dev/zero` never
/// ends, and a FIFO blocks until someone writes to it) of at most [`MAX_TOPOLOGY_BYTES`].
fn read_topology_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(if meta.is_dir() {
            "is a folder, not a meshctl.yaml file".into()
        } else {
            "is not a regular file (a device, FIFO or socket): meshctl reads a topology only from a file"
                .into()
        });
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(|e| e.to_string())?
        .take(MAX_TOPOLOGY_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_TOPOLOGY_BYTES {
        return Err(format!(
            "is larger than {} KiB: not a meshctl.yaml topology",
            MAX_TOPOLOGY_BYTES / 1024
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(result: Result<Mesh, TopologyError>) -> Vec<Problem> {
        match result {
            Err(TopologyError::Invalid(p)) => p,
            other => panic!("expected invalid topology, got {other:?}"),
        }
    }

    #[test]
    fn an_api_server_is_declared_for_existing_clusters_only() {
        let kind = problems_of(Mesh::from_yaml(
            "clusters:\n  - {apiServer: 'https://10.0.0.1:6443'}\n",
            None,
        ));
        assert!(
            kind.len() == 1
                && kind[0].field == "clusters[0].apiServer"
                && kind[0].reason.contains("provider: existing"),
            "{kind:?}"
        );
        assert!(
            Mesh::from_yaml(
                "provider: existing\nclusters:\n  - {context: east, apiServer: 'https://10.0.0.1:6443'}\n",
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn two_kind_clusters_get_distinct_names_networks_localities_and_subnets() {
        let mesh = Mesh::for_kind(2, "mesh1").unwrap();
        let c: Vec<_> = mesh
            .clusters
            .iter()
            .map(|c| (&c.name[..], &c.network[..], &c.region[..], &c.zone[..]))
            .collect();
        assert_eq!(
            c,
            [
                ("cluster1", "network1", "region1", "zone1"),
                ("cluster2", "network2", "region2", "zone2")
            ]
        );
        let k = mesh.clusters[1].kind.as_ref().unwrap();
        assert_eq!(k.pod_subnet.to_string(), "10.20.0.0/16");
        assert_eq!(k.service_subnet.to_string(), "10.255.20.0/24");
        assert_eq!(mesh.clusters[0].context, "cluster1");
    }

    #[test]
    fn cluster_count_outside_the_bounds_is_refused_with_the_bound_in_the_message() {
        for n in [0, MAX_CLUSTERS + 1] {
            let p = problems_of(Mesh::for_kind(n, "mesh1"));
            assert_eq!(p[0].field, "clusters");
            assert!(
                p[0].to_string().contains(&format!("1 to {MAX_CLUSTERS}")),
                "{}",
                p[0]
            );
        }
        assert!(Mesh::for_kind(MAX_CLUSTERS, "mesh1").is_ok());
    }

    #[test]
    fn every_bad_name_is_reported_at_once() {
        let names = vec!["Cluster_A".to_string(), "ok".into(), "ok".into(), "-x".into()];
        let p = problems_of(Mesh::for_names(&names, "mesh1"));
        let fields: Vec<_> = p.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"clusters[0].name"));
        assert!(
            fields.contains(&"clusters[2].name"),
            "duplicate not reported: {fields:?}"
        );
        assert!(fields.contains(&"clusters[3].name"));
        assert!(
            p.iter()
                .any(|p| p.value == "Cluster_A" && p.reason.contains("DNS-1123"))
        );
    }

    #[test]
    fn dns1123_rules() {
        for good in ["a", "cluster1", "east-1", &"a".repeat(63)] {
            assert_eq!(dns1123_label_problem(good), None, "{good}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(dns1123_label_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn contexts_become_existing_clusters_without_kind_settings() {
        let mesh = Mesh::for_contexts(&["kind-a".into(), "gke_p_z_b".into()], "m").unwrap();
        assert_eq!(mesh.provider, Provider::Existing);
        assert_eq!(mesh.clusters[1].context, "gke_p_z_b");
        assert_eq!(mesh.clusters[1].name, "cluster2");
        assert!(mesh.clusters.iter().all(|c| c.kind.is_none()));
    }

    #[test]
    fn config_file_overrides_defaults_and_keeps_the_rest() {
        let yaml =
            "meshID: lab\nclusters:\n  - name: east\n    region: eu\n    podSubnet: 10.100.0.0/16\n  - {}\n";
        let mesh = Mesh::from_yaml(yaml, None).unwrap();
        assert_eq!(mesh.mesh_id, "lab");
        assert_eq!(mesh.clusters[0].name, "east");
        assert_eq!(mesh.clusters[0].region, "eu");
        assert_eq!(mesh.clusters[0].zone, "zone1");
        assert_eq!(
            mesh.clusters[0].kind.as_ref().unwrap().pod_subnet.to_string(),
            "10.100.0.0/16"
        );
        assert_eq!(mesh.clusters[1].name, "cluster2");
        assert_eq!(Mesh::from_yaml(yaml, Some("other")).unwrap().mesh_id, "other");
    }

    #[test]
    fn config_file_rejects_unknown_fields_and_overlapping_subnets() {
        let err = Mesh::from_yaml("clusters:\n  - nmae: x\n", None).unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
        let yaml = "clusters:\n  - podSubnet: 10.0.0.0/8\n  - {}\n";
        let p = problems_of(Mesh::from_yaml(yaml, None));
        assert!(
            p.iter()
                .any(|p| p.field == "clusters[1].podSubnet" && p.reason.contains("clusters[0].podSubnet")),
            "{p:?}"
        );
    }

    #[test]
    fn bad_label_values_are_named_and_a_shared_network_is_allowed() {
        let yaml = "clusters:\n  - network: n\n  - network: n\n    zone: 'bad zone'\n";
        let p = problems_of(Mesh::from_yaml(yaml, None));
        assert!(!p.iter().any(|p| p.field == "clusters[1].network"), "{p:?}");
        assert!(
            p.iter()
                .any(|p| p.field == "clusters[1].zone" && p.value == "bad zone")
        );
        let flat = Mesh::from_yaml("clusters:\n  - network: n\n  - network: n\n", None).unwrap();
        assert!(!flat.multi_network());
        assert!(flat.clusters.iter().all(|c| !flat.needs_eastwest(c)));
    }

    #[test]
    fn a_remote_is_configured_by_the_first_primary_unless_it_names_one() {
        let yaml = "clusters:\n  - {}\n  - {role: remote}\n  - {}\n  - {role: remote, primary: cluster3, network: network2}\n";
        let mesh = Mesh::from_yaml(yaml, None).unwrap();
        let cp = |i: usize| mesh.control_plane_of(&mesh.clusters[i]).name.clone();
        assert_eq!(
            [cp(0), cp(1), cp(2), cp(3)],
            ["cluster1", "cluster1", "cluster3", "cluster3"]
        );
        let remotes: Vec<_> = mesh.remotes_of(&mesh.clusters[0]).map(|c| &c.name[..]).collect();
        assert_eq!(remotes, ["cluster2"]);
        // cluster1 has a remote: it exposes istiod through a gateway; a remote never holds the
        // services Gateway.
        assert!(mesh.needs_eastwest(&mesh.clusters[0]));
        assert!(!mesh.exposes_services(&mesh.clusters[1]));
    }

    #[test]
    fn roles_that_leave_no_istiod_or_name_a_missing_primary_are_refused() {
        let p = problems_of(Mesh::from_yaml("clusters:\n  - {role: remote}\n", None));
        assert!(p.iter().any(|p| p.field == "clusters[*].role"), "{p:?}");
        let p = problems_of(Mesh::from_yaml(
            "clusters:\n  - {}\n  - {role: remote, primary: cluster9}\n  - {role: remote, primary: cluster2}\n  - {primary: cluster1}\n",
            None,
        ));
        let fields: Vec<_> = p.iter().map(|p| (&p.field[..], &p.value[..])).collect();
        assert!(
            fields.contains(&("clusters[1].primary", "cluster9")),
            "{fields:?}"
        );
        assert!(
            fields.contains(&("clusters[2].primary", "cluster2")),
            "{fields:?}"
        );
        assert!(
            fields.contains(&("clusters[3].primary", "cluster1")),
            "{fields:?}"
        );
        let err = Mesh::from_yaml("clusters:\n  - {role: secondary}\n", None).unwrap_err();
        assert!(err.to_string().contains("secondary"), "{err}");
    }

    /// An external control plane: its remotes take it as their primary, the first is the config
    /// cluster, unset networks become the config cluster's, and Istio's objects move to
    /// `external-istiod` in every cluster of the model.
    #[test]
    fn an_external_control_plane_configures_its_remotes_from_external_istiod() {
        let mesh = Mesh::from_yaml(
            "clusters:
  - {role: external}
  - {role: remote}
  - {role: remote}
",
            None,
        )
        .unwrap();
        let [external, config, other] = [0, 1, 2].map(|i| &mesh.clusters[i]);
        assert_eq!(mesh.external_control_plane(), Some(external));
        assert_eq!(mesh.config_cluster_of(external), Some(config));
        assert!(mesh.is_config_cluster(config) && !mesh.is_config_cluster(other));
        assert_eq!(other.primary.as_deref(), Some("cluster1"));
        for c in &mesh.clusters {
            assert_eq!(c.network, "network2", "{}", c.name);
            assert_eq!(mesh.istio_namespace(c), EXTERNAL_ISTIOD_NAMESPACE);
        }
        assert!(!mesh.multi_network());
        assert!(mesh.needs_eastwest(external) && !mesh.needs_eastwest(config));
        assert!(!mesh.exposes_services(external));
        let names: Vec<_> = mesh.data_plane().clusters.into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["cluster2", "cluster3"]);
        let primary = Mesh::for_kind(2, "m").unwrap();
        assert_eq!(primary.istio_namespace(&primary.clusters[0]), ISTIO_NAMESPACE);
        assert_eq!(
            primary.injector_webhook(&primary.clusters[0]),
            "istio-sidecar-injector"
        );
        assert_eq!(
            mesh.injector_webhook(config),
            "istio-sidecar-injector-external-istiod"
        );
        assert_eq!(mesh.gateway_namespace(external), ISTIO_NAMESPACE);
        assert_eq!(mesh.gateway_namespace(other), EXTERNAL_ISTIOD_NAMESPACE);
    }

    /// Remotes of an external control plane on networks of their own: each gets an east-west
    /// gateway beside its Istio, and the config cluster holds the Gateway exposing services (the
    /// external istiod reads Istio configuration there).
    #[test]
    fn an_external_control_planes_remotes_on_several_networks_expose_from_the_config_cluster() {
        let mesh = Mesh::from_yaml(
            "clusters:\n  - {role: external}\n  - {role: remote}\n  - {role: remote, network: west}\n",
            None,
        )
        .unwrap();
        let [external, config, other] = [0, 1, 2].map(|i| &mesh.clusters[i]);
        assert!(mesh.multi_network());
        assert!(mesh.needs_eastwest(config) && mesh.needs_eastwest(other));
        assert!(mesh.exposes_services(config));
        assert!(!mesh.exposes_services(external) && !mesh.exposes_services(other));
        assert_eq!(mesh.exposing_cluster_of(other).name, config.name);
        assert_eq!(external.network, config.network);
    }

    /// What meshctl does not build of the model is refused, each naming the field.
    #[test]
    fn external_control_planes_meshctl_does_not_build_are_refused() {
        let fields = |yaml: &str| -> Vec<(String, String)> {
            problems_of(Mesh::from_yaml(yaml, None))
                .into_iter()
                .map(|p| (p.field, p.value))
                .collect()
        };
        let lone = fields("clusters:\n  - {role: external}\n");
        assert!(
            lone.contains(&("clusters[0].role".into(), "external".into())),
            "{lone:?}"
        );
        let mixed = fields("clusters:\n  - {role: external}\n  - {role: remote}\n  - {}\n");
        assert!(
            mixed.contains(&("clusters[2].role".into(), "cluster3".into())),
            "{mixed:?}"
        );
        let two = fields(
            "clusters:\n  - {role: external}\n  - {role: external}\n  - {role: remote, primary: cluster1}\n  - {role: remote, primary: cluster2}\n",
        );
        assert!(
            two.contains(&("clusters[1].role".into(), "cluster2".into())),
            "{two:?}"
        );
        let named = fields("clusters:\n  - {role: external, primary: cluster2}\n  - {role: remote}\n");
        assert!(
            named.contains(&("clusters[0].primary".into(), "cluster2".into())),
            "{named:?}"
        );
    }
}
