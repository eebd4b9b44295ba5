//! MetalLB address planning: one disjoint block of the docker `kind` network per cluster. Pure.
//!
//! The rule (docs/architecture.md repeats it):
//! 1. Use the network's IPv4 subnet, chosen by address family, never by position: kind creates the
//!    network dual-stack and docker lists the entries in no fixed order.
//! 2. Pools live in the top quarter of the subnet; docker hands out container addresses from the
//!    bottom (`.2`, `.3`, ...), so they meet only when the network is three-quarters full.
//! 3. The top quarter is cut into blocks of `B = 2^clamp(26 - prefix, 4, 8)` addresses: 256 on the
//!    default `/16`, never fewer than 16. The block size depends on the subnet alone, so adding a
//!    cluster later never moves the pools of the others.
//! 4. Cluster `i` (0-based) takes the `i`-th block counted from the top, without the block's first
//!    and last address (no `.0`/`.255`-style addresses, and never the subnet's broadcast address):
//!    at least 14 addresses per cluster. On `172.18.0.0/16`, cluster1 gets
//!    `172.18.255.1-172.18.255.254`, cluster2 `172.18.254.1-172.18.254.254`.
//! 5. A subnet with fewer blocks than clusters is an error that says how many it can hold, and a
//!    pool that contains an address docker already gave a container is an error naming both.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;

/// The subnet docker gives kind's network on a machine with no other networks: what
/// `--lb-subnet` stands in with until the network exists.
pub const KIND_SUBNET: &str = "172.18.0.0/16";

/// One cluster's MetalLB range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Pool {
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// A pool always holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `ip` is in the pool.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }

    /// Whether two pools share an address.
    pub fn overlaps(&self, other: &Pool) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for Pool {
    /// MetalLB's range syntax, `a.b.c.d-e.f.g.h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Why no pools could be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The network has no IPv4 subnet.
    #[error("the docker network has no IPv4 subnet (found: {found}); MetalLB pools need one")]
    NoIpv4 {
        /// The subnets that were found.
        found: String,
    },
    /// Too many clusters for the subnet.
    #[error(
        "subnet {subnet} holds at most {capacity} cluster pool(s) of {size} addresses; {wanted} requested (use a larger network, e.g. --lb-subnet 172.18.0.0/16)"
    )]
    TooSmall {
        subnet: Ipv4Net,
        /// How many pools fit.
        capacity: usize,
        size: u32,
        /// How many clusters were asked for.
        wanted: usize,
    },
    /// A container already uses an address of a pool.
    #[error(
        "pool {pool} of cluster #{cluster} contains {ip}, which docker gave to a container on that network"
    )]
    Occupied {
        /// 1-based cluster position.
        cluster: usize,
        pool: Pool,
        /// The address in use.
        ip: Ipv4Addr,
    },
}

/// Picks the IPv4 subnet among a network's subnets, whatever their order.
pub fn ipv4_subnet(subnets: &[IpNet]) -> Result<Ipv4Net, IpamError> {
    subnets
        .iter()
        .find_map(|n| match n {
            IpNet::V4(v4) => Some(v4.trunc()),
            IpNet::V6(_) => None,
        })
        .ok_or_else(|| IpamError::NoIpv4 {
            found: subnets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Block size (addresses) for a subnet of prefix length `prefix`.
fn block_size(prefix: u8) -> u32 {
    1 << (26i32 - i32::from(prefix)).clamp(4, 8)
}

/// How many cluster pools `subnet` can hold.
pub fn capacity(subnet: Ipv4Net) -> usize {
    let quarter: u64 = (1u64 << (32 - u32::from(subnet.prefix_len()))) / 4;
    (quarter / u64::from(block_size(subnet.prefix_len()))) as usize
}

/// Plans `count` disjoint pools in `subnet`, refusing any that contains an `occupied` address.
pub fn plan_pools(subnet: Ipv4Net, count: usize, occupied: &[IpAddr]) -> Result<Vec<Pool>, IpamError> {
    let subnet = subnet.trunc();
    let block = block_size(subnet.prefix_len());
    let cap = capacity(subnet);
    if count > cap {
        return Err(IpamError::TooSmall {
            subnet,
            capacity: cap,
            size: block - 2,
            wanted: count,
        });
    }
    let top = u64::from(u32::from(subnet.broadcast())) + 1;
    let pools: Vec<Pool> = (0..count as u64)
        .map(|i| {
            let start = (top - (i + 1) * u64::from(block)) as u32;
            Pool {
                first: Ipv4Addr::from(start + 1),
                // `start + block` would overflow for a subnet at the very top (255.0.0.0/8).
                last: Ipv4Addr::from(start + (block - 2)),
            }
        })
        .collect();
    for (i, pool) in pools.iter().enumerate() {
        for ip in occupied {
            if let IpAddr::V4(v4) = ip
                && pool.contains(*v4)
            {
                return Err(IpamError::Occupied {
                    cluster: i + 1,
                    pool: *pool,
                    ip: *v4,
                });
            }
        }
    }
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn default_kind_network_gives_readable_blocks_from_the_top() {
        let pools = plan_pools(net("172.18.0.0/16"), 2, &[]).unwrap();
        assert_eq!(pools[0].to_string(), "172.18.255.1-172.18.255.254");
        assert_eq!(pools[1].to_string(), "172.18.254.1-172.18.254.254");
        assert_eq!(capacity(net("172.18.0.0/16")), 64);
    }

    #[test]
    fn ipv4_entry_is_chosen_by_family_not_position() {
        let subnets: Vec<IpNet> = vec![
            "fc00:f853:ccd:e793::/64".parse().unwrap(),
            "172.18.0.0/16".parse().unwrap(),
        ];
        assert_eq!(ipv4_subnet(&subnets).unwrap(), net("172.18.0.0/16"));
        let v6_only: Vec<IpNet> = vec!["fc00::/64".parse().unwrap()];
        assert!(matches!(ipv4_subnet(&v6_only), Err(IpamError::NoIpv4 { .. })));
    }

    #[test]
    fn too_small_subnet_says_how_many_clusters_fit() {
        let err = plan_pools(net("10.0.0.0/24"), 5, &[]).unwrap_err();
        assert_eq!(
            err,
            IpamError::TooSmall {
                subnet: net("10.0.0.0/24"),
                capacity: 4,
                size: 14,
                wanted: 5
            }
        );
        assert!(err.to_string().contains("at most 4"));
        assert!(plan_pools(net("10.0.0.0/27"), 1, &[]).is_err());
    }

    #[test]
    fn a_subnet_at_the_top_of_the_address_space_does_not_overflow() {
        // Found by the property test below (raw = 255.0.0.0, prefix 8).
        let pools = plan_pools(net("255.0.0.0/8"), 1, &[]).unwrap();
        assert_eq!(pools[0].to_string(), "255.255.255.1-255.255.255.254");
    }

    #[test]
    fn pool_never_overlaps_container_ips() {
        let busy: Vec<IpAddr> = vec!["172.18.255.7".parse().unwrap()];
        let err = plan_pools(net("172.18.0.0/16"), 2, &busy).unwrap_err();
        assert!(matches!(err, IpamError::Occupied { cluster: 1, .. }), "{err}");
        let low: Vec<IpAddr> = vec!["172.18.0.2".parse().unwrap(), "172.18.0.3".parse().unwrap()];
        assert!(plan_pools(net("172.18.0.0/16"), 16, &low).is_ok());
    }

    proptest! {
        #[test]
        fn pools_are_disjoint_inside_the_top_quarter_and_large_enough(
            raw in any::<u32>(), prefix in 8u8..=26, count in 1usize..=16,
        ) {
            let subnet = Ipv4Net::new(Ipv4Addr::from(raw), prefix).unwrap().trunc();
            match plan_pools(subnet, count, &[]) {
                Ok(pools) => {
                    prop_assert_eq!(pools.len(), count);
                    let quarter_start = u32::from(subnet.broadcast()) - (((1u64 << (32 - prefix)) / 4) as u32 - 1);
                    for (i, p) in pools.iter().enumerate() {
                        prop_assert!(p.len() >= 10, "pool {} has {} addresses", p, p.len());
                        prop_assert!(subnet.contains(&p.first) && subnet.contains(&p.last));
                        prop_assert!(u32::from(p.first) >= quarter_start, "{} below the top quarter", p);
                        prop_assert!(p.last != subnet.broadcast() && p.first != subnet.network());
                        for q in &pools[i + 1..] {
                            prop_assert!(!p.overlaps(q), "{} overlaps {}", p, q);
                        }
                    }
                    // Stable: the first pools do not move when a cluster is added.
                    if count < capacity(subnet) {
                        let more = plan_pools(subnet, count + 1, &[]).unwrap();
                        prop_assert_eq!(&more[..count], &pools[..]);
                    }
                }
                Err(IpamError::TooSmall { capacity, .. }) => prop_assert!(count > capacity),
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
        }
    }
}
