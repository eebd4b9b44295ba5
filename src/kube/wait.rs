//! Waiting for conditions, driven by watches (never fixed sleeps), each bounded by a timeout whose
//! error says what was last seen. kube adds no timeout of its own, so every wait here has one.
//!
//! One vocabulary, as kube-runtime's `await_condition` takes any condition: a [`Condition`] is a
//! value (which objects, when they are ready, how a not-ready set reads, what it waits for) built
//! by a constructor below, and [`until`] is the one loop that waits for any of them. Discovery
//! ([`discovery_serves`]) is the one wait without a watch.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, watcher::Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// A wait that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The condition did not arrive in time.
    #[error("{what}: not ready after {}s (last seen: {last_seen})", after.as_secs())]
    Timeout {
        what: String,
        after: Duration,
        /// The last state observed.
        last_seen: String,
    },
    /// The watch ended or the object cannot satisfy the condition.
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String },
}

/// The watched objects, by name.
pub type Objects<K> = BTreeMap<String, K>;

type SetTest<K> = Box<dyn Fn(&Objects<K>) -> bool + Send + Sync>;
type SetWords<K> = Box<dyn Fn(&Objects<K>) -> String + Send + Sync>;

/// Which objects a condition watches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Select {
    /// The one object of this name.
    Named(String),
    /// Every object with these labels (`""`: every object).
    Labelled(String),
}

/// What a wait waits for: which objects, the predicate over them, how a set that is not ready yet
/// reads (the timeout error carries the last one), and what it waits for, in words.
pub struct Condition<K> {
    what: String,
    select: Select,
    ready: SetTest<K>,
    describe: SetWords<K>,
}

impl<K: 'static> Condition<K> {
    /// The object `name` exists and `ready` holds for it.
    pub fn object(
        name: &str,
        what: impl Into<String>,
        ready: impl Fn(&K) -> bool + Send + Sync + 'static,
        describe: impl Fn(&K) -> String + Send + Sync + 'static,
    ) -> Condition<K> {
        Condition::named(
            name,
            what.into(),
            move |found| found.is_some_and(&ready),
            move |found| {
                found
                    .map(&describe)
                    .unwrap_or_else(|| "nothing yet: the object does not exist".into())
            },
        )
    }

    /// The object `name` exists, in any state.
    pub fn exists(name: &str, what: impl Into<String>) -> Condition<K> {
        Condition::object(name, what, |_| true, |_| String::new())
    }

    /// The object `name` no longer exists (finalizers done, e.g. a namespace emptied by the
    /// namespace controller); `describe` says what it still looks like.
    pub fn absent(
        name: &str,
        what: impl Into<String>,
        describe: impl Fn(&K) -> String + Send + Sync + 'static,
    ) -> Condition<K> {
        Condition::named(
            name,
            what.into(),
            |found| found.is_none(),
            move |found| found.map(&describe).unwrap_or_default(),
        )
    }

    /// A condition on the one object named `name`, judged on it (or on its absence).
    fn named(
        name: &str,
        what: String,
        ready: impl Fn(Option<&K>) -> bool + Send + Sync + 'static,
        describe: impl Fn(Option<&K>) -> String + Send + Sync + 'static,
    ) -> Condition<K> {
        let (key, shown) = (name.to_string(), name.to_string());
        Condition {
            what,
            select: Select::Named(name.to_string()),
            ready: Box::new(move |set| ready(set.get(&key))),
            describe: Box::new(move |set| describe(set.get(&shown))),
        }
    }

    /// `ready` holds for the set of objects labelled `selector` (`""`: every object of the kind).
    pub fn labelled(
        selector: &str,
        what: impl Into<String>,
        ready: impl Fn(&Objects<K>) -> bool + Send + Sync + 'static,
        describe: impl Fn(&Objects<K>) -> String + Send + Sync + 'static,
    ) -> Condition<K> {
        Condition {
            what: what.into(),
            select: Select::Labelled(selector.to_string()),
            ready: Box::new(ready),
            describe: Box::new(describe),
        }
    }

    /// The same condition, said in other words (a planned wait says it as the plan does).
    pub fn described_as(mut self, what: impl Into<String>) -> Condition<K> {
        self.what = what.into();
        self
    }

    /// What it waits for, in words.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Whether it holds for these objects (each under its name), as the wait would judge them.
    pub fn holds_for(&self, objects: Objects<K>) -> bool {
        (self.ready)(&objects)
    }

    fn watch_config(&self) -> watcher::Config {
        match &self.select {
            Select::Named(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
            Select::Labelled(selector) => watcher::Config::default().labels(selector),
        }
    }
}

/// Waits until `condition` holds, or `timeout` passes; returns the objects it held for (the
/// named object, or the labelled set; none for [`Condition::absent`]). The error of a timeout
/// carries the description of the last set seen, or the watch error.
pub async fn until<K>(
    api: &Api<K>,
    condition: Condition<K>,
    timeout: Duration,
) -> Result<Objects<K>, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut stream = watcher(api.clone(), condition.watch_config())
        .default_backoff()
        .boxed();
    let mut seen: Objects<K> = BTreeMap::new();
    let mut last_seen = (condition.describe)(&seen);
    // The set is judged only once a (re-)list is complete: in the middle of one it is partial, and
    // a predicate such as "absent" would hold on the empty set right after `Init`.
    let mut listing = false;
    let outcome = tokio::time::timeout(timeout, async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Apply(o) | Event::InitApply(o)) => {
                    seen.insert(o.meta().name.clone().unwrap_or_default(), o);
                }
                Ok(Event::Delete(o)) => {
                    seen.remove(&o.meta().name.clone().unwrap_or_default());
                }
                Ok(Event::Init) => {
                    listing = true;
                    seen.clear();
                }
                Ok(Event::InitDone) => listing = false,
                Err(e) => {
                    last_seen = format!("watch error: {e}");
                    continue;
                }
            }
            if listing {
                continue;
            }
            if (condition.ready)(&seen) {
                return Some(seen.clone());
            }
            last_seen = (condition.describe)(&seen);
        }
        None
    })
    .await;
    match outcome {
        Ok(Some(set)) => Ok(set),
        Ok(None) => Err(WaitError::Failed {
            what: condition.what,
            reason: "the watch ended".into(),
        }),
        Err(_) => Err(WaitError::Timeout {
            what: condition.what,
            after: timeout,
            last_seen,
        }),
    }
}

/// Waits until `condition` holds and returns its object: the named one, or the first of a
/// labelled set.
pub async fn until_object<K>(api: &Api<K>, condition: Condition<K>, timeout: Duration) -> Result<K, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let named = match &condition.select {
        Select::Named(name) => Some(name.clone()),
        Select::Labelled(_) => None,
    };
    let what = condition.what.clone();
    let mut set = until(api, condition, timeout).await?;
    match named {
        Some(name) => set.remove(&name),
        None => set.into_values().next(),
    }
    .ok_or(WaitError::Failed {
        what,
        reason: "it held with no object to return".into(),
    })
}

fn condition_true<'a>(conditions: impl IntoIterator<Item = (&'a str, &'a str)>, wanted: &str) -> bool {
    conditions.into_iter().any(|(t, s)| t == wanted && s == "True")
}

/// Whether a Deployment reports the Available condition.
pub fn deployment_available(d: &Deployment) -> bool {
    let conditions = d.status.as_ref().and_then(|s| s.conditions.as_ref());
    condition_true(
        conditions
            .into_iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str())),
        "Available",
    )
}

/// Whether a Deployment finished rolling out its current template, as `kubectl rollout status`
/// decides it: the controller saw the latest generation, every replica is updated, no old replica
/// is left, and the updated ones are available.
pub fn deployment_rolled_out(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    d.metadata.generation.unwrap_or(0) <= s.observed_generation.unwrap_or(0)
        && s.updated_replicas.unwrap_or(0) >= want
        && s.replicas.unwrap_or(0) <= s.updated_replicas.unwrap_or(0)
        && s.available_replicas.unwrap_or(0) >= s.updated_replicas.unwrap_or(0)
}

fn replica_counts(d: &Deployment) -> String {
    let s = d.status.clone().unwrap_or_default();
    format!(
        "{} updated, {} available of {}",
        s.updated_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
        s.replicas.unwrap_or(0)
    )
}

/// Deployment `namespace/name` reports Available.
pub fn available(namespace: &str, name: &str) -> Condition<Deployment> {
    Condition::object(
        name,
        format!("deployment {namespace}/{name} Available"),
        deployment_available,
        replica_counts,
    )
}

/// Deployment `namespace/name` rolled out its current template (after a restart, for example).
pub fn rolled_out(namespace: &str, name: &str) -> Condition<Deployment> {
    Condition::object(
        name,
        format!("deployment {namespace}/{name} rolled out"),
        deployment_rolled_out,
        replica_counts,
    )
}

/// Whether a DaemonSet has rolled out its current template to every node it schedules to, as
/// `kubectl rollout status` judges one: the controller has seen this generation, every scheduled pod
/// is of the current template and every one is available. Counts alone would pass a DaemonSet whose
/// spec just changed (an upgrade of ztunnel, say) while its old pods are still the ready ones.
/// Unlike kubectl, no node at all is not done: a node agent that runs nowhere serves nothing.
pub fn daemonset_ready(d: &DaemonSet) -> bool {
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    d.metadata.generation.unwrap_or(0) <= s.observed_generation.unwrap_or(0)
        && s.desired_number_scheduled > 0
        && s.updated_number_scheduled.unwrap_or(0) >= s.desired_number_scheduled
        && s.number_available.unwrap_or(0) >= s.desired_number_scheduled
}

/// Where a DaemonSet's rollout stands, in the terms [`daemonset_ready`] judges it by.
pub fn daemonset_counts(d: &DaemonSet) -> String {
    let s = d.status.clone().unwrap_or_default();
    let seen = d.metadata.generation.unwrap_or(0) <= s.observed_generation.unwrap_or(0);
    let unseen = if seen {
        ""
    } else {
        " (spec change not yet seen by the controller)"
    };
    format!(
        "{} updated, {} available of {}{unseen}",
        s.updated_number_scheduled.unwrap_or(0),
        s.number_available.unwrap_or(0),
        s.desired_number_scheduled,
    )
}

/// DaemonSet `namespace/name` has a ready pod on every node it schedules to.
pub fn on_every_node(namespace: &str, name: &str) -> Condition<DaemonSet> {
    Condition::object(
        name,
        format!("daemonset {namespace}/{name} ready on every node"),
        daemonset_ready,
        daemonset_counts,
    )
}

fn crd_conditions(c: &CustomResourceDefinition) -> Vec<(String, String)> {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|x| (x.type_, x.status))
        .collect()
}

/// CRD `name` reports Established.
pub fn established(name: &str) -> Condition<CustomResourceDefinition> {
    Condition::object(
        name,
        format!("CRD {name} Established"),
        |c| {
            condition_true(
                crd_conditions(c).iter().map(|(t, s)| (t.as_str(), s.as_str())),
                "Established",
            )
        },
        |c| {
            let seen: Vec<String> = crd_conditions(c)
                .iter()
                .map(|(t, s)| format!("{t}={s}"))
                .collect();
            format!("conditions {seen:?}")
        },
    )
}

/// Asks discovery for `gvk` until it is served, with growing pauses up to `timeout`. Discovery has
/// no watch, so this is the one wait here that polls, as controller-runtime's envtest does for the
/// same reason (`pkg/envtest/crd.go`, `WaitForCRDs`). A 404 (the group version is not served yet)
/// or a list without the kind means "not yet"; any other refusal ends the wait at once.
pub async fn discovery_serves(
    client: &Client,
    gvk: &kube::api::GroupVersionKind,
    timeout: Duration,
) -> Result<(kube::discovery::ApiResource, kube::discovery::ApiCapabilities), WaitError> {
    let what = format!("discovery of {} {}", gvk.api_version(), gvk.kind);
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let last_seen = match kube::discovery::pinned_kind(client, gvk).await {
            Ok(found) => return Ok(found),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                format!("{} is not served yet (404)", gvk.api_version())
            }
            Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingKind(_))) => {
                format!("{} is served without {}", gvk.api_version(), gvk.kind)
            }
            Err(e) if super::retry::is_transient(&e) => super::retry::describe(&e),
            Err(e) => {
                return Err(WaitError::Failed {
                    what,
                    reason: super::retry::describe(&e),
                });
            }
        };
        if started.elapsed() + pause > timeout {
            return Err(WaitError::Timeout {
                what,
                after: timeout,
                last_seen,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The address a LoadBalancer Service is reached at: the first `status.loadBalancer.ingress`
/// entry's IP, or its hostname when it has none (cloud load balancers such as AWS ELB/NLB publish
/// only a hostname). Istio takes a network gateway's address the same way (`pilot/pkg/
/// serviceregistry/kube/conversion.go`, `ConvertService`: the IP, else the hostname, unresolved).
pub fn ingress_address(svc: &Service) -> Option<String> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|i| {
            i.ip.clone()
                .filter(|ip| !ip.is_empty())
                .or_else(|| i.hostname.clone().filter(|h| !h.is_empty()))
        })
}

/// How an address reads in messages: `LoadBalancer IP 172.18.255.1` or `LoadBalancer hostname
/// a1b2.elb.amazonaws.com`.
pub fn describe_address(address: &str) -> String {
    if address.parse::<std::net::IpAddr>().is_ok() {
        format!("LoadBalancer IP {address}")
    } else {
        format!("LoadBalancer hostname {address}")
    }
}

/// Service `namespace/name` has a LoadBalancer address (see [`ingress_address`]).
pub fn load_balanced(namespace: &str, name: &str) -> Condition<Service> {
    Condition::object(
        name,
        format!("service {namespace}/{name}: LoadBalancer IP or hostname"),
        |s| ingress_address(s).is_some(),
        |_| "<pending>".to_string(),
    )
}

/// The address of LoadBalancer Service `namespace/name`, once it has one.
pub async fn load_balancer_address(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<String, WaitError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc = until_object(&api, load_balanced(namespace, name), timeout).await?;
    Ok(ingress_address(&svc).expect("ready means an address is set"))
}

fn has_data(s: &Secret, key: &str) -> bool {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .is_some_and(|v| !v.0.is_empty())
}

/// Gateway API `Gateway` `namespace/name` reports `Programmed=True`, as istiod's gateway
/// controller reports it once the gateway's Service has its address and its pods are ready
/// (`pilot/pkg/config/kube/gateway/conversion.go`, `reportGatewayStatus`); Istio's own tests wait
/// for it before using an ambient east-west gateway (watch it through [`super::gateways`]).
pub fn programmed(namespace: &str, name: &str) -> Condition<DynamicObject> {
    let conditions = |g: &DynamicObject| -> Vec<(String, String, String)> {
        g.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let field = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (field("type"), field("status"), field("reason"))
            })
            .collect()
    };
    Condition::object(
        name,
        format!("Gateway {namespace}/{name} Programmed"),
        move |g| {
            conditions(g)
                .iter()
                .any(|(t, s, _)| t == "Programmed" && s == "True")
        },
        move |g| {
            let seen: Vec<String> = conditions(g)
                .iter()
                .map(|(t, s, r)| format!("{t}={s} ({r})"))
                .collect();
            format!("conditions {seen:?}")
        },
    )
}

/// Service-account token Secret `namespace/name` filled in by the token controller.
pub fn token_filled(namespace: &str, name: &str) -> Condition<Secret> {
    Condition::object(
        name,
        format!("secret {namespace}/{name}: token and ca.crt"),
        |s| has_data(s, "token") && has_data(s, "ca.crt"),
        |s| {
            let word = |key| if has_data(s, key) { "set" } else { "empty" };
            format!("token {}, ca.crt {}", word("token"), word("ca.crt"))
        },
    )
}

/// Whether a Node reports the Ready condition.
pub fn node_ready(n: &Node) -> bool {
    let conds = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    condition_true(
        conds.iter().map(|c| (c.type_.as_str(), c.status.as_str())),
        "Ready",
    )
}

/// Every node reports Ready (and there is at least one).
pub fn nodes_ready() -> Condition<Node> {
    Condition::labelled(
        "",
        "every node Ready",
        |set| !set.is_empty() && set.values().all(node_ready),
        |set| {
            let waiting: Vec<_> = set
                .iter()
                .filter(|(_, n)| !node_ready(n))
                .map(|(k, _)| k.as_str())
                .collect();
            format!("{} node(s), not Ready: {}", set.len(), waiting.join(", "))
        },
    )
}

/// Whether a pod is Running with its Ready condition True.
pub fn pod_is_ready(p: &Pod) -> bool {
    let status = p.status.clone().unwrap_or_default();
    status.phase.as_deref() == Some("Running")
        && condition_true(
            status
                .conditions
                .iter()
                .flatten()
                .map(|c| (c.type_.as_str(), c.status.as_str())),
            "Ready",
        )
}

/// Some pod labelled `selector` in `namespace` is Running and Ready.
pub fn some_pod_ready(namespace: &str, selector: &str) -> Condition<Pod> {
    Condition::labelled(
        selector,
        format!("a ready pod `{selector}` in namespace {namespace}"),
        |set| set.values().any(pod_is_ready),
        |set| {
            let phases: Vec<String> = set
                .iter()
                .map(|(n, p)| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                    format!("{n}: {}", phase.unwrap_or_default())
                })
                .collect();
            if phases.is_empty() {
                "no pod yet".into()
            } else {
                phases.join(", ")
            }
        },
    )
}

/// The client configurations of a webhook configuration's webhooks (mutating and validating
/// alike: both list them under `webhooks[].clientConfig`).
fn client_configs(config: &DynamicObject) -> Vec<WebhookClientConfig> {
    config.data["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| serde_json::from_value(w["clientConfig"].clone()).ok())
        .collect()
}

/// Every webhook of webhook configuration `name` has a CA bundle.
fn bundled(name: &str, what: &str) -> Condition<DynamicObject> {
    let has_bundle = |c: &WebhookClientConfig| c.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty());
    Condition::object(
        name,
        what,
        move |k| {
            let all = client_configs(k);
            !all.is_empty() && all.iter().all(has_bundle)
        },
        move |k| {
            let all = client_configs(k);
            let done = all.iter().filter(|c| has_bundle(c)).count();
            format!("{done} of {} webhook(s) have a CA bundle", all.len())
        },
    )
}

/// Waits until every webhook of `kind` (`MutatingWebhookConfiguration` or
/// `ValidatingWebhookConfiguration`) `name` has a CA bundle (`what` names the wait); returns the
/// namespace and name of the Service behind its first webhook (names differ between MetalLB
/// versions, so they are read from the configuration rather than assumed).
pub async fn webhook_service(
    client: &Client,
    kind: &str,
    name: &str,
    what: &str,
    timeout: Duration,
) -> Result<(String, String), WaitError> {
    let gvk = kube::api::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let configs = client_configs(&until_object(&api, bundled(name, what), timeout).await?);
    let service = configs
        .into_iter()
        .next()
        .and_then(|c| c.service)
        .ok_or_else(|| WaitError::Failed {
            what: what.to_string(),
            reason: format!("{kind} {name} calls a URL, not a Service"),
        })?;
    Ok((service.namespace, service.name))
}

/// Some endpoint of Service `namespace/service` is ready (`what` names the wait).
pub fn endpoint_ready(namespace: &str, service: &str, what: &str) -> Condition<EndpointSlice> {
    let ready = |s: &EndpointSlice| {
        s.endpoints
            .iter()
            .flatten()
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
    };
    let shown = format!("service {namespace}/{service}");
    Condition::labelled(
        &format!("kubernetes.io/service-name={service}"),
        what,
        move |set| set.values().any(ready),
        move |set| format!("{} endpoint slice(s) for {shown}, none ready", set.len()),
    )
}

/// The Service behind webhook configuration `kind` `name` has a ready endpoint (`what` names
/// the wait): first every webhook has its CA bundle, then the Service they call has a ready
/// endpoint.
pub async fn webhook_endpoint_ready(
    client: &Client,
    kind: &str,
    name: &str,
    what: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    let (namespace, service) = webhook_service(client, kind, name, what, timeout).await?;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    until(&api, endpoint_ready(&namespace, &service, what), timeout)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects<K>(named: Vec<(&str, K)>) -> Objects<K> {
        named.into_iter().map(|(n, k)| (n.to_string(), k)).collect()
    }

    fn deployment(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_named_condition_judges_only_its_object() {
        let ready = deployment(
            serde_json::json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}}),
        );
        let wait = available("istio-system", "istiod");
        assert_eq!(wait.what(), "deployment istio-system/istiod Available");
        assert!(wait.holds_for(objects(vec![("istiod", ready.clone())])));
        assert!(!available("istio-system", "istiod").holds_for(objects(vec![("istiod-1-31", ready)])));
        assert!(!available("istio-system", "istiod").holds_for(Objects::new()));
    }

    #[test]
    fn rolled_out_waits_for_the_new_generation_and_no_old_replica() {
        let seen = |generation: i64, observed: i64, replicas: i32, updated: i32| {
            deployment(
                serde_json::json!({"metadata": {"generation": generation}, "spec": {"replicas": 1},
                "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated, "availableReplicas": updated}}),
            )
        };
        let holds = |d| rolled_out("istio-system", "istiod").holds_for(objects(vec![("istiod", d)]));
        assert!(holds(seen(2, 2, 1, 1)));
        assert!(
            !holds(seen(2, 1, 1, 1)),
            "the controller has not seen the restart yet"
        );
        assert!(!holds(seen(2, 2, 2, 1)), "an old replica is still there");
    }

    #[test]
    fn a_daemonset_is_ready_once_its_new_template_is_available_on_every_node() {
        let daemonset = |generation: i64, observed: i64, desired: i32, updated: i32, available: i32| {
            serde_json::from_value::<DaemonSet>(serde_json::json!({
                "metadata": {"generation": generation},
                "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                           "currentNumberScheduled": desired, "numberMisscheduled": 0, "numberReady": available,
                           "updatedNumberScheduled": updated, "numberAvailable": available}}))
            .unwrap()
        };
        let holds = |d| on_every_node("istio-system", "ztunnel").holds_for(objects(vec![("ztunnel", d)]));
        assert!(holds(daemonset(2, 2, 3, 3, 3)));
        assert!(
            !holds(daemonset(2, 1, 3, 3, 3)),
            "the controller has not seen the new template yet: its counts are the old one's"
        );
        assert!(
            !holds(daemonset(2, 2, 3, 2, 3)),
            "one node still runs the old template"
        );
        assert!(
            !holds(daemonset(2, 2, 3, 3, 2)),
            "one new pod is not available yet"
        );
        assert!(
            !holds(daemonset(1, 1, 0, 0, 0)),
            "a node agent on no node serves nothing"
        );
    }

    #[test]
    fn absent_holds_once_the_object_is_gone() {
        let wait = Condition::<Secret>::absent("cacerts", "cacerts gone", |_| "still there".into());
        assert!(wait.holds_for(Objects::new()));
        assert!(!wait.holds_for(objects(vec![("cacerts", Secret::default())])));
    }

    #[test]
    fn nodes_ready_needs_at_least_one_node() {
        let ready: Node = serde_json::from_value(
            serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .unwrap();
        assert!(!nodes_ready().holds_for(Objects::new()));
        assert!(nodes_ready().holds_for(objects(vec![("a", ready.clone())])));
        assert!(!nodes_ready().holds_for(objects(vec![("a", ready), ("b", Node::default())])));
    }

    #[test]
    fn a_token_is_filled_when_token_and_ca_are_both_set() {
        let secret = |keys: &[&str]| {
            let data: serde_json::Map<String, serde_json::Value> =
                keys.iter().map(|k| (k.to_string(), "eA==".into())).collect();
            serde_json::from_value::<Secret>(serde_json::json!({"data": data})).unwrap()
        };
        let holds = |s| token_filled("istio-system", "t").holds_for(objects(vec![("t", s)]));
        assert!(holds(secret(&["token", "ca.crt"])));
        assert!(!holds(secret(&["token"])));
    }
}
