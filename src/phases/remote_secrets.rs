//! Phase `remote-secrets`: every istiod watches every other cluster's API server. Reference section 9.
//!
//! N clusters give N·(N−1) secrets. They carry a token that exists only at run time, so the plan
//! lists the pairs; the secrets themselves are built by `remote_secret` when the phase runs.

use crate::plan::{PhaseBuilder, PlanError, Step};

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    for source in &b.input.mesh.clusters {
        if source.name != b.cluster.name {
            b.step(Step::RemoteSecret {
                source: source.name.clone(),
            });
        }
    }
    Ok(())
}
