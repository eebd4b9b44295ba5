//! Waiting for conditions, driven by watches (never fixed sleeps), each bounded by a timeout whose
//! error says what was last seen. kube adds no timeout of its own, so every wait here has one.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

/// Watches the object `name` until `ready` holds; `describe` says what a not-ready object looks like.
pub async fn until<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&K) -> bool,
    describe: impl Fn(&K) -> String,
) -> Result<K, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut set = watch_until(
        api,
        config,
        what,
        timeout,
        |set| set.get(name).is_some_and(&ready),
        |set| {
            set.get(name)
                .map(&describe)
                .unwrap_or_else(|| "nothing yet: the object does not exist".into())
        },
    )
    .await?;
    Ok(set.remove(name).expect("ready means the object is there"))
}

/// Watches the object `name` until it no longer exists (finalizers done, e.g. a namespace emptied
/// by the namespace controller); `describe` says what the object still looks like.
pub async fn gone<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    describe: impl Fn(&K) -> String,
) -> Result<(), WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watch_until(
        api,
        config,
        what,
        timeout,
        |set| !set.contains_key(name),
        |set| set.get(name).map(&describe).unwrap_or_default(),
    )
    .await
    .map(|_| ())
}

/// Watches every object `selector` matches until `ready` holds for the current set.
async fn until_set<K>(
    api: &Api<K>,
    selector: &str,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&BTreeMap<String, K>) -> bool,
    describe: impl Fn(&BTreeMap<String, K>) -> String,
) -> Result<BTreeMap<String, K>, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watch_until(
        api,
        watcher::Config::default().labels(selector),
        what,
        timeout,
        ready,
        describe,
    )
    .await
}

/// The one wait loop: keeps the set of watched objects current until `ready` holds for it, or
/// `timeout` passes; the error then carries `describe` of the last set seen (or the watch error).
async fn watch_until<K>(
    api: &Api<K>,
    config: watcher::Config,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&BTreeMap<String, K>) -> bool,
    describe: impl Fn(&BTreeMap<String, K>) -> String,
) -> Result<BTreeMap<String, K>, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut stream = watcher(api.clone(), config).default_backoff().boxed();
    let mut seen: BTreeMap<String, K> = BTreeMap::new();
    let mut last_seen = describe(&seen);
    // The set is judged only once a (re-)list is complete: in the middle of one it is partial, and
    // a predicate such as "gone" would hold on the empty set right after `Init`.
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
            if ready(&seen) {
                return Some(seen.clone());
            }
            last_seen = describe(&seen);
        }
        None
    })
    .await;
    match outcome {
        Ok(Some(set)) => Ok(set),
        Ok(None) => Err(WaitError::Failed {
            what: what.to_string(),
            reason: "the watch ended".into(),
        }),
        Err(_) => Err(WaitError::Timeout {
            what: what.to_string(),
            after: timeout,
            last_seen,
        }),
    }
}

fn condition_true<'a>(conditions: impl IntoIterator<Item = (&'a str, &'a str)>, wanted: &str) -> bool {
    conditions.into_iter().any(|(t, s)| t == wanted && s == "True")
}

/// Whether a Deployment reports the Available condition (what `DeploymentAvailable` waits for).
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

/// A CRD reports Established.
pub async fn crd_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    let conds = |c: &CustomResourceDefinition| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
    };
    until(
        api,
        name,
        &format!("CRD {name} Established"),
        timeout,
        |c| {
            condition_true(
                conds(c).iter().map(|x| (x.type_.as_str(), x.status.as_str())),
                "Established",
            )
        },
        |c| {
            format!(
                "conditions {:?}",
                conds(c)
                    .iter()
                    .map(|x| format!("{}={}", x.type_, x.status))
                    .collect::<Vec<_>>()
            )
        },
    )
    .await
    .map(|_| ())
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

/// The address of a LoadBalancer Service (see [`ingress_address`]), once it has one.
pub async fn load_balancer_address(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<String, WaitError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc = until(
        &api,
        name,
        &format!("service {namespace}/{name}: LoadBalancer IP or hostname"),
        timeout,
        |s| ingress_address(s).is_some(),
        |_| "<pending>".to_string(),
    )
    .await?;
    Ok(ingress_address(&svc).expect("ready means an address is set"))
}

/// A service-account token Secret filled in by the token controller.
pub async fn token_filled(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Secret, WaitError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let has = |s: &Secret, key: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .is_some_and(|v| !v.0.is_empty())
    };
    until(
        &api,
        name,
        &format!("secret {namespace}/{name}: token and ca.crt"),
        timeout,
        |s| has(s, "token") && has(s, "ca.crt"),
        |s| {
            format!(
                "token {}, ca.crt {}",
                if has(s, "token") { "set" } else { "empty" },
                if has(s, "ca.crt") { "set" } else { "empty" }
            )
        },
    )
    .await
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
pub async fn nodes_ready(client: &Client, timeout: Duration) -> Result<(), WaitError> {
    let api: Api<Node> = Api::all(client.clone());
    let ready = node_ready;
    until_set(
        &api,
        "",
        "every node Ready",
        timeout,
        |set| !set.is_empty() && set.values().all(ready),
        |set| {
            let waiting: Vec<_> = set
                .iter()
                .filter(|(_, n)| !ready(n))
                .map(|(k, _)| k.as_str())
                .collect();
            format!("{} node(s), not Ready: {}", set.len(), waiting.join(", "))
        },
    )
    .await
    .map(|_| ())
}

/// Deployment `namespace/name` reports Available.
pub async fn deployment_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    until_deployment(
        client,
        namespace,
        name,
        "Available",
        timeout,
        deployment_available,
    )
    .await
}

/// Watches Deployment `namespace/name` until `ready`; the timeout names `state` and the replica
/// counts last seen.
async fn until_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    state: &str,
    timeout: Duration,
    ready: fn(&Deployment) -> bool,
) -> Result<(), WaitError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let what = format!("deployment {namespace}/{name} {state}");
    until(&api, name, &what, timeout, ready, |d| {
        let s = d.status.clone().unwrap_or_default();
        format!(
            "{} updated, {} available of {}",
            s.updated_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.replicas.unwrap_or(0)
        )
    })
    .await
    .map(|_| ())
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

/// Deployment `namespace/name` rolled out its current template (after a restart, for example).
pub async fn rollout_complete(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    until_deployment(
        client,
        namespace,
        name,
        "rolled out",
        timeout,
        deployment_rolled_out,
    )
    .await
}

/// Whether a DaemonSet has a ready pod on every node it schedules to.
pub fn daemonset_ready(d: &DaemonSet) -> bool {
    d.status
        .as_ref()
        .is_some_and(|s| s.desired_number_scheduled > 0 && s.number_ready == s.desired_number_scheduled)
}

/// DaemonSet `namespace/name` has a ready pod on every node it schedules to.
pub async fn daemonset_ready_on_every_node(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let what = format!("daemonset {namespace}/{name} ready on every node");
    until(&api, name, &what, timeout, daemonset_ready, |d| {
        let s = d.status.clone().unwrap_or_default();
        format!("{}/{} pods ready", s.number_ready, s.desired_number_scheduled)
    })
    .await
    .map(|_| ())
}

/// Every webhook of `kind` `name` has its CA bundle injected.
pub async fn webhook_has_ca_bundle(
    client: &Client,
    kind: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    let what = format!("{kind} {name} has its CA bundle");
    webhook_ca_bundle(client, kind, name, &what, timeout)
        .await
        .map(|_| ())
}

/// The Service behind webhook configuration `kind` `name` has a ready endpoint.
pub async fn webhook_endpoint_ready(
    client: &Client,
    kind: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    let what = format!("the service behind {kind} {name} has a ready endpoint");
    let (namespace, service) = webhook_ca_bundle(client, kind, name, &what, timeout).await?;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let ready = |s: &EndpointSlice| {
        s.endpoints
            .iter()
            .flatten()
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
    };
    let selector = format!("kubernetes.io/service-name={service}");
    until_set(
        &api,
        &selector,
        &what,
        timeout,
        |set| set.values().any(ready),
        |set| {
            format!(
                "{} endpoint slice(s) for service {namespace}/{service}, none ready",
                set.len()
            )
        },
    )
    .await
    .map(|_| ())
}

/// Waits until every webhook of the configuration has a CA bundle; returns the namespace and name
/// of the Service behind its first webhook (names differ between MetalLB versions, so they are read
/// from the configuration rather than assumed).
async fn webhook_ca_bundle(
    client: &Client,
    kind: &str,
    name: &str,
    what: &str,
    timeout: Duration,
) -> Result<(String, String), WaitError> {
    let configs = match kind {
        "MutatingWebhookConfiguration" => {
            let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
            let configs = |c: &MutatingWebhookConfiguration| {
                c.webhooks
                    .iter()
                    .flatten()
                    .map(|w| w.client_config.clone())
                    .collect()
            };
            until_bundled(&api, name, what, timeout, configs).await?
        }
        _ => {
            let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
            let configs = |c: &ValidatingWebhookConfiguration| {
                c.webhooks
                    .iter()
                    .flatten()
                    .map(|w| w.client_config.clone())
                    .collect()
            };
            until_bundled(&api, name, what, timeout, configs).await?
        }
    };
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

/// The webhook client configurations of `name` (mutating or validating alike), once every one of
/// them has a CA bundle.
async fn until_bundled<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    configs: impl Fn(&K) -> Vec<WebhookClientConfig>,
) -> Result<Vec<WebhookClientConfig>, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let bundled = |c: &WebhookClientConfig| c.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty());
    let found = until(
        api,
        name,
        what,
        timeout,
        |k| {
            let all = configs(k);
            !all.is_empty() && all.iter().all(bundled)
        },
        |k| {
            let all = configs(k);
            format!(
                "{} of {} webhook(s) have a CA bundle",
                all.iter().filter(|c| bundled(c)).count(),
                all.len()
            )
        },
    )
    .await?;
    Ok(configs(&found))
}

/// A Running pod matching `selector` whose Ready condition is True.
pub async fn pod_ready(
    client: &Client,
    namespace: &str,
    selector: &str,
    timeout: Duration,
) -> Result<k8s_openapi::api::core::v1::Pod, WaitError> {
    use k8s_openapi::api::core::v1::Pod;
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let ready = |p: &Pod| {
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
    };
    let what = format!("a ready pod `{selector}` in namespace {namespace}");
    let set = until_set(
        &api,
        selector,
        &what,
        timeout,
        |set| set.values().any(ready),
        |set| {
            let phases: Vec<String> = set
                .iter()
                .map(|(n, p)| {
                    format!(
                        "{n}: {}",
                        p.status
                            .as_ref()
                            .and_then(|s| s.phase.clone())
                            .unwrap_or_default()
                    )
                })
                .collect();
            if phases.is_empty() {
                "no pod yet".into()
            } else {
                phases.join(", ")
            }
        },
    )
    .await?;
    Ok(set
        .into_values()
        .find(ready)
        .expect("ready means one pod is ready"))
}
