//! The `meshConfig` options of `meshctl.yaml`: which namespaces istiod watches, the default
//! visibility of services and routing rules, and hosts kept cluster-local. Rendered as they are
//! into every cluster's IstioOperator (`spec.meshConfig`, Istio's `MeshConfig` fields of the same
//! names), after checks that catch what would otherwise break the mesh silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Mesh, Problem, dns1123_label_problem, label_value_problem};

/// `meshConfig` of the topology file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshOptions {
    /// Namespaces istiod watches (ORed label selectors); empty: every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovery_selectors: Vec<LabelSelector>,
    /// Where services are visible by default (`.`, `*`, `~` or namespace names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_service_export_to: Vec<String>,
    /// Where VirtualServices apply by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_virtual_service_export_to: Vec<String>,
    /// Where DestinationRules apply by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_destination_rule_export_to: Vec<String>,
    /// Per-host settings, e.g. hosts answered only inside the caller's cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_settings: Vec<ServiceSetting>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One set-based requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In`/`NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `serviceSettings` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSetting {
    pub settings: ServiceSettingFlags,
    /// Hosts they apply to (`name.namespace.svc.cluster.local`, wildcards allowed).
    pub hosts: Vec<String>,
}

/// The settings of a `serviceSettings` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSettingFlags {
    /// Calls to these hosts stay in the caller's cluster.
    #[serde(default)]
    pub cluster_local: bool,
}

impl MeshOptions {
    /// Whether anything is set (nothing is rendered otherwise).
    pub fn is_empty(&self) -> bool {
        *self == MeshOptions::default()
    }

    /// [`MeshOptions::is_cluster_local_beside`] for the unrevisioned istiod (`istiod`).
    pub fn is_cluster_local(&self, host: &str) -> bool {
        self.is_cluster_local_beside(host, "istiod")
    }

    /// Whether calls to `host` stay in the caller's cluster, as istiod decides it (Istio
    /// `pilot/pkg/model/cluster_local.go`, `onMeshUpdated` and `IsClusterLocal`): every
    /// `serviceSettings` host is recorded with its `clusterLocal` value (a later entry for the same
    /// host wins); Istio's own cluster-local hosts (`*.kube-system.svc.cluster.local`,
    /// `kubernetes.default.svc.cluster.local`, and istiod's discovery host, the `istiod` Service
    /// named `istiod_service` of its revision in istio-system) are added unless an entry with
    /// `clusterLocal: false` names or narrows them; then the exact host decides, else the most
    /// specific wildcard that covers it (`pkg/config/host`, `MostSpecificHostMatch`), else it is
    /// not cluster-local.
    pub fn is_cluster_local_beside(&self, host: &str, istiod_service: &str) -> bool {
        let discovery = format!("{istiod_service}.istio-system.svc.cluster.local");
        let mut defaults: Vec<&str> = vec![
            "*.kube-system.svc.cluster.local",
            "kubernetes.default.svc.cluster.local",
            &discovery,
        ];
        let mut hosts: BTreeMap<&str, bool> = BTreeMap::new();
        for entry in &self.service_settings {
            let local = entry.settings.cluster_local;
            for h in &entry.hosts {
                if !local {
                    defaults.retain(|d| {
                        !(h == d || d.strip_prefix('*').is_some_and(|suffix| h.ends_with(suffix)))
                    });
                }
                hosts.insert(h, local);
            }
        }
        for d in defaults {
            hosts.insert(d, true);
        }
        if let Some(local) = hosts.get(host) {
            return *local;
        }
        hosts
            .iter()
            .filter_map(|(pattern, local)| Some((pattern.strip_prefix('*')?, *local)))
            .filter(|(suffix, _)| host.ends_with(suffix))
            .max_by_key(|(suffix, _)| suffix.len())
            .is_some_and(|(_, local)| local)
    }

    pub fn cluster_local_hosts(&self) -> Vec<&str> {
        self.service_settings
            .iter()
            .filter(|s| s.settings.cluster_local)
            .flat_map(|s| s.hosts.iter().map(String::as_str))
            .collect()
    }
}

impl LabelSelector {
    /// Whether a namespace with `labels` is selected (Kubernetes' selector semantics).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => have.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => have.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    _ => false,
                }
            })
    }
}

/// `prefix/name` or `name`, as Kubernetes label keys are.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || p.split('.').any(|part| dns1123_label_problem(part).is_some()))
    {
        return Some("has a prefix that is not a DNS subdomain".into());
    }
    label_value_problem(name)
        .map(|_| "is not a label key ([prefix/]name, name 1-63 of [A-Za-z0-9-_.])".into())
}

fn export_to_problem(value: &str) -> Option<String> {
    match value {
        "." | "*" | "~" => None,
        ns => dns1123_label_problem(ns)
            .map(|_| "is not `.` (this namespace), `*` (all), `~` (none) or a namespace name".into()),
    }
}

/// Every problem with `options` for `mesh`.
pub fn problems(options: &MeshOptions, mesh: &Mesh) -> Vec<Problem> {
    let mut out = Vec::new();
    selector_problems(options, &mut out);
    discovery_problems(options, mesh, &mut out);
    export_to_problems(options, mesh, &mut out);
    service_settings_problems(options, &mut out);
    out
}

fn push(out: &mut Vec<Problem>, field: String, value: &str, reason: String) {
    out.push(Problem {
        field,
        value: value.to_string(),
        reason,
    })
}

/// Label selectors as the API server validates them.
fn selector_problems(options: &MeshOptions, out: &mut Vec<Problem>) {
    for (i, s) in options.discovery_selectors.iter().enumerate() {
        let at = format!("meshConfig.discoverySelectors[{i}]");
        for (k, v) in &s.match_labels {
            if let Some(r) = label_key_problem(k) {
                push(out, format!("{at}.matchLabels"), k, r);
            }
            if let Some(r) = label_value_problem(v) {
                push(out, format!("{at}.matchLabels.{k}"), v, r);
            }
        }
        for (j, r) in s.match_expressions.iter().enumerate() {
            let here = format!("{at}.matchExpressions[{j}]");
            if let Some(p) = label_key_problem(&r.key) {
                push(out, format!("{here}.key"), &r.key, p);
            }
            match (r.operator.as_str(), r.values.is_empty()) {
                ("In" | "NotIn", true) => push(
                    out,
                    format!("{here}.values"),
                    &r.operator,
                    "must list at least one value for In and NotIn".into(),
                ),
                ("Exists" | "DoesNotExist", false) => push(
                    out,
                    format!("{here}.values"),
                    &r.values.join(","),
                    "must be empty for Exists and DoesNotExist".into(),
                ),
                ("In" | "NotIn" | "Exists" | "DoesNotExist", _) => {}
                (other, _) => push(
                    out,
                    format!("{here}.operator"),
                    other,
                    "is not In, NotIn, Exists or DoesNotExist".into(),
                ),
            }
            for v in &r.values {
                if let Some(p) = label_value_problem(v) {
                    push(out, format!("{here}.values"), v, p);
                }
            }
        }
    }
}

/// The selectors must keep what istiod itself needs in every cluster.
fn discovery_problems(options: &MeshOptions, mesh: &Mesh, out: &mut Vec<Problem>) {
    // istiod drops every namespaced object outside the selected namespaces (Istio
    // `pkg/kube/namespace/filter.go`, discoveryNamespacesFilter.Filter): without istio-system it
    // ignores its own east-west gateway, and cross-network traffic has nowhere to go.
    if !options.discovery_selectors.is_empty() {
        for c in &mesh.clusters {
            let labels = BTreeMap::from([
                (
                    "kubernetes.io/metadata.name".to_string(),
                    super::ISTIO_NAMESPACE.to_string(),
                ),
                ("topology.istio.io/network".to_string(), c.network.clone()),
            ]);
            if !options.discovery_selectors.iter().any(|s| s.matches(&labels)) {
                push(
 out,
                    "meshConfig.discoverySelectors".into(),
                    &c.name,
                    "select no namespace `istio-system` in this cluster: istiod would ignore its own east-west gateway; add a selector such as {matchLabels: {kubernetes.io/metadata.name: istio-system}}".into(),
                );
            }
        }
    }
}

/// The three `default*ExportTo` lists, one by one and against the mesh's networks.
fn export_to_problems(options: &MeshOptions, mesh: &Mesh, out: &mut Vec<Problem>) {
    for (field, values) in [
        ("defaultServiceExportTo", &options.default_service_export_to),
        (
            "defaultVirtualServiceExportTo",
            &options.default_virtual_service_export_to,
        ),
        (
            "defaultDestinationRuleExportTo",
            &options.default_destination_rule_export_to,
        ),
    ] {
        for v in values {
            if let Some(r) = export_to_problem(v) {
                push(out, format!("meshConfig.{field}"), v, r);
            }
        }
        // As Istio validates an exportTo list (`pkg/config/validation`, `validateExportTo`): no
        // entry twice, and `*` (everyone) or `~` (no one) only alone.
        let mut seen = std::collections::BTreeSet::new();
        for v in values {
            if !seen.insert(v.as_str()) {
                push(out, format!("meshConfig.{field}"), v, "is listed twice".into());
            }
        }
        for alone in ["*", "~"] {
            if values.len() > 1 && values.iter().any(|v| v == alone) {
                push(
                    out,
                    format!("meshConfig.{field}"),
                    &values.join(","),
                    format!(
                        "lists `{alone}` with other entries: `*` (every namespace) and `~` (none) each stand alone"
                    ),
                );
            }
        }
    }
    // Across networks a call enters the target network through its east-west gateway, which runs
    // in istio-system (`external-istiod` beside an external control plane's remotes) and routes
    // (SNI-DNAT clusters) only to services exported to its namespace:
    // a gateway's sidecar scope holds the services exported to its own namespace (Istio
    // `pilot/pkg/model/sidecar.go`, `DefaultSidecarScopeForGateway` →
    // `servicesExportedToNamespace`). A default that leaves istio-system out breaks every
    // cross-network call of every service that does not override it.
    let networks: std::collections::BTreeSet<&str> =
        mesh.clusters.iter().map(|c| c.network.as_str()).collect();
    let export = &options.default_service_export_to;
    // The namespaces the gateways run in: istio-system, and `external-istiod` for the remotes of
    // an external control plane (their gateways sit beside their Istio).
    let gateway_namespaces: std::collections::BTreeSet<&str> = mesh
        .clusters
        .iter()
        .filter(|c| mesh.needs_eastwest(c))
        .map(|c| mesh.gateway_namespace(c))
        .collect();
    let left_out: Vec<&str> = gateway_namespaces
        .iter()
        .copied()
        .filter(|ns| !export.iter().any(|v| v == "*" || v == ns))
        .collect();
    if networks.len() > 1 && !export.is_empty() && !left_out.is_empty() {
        push(
            out,
            "meshConfig.defaultServiceExportTo".into(),
            &export.join(","),
            format!(
                "leaves out {}, where the east-west gateways run: on this multi-network mesh the gateways would not route to any service that keeps the default, and no call could cross networks; add {} to the list (or use `*`)",
                left_out.join(", "),
                left_out
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        );
    }
}

fn service_settings_problems(options: &MeshOptions, out: &mut Vec<Problem>) {
    for (i, s) in options.service_settings.iter().enumerate() {
        if s.hosts.is_empty() {
            push(
                out,
                format!("meshConfig.serviceSettings[{i}].hosts"),
                "",
                "must list at least one host".into(),
            );
        }
        for h in &s.hosts {
            let name = h.strip_prefix("*.").unwrap_or(h);
            if name.is_empty() || name.split('.').any(|part| dns1123_label_problem(part).is_some()) {
                push(
                    out,
                    format!("meshConfig.serviceSettings[{i}].hosts"),
                    h,
                    "is not a host name (`name.namespace.svc.cluster.local`, or `*.` and a domain)".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Mesh, super::super::TopologyError> {
        Mesh::from_yaml(yaml, None)
    }

    fn fields(yaml: &str) -> Vec<String> {
        match parse(yaml) {
            Err(super::super::TopologyError::Invalid(p)) => p.into_iter().map(|p| p.field).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let req = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: vec![Requirement {
                key: "env".into(),
                operator: op.into(),
                values: values.iter().map(|s| s.to_string()).collect(),
            }],
            ..Default::default()
        };
        assert!(req("In", &["prod", "dev"]).matches(&labels));
        assert!(!req("NotIn", &["prod"]).matches(&labels));
        assert!(req("NotIn", &["prod"]).matches(&BTreeMap::new()));
        assert!(req("Exists", &[]).matches(&labels));
        assert!(req("DoesNotExist", &[]).matches(&BTreeMap::new()));
        assert!(
            LabelSelector::default().matches(&labels),
            "an empty selector selects everything"
        );
    }

    #[test]
    fn a_bad_selector_or_value_is_named_by_its_field() {
        let bad = fields(
            "clusters: [{}]\nmeshConfig:\n  discoverySelectors:\n    - matchExpressions:\n        - {key: env, operator: Includes, values: [a]}\n        - {key: env, operator: In}\n        - {key: 'bad key!', operator: Exists, values: [x]}\n    - matchLabels: {kubernetes.io/metadata.name: istio-system}\n  defaultServiceExportTo: ['.', 'Not A Namespace']\n  serviceSettings:\n    - settings: {clusterLocal: true}\n      hosts: []\n",
        );
        for field in [
            "meshConfig.discoverySelectors[0].matchExpressions[0].operator",
            "meshConfig.discoverySelectors[0].matchExpressions[1].values",
            "meshConfig.discoverySelectors[0].matchExpressions[2].key",
            "meshConfig.discoverySelectors[0].matchExpressions[2].values",
            "meshConfig.defaultServiceExportTo",
            "meshConfig.serviceSettings[0].hosts",
        ] {
            assert!(bad.iter().any(|f| f == field), "{field} in {bad:?}");
        }
    }

    #[test]
    fn selectors_that_leave_out_istio_system_are_refused() {
        let bad = fields(
            "clusters: [{}, {}]\nmeshConfig:\n  discoverySelectors:\n    - matchLabels: {istio-discovery: enabled}\n",
        );
        assert_eq!(
            bad,
            ["meshConfig.discoverySelectors", "meshConfig.discoverySelectors"]
        );
        let ok = parse(
            "clusters: [{}, {}]\nmeshConfig:\n  discoverySelectors:\n    - matchLabels: {istio-discovery: enabled}\n    - matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [istio-system, sample]}]\n  serviceSettings:\n    - settings: {clusterLocal: true}\n      hosts: ['*.kube-system.svc.cluster.local', 'helloworld.sample.svc.cluster.local']\n",
        )
        .unwrap();
        assert_eq!(ok.mesh_config.cluster_local_hosts().len(), 2);
        assert!(
            ok.mesh_config
                .is_cluster_local("helloworld.sample.svc.cluster.local")
        );
        assert!(
            ok.mesh_config
                .is_cluster_local("kube-dns.kube-system.svc.cluster.local")
        );
        assert!(!ok.mesh_config.is_cluster_local("curl.sample.svc.cluster.local"));
    }

    #[test]
    fn a_service_export_default_without_istio_system_is_refused_across_networks_only() {
        // Two clusters on two networks (the default): the gateways in istio-system must see them.
        for refused in ["['.']", "['sample', '.']", "['~']"] {
            let yaml = format!("clusters: [{{}}, {{}}]\nmeshConfig:\n  defaultServiceExportTo: {refused}\n");
            assert_eq!(fields(&yaml), ["meshConfig.defaultServiceExportTo"], "{refused}");
        }
        for accepted in ["['.', 'istio-system']", "['*']"] {
            let yaml = format!("clusters: [{{}}, {{}}]\nmeshConfig:\n  defaultServiceExportTo: {accepted}\n");
            assert!(parse(&yaml).is_ok(), "{accepted}");
        }
        // One network: calls go pod to pod, no gateway in between.
        let one_network =
            "clusters: [{network: n1}, {network: n1}]\nmeshConfig:\n  defaultServiceExportTo: ['.']\n";
        assert!(parse(one_network).is_ok());
        let err = parse("clusters: [{}, {}]\nmeshConfig:\n  defaultServiceExportTo: ['.']\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("add `istio-system`"), "{err}");
        // An external control plane's remotes on networks of their own: their gateways run in
        // `external-istiod` (the external cluster's in istio-system), so both must be listed.
        let external = |export: &str| {
            format!(
                "clusters:\n  - {{role: external}}\n  - {{role: remote, network: n2}}\n  - {{role: remote, network: n3}}\nmeshConfig:\n  defaultServiceExportTo: {export}\n"
            )
        };
        let err = parse(&external("['.', 'istio-system']")).unwrap_err().to_string();
        assert!(err.contains("leaves out external-istiod"), "{err}");
        assert!(parse(&external("['.', 'istio-system', 'external-istiod']")).is_ok());
    }

    /// istiod makes its own discovery host cluster-local: after an upgrade to a revision that is
    /// `istiod-<revision>`'s, not the unrevisioned `istiod`'s.
    #[test]
    fn istiods_own_host_is_cluster_local_by_its_revision() {
        let none = MeshOptions::default();
        let revisioned = "istiod-1-31-1.istio-system.svc.cluster.local";
        assert!(none.is_cluster_local_beside(revisioned, "istiod-1-31-1"));
        assert!(!none.is_cluster_local_beside("istiod.istio-system.svc.cluster.local", "istiod-1-31-1"));
        assert!(!none.is_cluster_local(revisioned));
    }

    #[test]
    fn cluster_local_follows_istiods_most_specific_match_and_its_defaults() {
        let settings = |yaml: &str| -> MeshOptions { serde_saphyr::from_str(yaml).unwrap() };
        let hello = "helloworld.sample.svc.cluster.local";
        // Istio's own cluster-local hosts, with nothing set.
        let none = MeshOptions::default();
        assert!(none.is_cluster_local("kube-dns.kube-system.svc.cluster.local"));
        assert!(none.is_cluster_local("kubernetes.default.svc.cluster.local"));
        assert!(!none.is_cluster_local(hello));
        // A namespace made cluster-local, one service of it taken out again: the exact host wins.
        let except = settings(
            "serviceSettings:\n  - {settings: {clusterLocal: true}, hosts: ['*.sample.svc.cluster.local']}\n  - {settings: {clusterLocal: false}, hosts: ['helloworld.sample.svc.cluster.local']}\n",
        );
        assert!(!except.is_cluster_local(hello));
        assert!(except.is_cluster_local("curl.sample.svc.cluster.local"));
        // The more specific wildcard wins over the broader one, whatever their order.
        let narrower = settings(
            "serviceSettings:\n  - {settings: {clusterLocal: false}, hosts: ['*.sample.svc.cluster.local']}\n  - {settings: {clusterLocal: true}, hosts: ['*.svc.cluster.local']}\n",
        );
        assert!(!narrower.is_cluster_local(hello));
        assert!(narrower.is_cluster_local("web.other.svc.cluster.local"));
        // A default taken back: kube-system is global again.
        let global = settings(
            "serviceSettings:\n  - {settings: {clusterLocal: false}, hosts: ['*.kube-system.svc.cluster.local']}\n",
        );
        assert!(!global.is_cluster_local("kube-dns.kube-system.svc.cluster.local"));
        // For the same host, the later entry wins.
        let twice = settings(
            "serviceSettings:\n  - {settings: {clusterLocal: true}, hosts: ['helloworld.sample.svc.cluster.local']}\n  - {settings: {clusterLocal: false}, hosts: ['helloworld.sample.svc.cluster.local']}\n",
        );
        assert!(!twice.is_cluster_local(hello));
    }
}
