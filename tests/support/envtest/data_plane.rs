//! Plays Istio's data plane for `meshctl verify` on real control planes: answers the curl
//! client's calls (a `pods/exec` the proxy receives, since no kubelet runs here) the way Istio
//! routes them, decided from what is really in the clusters' API servers. A remote cluster is
//! reachable only when the caller's cluster holds its remote secret, and the remote cluster's
//! east-west gateway has an IP and the cross-network Gateway exists: a broken `up` fails `verify`.
//! A host the caller's mesh config makes cluster-local is served by the caller's cluster only; a
//! VirtualService routing the caller to a per-cluster subset sends it to that cluster only.
//! With the locality DestinationRule (`helloworld-failover`, with outlier detection), a caller is
//! served locally while its local instance is healthy, else by the failover region (Istio's
//! locality failover, docs "Locality failover"). `drain_listeners` on a helloworld sidecar's admin
//! port makes that instance fail, as in Istio's docs.
//!
//! What each call prints is what curl prints: the body (helloworld's `Hello version: %s, instance:
//! %s\n`, or Envoy's `no healthy upstream` without a newline and status 503) and then the text of
//! curl's `-w` option from the command, with `%{http_code}` filled in.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

use super::istioctl::Target;
use super::kind::KindLab;
use super::proxy::{ExecRequest, ExecResult};

struct Cluster {
    name: String,
    target: Target,
}

/// The first helloworld pod that is not drained: (pod, version).
async fn helloworld(client: &kube::Client, drained: &HashSet<String>) -> Option<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "sample");
    let list = pods
        .list(&ListParams::default().labels("app=helloworld"))
        .await
        .ok()?;
    list.items.into_iter().find_map(|p| {
        let name = p.metadata.name.clone()?;
        (p.metadata.deletion_timestamp.is_none() && !drained.contains(&name)).then(|| {
            let version = p
                .metadata
                .labels
                .unwrap_or_default()
                .get("version")
                .cloned()
                .unwrap_or_default();
            (name, version)
        })
    })
}

async fn region(client: &kube::Client) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .ok()
        .and_then(|l| l.items.into_iter().next())
        .and_then(|n| n.metadata.labels?.get("topology.kubernetes.io/region").cloned())
        .unwrap_or_default()
}

/// Whether the caller's istiod keeps `helloworld.sample.svc.cluster.local` in the caller's own
/// cluster: its mesh config (ConfigMap `istio`, key `mesh`) has a `serviceSettings` entry with
/// `clusterLocal: true` whose hosts name it or cover it with a `*.` wildcard (Istio MeshConfig
/// `ServiceSettings.Settings.cluster_local`: "the client and service endpoints must reside in the
/// same cluster").
async fn cluster_local(client: &kube::Client) -> bool {
    let host = "helloworld.sample.svc.cluster.local";
    let Ok(Some(map)) =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "istio-system")
            .get_opt("istio")
            .await
    else {
        return false;
    };
    let mesh: Value = map
        .data
        .and_then(|d| d.get("mesh").cloned())
        .and_then(|text| serde_saphyr::from_str(&text).ok())
        .unwrap_or(Value::Null);
    mesh["serviceSettings"].as_array().into_iter().flatten().any(|s| {
        s["settings"]["clusterLocal"] == true
            && s["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|h| match h.as_str() {
                    Some(p) if p.starts_with('*') => host.ends_with(&p[1..]),
                    Some(p) => p == host,
                    None => false,
                })
    })
}

/// The cluster a VirtualService for helloworld in the caller's cluster routes this caller to: the
/// first `http` route whose `sourceLabels` the caller's proxy carries (Istio gives every proxy the
/// label `topology.istio.io/cluster`), to a subset of the DestinationRule for the host whose labels
/// pin `topology.istio.io/cluster` (Istio docs, "Keeping traffic in-cluster"). `None`: no such rule.
async fn routed_cluster(client: &kube::Client, caller: &str) -> Option<String> {
    let host = "helloworld.sample.svc.cluster.local";
    let api = |kind: &str, plural: &str| {
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            "sample",
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("networking.istio.io", "v1", kind),
                plural,
            ),
        )
    };
    let services = api("VirtualService", "virtualservices")
        .list(&ListParams::default())
        .await
        .ok()?;
    let vs = services.items.into_iter().find(|v| {
        v.data["spec"]["hosts"]
            .as_array()
            .is_some_and(|h| h.iter().any(|x| x == host))
    })?;
    let proxy_labels = serde_json::json!({"topology.istio.io/cluster": caller, "app": "curl"});
    let route = vs.data["spec"]["http"]
        .as_array()?
        .iter()
        .find(|r| match r["match"].as_array() {
            None => true,
            Some(matches) => matches.iter().any(|m| {
                m["sourceLabels"]
                    .as_object()
                    .is_none_or(|want| want.iter().all(|(k, v)| &proxy_labels[k] == v))
            }),
        })?;
    let subset = route["route"][0]["destination"]["subset"].as_str()?.to_string();
    let rules = api("DestinationRule", "destinationrules")
        .list(&ListParams::default())
        .await
        .ok()?;
    rules.items.iter().find_map(|dr| {
        (dr.data["spec"]["host"] == host).then(|| {
            dr.data["spec"]["subsets"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == subset.as_str())?["labels"]["topology.istio.io/cluster"]
                .as_str()
                .map(String::from)
        })?
    })
}

/// Whether calls from `from` can reach `to` through `to`'s east-west gateway.
async fn wired(from: &kube::Client, to: &Cluster, to_client: &kube::Client) -> bool {
    let secrets: Api<Secret> = Api::namespaced(from.clone(), "istio-system");
    let secret = secrets
        .get_opt(&format!("istio-remote-secret-{}", to.name))
        .await
        .ok()
        .flatten();
    let services: Api<Service> = Api::namespaced(to_client.clone(), "istio-system");
    let ip = services
        .get_opt("istio-eastwestgateway")
        .await
        .ok()
        .flatten()
        .and_then(|s| meshctl::kube::wait::ingress_ip(&s));
    let gateways = Api::<DynamicObject>::namespaced_with(
        to_client.clone(),
        "istio-system",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway"),
            "gateways",
        ),
    );
    let exposed = gateways
        .get_opt("cross-network-gateway")
        .await
        .ok()
        .flatten()
        .is_some();
    secret.is_some() && ip.is_some() && exposed
}

/// The text of curl's `-w '…'` in `command`, with `\n` turned into newlines as curl does.
fn write_out_format(command: &str) -> String {
    command
        .split("-w '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_default()
        .replace("\\n", "\n")
}

/// Installs the data plane on every cluster of `lab`.
pub fn install(lab: &KindLab) {
    let clusters: Arc<Vec<Cluster>> = Arc::new(
        lab.planes()
            .iter()
            .map(|p| Cluster {
                name: p.name.clone(),
                target: Target::of(p),
            })
            .collect(),
    );
    let drained: Arc<Mutex<HashSet<String>>> = Arc::default();
    let counter = Arc::new(Mutex::new(0usize));
    for (i, proxy) in lab.proxies().iter().enumerate() {
        let (clusters, drained, counter) = (clusters.clone(), drained.clone(), counter.clone());
        proxy.set_exec_handler(Arc::new(move |req: ExecRequest| {
            let (clusters, drained, counter) = (clusters.clone(), drained.clone(), counter.clone());
            Box::pin(async move { answer(i, &clusters, &drained, &counter, req).await })
        }));
    }
}

async fn answer(
    i: usize,
    clusters: &[Cluster],
    drained: &Mutex<HashSet<String>>,
    counter: &Mutex<usize>,
    req: ExecRequest,
) -> ExecResult {
    let command = req.command.join(" ");
    if req.container == "istio-proxy" && command.contains("drain_listeners") {
        drained.lock().unwrap().insert(req.pod.clone());
        return ExecResult {
            stdout: "OK\n".into(),
            ..Default::default()
        };
    }
    if !command.contains("helloworld.sample:5000/hello") {
        return ExecResult {
            stderr: format!("sh: unexpected command: {command}"),
            exit_code: 127,
            ..Default::default()
        };
    }
    let calls: usize = command
        .split("seq 1 ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let drained_now = drained.lock().unwrap().clone();
    let mut clients = Vec::new();
    for c in clusters {
        clients.push(c.target.client().await);
    }
    let me = &clients[i];
    let local = helloworld(me, &drained_now).await;
    let mut remotes = Vec::new();
    let stay_local = cluster_local(me).await;
    for (j, other) in clusters.iter().enumerate() {
        if j != i
            && !stay_local
            && wired(me, other, &clients[j]).await
            && let Some((pod, version)) = helloworld(&clients[j], &drained_now).await
        {
            remotes.push((pod, version, region(&clients[j]).await, other.name.clone()));
        }
    }
    // A VirtualService that routes this caller to a subset pinned to one cluster.
    let mut local = local;
    if let Some(only) = routed_cluster(me, &clusters[i].name).await {
        if only != clusters[i].name {
            local = None;
        }
        remotes.retain(|r| r.3 == only);
    }
    let rules = Api::<DynamicObject>::namespaced_with(
        me.clone(),
        "sample",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule"),
            "destinationrules",
        ),
    );
    let rule: Option<Value> = rules
        .get_opt("helloworld-failover")
        .await
        .ok()
        .flatten()
        .map(|r| r.data);
    let targets: Vec<(String, String)> = match rule {
        Some(dr) if dr["spec"]["trafficPolicy"]["outlierDetection"].is_object() => match &local {
            Some(l) => vec![l.clone()],
            None => {
                let my_region = region(me).await;
                let to = dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["failover"]
                    .as_array()
                    .and_then(|rules| rules.iter().find(|r| r["from"] == my_region.as_str()))
                    .and_then(|r| r["to"].as_str().map(String::from));
                let preferred: Vec<(String, String)> = remotes
                    .iter()
                    .filter(|r| Some(&r.2) == to.as_ref())
                    .map(|r| (r.0.clone(), r.1.clone()))
                    .collect();
                if preferred.is_empty() {
                    remotes.iter().map(|r| (r.0.clone(), r.1.clone())).collect()
                } else {
                    preferred
                }
            }
        },
        _ => local
            .into_iter()
            .chain(remotes.iter().map(|r| (r.0.clone(), r.1.clone())))
            .collect(),
    };
    let write_out = write_out_format(&command);
    let mut out = String::new();
    let mut next = counter.lock().unwrap();
    for _ in 0..calls {
        if targets.is_empty() {
            out.push_str("no healthy upstream");
            out.push_str(&write_out.replace("%{http_code}", "503"));
        } else {
            let (pod, version) = &targets[*next % targets.len()];
            *next += 1;
            out.push_str(&format!("Hello version: {version}, instance: {pod}\n"));
            out.push_str(&write_out.replace("%{http_code}", "200"));
        }
    }
    ExecResult {
        stdout: out,
        ..Default::default()
    }
}
