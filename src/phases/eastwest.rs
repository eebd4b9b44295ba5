//! Phase `eastwest`: the gateway other networks reach this cluster through. Reference section 7.

use serde::Serialize;

use crate::plan::{Condition, PhaseBuilder, PlanError, Step, Tool};
use crate::versions;

use super::istio::{NAMESPACE, istioctl_install};

/// Deployment and Service name of the east-west gateway.
pub const GATEWAY_NAME: &str = "istio-eastwestgateway";

/// Context of `templates/eastwest/eastwest-gateway.yaml.j2`.
#[derive(Serialize)]
struct EastWest<'a> {
    istio_version: &'a str,
    network: &'a str,
}

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let cluster = b.cluster;
    let file = b.render(
        "eastwest-gateway.yaml",
        "eastwest/eastwest-gateway.yaml.j2",
        &EastWest {
            istio_version: versions::ISTIO_VERSION,
            network: &cluster.network,
        },
        false,
    )?;
    b.step(Step::Run {
        tool: Tool::Istioctl,
        args: istioctl_install(&cluster.context, &file, b.input.timeout_secs),
        unless: None,
    });
    b.step(Step::Wait {
        until: Condition::DeploymentAvailable {
            namespace: NAMESPACE.into(),
            name: GATEWAY_NAME.into(),
        },
    });
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
