//! Phase `eastwest`: the gateway other networks reach this cluster through. Reference section 7.

use serde::Serialize;

use crate::plan::{Condition, PhaseBuilder, PlanError, Step};
use crate::versions;

use super::istio::{NAMESPACE, install_operator};

/// Deployment and Service name of the east-west gateway.
pub const GATEWAY_NAME: &str = "istio-eastwestgateway";

/// Context of `templates/eastwest/eastwest-gateway.yaml.j2`.
#[derive(Serialize)]
struct EastWest<'a> {
    istio_version: &'a str,
    network: &'a str,
}

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let context = EastWest {
        istio_version: versions::ISTIO_VERSION,
        network: &b.cluster.network,
    };
    install_operator(
        b,
        "eastwest-gateway.yaml",
        "eastwest/eastwest-gateway.yaml.j2",
        &context,
        GATEWAY_NAME,
    )?;
    // istioctl does not wait for this; without an IP, remote endpoints degrade to unreachable pod
    // IPs (pitfalls 8 and 31).
    b.step(Step::Wait {
        until: Condition::LoadBalancerIp {
            namespace: NAMESPACE.into(),
            name: GATEWAY_NAME.into(),
        },
    });
    Ok(())
}
