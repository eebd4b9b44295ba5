//! Phase `eastwest`: the gateway other networks reach this cluster through. Reference section 7.

use serde::Serialize;

use crate::kube::inspect;
use crate::plan::{Condition, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};
use crate::topology::Role;
use crate::versions;

use super::istio::{NAMESPACE, install_operator, installed};

/// Deployment and Service name of the east-west gateway.
pub const GATEWAY_NAME: &str = "istio-eastwestgateway";

/// Context of `templates/eastwest/eastwest-gateway.yaml.j2`.
#[derive(Serialize)]
struct EastWest<'a> {
    istio_version: &'a str,
    network: &'a str,
}

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    if !b.input.mesh.needs_eastwest(b.cluster) {
        // One network and no remotes: pods call each other directly (flat multi-primary).
        return Ok(());
    }
    if b.cluster.role == Role::Remote {
        // The gateway's pods are injected by the primary's istiod, which serves this cluster's
        // injector only once it has taken the cluster over and patched the webhook's CA bundle
        // (docs: attach the remote, then install its east-west gateway).
        b.step(Step::Wait {
            until: Condition::WebhookCaBundle {
                kind: "MutatingWebhookConfiguration".into(),
                name: "istio-sidecar-injector".into(),
            },
        });
    }
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

/// The east-west gateway's LoadBalancer address (IP, or hostname on clouds that give one), if it
/// has one.
pub async fn gateway_ip(client: &kube::Client) -> Option<String> {
    inspect::service_address(client, NAMESPACE, GATEWAY_NAME).await
}

/// The gateway installed from this rendering, available, with an external IP.
pub(super) async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![f],
    };
    let mut out = installed(p, &client).await;
    let object = format!("Service {NAMESPACE}/{GATEWAY_NAME}");
    out.push(match gateway_ip(&client).await {
        Some(address) => Finding::present(object, crate::kube::wait::describe_address(&address)),
        None => Finding::missing(object, "no LoadBalancer IP or hostname"),
    });
    out
}
