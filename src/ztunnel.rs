//! What ztunnel itself knows, in an ambient mesh: its config dump on its admin port, asked as
//! `istioctl ztunnel-config` asks it (Istio `istioctl/pkg/ztunnelconfig/ztunnelconfig.go`: a
//! port-forward to a ztunnel pod, port 15000, path `/config_dump`). For a host, the networks whose
//! workloads ztunnel would send its calls to: its own network's pods, and for each other network
//! the "split horizon" workload istiod makes of that network's east-west gateway
//! (`pilot/pkg/serviceregistry/ambient/multicluster.go`, `createSplitHorizonWorkload`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Client;
use serde::Deserialize;

use crate::kube::port_forward;

/// ztunnel's admin port (istioctl's `DefaultProxyAdminPort`).
const ADMIN_PORT: u16 = 15000;

/// How long one ztunnel may take to answer.
const ASK_BOUND: Duration = Duration::from_secs(10);

/// The part of ztunnel's `/config_dump` read here (field names as istioctl reads them:
/// `istioctl/pkg/writer/ztunnel/configdump/api.go`).
#[derive(Debug, Default, Deserialize)]
pub struct ConfigDump {
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
}

/// A service ztunnel knows, with its endpoints by workload.
#[derive(Debug, Deserialize)]
pub struct Service {
    pub hostname: String,
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
}

#[derive(Debug, Deserialize)]
pub struct Endpoint {
    #[serde(rename = "workloadUid")]
    pub workload_uid: String,
}

/// A workload ztunnel knows, with the network it is in.
#[derive(Debug, Deserialize)]
pub struct Workload {
    pub uid: String,
    #[serde(default)]
    pub network: String,
}

impl ConfigDump {
    /// The networks of the workloads behind `hostname` (empty when ztunnel does not know it).
    pub fn networks_of(&self, hostname: &str) -> BTreeSet<String> {
        let network: BTreeMap<&str, &str> = self
            .workloads
            .iter()
            .map(|w| (w.uid.as_str(), w.network.as_str()))
            .collect();
        self.services
            .iter()
            .filter(|s| s.hostname == hostname)
            .flat_map(|s| s.endpoints.values())
            .filter_map(|e| network.get(e.workload_uid.as_str()))
            .map(|n| n.to_string())
            .collect()
    }
}

/// One ztunnel's view of a host: the pod that answered and the networks it would call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// `<namespace>/<pod>`.
    pub pod: String,
    pub networks: BTreeSet<String>,
}

/// What every running ztunnel pod in `namespace` (label `app=ztunnel`) knows of `hostname`; each
/// node has its own ztunnel, and each is asked.
pub async fn views_of(client: &Client, namespace: &str, hostname: &str) -> Result<Vec<HostView>, String> {
    let dumps: Vec<(String, ConfigDump)> = port_forward::json_of_every_pod(
        client,
        (namespace, "ztunnel", "app=ztunnel"),
        |_| ADMIN_PORT,
        "/config_dump",
        ASK_BOUND,
    )
    .await?;
    Ok(dumps
        .into_iter()
        .map(|(pod, dump)| HostView {
            networks: dump.networks_of(hostname),
            pod,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump of the shape istioctl reads: a local pod of network1, and network2's gateway as a
    /// split-horizon workload; a workload of no service of the host does not count.
    #[test]
    fn the_networks_of_a_host_are_those_of_its_endpoints_workloads() {
        let dump: ConfigDump = serde_json::from_value(serde_json::json!({
            "services": [
                {"hostname": "helloworld.sample.svc.cluster.local", "endpoints": {
                    "cluster1//Pod/sample/helloworld-v1-abc": {"workloadUid": "cluster1//Pod/sample/helloworld-v1-abc", "service": "", "port": {"5000": 5000}},
                    "network2/SplitHorizonWorkload/istio-system/istio-eastwestgateway/172.18.254.1/sample/helloworld.sample.svc.cluster.local":
                        {"workloadUid": "network2/SplitHorizonWorkload/istio-system/istio-eastwestgateway/172.18.254.1/sample/helloworld.sample.svc.cluster.local"}}},
                {"hostname": "curl.sample.svc.cluster.local", "endpoints": {
                    "cluster1//Pod/sample/curl-x": {"workloadUid": "cluster1//Pod/sample/curl-x"}}}],
            "workloads": [
                {"uid": "cluster1//Pod/sample/helloworld-v1-abc", "network": "network1"},
                {"uid": "network2/SplitHorizonWorkload/istio-system/istio-eastwestgateway/172.18.254.1/sample/helloworld.sample.svc.cluster.local", "network": "network2"},
                {"uid": "cluster1//Pod/sample/curl-x", "network": "network3"}],
            "policies": [], "certificates": []
        }))
        .unwrap();
        let seen: Vec<String> = dump
            .networks_of("helloworld.sample.svc.cluster.local")
            .into_iter()
            .collect();
        assert_eq!(seen, ["network1", "network2"]);
        assert!(dump.networks_of("nothing.sample.svc.cluster.local").is_empty());
    }
}
