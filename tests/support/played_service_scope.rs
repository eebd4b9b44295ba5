//! istiod's service scope in an ambient mesh, as a pure function over a Service, its namespace and
//! the mesh config (istio/istio at release-1.31, `pilot/pkg/serviceregistry/ambient/services.go`):
//!
//! - `matchServiceScope`: each `serviceScopeConfigs` entry in order; a missing or empty selector
//!   selects everything; an entry whose namespace and service selectors both match and whose
//!   scope is `GLOBAL` makes the service global; a service whose namespace is not known is
//!   skipped by that entry; nothing matched: local.
//! - `serviceServiceBuilder`: a service of a remote cluster that is not global is dropped (the
//!   other clusters do not see it); the local cluster's is kept either way.
//!
//! The mesh config is the ambient profile's unless the test gives its own: its one entry selects
//! services labelled `istio.io/global=true` (`manifests/helm-profiles/ambient.yaml`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The ambient profile's `meshConfig.serviceScopeConfigs`.
pub fn ambient_profile_scopes() -> Value {
    json!([{"servicesSelector": {"matchExpressions": [{"key": "istio.io/global", "operator": "In", "values": ["true"]}]},
            "scope": "GLOBAL"}])
}

/// Whether a Kubernetes label selector selects `labels` (an object of strings); a missing or
/// empty one selects everything (`matchServiceScope` turns Nothing into Everything).
fn selects(selector: &Value, labels: &Value) -> bool {
    let labels: BTreeMap<String, String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    super::envtest::data_plane::selects(selector, &labels)
}

/// `matchServiceScope`: whether `service` (in `namespace`, `None` when istiod does not know it) is
/// global under `scopes`.
pub fn is_global(scopes: &Value, namespace: Option<&Value>, service: &Value) -> bool {
    scopes.as_array().into_iter().flatten().any(|config| {
        let Some(namespace) = namespace else {
            return false;
        };
        selects(&config["namespaceSelector"], &namespace["metadata"]["labels"])
            && selects(&config["servicesSelector"], &service["metadata"]["labels"])
            && config["scope"] == "GLOBAL"
    })
}

/// `serviceServiceBuilder`: whether another cluster's istiod keeps `service` of a remote cluster.
pub fn seen_from_another_cluster(scopes: &Value, namespace: Option<&Value>, service: &Value) -> bool {
    is_global(scopes, namespace, service)
}
