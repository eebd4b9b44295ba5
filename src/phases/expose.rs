//! Phase `expose`: `*.local` services reachable through the east-west gateway. Reference section 8.

use serde::Serialize;

use crate::plan::{PhaseBuilder, PlanError, Step};

/// The template has no variables; its context is empty on purpose.
#[derive(Serialize)]
struct Expose {}

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let file = b.render(
        "cross-network-gateway.yaml",
        "expose/cross-network-gateway.yaml.j2",
        &Expose {},
        false,
    )?;
    // The executor retries this apply until Istio's validation webhook serves (pitfall 30).
    b.step(Step::Apply { file });
    Ok(())
}
