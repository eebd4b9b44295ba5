//! ztunnel's `/config_dump` in an ambient multi-network mesh of in-process API servers: the
//! services and workloads istiod (istio/istio at release-1.31, `pilot/pkg/serviceregistry/
//! ambient/`) sends a cluster's ztunnels, in the shape istioctl reads them
//! (`istioctl/pkg/writer/ztunnel/configdump/api.go`). Each piece names what it follows:
//!
//! - Local services: every Service of the cluster, its endpoints the Running pods its selector
//!   matches, each a workload of the cluster's network (`workloads.go`; the network is the
//!   `topology.istio.io/network` label of the cluster's istio-system: `networks.go`
//!   `LocalSystemNamespaceNetwork`).
//! - Other clusters: read only where this cluster holds their remote secret (istiod's secret
//!   controller). A peer's service not global under the ambient profile's scope rule is dropped
//!   (`services.go` `serviceServiceBuilder`, played in `played_service_scope.rs`); a peer without a
//!   network label on its istio-system is skipped ("does not have a network, skipping global
//!   workloads"). A peer service is merged into the local service of the same host only when the
//!   local one is global too (`multicluster.go`: the local copy is the base, and a local scope
//!   takes no remote endpoints). (A peer's host with no local Service is not played: verify's
//!   Service is in every cluster.)
//! - A peer network's endpoints are one "split horizon" workload through that network's east-west
//!   gateway (`multicluster.go` `createSplitHorizonWorkload`, `helpers.go`
//!   `generateSplitHorizonWorkloadUID`), made only when the peer has Running endpoints and a
//!   gateway: a Gateway of class `istio-east-west` labelled with the network, with an HBONE
//!   listener in TLS Terminate and an address in its status (`networks.go`
//!   `remoteK8sGatewayToNetworkGateways`); else none ("No network gateway found").
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
        for service in own.objects_of("v1", "services") {
            let (mut endpoints, local) = pod_endpoints(own, &self.cluster, own_network.as_deref(), &service);
            workloads.extend(local);
            let global = is_global(&scopes, namespace_of(own, &service).as_ref(), &service);
            if global {
                for (peer, server) in self.read_peers(own) {
                    let (remote, workload) = split_horizon(&server, &peer, &service, &scopes);
                    endpoints.extend(remote);
                    workloads.extend(workload);
                }
            }
            services.push(json!({"hostname": hostname(&service), "endpoints": Value::Object(endpoints)}));
        }
        json!({"services": services, "workloads": workloads, "policies": [], "certificates": []})
    }

    /// The peers whose remote secret this cluster holds (istiod watches only those).
    fn read_peers(&self, own: &MemoryApiServer) -> Vec<(String, MemoryApiServer)> {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .filter(|(peer, _)| {
                own.object(
                    "v1",
                    "secrets",
                    "istio-system",
                    &format!("istio-remote-secret-{peer}"),
                )
                .is_some()
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

/// The Running pods `service` selects.
fn selected_pods(server: &MemoryApiServer, service: &Value) -> Vec<Value> {
    let namespace = service["metadata"]["namespace"].as_str().unwrap_or_default();
    let Some(selector) = service["spec"]["selector"].as_object() else {
        return Vec::new();
    };
    server
        .objects("v1", "pods", namespace)
        .into_iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter(|p| selector.iter().all(|(k, v)| &p["metadata"]["labels"][k] == v))
        .collect()
}

/// The endpoints and workloads of `service`'s own pods.
fn pod_endpoints(
    server: &MemoryApiServer,
    cluster: &str,
    network: Option<&str>,
    service: &Value,
) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let mut endpoints = serde_json::Map::new();
    let mut workloads = Vec::new();
    for pod in selected_pods(server, service) {
        let uid = format!(
            "{cluster}//Pod/{}/{}",
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            pod["metadata"]["name"].as_str().unwrap_or_default()
        );
        endpoints.insert(
            uid.clone(),
            json!({"workloadUid": uid, "service": hostname(service)}),
        );
        workloads.push(json!({"uid": uid, "network": network.unwrap_or_default(), "clusterId": cluster}));
    }
    (endpoints, workloads)
}

/// The split-horizon endpoint of `service`'s host in `peer`: its global service of that host, with
/// Running endpoints, reached through its network's east-west gateway.
fn split_horizon(
    server: &MemoryApiServer,
    peer: &str,
    service: &Value,
    scopes: &Value,
) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let mut endpoints = serde_json::Map::new();
    let namespace = service["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = service["metadata"]["name"].as_str().unwrap_or_default();
    let Some(theirs) = server.object("v1", "services", namespace, name) else {
        return (endpoints, Vec::new());
    };
    let (Some(network), Some(address)) = (network_of(server), gateway_address(server)) else {
        return (endpoints, Vec::new());
    };
    if !is_global(scopes, namespace_of(server, &theirs).as_ref(), &theirs)
        || selected_pods(server, &theirs).is_empty()
    {
        return (endpoints, Vec::new());
    }
    let uid = format!(
        "{network}/SplitHorizonWorkload/istio-system/istio-eastwestgateway/{address}/{namespace}/{}",
        hostname(service)
    );
    endpoints.insert(
        uid.clone(),
        json!({"workloadUid": uid, "service": hostname(service)}),
    );
    let workload = json!({"uid": uid, "network": network, "clusterId": peer,
        "networkGateway": {"destination": format!("{network}/{address}"), "hboneMtlsPort": 15008}});
    (endpoints, vec![workload])
}

/// The address of the cluster's east-west gateway as other istiods read it: a Gateway of the
/// class, labelled with the cluster's network, with an HBONE Terminate listener, from its status.
fn gateway_address(server: &MemoryApiServer) -> Option<String> {
    let network = network_of(server)?;
    server
        .objects_of("gateway.networking.k8s.io/v1", "gateways")
        .into_iter()
        .filter(|g| g["spec"]["gatewayClassName"] == super::played_eastwest::CLASS)
        .filter(|g| g["metadata"]["labels"]["topology.istio.io/network"] == network.as_str())
        .filter(|g| {
            g["spec"]["listeners"].as_array().into_iter().flatten().any(|l| {
                l["protocol"] == "HBONE"
                    && l["tls"].is_object()
                    && l["tls"]["mode"].as_str().unwrap_or("Terminate") == "Terminate"
            })
        })
        .find_map(|g| g["status"]["addresses"][0]["value"].as_str().map(String::from))
}
