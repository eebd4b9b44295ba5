//! The phases of `meshctl up`, in order. Each phase has one file here that owns what meshctl knows
//! of it: its names and constants, `plan` (pure: from the topology and the facts gathered so far to
//! the artifacts and steps it will apply) and `probe` (read-only: what the cluster holds of it now,
//! as [`Finding`]s). `up` runs a phase's steps where its probe finds a difference; `status` prints
//! the probes.

pub mod certs;
pub mod clusters;
pub mod eastwest;
pub mod expose;
pub mod istio;
pub mod metallb;
pub mod remote_secrets;
pub mod routes;
pub mod verify;

use crate::plan::{Phase, PhaseBuilder, PlanError};
use crate::probe::{Finding, Probe};

/// Plans one phase for one cluster: the single place that maps a phase to its file.
pub fn plan(builder: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    match builder.phase {
        Phase::Clusters => clusters::plan(builder),
        Phase::Metallb => metallb::plan(builder),
        Phase::Routes => routes::plan(builder),
        Phase::Certs => certs::plan(builder),
        Phase::Istio => istio::plan(builder),
        Phase::Eastwest => eastwest::plan(builder),
        Phase::Expose => expose::plan(builder),
        Phase::RemoteSecrets => remote_secrets::plan(builder),
    }
}

/// Probes one phase in one cluster: the single place that maps a phase to its probe.
pub async fn probe(phase: Phase, p: &Probe<'_>) -> Vec<Finding> {
    match phase {
        Phase::Clusters => clusters::probe(p).await,
        Phase::Metallb => metallb::probe(p).await,
        Phase::Routes => routes::probe(p).await,
        Phase::Certs => certs::probe(p).await,
        Phase::Istio => istio::probe(p).await,
        Phase::Eastwest => eastwest::probe(p).await,
        Phase::Expose => expose::probe(p).await,
        Phase::RemoteSecrets => remote_secrets::probe(p).await,
    }
}
