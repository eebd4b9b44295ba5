//! Phase `remote-secrets`: every istiod watches every other cluster's API server. Reference section 9.
//!
//! N clusters give N·(N−1) secrets. They carry a token that exists only at run time, so the plan
//! lists the pairs; the secrets themselves are built by `remote_secret` when the phase runs.

use crate::plan::{Condition, PhaseBuilder, PlanError, Step};

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let mut peers = Vec::new();
    for source in &b.input.mesh.clusters {
        if source.name != b.cluster.name {
            b.step(Step::RemoteSecret {
                source: source.name.clone(),
            });
            peers.push(source.name.clone());
        }
    }
    // A secret that exists can still point at an address istiod cannot reach (pitfall 1): the
    // phase is done when istiod says every peer is synced.
    if !peers.is_empty() {
        b.step(Step::Wait {
            until: Condition::RemoteClustersSynced { clusters: peers },
        });
    }
    Ok(())
}
