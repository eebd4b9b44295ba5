//! `docker`: the `kind` network's subnets and containers, a node container's address.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde_json::Value;

use super::{RunOptions, ToolError, ToolRunner};

/// The docker network kind puts its nodes on: `KIND_EXPERIMENTAL_DOCKER_NETWORK` when set (kind
/// reads the same variable in `pkg/cluster/internal/providers/docker/network.go`), else `kind`.
/// The command layer resolves it once and hands it to everything that needs it.
pub fn kind_network() -> String {
    std::env::var("KIND_EXPERIMENTAL_DOCKER_NETWORK")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "kind".into())
}

/// What `docker network inspect` says about a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerNetwork {
    /// Every subnet of the network (IPv4 and IPv6, in docker's order).
    pub subnets: Vec<IpNet>,
    /// Containers attached, with their IPv4 address.
    pub containers: Vec<(String, IpAddr)>,
}

/// Parses `docker network inspect NAME` output.
pub fn parse_network_inspect(json: &str) -> Result<DockerNetwork, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let net = doc.get(0).ok_or("no network in the output")?;
    let subnets = net["IPAM"]["Config"]
        .as_array()
        .map(|configs| {
            configs
                .iter()
                .filter_map(|c| c["Subnet"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let containers = net["Containers"]
        .as_object()
        .map(|cs| {
            cs.values()
                .filter_map(|c| {
                    let ip = c["IPv4Address"].as_str()?.split('/').next()?.parse().ok()?;
                    Some((c["Name"].as_str().unwrap_or_default().to_string(), ip))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(DockerNetwork { subnets, containers })
}

pub struct Docker<'a> {
    runner: &'a dyn ToolRunner,
}

impl<'a> Docker<'a> {
    /// Over `runner`.
    pub fn new(runner: &'a dyn ToolRunner) -> Docker<'a> {
        Docker { runner }
    }

    /// The daemon's version (fails when no daemon answers).
    pub async fn server_version(&self) -> Result<String, ToolError> {
        let args = ["info", "--format", "{{.ServerVersion}}"].map(String::from);
        let printed = self.runner.run("docker", &args, &super::query()).await?.stdout;
        let version = printed.trim();
        // A daemon answers with its version (`28.2.2`); anything else is not a daemon meshctl
        // can use, whatever the exit code said.
        let looks_like_version = version
            .split(['.', '-', '+'])
            .next()
            .is_some_and(|major| !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()));
        if !looks_like_version {
            return Err(ToolError::Other {
                command: "docker info --format {{.ServerVersion}}".into(),
                reason: format!(
                    "printed no daemon version: {:?}",
                    version.chars().take(80).collect::<String>()
                ),
            });
        }
        Ok(version.to_string())
    }

    /// `docker network inspect <name>`.
    pub async fn network(&self, name: &str) -> Result<DockerNetwork, ToolError> {
        let args = ["network", "inspect", name].map(String::from);
        let out = self.runner.run("docker", &args, &RunOptions::default()).await?;
        parse_network_inspect(&out.stdout).map_err(|reason| ToolError::Other {
            command: format!("docker network inspect {name}"),
            reason,
        })
    }

    /// The IPv4 address of `container` on `network`.
    pub async fn container_ip(&self, container: &str, network: &str) -> Result<Ipv4Addr, ToolError> {
        let args = [
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            container,
        ]
        .map(String::from);
        let out = self.runner.run("docker", &args, &RunOptions::default()).await?;
        let command = format!("docker inspect {container}");
        let doc: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| ToolError::Other {
            command: command.clone(),
            reason: e.to_string(),
        })?;
        doc[network]["IPAddress"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ToolError::Other {
                command,
                reason: format!("container is not on the `{network}` network"),
            })
    }

    /// `docker exec <node> ip route replace <cidr> via <via>`: packets for `cidr` leave the node
    /// towards `via`. `replace` rather than Istio CI's `add`: running it again, or with a peer
    /// that moved, converges instead of failing with "File exists".
    pub async fn route_replace(&self, node: &str, cidr: &str, via: Ipv4Addr) -> Result<(), ToolError> {
        let args = [
            "exec",
            node,
            "ip",
            "route",
            "replace",
            cidr,
            "via",
            &via.to_string(),
        ]
        .map(String::from);
        self.runner.run("docker", &args, &RunOptions::default()).await?;
        Ok(())
    }

    /// The gateway of `node`'s route for exactly `cidr` (`ip route show <cidr>` prints
    /// `10.20.0.0/16 via 172.18.0.3 dev eth0`), `None` when it has no such route.
    pub async fn route_via(&self, node: &str, cidr: &str) -> Result<Option<Ipv4Addr>, ToolError> {
        let args = ["exec", node, "ip", "route", "show", cidr].map(String::from);
        let out = self.runner.run("docker", &args, &RunOptions::default()).await?;
        Ok(parse_route_via(&out.stdout))
    }
}

/// The `via` address of the first route `ip route show` printed.
pub fn parse_route_via(text: &str) -> Option<Ipv4Addr> {
    let words: Vec<&str> = text.lines().next()?.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "via")?;
    words.get(at + 1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_gateway_is_read_from_ip_route_show() {
        assert_eq!(
            parse_route_via("10.20.0.0/16 via 172.18.0.3 dev eth0 \n"),
            Some("172.18.0.3".parse().unwrap())
        );
        assert_eq!(parse_route_via(""), None);
        assert_eq!(parse_route_via("10.20.0.0/16 dev eth0 scope link"), None);
    }

    #[test]
    fn network_inspect_lists_both_families_and_container_addresses() {
        let json = r#"[{"Name":"kind","IPAM":{"Driver":"default","Config":[{"Subnet":"fc00:f853:ccd:e793::/64"},{"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1"}]},
            "Containers":{"abc":{"Name":"cluster1-control-plane","IPv4Address":"172.18.0.2/16","IPv6Address":"fc00:f853:ccd:e793::2/64"}}}]"#;
        let net = parse_network_inspect(json).unwrap();
        assert_eq!(net.subnets.len(), 2);
        assert_eq!(
            crate::ipam::ipv4_subnet(&net.subnets).unwrap().to_string(),
            "172.18.0.0/16"
        );
        assert_eq!(
            net.containers,
            vec![(
                "cluster1-control-plane".to_string(),
                "172.18.0.2".parse().unwrap()
            )]
        );
    }
}
