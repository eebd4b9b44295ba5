//! The data plane a mesh runs: sidecars injected into every pod, or Istio's ambient mode (a
//! ztunnel per node and the istio-cni node agent, no sidecars), and what ambient multicluster
//! supports in Istio 1.31.

use serde::{Deserialize, Serialize};

use super::{Mesh, Problem, Role, push};

/// The data plane of every cluster of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    /// An Envoy sidecar injected into every workload pod (namespace label `istio-injection`).
    #[default]
    Sidecar,
    /// Istio's ambient mode: ztunnel on every node carries workload traffic over HBONE, pods
    /// join by the namespace label `istio.io/dataplane-mode=ambient`, and other networks are
    /// reached through a Gateway API east-west gateway (`profile: ambient`).
    Ambient,
}

impl Dataplane {
    pub fn is_sidecar(&self) -> bool {
        *self == Dataplane::Sidecar
    }

    /// Its name, as meshctl.yaml and `--dataplane` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Dataplane::Sidecar => "sidecar",
            Dataplane::Ambient => "ambient",
        }
    }
}

/// Where Istio's guide for ambient multicluster says what it supports: multi-primary on different
/// networks, alpha (istio.io, docs/ambient/install/multicluster).
const SUPPORTED: &str = "Istio 1.31's ambient multicluster supports one shape: multi-primary, every cluster on a network of its own (istio.io, ambient multicluster install guide)";

/// What an ambient mesh cannot be in Istio 1.31, each with the reason; empty for a sidecar mesh.
pub(super) fn problems(mesh: &Mesh) -> Vec<Problem> {
    let mut problems = Vec::new();
    if mesh.dataplane.is_sidecar() {
        return problems;
    }
    for (i, c) in mesh.clusters.iter().enumerate() {
        if c.role != Role::Primary {
            let role = if c.role == Role::Remote {
                "remote"
            } else {
                "external"
            };
            let reason = format!(
                "is not supported with `dataplane: ambient`: {SUPPORTED}; primary-remote and an external control plane are sidecar-only"
            );
            push(&mut problems, format!("clusters[{i}].role"), role, &reason);
        }
    }
    // One network per cluster: ambient reaches another cluster's workloads only through the
    // east-west gateway of that cluster's network, and istiod keeps only the first gateway of a
    // network it finds (pilot/pkg/serviceregistry/ambient/multicluster.go: "Multiple gateways
    // found for network …, using the first one").
    for (i, c) in mesh.clusters.iter().enumerate() {
        if let Some(first) = mesh.clusters[..i].iter().find(|o| o.network == c.network) {
            let reason = format!(
                "is also {}'s network, which `dataplane: ambient` does not allow: {SUPPORTED}",
                first.name
            );
            push(
                &mut problems,
                format!("clusters[{i}].network"),
                &c.network,
                &reason,
            );
        }
        // istiod makes the gateway's Deployment and LoadBalancer Service from the Gateway, and
        // the others find it by the Gateway's status addresses (gatewaycommon/classinfo.go,
        // ambient/networks.go `remoteK8sGatewayToNetworkGateways`): nothing to declare.
        if c.eastwest != super::Eastwest::default() {
            let reason = "is not supported with `dataplane: ambient`: istiod makes the east-west gateway's LoadBalancer Service itself, and the other clusters find it by its Gateway's status addresses, not by a declared address or a NodePort";
            push(&mut problems, format!("clusters[{i}].eastwest"), "set", reason);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(yaml: &str) -> Vec<String> {
        match Mesh::from_yaml(yaml, None) {
            Ok(_) => Vec::new(),
            Err(super::super::TopologyError::Invalid(problems)) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn ambient_is_multi_primary_with_a_network_per_cluster() {
        assert!(problems_of("dataplane: ambient\nclusters:\n  - {}\n  - {}\n").is_empty());
        assert!(problems_of("dataplane: ambient\nclusters:\n  - {}\n").is_empty());
        let remote = problems_of("dataplane: ambient\nclusters:\n  - {}\n  - {role: remote}\n");
        assert!(
            remote.len() == 1
                && remote[0].starts_with("clusters[1].role: `remote`")
                && remote[0].contains("primary-remote"),
            "{remote:?}"
        );
        let external =
            problems_of("dataplane: ambient\nclusters:\n  - {role: external}\n  - {role: remote}\n");
        assert!(
            external
                .iter()
                .any(|p| p.starts_with("clusters[0].role: `external`")),
            "{external:?}"
        );
        let shared = problems_of("dataplane: ambient\nclusters:\n  - {network: n1}\n  - {network: n1}\n");
        assert!(
            shared.len() == 1
                && shared[0].starts_with("clusters[1].network: `n1`")
                && shared[0].contains("cluster1's network"),
            "{shared:?}"
        );
        let declared =
            problems_of("dataplane: ambient\nclusters:\n  - {eastwest: {address: 192.0.2.10}}\n  - {}\n");
        assert!(
            declared.iter().any(|p| p.starts_with("clusters[0].eastwest")),
            "{declared:?}"
        );
        // The same shapes are a sidecar mesh's to have.
        assert!(problems_of("clusters:\n  - {network: n1}\n  - {network: n1}\n").is_empty());
    }

    #[test]
    fn the_flag_is_checked_like_the_file() {
        let mesh = Mesh::for_kind(2, "mesh1").unwrap();
        let ambient = mesh.clone().with_dataplane(Dataplane::Ambient).unwrap();
        assert!(ambient.dataplane_asked && !ambient.dataplane.is_sidecar());
        let remote = Mesh::from_yaml("clusters:\n  - {}\n  - {role: remote}\n", None).unwrap();
        assert!(remote.with_dataplane(Dataplane::Ambient).is_err());
    }
}
