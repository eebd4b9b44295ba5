//! Plays Istio's data plane for `meshctl verify` on real control planes: answers the curl
//! client's calls (a `pods/exec` the proxy receives, since no kubelet runs here) the way Istio
//! routes them, decided from what is really in the clusters' API servers, for every deployment
//! model (Istio docs, "Deployment models" and the multicluster install guides):
//! * a caller's proxy is configured by its cluster's istiod, or, in a cluster without one (a
//!   remote), by the istiod whose east-west gateway IP the cluster's `istiod` EndpointSlice names,
//!   when that primary exposes istiod (Gateway `istiod-gateway`) and holds the remote's secret;
//! * that istiod sees another cluster's endpoints only through its remote secret;
//! * on one network (the `topology.istio.io/network` label of istio-system) pods call each other
//!   directly, which on kind needs the caller's node to route the target's pod CIDR to the
//!   target's node (the fake docker's routing tables); across networks, through the target's
//!   east-west gateway, which needs an IP and the `*.local` Gateway in the istiod configuring it.
//!
//! istiod's mesh config counts too: `discoverySelectors` and `defaultServiceExportTo` decide
//! whether it sees helloworld at all, the VirtualService and DestinationRule export defaults
//! whether verify's rules apply, `serviceSettings` whether it stays in the caller's cluster.
//!
//! A broken `up` fails `verify`. `/debug/syncz` of each istiod lists the sample proxies it
//! configures, with their cluster.
//! A host the caller's mesh config makes cluster-local is served by the caller's cluster only; a
//! VirtualService routing the caller to a per-cluster subset sends it to that cluster only.
//! The DestinationRules of the helloworld host are merged as istiod merges them
//! (tests/support/played_destination_rules.rs: the oldest rule's traffic policy wins). Under a
//! weighted `distribute` policy, a caller's requests are split between localities by its
//! weights. Under an outlier-detection policy with a locality `failover`, a caller is
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
    node_label(client, "topology.kubernetes.io/region").await
}

/// `region/zone` of the cluster's node, as Istio writes a locality.
async fn locality(client: &kube::Client) -> String {
    format!(
        "{}/{}",
        region(client).await,
        node_label(client, "topology.kubernetes.io/zone").await
    )
}

async fn node_label(client: &kube::Client, key: &str) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .ok()
        .and_then(|l| l.items.into_iter().next())
        .and_then(|n| n.metadata.labels?.get(key).cloned())
        .unwrap_or_default()
}

/// A weighted `distribute` entry of the DestinationRule `helloworld-distribute` for a caller in
/// `from` (`region/zone`), spread over 100 slots: each `to` locality (`region/zone/*`) gets as
/// many slots as its weight, filled round robin with its instances (Istio docs, "Locality weighted
/// distribution"; Envoy picks by weight per request). `None`: no rule for this caller.
fn distributed(
    dr: &Value,
    from: &str,
    candidates: &[(String, String, String)],
) -> Option<Vec<(String, String)>> {
    let entry = dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distribute"]
        .as_array()?
        .iter()
        .find(|e| e["from"].as_str() == Some(&format!("{from}/*")))?;
    let mut slots = Vec::new();
    for (to, weight) in entry["to"].as_object()? {
        let prefix = to.trim_end_matches('*').trim_end_matches('/');
        let here: Vec<&(String, String, String)> = candidates.iter().filter(|c| c.2 == prefix).collect();
        for k in 0..weight.as_u64().unwrap_or(0) as usize {
            if let Some(c) = here.get(k % here.len().max(1)) {
                slots.push((c.0.clone(), c.1.clone()));
            }
        }
    }
    Some(slots)
}

/// The mesh config istiod runs with: ConfigMap `istio`, key `mesh` (Null when there is none).
async fn mesh_config(client: &kube::Client) -> Value {
    let Ok(Some(map)) =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "istio-system")
            .get_opt("istio")
            .await
    else {
        return Value::Null;
    };
    map.data
        .and_then(|d| d.get("mesh").cloned())
        .and_then(|text| serde_saphyr::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// Whether one Kubernetes label selector (JSON, as in MeshConfig `discoverySelectors`) selects a
/// namespace with `labels`: every `matchLabels` pair, and every `matchExpressions` requirement
/// (`In`, `NotIn`, `Exists`, `DoesNotExist`, as apimachinery's `labels.Selector`).
pub fn selects(selector: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let pairs = selector["matchLabels"].as_object().into_iter().flatten();
    let exprs = selector["matchExpressions"].as_array().into_iter().flatten();
    pairs
        .into_iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        && exprs.into_iter().all(|e| {
            let have = e["key"].as_str().and_then(|k| labels.get(k));
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str() {
                Some("In") => have.is_some_and(|v| values.contains(&v.as_str())),
                Some("NotIn") => have.is_none_or(|v| !values.contains(&v.as_str())),
                Some("Exists") => have.is_some(),
                Some("DoesNotExist") => have.is_none(),
                _ => false,
            }
        })
}

/// Whether the istiod with `mesh` config sees helloworld in namespace `sample` of the cluster of
/// `client` and lets the callers of `sample` use it: `discoverySelectors` (ORed; none: every
/// namespace) select the namespace there (Istio: istiod ignores objects in other namespaces), and
/// the service is exported to `sample` (see [`exported_to`]).
async fn visible(mesh: &Value, client: &kube::Client) -> bool {
    if let Some(selectors) = mesh["discoverySelectors"].as_array().filter(|s| !s.is_empty()) {
        let labels = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get_opt("sample")
            .await
            .ok()
            .flatten()
            .and_then(|ns| ns.metadata.labels)
            .unwrap_or_default();
        if !selectors.iter().any(|s| selects(s, &labels)) {
            return false;
        }
    }
    exported_to(mesh, client, "sample").await
}

/// Whether helloworld (namespace `sample`) of the cluster of `client` is exported to `namespace`:
/// its annotation `networking.istio.io/exportTo`, else the mesh's `defaultServiceExportTo`, else
/// `*`, holds `*`, the namespace, or `.` when the namespace is its own (Istio
/// `pilot/pkg/model/push_context.go`, `servicesExportedToNamespace`). An east-west gateway
/// (istio-system) routes only to services exported to its namespace (`sidecar.go`,
/// `DefaultSidecarScopeForGateway`).
async fn exported_to(mesh: &Value, client: &kube::Client, namespace: &str) -> bool {
    let annotated = Api::<Service>::namespaced(client.clone(), "sample")
        .get_opt("helloworld")
        .await
        .ok()
        .flatten()
        .and_then(|s| {
            s.metadata
                .annotations?
                .get("networking.istio.io/exportTo")
                .cloned()
        });
    let export: Vec<String> = match annotated {
        Some(list) => list.split(',').map(|v| v.trim().to_string()).collect(),
        None => mesh["defaultServiceExportTo"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
    };
    export.is_empty()
        || export
            .iter()
            .any(|v| v == "*" || v == namespace || (v == "." && namespace == "sample"))
}

/// The mesh config of the istiod that configures cluster `j`'s east-west gateway (its own, or its
/// primary's for a remote).
async fn target_gateway_mesh(world: &World, clients: &[kube::Client], j: usize) -> Value {
    let cp = world.control_plane(clients, j).await.unwrap_or(j);
    mesh_config(&clients[cp]).await
}

/// Whether a VirtualService or DestinationRule of namespace `sample` applies to the callers of
/// `sample`: its `spec.exportTo`, else the mesh config's default (`default_key`), else `*`, must
/// include `*`, `.` or `sample` (Istio: a rule not exported to the caller's namespace is ignored).
fn applies(rule: &Value, mesh: &Value, default_key: &str) -> bool {
    let own = rule["spec"]["exportTo"].as_array().filter(|a| !a.is_empty());
    let to: Vec<&str> = own
        .or(mesh[default_key].as_array())
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    to.is_empty() || to.iter().any(|v| *v == "*" || *v == "." || *v == "sample")
}

/// Whether the caller's istiod keeps `helloworld.sample.svc.cluster.local` in the caller's own
/// cluster, from its mesh config (ConfigMap `istio`, key `mesh`), as Istio 1.31 decides it
/// (`pilot/pkg/model/cluster_local.go`, `onMeshUpdated`, `IsClusterLocal`): each
/// `serviceSettings` host maps to its `clusterLocal` (later entries overwrite earlier ones); the
/// defaults `*.kube-system.svc.cluster.local`, `kubernetes.default.svc.cluster.local` and istiod's
/// own host are added as cluster-local unless a `clusterLocal: false` host equals one or falls
/// under a default wildcard; the exact host decides, else the longest matching wildcard
/// (`pkg/config/host`, `MostSpecificHostMatch`), else not cluster-local.
async fn cluster_local(client: &kube::Client) -> bool {
    let host = "helloworld.sample.svc.cluster.local";
    let mesh = mesh_config(client).await;
    let mut defaults = vec![
        "*.kube-system.svc.cluster.local".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        "istiod.istio-system.svc.cluster.local".to_string(),
    ];
    let mut specific = std::collections::HashMap::new();
    let mut wildcard = std::collections::HashMap::new();
    for entry in mesh["serviceSettings"].as_array().into_iter().flatten() {
        let local = entry["settings"]["clusterLocal"] == true;
        let hosts: Vec<String> = entry["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().map(String::from))
            .collect();
        for h in &hosts {
            if !local {
                defaults.retain(|d| !(h == d || (d.starts_with('*') && h.ends_with(&d[1..]))));
            }
        }
        for h in hosts {
            if h.starts_with('*') {
                wildcard.insert(h, local);
            } else {
                specific.insert(h, local);
            }
        }
    }
    for d in defaults {
        if d.starts_with('*') {
            wildcard.insert(d, true);
        } else {
            specific.insert(d, true);
        }
    }
    if let Some(local) = specific.get(host) {
        return *local;
    }
    wildcard
        .iter()
        .filter(|(pattern, _)| host.ends_with(&pattern[1..]))
        .max_by_key(|(pattern, _)| pattern.len())
        .is_some_and(|(_, local)| *local)
}

/// The cluster a VirtualService for helloworld in the caller's cluster routes this caller to: the
/// first `http` route whose `sourceLabels` the caller's proxy carries (Istio gives every proxy the
/// label `topology.istio.io/cluster`), to a subset of the DestinationRule for the host whose labels
/// pin `topology.istio.io/cluster` (Istio docs, "Keeping traffic in-cluster"). `None`: no such rule.
async fn routed_cluster(client: &kube::Client, mesh: &Value, caller: &str) -> Option<String> {
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
        applies(&v.data, mesh, "defaultVirtualServiceExportTo")
            && v.data["spec"]["hosts"]
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
    let visible: Vec<Value> = rules
        .items
        .into_iter()
        .map(|dr| serde_json::to_value(dr).unwrap_or_default())
        .filter(|dr| applies(dr, mesh, "defaultDestinationRuleExportTo"))
        .collect();
    let rule = crate::support::played_destination_rules::merged(&visible, host)?;
    rule["spec"]["subsets"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == subset.as_str())?["labels"]["topology.istio.io/cluster"]
        .as_str()
        .map(String::from)
}

/// What the data plane reads of every cluster.
struct World {
    clusters: Vec<Cluster>,
    /// The fake tools' folder: kind configs as created, node addresses, node routing tables.
    tools: std::path::PathBuf,
}

fn api(client: &kube::Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("networking.istio.io", "v1", kind), plural),
    )
}

async fn exists(api: Api<DynamicObject>, name: &str) -> bool {
    matches!(api.get_opt(name).await, Ok(Some(_)))
}

async fn has_istiod(client: &kube::Client) -> bool {
    matches!(
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "istio-system")
            .get_opt("istiod")
            .await,
        Ok(Some(_))
    )
}

async fn holds_secret_of(client: &kube::Client, cluster: &str) -> bool {
    matches!(
        Api::<Secret>::namespaced(client.clone(), "istio-system")
            .get_opt(&format!("istio-remote-secret-{cluster}"))
            .await,
        Ok(Some(_))
    )
}

async fn gateway_ip(client: &kube::Client) -> Option<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), "istio-system");
    let svc = services.get_opt("istio-eastwestgateway").await.ok().flatten()?;
    meshctl::kube::wait::ingress_address(&svc)
}

async fn network(client: &kube::Client) -> String {
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get_opt("istio-system")
        .await
        .ok()
        .flatten()
        .and_then(|ns| ns.metadata.labels?.get("topology.istio.io/network").cloned())
        .unwrap_or_default()
}

impl World {
    /// The cluster whose istiod configures the proxies of cluster `i`, if any does.
    async fn control_plane(&self, clients: &[kube::Client], i: usize) -> Option<usize> {
        if has_istiod(&clients[i]).await {
            return Some(i);
        }
        // Where the remote's `istiod` Service leads: its ExternalName (a hostname
        // `remotePilotAddress`), else the address in its EndpointSlice (an IP one), as Istio's
        // remote charts render them (`remote-istiod-service.yaml`, `remote-istiod-endpointslices.yaml`).
        let external = Api::<Service>::namespaced(clients[i].clone(), "istio-system")
            .get_opt("istiod")
            .await
            .ok()
            .flatten()
            .and_then(|s| s.spec?.external_name);
        let address = match external {
            Some(name) => name,
            None => {
                let slice = Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(
                    clients[i].clone(),
                    "istio-system",
                )
                .get_opt("istiod")
                .await
                .ok()
                .flatten()?;
                slice.endpoints?.first()?.addresses.first()?.clone()
            }
        };
        for (p, client) in clients.iter().enumerate() {
            if p != i
                && has_istiod(client).await
                && gateway_ip(client).await.as_deref() == Some(address.as_str())
                && exists(
                    api(client, "istio-system", "Gateway", "gateways"),
                    "istiod-gateway",
                )
                .await
                && holds_secret_of(client, &self.clusters[i].name).await
            {
                return Some(p);
            }
        }
        None
    }

    /// Whether node `from`'s kind routing table sends `to`'s pod CIDR to `to`'s node.
    fn routed(&self, from: usize, to: usize) -> bool {
        let (f, t) = (&self.clusters[from].name, &self.clusters[to].name);
        let config =
            std::fs::read_to_string(self.tools.join(format!("created-config-{t}.yaml"))).unwrap_or_default();
        let Some(pod_subnet) = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("podSubnet:"))
            .map(|v| v.trim().trim_matches('"').to_string())
        else {
            return false;
        };
        let node_ip = std::fs::read_to_string(self.tools.join("ips").join(t)).unwrap_or_default();
        std::fs::read_to_string(self.tools.join("routes").join(format!("{f}-control-plane")))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{pod_subnet} via {} ", node_ip.trim())))
    }

    /// Whether a call from cluster `from` reaches a workload in cluster `to`.
    async fn reachable(&self, clients: &[kube::Client], from: usize, to: usize) -> bool {
        if from == to {
            return true;
        }
        if network(&clients[from]).await == network(&clients[to]).await {
            return self.routed(from, to);
        }
        let Some(cp) = self.control_plane(clients, to).await else {
            return false;
        };
        gateway_ip(&clients[to]).await.is_some()
            && exists(
                api(&clients[cp], "istio-system", "Gateway", "gateways"),
                "cross-network-gateway",
            )
            .await
    }

    /// `/debug/syncz` of cluster `k`'s istiod: the injected pods of every cluster it configures.
    async fn syncz(&self, k: usize) -> Value {
        let mut clients = Vec::new();
        for c in &self.clusters {
            clients.push(c.target.client().await);
        }
        let mut out = Vec::new();
        for (c, client) in clients.iter().enumerate() {
            if self.control_plane(&clients, c).await != Some(k) {
                continue;
            }
            let pods = Api::<Pod>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            for pod in pods {
                let meta = &pod.metadata;
                if meta
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("sidecar.istio.io/status"))
                {
                    out.push(serde_json::json!({
                        "cluster_id": self.clusters[c].name,
                        "proxy": format!("{}.{}", meta.name.clone().unwrap_or_default(), meta.namespace.clone().unwrap_or_default()),
                        "istio_version": "1.31.1",
                    }));
                }
            }
        }
        Value::Array(out)
    }
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
    let world = Arc::new(World {
        clusters: lab
            .planes()
            .iter()
            .map(|p| Cluster {
                name: p.name.clone(),
                target: Target::of(p),
            })
            .collect(),
        tools: lab.tools.dir.path().to_path_buf(),
    });
    let drained: Arc<Mutex<HashSet<String>>> = Arc::default();
    let counter = Arc::new(Mutex::new(0usize));
    for (i, proxy) in lab.proxies().iter().enumerate() {
        let (shared, drained, counter) = (world.clone(), drained.clone(), counter.clone());
        proxy.set_exec_handler(Arc::new(move |req: ExecRequest| {
            let (world, drained, counter) = (shared.clone(), drained.clone(), counter.clone());
            Box::pin(async move { answer(i, &world, &drained, &counter, req).await })
        }));
        let world = world.clone();
        proxy.set_syncz_handler(Arc::new(move |_pod: &str| {
            let world = world.clone();
            Box::pin(async move { world.syncz(i).await })
        }));
    }
}

async fn answer(
    i: usize,
    world: &World,
    drained: &Mutex<HashSet<String>>,
    counter: &Mutex<usize>,
    req: ExecRequest,
) -> ExecResult {
    let clusters = &world.clusters;
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
    // The istiod configuring this caller holds the rules and sees the endpoints; without one the
    // proxy has no configuration and every call fails.
    let Some(cp) = world.control_plane(&clients, i).await else {
        return ExecResult {
            stdout: "no healthy upstream".to_string()
                + &write_out_format(&command).replace("%{http_code}", "503"),
            ..Default::default()
        };
    };
    let config = &clients[cp];
    let mesh = mesh_config(config).await;
    let local = if visible(&mesh, me).await {
        helloworld(me, &drained_now).await
    } else {
        None
    };
    let mut remotes = Vec::new();
    let stay_local = cluster_local(config).await;
    for (j, other) in clusters.iter().enumerate() {
        if j != i
            && !stay_local
            && (j == cp || holds_secret_of(config, &other.name).await)
            && world.reachable(&clients, i, j).await
            && visible(&mesh, &clients[j]).await
            && (network(me).await == network(&clients[j]).await
                || exported_to(
                    &target_gateway_mesh(world, &clients, j).await,
                    &clients[j],
                    "istio-system",
                )
                .await)
            && let Some((pod, version)) = helloworld(&clients[j], &drained_now).await
        {
            remotes.push((pod, version, region(&clients[j]).await, other.name.clone()));
        }
    }
    // A VirtualService that routes this caller to a subset pinned to one cluster.
    let mut local = local;
    if let Some(only) = routed_cluster(config, &mesh, &clusters[i].name).await {
        if only != clusters[i].name {
            local = None;
        }
        remotes.retain(|r| r.3 == only);
    }
    let rules = Api::<DynamicObject>::namespaced_with(
        config.clone(),
        "sample",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule"),
            "destinationrules",
        ),
    );
    // The one rule istiod gives the caller's proxy for the host: every rule that applies, merged
    // as istiod merges them (the oldest one's traffic policy wins).
    let visible_rules: Vec<Value> = rules
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|r| serde_json::to_value(r).unwrap_or_default())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|dr| applies(dr, &mesh, "defaultDestinationRuleExportTo"))
        .collect();
    let rule: Option<Value> = crate::support::played_destination_rules::merged(
        &visible_rules,
        "helloworld.sample.svc.cluster.local",
    );
    let distribute = match &rule {
        Some(dr)
            if dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distribute"].is_array() =>
        {
            let mut candidates = Vec::new();
            if let Some((pod, version)) = &local {
                candidates.push((pod.clone(), version.clone(), locality(me).await));
            }
            for r in &remotes {
                let j = clusters.iter().position(|c| c.name == r.3).unwrap_or(0);
                candidates.push((r.0.clone(), r.1.clone(), locality(&clients[j]).await));
            }
            distributed(dr, &locality(me).await, &candidates)
        }
        _ => None,
    };
    let targets: Vec<(String, String)> = match rule {
        _ if distribute.is_some() => distribute.unwrap_or_default(),
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
