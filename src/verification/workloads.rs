//! The verification workloads of `meshctl verify` (cross-cluster calls and locality failover). Pure: rendered
//! here, applied by the verify command. Not a phase of `up`, but part of the plan on disk.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::Artifact;
use crate::render::{self, RenderError};
use crate::topology::{Dataplane, Mesh, MeshOptions};
use crate::versions;

/// Namespace of the verification workloads.
pub const NAMESPACE: &str = "sample";
/// The host the clients call, as Istio names it.
pub const HELLOWORLD_HOST: &str = "helloworld.sample.svc.cluster.local";

/// Version label of the helloworld that runs in the cluster at 0-based `index`: `v1`, `v2`, ...
pub fn version_of(index: usize) -> String {
    format!("v{}", index + 1)
}

#[derive(Serialize)]
struct Namespace<'a> {
    namespace: &'a str,
    /// Labels that make istiod discover the namespace under the topology's discoverySelectors.
    discovery_labels: BTreeMap<String, String>,
    /// Its pods join the mesh through ztunnel, not a sidecar.
    ambient: bool,
}

/// How a namespace's pods join the mesh: sidecar injection, or ambient enrollment (the label
/// istio-cni and ztunnel act on: `istio.io/dataplane-mode=ambient`, istio/api `label.IoIstioDataplaneMode`).
fn enrollment_label(dataplane: Dataplane) -> (&'static str, &'static str) {
    match dataplane {
        Dataplane::Sidecar => ("istio-injection", "enabled"),
        Dataplane::Ambient => ("istio.io/dataplane-mode", "ambient"),
    }
}

/// Labels the verification namespace always has (Kubernetes adds `kubernetes.io/metadata.name`).
fn namespace_labels(dataplane: Dataplane) -> BTreeMap<String, String> {
    let (key, value) = enrollment_label(dataplane);
    BTreeMap::from([
        ("kubernetes.io/metadata.name".to_string(), NAMESPACE.to_string()),
        (key.to_string(), value.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "meshctl".to_string()),
    ])
}

/// The labels the verification namespace adds so that istiod discovers it under the topology's
/// `meshConfig.discoverySelectors` (istiod ignores every namespace they do not select): none
/// without selectors or when one selects it already (by name, say); else the `matchLabels` of the
/// first selector they then satisfy. `None`: no selector can select it by adding labels (only
/// expressions that exclude it), so verify cannot run under this mesh config.
pub fn discovery_labels(mesh: &Mesh) -> Option<BTreeMap<String, String>> {
    let base = namespace_labels(mesh.dataplane);
    let selectors = &mesh.mesh_config.discovery_selectors;
    if selectors.is_empty() || selectors.iter().any(|s| s.matches(&base)) {
        return Some(BTreeMap::new());
    }
    selectors.iter().find_map(|s| {
        let mut labels = base.clone();
        labels.extend(s.match_labels.clone());
        s.matches(&labels).then(|| s.match_labels.clone())
    })
}

/// Which of verify's objects a run relies on, for [`export_problem`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RulesUsed {
    /// A VirtualService (per-cluster subsets).
    pub virtual_service: bool,
    /// A DestinationRule (subsets, locality failover or distribution).
    pub destination_rule: bool,
}

/// Why the topology's default `exportTo` hides what verify relies on from the callers in its own
/// namespace (`~`, or a list without `.`, `*` or the namespace), if it does: helloworld's Service
/// always, the VirtualService and DestinationRule when the run uses them. Such a run could not pass.
pub fn export_problem(options: &MeshOptions, used: RulesUsed) -> Option<String> {
    let hides = |to: &[String]| !(to.is_empty() || to.iter().any(|v| v == "*" || v == "." || v == NAMESPACE));
    let checks = [
        (
            "defaultServiceExportTo",
            &options.default_service_export_to,
            true,
            "the helloworld Service",
        ),
        (
            "defaultVirtualServiceExportTo",
            &options.default_virtual_service_export_to,
            used.virtual_service,
            "verify's VirtualService",
        ),
        (
            "defaultDestinationRuleExportTo",
            &options.default_destination_rule_export_to,
            used.destination_rule,
            "verify's DestinationRule",
        ),
    ];
    checks.into_iter().find(|(_, to, used, _)| *used && hides(to)).map(|(field, to, _, what)| {
        format!(
            "meshConfig.{field} {to:?} hides objects from their own namespace, so {what} in namespace {NAMESPACE} would not apply to its callers; add \".\" (or \"*\")"
        )
    })
}

#[derive(Serialize)]
struct Helloworld<'a> {
    namespace: &'a str,
    cluster: &'a str,
    version: String,
    image: &'a str,
    /// Labelled `istio.io/global=true`: in an ambient mesh the other clusters see a service only
    /// when its scope is global.
    global: bool,
}

#[derive(Serialize)]
struct Curl<'a> {
    namespace: &'a str,
    image: &'a str,
}

#[derive(Serialize)]
struct Subsets<'a> {
    namespace: &'a str,
    host: &'a str,
    clusters: Vec<&'a str>,
}

/// File name of the per-cluster subsets (applied by `verify --per-cluster-subsets` only).
pub const SUBSETS_FILE: &str = "per-cluster-subsets.yaml";
/// File name of the locality failover rule (applied by `verify --failover` only).
pub const FAILOVER_FILE: &str = "locality-failover.yaml";
/// File name of the weighted locality rule (applied by `verify --locality distribute` only).
pub const DISTRIBUTE_FILE: &str = "locality-distribute.yaml";
/// Share of requests a caller keeps in its own locality under the distribute rule, in percent
/// (the split of the walkthrough the project started from; the rest goes to another region).
pub const DISTRIBUTE_LOCAL_WEIGHT: u32 = 80;

#[derive(Serialize)]
struct Distribute<'a> {
    namespace: &'a str,
    from: String,
    to: String,
    local_weight: u32,
}

/// The distribute rule's two localities (`region/zone`): the first cluster's, and the first
/// cluster's in another region; `None` when every cluster is in one region.
pub fn distribute_localities(mesh: &Mesh) -> Option<(usize, usize)> {
    let first = mesh.clusters.first()?;
    let other = mesh.clusters.iter().position(|c| c.region != first.region)?;
    Some((0, other))
}

#[derive(Serialize)]
struct FailoverRule {
    from: String,
    to: String,
}

#[derive(Serialize)]
struct Failover<'a> {
    namespace: &'a str,
    failover: Vec<FailoverRule>,
}

/// Each region fails over to the next cluster's region (round robin); no rule with one region.
fn failover_rules(mesh: &Mesh) -> Vec<FailoverRule> {
    let mut regions: Vec<&str> = Vec::new();
    for c in &mesh.clusters {
        if !regions.contains(&c.region.as_str()) {
            regions.push(&c.region);
        }
    }
    if regions.len() < 2 {
        return Vec::new();
    }
    (0..regions.len())
        .map(|i| FailoverRule {
            from: regions[i].to_string(),
            to: regions[(i + 1) % regions.len()].to_string(),
        })
        .collect()
}

/// Every verification manifest, under `<cluster>/verify/`.
pub fn artifacts(mesh: &Mesh) -> Result<Vec<Artifact>, RenderError> {
    // An ambient mesh routes by ztunnel, which applies no DestinationRule or VirtualService
    // without a waypoint: verify's rules are for sidecars only (`verify` refuses their checks).
    let rules = if mesh.dataplane.is_sidecar() {
        rule_files(mesh)?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for (i, cluster) in mesh.clusters.iter().enumerate() {
        let files = workload_files(mesh, i)?.into_iter().chain(rules.iter().cloned());
        out.extend(files.map(|(file, template, content)| Artifact {
            path: format!("{}/verify/{file}", cluster.name),
            template,
            secret: false,
            content,
        }));
    }
    Ok(out)
}

/// A file of the verification workloads: its name, its template and what it rendered.
type WorkloadFile = (&'static str, &'static str, String);

fn rendered<C: Serialize>(
    file: &'static str,
    template: &'static str,
    cx: &C,
) -> Result<WorkloadFile, RenderError> {
    Ok((file, template, render::render(template, cx)?))
}

/// The namespace and the two workloads of the cluster at `i`.
fn workload_files(mesh: &Mesh, i: usize) -> Result<Vec<WorkloadFile>, RenderError> {
    let ambient = !mesh.dataplane.is_sidecar();
    let namespace = Namespace {
        namespace: NAMESPACE,
        discovery_labels: discovery_labels(mesh).unwrap_or_default(),
        ambient,
    };
    let helloworld = Helloworld {
        namespace: NAMESPACE,
        cluster: &mesh.clusters[i].name,
        version: version_of(i),
        image: versions::HELLOWORLD_IMAGES[i % versions::HELLOWORLD_IMAGES.len()],
        global: ambient,
    };
    let curl = Curl {
        namespace: NAMESPACE,
        image: versions::CURL_IMAGE,
    };
    Ok(vec![
        rendered("namespace.yaml", "verify/namespace.yaml.j2", &namespace)?,
        rendered("helloworld.yaml", "verify/helloworld.yaml.j2", &helloworld)?,
        rendered("curl.yaml", "verify/curl.yaml.j2", &curl)?,
    ])
}

/// The traffic rules every cluster gets the same: locality failover and distribution where the
/// mesh has the localities for them, and the per-cluster subsets.
fn rule_files(mesh: &Mesh) -> Result<Vec<WorkloadFile>, RenderError> {
    let mut files = Vec::new();
    let rules = failover_rules(mesh);
    if !rules.is_empty() {
        let failover = Failover {
            namespace: NAMESPACE,
            failover: rules,
        };
        files.push(rendered(
            FAILOVER_FILE,
            "verify/locality-failover.yaml.j2",
            &failover,
        )?);
    }
    if let Some((a, b)) = distribute_localities(mesh) {
        let locality = |i: usize| format!("{}/{}", mesh.clusters[i].region, mesh.clusters[i].zone);
        let distribute = Distribute {
            namespace: NAMESPACE,
            from: locality(a),
            to: locality(b),
            local_weight: DISTRIBUTE_LOCAL_WEIGHT,
        };
        files.push(rendered(
            DISTRIBUTE_FILE,
            "verify/locality-distribute.yaml.j2",
            &distribute,
        )?);
    }
    let subsets = Subsets {
        namespace: NAMESPACE,
        host: HELLOWORLD_HOST,
        clusters: mesh.clusters.iter().map(|c| c.name.as_str()).collect(),
    };
    files.push(rendered(
        SUBSETS_FILE,
        "verify/per-cluster-subsets.yaml.j2",
        &subsets,
    )?);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(yaml: &str) -> MeshOptions {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn with(options: MeshOptions) -> Mesh {
        let mut mesh = Mesh::for_kind(1, "mesh1").unwrap();
        mesh.mesh_config = options;
        mesh
    }

    #[test]
    fn the_namespace_joins_the_first_selector_it_can_satisfy_by_labels() {
        assert_eq!(
            discovery_labels(&with(MeshOptions::default())),
            Some(BTreeMap::new())
        );
        // Selected by name already: nothing to add.
        let by_name = options(
            "discoverySelectors: [{matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [istio-system, sample]}]}]",
        );
        assert_eq!(discovery_labels(&with(by_name)), Some(BTreeMap::new()));
        let by_label = options(
            "discoverySelectors: [{matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [istio-system]}]}, {matchLabels: {istio-discovery: enabled}}]",
        );
        assert_eq!(
            discovery_labels(&with(by_label)),
            Some(BTreeMap::from([("istio-discovery".into(), "enabled".into())]))
        );
        // Only a selector that excludes it by name: no labels can help.
        let never = options(
            "discoverySelectors: [{matchLabels: {team: a}, matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [sample]}]}]",
        );
        assert_eq!(discovery_labels(&with(never)), None);
    }

    #[test]
    fn the_rendered_namespace_carries_the_discovery_labels() {
        let mut mesh = Mesh::for_kind(1, "mesh1").unwrap();
        mesh.mesh_config = options("discoverySelectors: [{matchLabels: {istio-discovery: enabled}}]");
        let ns = artifacts(&mesh)
            .unwrap()
            .into_iter()
            .find(|a| a.path.ends_with("verify/namespace.yaml"))
            .unwrap();
        let doc = render::parse_documents(&ns.content).unwrap().remove(0);
        assert_eq!(doc["metadata"]["labels"]["istio-discovery"], "enabled");
        assert_eq!(doc["metadata"]["labels"]["istio-injection"], "enabled");
    }

    /// An ambient mesh's workloads join by the namespace label ztunnel acts on, and helloworld is
    /// a global service (without it the other clusters' istiods drop it:
    /// pilot/pkg/serviceregistry/ambient/services.go, `matchServiceScope`); no traffic rules.
    #[test]
    fn an_ambient_mesh_enrolls_the_namespace_and_makes_helloworld_global() {
        let mesh = Mesh::for_kind(2, "mesh1")
            .unwrap()
            .with_dataplane(Dataplane::Ambient)
            .unwrap();
        let all = artifacts(&mesh).unwrap();
        let doc = |suffix: &str| {
            let a = all.iter().find(|a| a.path.ends_with(suffix)).unwrap();
            render::parse_documents(&a.content).unwrap().remove(0)
        };
        let ns = doc("cluster1/verify/namespace.yaml");
        assert_eq!(ns["metadata"]["labels"]["istio.io/dataplane-mode"], "ambient");
        assert!(ns["metadata"]["labels"].get("istio-injection").is_none(), "{ns}");
        let service = doc("cluster2/verify/helloworld.yaml");
        assert_eq!(service["kind"], "Service");
        assert_eq!(service["metadata"]["labels"]["istio.io/global"], "true");
        assert!(
            !all.iter()
                .any(|a| a.path.ends_with(FAILOVER_FILE) || a.path.ends_with(SUBSETS_FILE))
        );
    }

    #[test]
    fn an_export_default_that_hides_what_the_run_uses_from_its_own_namespace_is_named() {
        let all = RulesUsed {
            virtual_service: true,
            destination_rule: true,
        };
        let none = RulesUsed::default();
        assert!(export_problem(&MeshOptions::default(), all).is_none());
        assert!(export_problem(&options("defaultServiceExportTo: ['.']"), none).is_none());
        assert!(export_problem(&options("defaultServiceExportTo: [sample, other]"), none).is_none());
        let hidden = export_problem(&options("defaultServiceExportTo: ['~']"), none).unwrap();
        assert!(
            hidden.contains("defaultServiceExportTo") && hidden.contains("sample"),
            "{hidden}"
        );
        assert!(export_problem(&options("defaultServiceExportTo: [other]"), none).is_some());
        // Rules count only when the run applies them.
        let rules = options("defaultDestinationRuleExportTo: ['~']\ndefaultVirtualServiceExportTo: [other]");
        assert!(export_problem(&rules, none).is_none());
        let dr = export_problem(
            &rules,
            RulesUsed {
                destination_rule: true,
                ..none
            },
        )
        .unwrap();
        assert!(dr.contains("defaultDestinationRuleExportTo"), "{dr}");
        let vs = export_problem(
            &rules,
            RulesUsed {
                virtual_service: true,
                ..none
            },
        )
        .unwrap();
        assert!(vs.contains("defaultVirtualServiceExportTo"), "{vs}");
    }
}
