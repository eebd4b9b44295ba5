//! How istiod combines the DestinationRules of one host into the one its proxies get, as Istio
//! 1.31 does it: `pilot/pkg/model/push_context.go`, `setDestinationRules`, takes the rules sorted
//! by creation time, then name (`sortConfigByCreationTime`); `destination_rule.go`,
//! `mergeDestinationRule`, merges each rule without a workload selector into the first one of the
//! host: subsets the first lacks are appended; its `trafficPolicy` and `exportTo` stay, and a later
//! rule's are taken only where the first has none. So the oldest rule decides the load balancing.

use serde_json::Value;

/// The rule istiod uses for `host`, merged from `rules` (DestinationRule objects as the API server
/// returns them); `None` when no rule names the host.
pub fn merged(rules: &[Value], host: &str) -> Option<Value> {
    let mut of_host: Vec<&Value> = rules
        .iter()
        .filter(|r| r["spec"]["host"] == host && r["spec"]["workloadSelector"].is_null())
        .collect();
    of_host.sort_by_key(|r| {
        (
            r["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            r["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        )
    });
    let (first, later) = of_host.split_first()?;
    let mut merged = (*first).clone();
    for rule in later {
        let have: Vec<Value> = merged["spec"]["subsets"].as_array().cloned().unwrap_or_default();
        let mut subsets = have.clone();
        for subset in rule["spec"]["subsets"].as_array().into_iter().flatten() {
            if !have.iter().any(|s| s["name"] == subset["name"]) {
                subsets.push(subset.clone());
            }
        }
        if !subsets.is_empty() {
            merged["spec"]["subsets"] = Value::Array(subsets);
        }
        for key in ["trafficPolicy", "exportTo"] {
            if merged["spec"][key].is_null() && !rule["spec"][key].is_null() {
                merged["spec"][key] = rule["spec"][key].clone();
            }
        }
    }
    Some(merged)
}
