//! ztunnel's `/config_dump` in an ambient multi-network mesh of in-process API servers: the
//! services and workloads istiod (istio/istio at release-1.31, `pilot/pkg/serviceregistry/
//! ambient/`) sends a cluster's ztunnels, in the shape istioctl reads them
//! (`istioctl/pkg/writer/ztunnel/configdump/api.go`). Each piece names what it follows:
//!
//! - Local services: every Service of the cluster, its endpoints the Ready pods its selector
//!   matches (ztunnel keeps healthy endpoints only: ztunnel `src/state/service.rs`
//!   `should_include_endpoint`; istiod marks a pod that is not Ready unhealthy: `workloads.go`
//!   `podWorkloadBuilder`), each a workload of the cluster's network (the
//!   `topology.istio.io/network` label of the cluster's istio-system: `networks.go`
//!   `LocalSystemNamespaceNetwork`).
//! - Other clusters: read only where this cluster holds their remote secret, found by its label
//!   `istio/multiCluster=true` (istiod's secret controller). A peer's service not global under the
//!   ambient profile's scope rule is dropped (`services.go` `serviceServiceBuilder`, played in
//!   `played_service_scope.rs`); a peer without a network label on its istio-system is in network
//!   `""` (`RemoteSystemNamespaceNetworks`), for which no gateway is found, so nothing of it is
//!   sent. A peer service is merged into the local service of the same host only when the
//!   local one is global too (`multicluster.go`: the local copy is the base, and a local scope
//!   takes no remote endpoints). (A peer's host with no local Service is not played: verify's
//!   Service is in every cluster.)
//! - A peer network's endpoints are one "split horizon" workload through that network's east-west
//!   gateway (`multicluster.go` `createSplitHorizonWorkload`, `helpers.go`
//!   `generateSplitHorizonWorkloadUID`), made only when the peer has pods of the service that are
//!   not finished and have an IP (`coalescedWorkloads`) and the network has a gateway: among every
//!   cluster's Gateways of class `istio-east-west` with the network's label, an HBONE listener in
//!   TLS mode Terminate and a status address of type IPAddress or Hostname, the first
//!   (`networks.go` `remoteK8sGatewayToNetworkGateways`, `GatewaysByNetwork`); else none ("No network
//!   gateway found"). One workload per network and service (a meshctl ambient mesh has one cluster
//!   per network).
//!
//! Not played: VIPs, ports, waypoints, policies and certificates (meshctl reads endpoints and
//! networks only).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::io::DuplexStream;

use super::memory_apiserver::MemoryApiServer;
use super::played_service_scope::{ambient_profile_scopes, is_global};

/// The ztunnels of one cluster, and the clusters of the mesh they may learn of.
pub struct PlayedZtunnel {
    pub cluster: String,
    peers: Mutex<Vec<(String, MemoryApiServer)>>,
}

impl PlayedZtunnel {
    pub fn new(cluster: &str) -> Arc<PlayedZtunnel> {
        Arc::new(PlayedZtunnel {
            cluster: cluster.to_string(),
            peers: Mutex::default(),
        })
    }

    /// The other clusters of the mesh, by name.
    pub fn knows(&self, peers: Vec<(String, MemoryApiServer)>) {
        *self.peers.lock().unwrap() = peers;
    }

    /// A connection to the admin port of a ztunnel pod of `own`: an HTTP server answering
    /// `/config_dump`.
    pub fn listen(self: &Arc<Self>, own: MemoryApiServer) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let ztunnel = self.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let body = match request.uri().path() {
                "/config_dump" => (200, ztunnel.config_dump(&own).to_string()),
                _ => (404, String::new()),
            };
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(body.0)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.1)))
                        .unwrap(),
                )
            }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(ours), service),
        );
        theirs
    }

    fn config_dump(&self, own: &MemoryApiServer) -> Value {
        let scopes = ambient_profile_scopes();
        let mut services: Vec<Value> = Vec::new();
        let mut workloads: Vec<Value> = Vec::new();
        let own_network = network_of(own);
        let peers = self.read_peers(own);
        // Every cluster istiod reads lends its Gateways to the networks' gateway list.
        let gateways: Vec<Value> = std::iter::once(own)
            .chain(peers.iter().map(|(_, s)| s))
            .flat_map(|s| s.objects_of("gateway.networking.k8s.io/v1", "gateways"))
            .collect();
        for service in own.objects_of("v1", "services") {
            let (mut endpoints, local) = pod_endpoints(own, &self.cluster, own_network.as_deref(), &service);
            workloads.extend(local);
            if is_global(&scopes, namespace_of(own, &service).as_ref(), &service) {
                for (peer, server) in &peers {
                    let (remote, workload) = split_horizon((server, peer), &gateways, &service, &scopes);
                    endpoints.extend(remote);
                    workloads.extend(workload);
                }
            }
            services.push(json!({"hostname": hostname(&service), "endpoints": Value::Object(endpoints)}));
        }
        json!({"services": services, "workloads": workloads, "policies": [], "certificates": []})
    }

    /// The peers whose remote secret this cluster holds: istiod watches the Secrets labelled
    /// `istio/multiCluster=true`, each keyed by the cluster it reads.
    fn read_peers(&self, own: &MemoryApiServer) -> Vec<(String, MemoryApiServer)> {
        let secrets = own.objects("v1", "secrets", "istio-system");
        self.peers
            .lock()
            .unwrap()
            .iter()
            .filter(|(peer, _)| {
                secrets.iter().any(|s| {
                    s["metadata"]["labels"]["istio/multiCluster"] == "true"
                        && s["data"].get(peer.as_str()).is_some()
                })
            })
            .cloned()
            .collect()
    }
}

fn hostname(service: &Value) -> String {
    format!(
        "{}.{}.svc.cluster.local",
        service["metadata"]["name"].as_str().unwrap_or_default(),
        service["metadata"]["namespace"].as_str().unwrap_or_default()
    )
}

/// The `topology.istio.io/network` label of the cluster's istio-system.
fn network_of(server: &MemoryApiServer) -> Option<String> {
    server
        .object("v1", "namespaces", "", "istio-system")
        .and_then(|ns| {
            ns["metadata"]["labels"]["topology.istio.io/network"]
                .as_str()
                .map(String::from)
        })
        .filter(|n| !n.is_empty())
}

fn namespace_of(server: &MemoryApiServer, service: &Value) -> Option<Value> {
    server.object(
        "v1",
        "namespaces",
        "",
        service["metadata"]["namespace"].as_str().unwrap_or_default(),
    )
}

/// The pods `service` selects.
fn selected_pods(server: &MemoryApiServer, service: &Value) -> Vec<Value> {
    let namespace = service["metadata"]["namespace"].as_str().unwrap_or_default();
    let Some(selector) = service["spec"]["selector"].as_object() else {
        return Vec::new();
    };
    server
        .objects("v1", "pods", namespace)
        .into_iter()
        .filter(|p| selector.iter().all(|(k, v)| &p["metadata"]["labels"][k] == v))
        .collect()
}

/// A pod with its Ready condition True.
fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A pod not finished that has an IP.
fn counted_remotely(pod: &Value) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    phase != "Succeeded"
        && phase != "Failed"
        && pod["status"]["podIP"].as_str().is_some_and(|ip| !ip.is_empty())
}

/// The endpoints and workloads of `service`'s own Ready pods.
fn pod_endpoints(
    server: &MemoryApiServer,
    cluster: &str,
    network: Option<&str>,
    service: &Value,
) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let mut endpoints = serde_json::Map::new();
    let mut workloads = Vec::new();
    for pod in selected_pods(server, service).into_iter().filter(ready) {
        let uid = format!(
            "{cluster}//Pod/{}/{}",
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            pod["metadata"]["name"].as_str().unwrap_or_default()
        );
        endpoints.insert(uid.clone(), json!({"workloadUid": uid}));
        workloads.push(json!({"uid": uid, "network": network.unwrap_or_default(), "clusterId": cluster}));
    }
    (endpoints, workloads)
}

/// The split-horizon endpoint of `service`'s host in `peer`: its global service of that host, with
/// pods counted there, reached through its network's east-west gateway.
fn split_horizon(
    (server, peer): (&MemoryApiServer, &str),
    gateways: &[Value],
    service: &Value,
    scopes: &Value,
) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let mut endpoints = serde_json::Map::new();
    let namespace = service["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = service["metadata"]["name"].as_str().unwrap_or_default();
    let Some(theirs) = server.object("v1", "services", namespace, name) else {
        return (endpoints, Vec::new());
    };
    let network = network_of(server).unwrap_or_default();
    let Some(address) = gateway_address(gateways, &network) else {
        return (endpoints, Vec::new());
    };
    if !is_global(scopes, namespace_of(server, &theirs).as_ref(), &theirs)
        || !selected_pods(server, &theirs).iter().any(counted_remotely)
    {
        return (endpoints, Vec::new());
    }
    let uid = format!(
        "{network}/SplitHorizonWorkload/istio-system/istio-eastwestgateway/{address}/{namespace}/{}",
        hostname(service)
    );
    endpoints.insert(uid.clone(), json!({"workloadUid": uid}));
    let workload = json!({"uid": uid, "network": network, "clusterId": peer,
        "networkGateway": {"destination": format!("{network}/{address}"), "hboneMtlsPort": 15008}});
    (endpoints, vec![workload])
}

/// The address of `network`'s east-west gateway as istiod reads it from the clusters' Gateways:
/// of the class, labelled with the network, with an HBONE listener whose TLS mode is Terminate, the
/// first status address of type IPAddress or Hostname.
fn gateway_address(gateways: &[Value], network: &str) -> Option<String> {
    if network.is_empty() {
        return None;
    }
    gateways
        .iter()
        .filter(|g| g["spec"]["gatewayClassName"] == super::played_eastwest::CLASS)
        .filter(|g| g["metadata"]["labels"]["topology.istio.io/network"] == network)
        .filter(|g| {
            g["spec"]["listeners"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["protocol"] == "HBONE" && l["tls"]["mode"] == "Terminate")
        })
        .flat_map(|g| g["status"]["addresses"].as_array().cloned().unwrap_or_default())
        .find(|a| a["type"] == "IPAddress" || a["type"] == "Hostname")
        .and_then(|a| a["value"].as_str().map(String::from))
}
