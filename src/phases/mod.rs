//! The phases of `meshctl up`, in order. Each phase has one file here holding its pure plan step:
//! from the topology (and the facts gathered so far) to the artifacts and steps it will apply.

pub mod certs;
pub mod clusters;
pub mod eastwest;
pub mod expose;
pub mod istio;
pub mod metallb;
pub mod remote_secrets;
pub mod verify;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::plan::{PhaseBuilder, PlanError};

/// Plans one phase for one cluster: the single place that maps a phase to its file.
pub fn plan(builder: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    match builder.phase {
        Phase::Clusters => clusters::plan(builder),
        Phase::Metallb => metallb::plan(builder),
        Phase::Certs => certs::plan(builder),
        Phase::Istio => istio::plan(builder),
        Phase::Eastwest => eastwest::plan(builder),
        Phase::Expose => expose::plan(builder),
        Phase::RemoteSecrets => remote_secrets::plan(builder),
    }
}

/// One phase of `up`, in the order they run (reference section 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Create kind clusters and record their API endpoints.
    Clusters,
    /// Install MetalLB and give each cluster its own address pool.
    Metallb,
    /// Namespace, network label, node locality labels, `cacerts`.
    Certs,
    /// Istio primary control plane.
    Istio,
    /// East-west gateway with an external IP.
    Eastwest,
    /// Expose `*.local` services through the east-west gateway.
    Expose,
    /// Every cluster's remote secret in every other cluster.
    RemoteSecrets,
}

impl Phase {
    /// All phases in order.
    pub const ALL: [Phase; 7] = [
        Phase::Clusters,
        Phase::Metallb,
        Phase::Certs,
        Phase::Istio,
        Phase::Eastwest,
        Phase::Expose,
        Phase::RemoteSecrets,
    ];

    /// The name used on the command line and in output.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Clusters => "clusters",
            Phase::Metallb => "metallb",
            Phase::Certs => "certs",
            Phase::Istio => "istio",
            Phase::Eastwest => "eastwest",
            Phase::Expose => "expose",
            Phase::RemoteSecrets => "remote-secrets",
        }
    }

    /// 1-based position, used to prefix dry-run folders (`03-certs`).
    pub fn ordinal(self) -> usize {
        Phase::ALL
            .iter()
            .position(|p| *p == self)
            .expect("every phase is listed")
            + 1
    }

    /// Folder name in dry-run output, e.g. `03-certs`.
    pub fn folder(self) -> String {
        format!("{:02}-{}", self.ordinal(), self.name())
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            format!(
                "unknown phase `{s}` (expected one of: {})",
                Phase::ALL.map(Phase::name).join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_matches_the_reference() {
        for p in Phase::ALL {
            assert_eq!(p.name().parse::<Phase>().unwrap(), p);
        }
        assert_eq!(Phase::RemoteSecrets.folder(), "07-remote-secrets");
        assert!(
            Phase::Certs < Phase::Istio,
            "cacerts must exist before istiod starts"
        );
        assert!("verify".parse::<Phase>().unwrap_err().contains("remote-secrets"));
    }
}
