//! How other networks reach a cluster's east-west gateway: a LoadBalancer address (MetalLB on
//! kind, the cloud's elsewhere), or an address the user declares (a node port on bare metal, a
//! NAT or DNS name in front of the gateway).
//!
//! istiod finds a network's gateways two ways, and merges them (Istio `pilot/pkg/model/network.go`,
//! `NetworkManager.reload`): from the gateway Service's LoadBalancer status, and from the static
//! `meshNetworks` gateways (`address`, `port`). A NodePort Service alone is not enough: istiod takes
//! only a node's `ExternalIP` for it (`pilot/pkg/serviceregistry/kube/controller`, the node
//! handler), which kind and many on-premises nodes do not have. So a declared address always goes
//! into `meshNetworks` of every istiod, where no node lookup is needed.

use serde::{Deserialize, Serialize};

use super::{Mesh, Problem, dns1123_label_problem};

/// The Service type of the east-west gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum GatewayService {
    #[default]
    LoadBalancer,
    NodePort,
}

/// Node port of the gateway's cross-network port (15443) when the Service is a NodePort: fixed,
/// so the plan can name it in `meshNetworks` before the Service exists.
pub const DEFAULT_NODE_PORT: u16 = 31443;

/// The east-west gateway's Deployment and Service (the name Istio's multicluster samples give it).
pub const GATEWAY_NAME: &str = "istio-eastwestgateway";

/// A cluster's east-west gateway, as the topology declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Eastwest {
    pub service: GatewayService,
    /// With `NodePort`: the node port of 15443.
    pub node_port: u16,
    /// The address other networks dial; with a LoadBalancer and no address, the Service's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Default for Eastwest {
    fn default() -> Self {
        Eastwest {
            service: GatewayService::LoadBalancer,
            node_port: DEFAULT_NODE_PORT,
            address: None,
        }
    }
}

impl Eastwest {
    /// The address and port other networks dial, when declared rather than read from a
    /// LoadBalancer.
    pub fn declared(&self) -> Option<(&str, u16)> {
        let port = match self.service {
            GatewayService::NodePort => self.node_port,
            GatewayService::LoadBalancer => 15443,
        };
        self.address.as_deref().map(|a| (a, port))
    }
}

/// `eastwest:` of one cluster in meshctl.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct EastwestFile {
    service: Option<GatewayService>,
    node_port: Option<u16>,
    address: Option<String>,
}

/// The gateway of the cluster at `i` from its file entry; what is wrong goes to `problems`.
pub(super) fn from_file(i: usize, file: Option<EastwestFile>, problems: &mut Vec<Problem>) -> Eastwest {
    let Some(file) = file else {
        return Eastwest::default();
    };
    let field = |f: &str| format!("clusters[{i}].eastwest.{f}");
    let eastwest = Eastwest {
        service: file.service.unwrap_or_default(),
        node_port: file.node_port.unwrap_or(DEFAULT_NODE_PORT),
        address: file.address,
    };
    // The API server's default node port range (`--service-node-port-range`).
    if !(30000..=32767).contains(&eastwest.node_port) {
        problems.push(Problem {
            field: field("nodePort"),
            value: eastwest.node_port.to_string(),
            reason: "is outside the node port range 30000-32767".into(),
        });
    }
    if file.node_port.is_some() && eastwest.service != GatewayService::NodePort {
        problems.push(Problem {
            field: field("nodePort"),
            value: eastwest.node_port.to_string(),
            reason: "is only for `service: NodePort`".into(),
        });
    }
    match &eastwest.address {
        None if eastwest.service == GatewayService::NodePort => problems.push(Problem {
            field: field("address"),
            value: String::new(),
            reason: "is required with `service: NodePort`: the address of a node the other networks reach (istiod would use only a node's ExternalIP, which kind and many on-premises nodes lack)".into(),
        }),
        Some(address) if address_problem(address) => problems.push(Problem {
            field: field("address"),
            value: address.clone(),
            reason: "is not an IP address or a DNS name (no scheme, no port: the port is 15443, or nodePort)".into(),
        }),
        Some(address) if address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) => {
            problems.push(Problem {
                field: field("address"),
                value: address.clone(),
                reason: "names no machine: give the address the other networks dial (a node's, or what fronts the gateway)".into(),
            })
        }
        // Dialled from another cluster's pods, a loopback address is that pod itself.
        Some(address) if loopback(address) => problems.push(Problem {
            field: field("address"),
            value: address.clone(),
            reason: "is loopback: the other clusters' proxies would dial themselves; give the address they reach this gateway at (a node's, or what fronts the gateway)".into(),
        }),
        _ => {}
    }
    eastwest
}

fn loopback(address: &str) -> bool {
    let name = address.trim_end_matches('.').to_ascii_lowercase();
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
        || name == "localhost"
        || name.ends_with(".localhost")
}

fn address_problem(address: &str) -> bool {
    address.parse::<std::net::IpAddr>().is_err()
        && (address.is_empty() || address.split('.').any(|l| dns1123_label_problem(l).is_some()))
}

/// One network in `meshNetworks`: the clusters whose endpoints are in it, and its declared
/// gateways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredNetwork {
    pub network: String,
    pub registries: Vec<String>,
    pub gateways: Vec<DeclaredGateway>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredGateway {
    pub address: String,
    pub port: u16,
}

impl Mesh {
    /// The networks whose gateways are declared, for every istiod's `meshNetworks`, in topology
    /// order; empty when every gateway is found from its LoadBalancer.
    pub fn declared_networks(&self) -> Vec<DeclaredNetwork> {
        let mut out: Vec<DeclaredNetwork> = Vec::new();
        for c in self.clusters.iter().filter(|c| self.needs_eastwest(c)) {
            let Some((address, port)) = c.eastwest.declared() else {
                continue;
            };
            let gateway = DeclaredGateway {
                address: address.to_string(),
                port,
            };
            match out.iter_mut().find(|n| n.network == c.network) {
                Some(n) => n.gateways.push(gateway),
                None => out.push(DeclaredNetwork {
                    network: c.network.clone(),
                    registries: self
                        .clusters
                        .iter()
                        .filter(|o| o.network == c.network)
                        .map(|o| o.name.clone())
                        .collect(),
                    gateways: vec![gateway],
                }),
            }
        }
        out
    }

    /// A remote reaches its primary's istiod through the primary's gateway on 15012 and 15017,
    /// which a NodePort gateway does not publish on fixed ports. And an `eastwest:` where no
    /// gateway is made (one network, no remotes served) would be dropped without a word.
    pub(super) fn eastwest_problems(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.eastwest.service == GatewayService::NodePort && self.controls_remotes(c))
            .map(|(i, c)| Problem {
                field: format!("clusters[{i}].eastwest.service"),
                value: "NodePort".into(),
                reason: format!(
                    "cannot serve the remotes of `{}`: they reach its istiod through the gateway on 15012 and 15017; use a LoadBalancer (with `address` if it is fronted)",
                    c.name
                ),
            })
            .collect();
        problems.extend(
            self.clusters
                .iter()
                .enumerate()
                .filter(|(_, c)| c.eastwest != Eastwest::default() && !self.needs_eastwest(c))
                .map(|(i, c)| Problem {
                    field: format!("clusters[{i}].eastwest"),
                    value: String::new(),
                    reason: format!(
                        "is set, but `{}` gets no east-west gateway: every cluster is on network `{}` and it configures no remote; remove it, or put clusters on networks of their own",
                        c.name, c.network
                    ),
                }),
        );
        // One address and port reaches one gateway, in one network. istiod keeps both entries
        // and sends each network's endpoints to that address, so both networks' traffic lands on
        // whichever gateway owns it, which forwards only into its own network.
        let declared: Vec<(usize, &super::Cluster, (&str, u16))> = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| self.needs_eastwest(c))
            .filter_map(|(i, c)| Some((i, c, c.eastwest.declared()?)))
            .collect();
        for (n, (i, c, at)) in declared.iter().enumerate() {
            if let Some((_, first, _)) = declared[..n]
                .iter()
                .find(|(_, o, other_at)| other_at == at && o.network != c.network)
            {
                problems.push(Problem {
                    field: format!("clusters[{i}].eastwest"),
                    value: format!("{}:{}", at.0, at.1),
                    reason: format!(
                        "is also the gateway of `{}` on network `{}`: one address and port reach one gateway, which forwards only into its own network, so `{}` on `{}` needs its own",
                        first.name, first.network, c.name, c.network
                    ),
                });
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(yaml: &str) -> Vec<String> {
        match Mesh::from_yaml(yaml, Some("m")) {
            Ok(_) => Vec::new(),
            Err(super::super::TopologyError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_eastwest_gateway_where_none_is_made_is_refused() {
        let problems = problems_of(
            "clusters:\n  - {network: n1, eastwest: {address: gw.example.com}}\n  - {network: n1}\n",
        );
        assert!(
            problems.len() == 1
                && problems[0].contains("clusters[0].eastwest")
                && problems[0].contains("no east-west gateway"),
            "{problems:?}"
        );
        // A primary serving a remote on its network has a gateway (for istiod): accepted.
        assert!(problems_of("clusters:\n  - {network: n1, eastwest: {address: gw.example.com}}\n  - {network: n1, role: remote}\n").is_empty());
    }

    #[test]
    fn two_networks_cannot_share_one_gateway_address_and_port() {
        let problems = problems_of(
            "clusters:\n  - {network: n1, eastwest: {service: NodePort, address: 10.0.0.5, nodePort: 31000}}\n  - {network: n2, eastwest: {service: NodePort, address: 10.0.0.5, nodePort: 31000}}\n",
        );
        assert!(
            problems.len() == 1
                && problems[0].contains("clusters[1].eastwest")
                && problems[0].contains("10.0.0.5:31000")
                && problems[0].contains("also the gateway of `cluster1` on network `n1`"),
            "{problems:?}"
        );
        // Another port of the same machine is another gateway.
        assert!(problems_of(
            "clusters:\n  - {network: n1, eastwest: {service: NodePort, address: 10.0.0.5, nodePort: 31000}}\n  - {network: n2, eastwest: {service: NodePort, address: 10.0.0.5, nodePort: 31001}}\n",
        )
        .is_empty());
    }

    #[test]
    fn a_loopback_address_is_refused() {
        for address in ["127.0.0.1", "127.1.2.3", "'::1'", "localhost", "gw.localhost"] {
            let problems = problems_of(&format!(
                "clusters:\n  - eastwest: {{service: NodePort, address: {address}}}\n  - {{}}\n"
            ));
            assert!(
                problems.len() == 1
                    && problems[0].contains("clusters[0].eastwest.address")
                    && problems[0].contains("is loopback"),
                "{address}: {problems:?}"
            );
        }
    }

    #[test]
    fn an_address_that_names_no_machine_is_refused() {
        for address in ["0.0.0.0", "'::'"] {
            let problems = problems_of(&format!(
                "clusters:\n  - eastwest: {{address: {address}}}\n  - {{}}\n"
            ));
            assert!(
                problems.len() == 1
                    && problems[0].contains("clusters[0].eastwest.address")
                    && problems[0].contains("names no machine"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn a_node_port_gateway_needs_an_address_and_a_port_in_range() {
        let problems = problems_of("clusters:\n  - eastwest: {service: NodePort, nodePort: 80}\n  - {}\n");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("clusters[0].eastwest.nodePort") && problems[0].contains("30000-32767"));
        assert!(problems[1].contains("clusters[0].eastwest.address") && problems[1].contains("required"));
        assert!(
            problems_of("clusters:\n  - eastwest: {address: 'https://x:1'}\n  - {}\n")[0]
                .contains("not an IP address")
        );
        assert!(
            problems_of("clusters:\n  - eastwest: {nodePort: 31000}\n  - {}\n")[0]
                .contains("only for `service: NodePort`")
        );
        assert_eq!(
            problems_of(
                "clusters:\n  - eastwest: {service: NodePort, address: 172.18.0.2}\n  - eastwest: {address: gw.example.com}\n"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn declared_gateways_are_listed_per_network_with_their_port() {
        let mesh = Mesh::from_yaml(
            "clusters:\n  - eastwest: {service: NodePort, address: 172.18.0.2}\n  - eastwest: {address: gw.example.com}\n  - {}\n",
            Some("m"),
        )
        .unwrap();
        let declared = mesh.declared_networks();
        assert_eq!(
            declared.len(),
            2,
            "the third gateway is found from its LoadBalancer"
        );
        assert_eq!(declared[0].network, "network1");
        assert_eq!(declared[0].registries, ["cluster1"]);
        assert_eq!(
            declared[0].gateways,
            [DeclaredGateway {
                address: "172.18.0.2".into(),
                port: DEFAULT_NODE_PORT
            }]
        );
        assert_eq!(declared[1].gateways[0].port, 15443);
    }

    #[test]
    fn a_node_port_primary_cannot_serve_remotes() {
        let problems = problems_of(
            "clusters:\n  - eastwest: {service: NodePort, address: 172.18.0.2}\n  - {role: remote}\n",
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("cannot serve the remotes of `cluster1`"));
        assert_eq!(
            Mesh::for_kind(2, "m").unwrap().clusters[0].eastwest,
            Eastwest::default()
        );
    }
}
