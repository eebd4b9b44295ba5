//! Phase `eastwest`: the gateway other networks reach this cluster through. It listens on 15443
//! (`AUTO_PASSTHROUGH`) and carries the `topology.istio.io/network` label istiod discovers it by.

use anyhow::Result;
use futures::future::BoxFuture;
use serde::Serialize;

use super::istio::{
    NAMESPACE, describe_install, install_operator, installed, run_install, uninstall_operator,
};
use super::{PhaseLogic, RemoveContext, StepContext, StepResult};
use crate::kube::{inspect, wait};
use crate::plan::{Condition, Phase, PhaseBuilder, PlanError, RecordOn, Step};
use crate::probe::{Finding, Probe};
use crate::topology::{Cluster, Role};
use crate::versions;

/// Deployment and Service name of the east-west gateway.
pub const GATEWAY_NAME: &str = "istio-eastwestgateway";

/// The gateway other networks reach this cluster through; records its address.
pub struct Eastwest;

impl PhaseLogic for Eastwest {
    fn phase(&self) -> Phase {
        Phase::Eastwest
    }

    fn plan(&self, b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
        plan(b)
    }

    fn probe<'a>(&'a self, p: &'a Probe<'a>) -> BoxFuture<'a, Vec<Finding>> {
        Box::pin(probe(p))
    }

    /// A remote's gateway follows `remote-secrets`: its pods are injected by the primary's istiod,
    /// which serves the remote only once it holds the remote's secret.
    fn stage(&self, cluster: &Cluster) -> usize {
        match cluster.role {
            Role::Remote => Phase::RemoteSecrets.ordinal() * 10 + 5,
            Role::Primary => Phase::Eastwest.ordinal() * 10,
        }
    }

    fn runs_istioctl(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, step: &'a Step, cx: StepContext<'a>) -> Option<StepResult<'a>> {
        match step {
            Step::Wait {
                until: Condition::LoadBalancerIp { namespace, name },
            } if name == GATEWAY_NAME => Some(Box::pin(record_address(cx, namespace, name))),
            _ => run_install(step, cx),
        }
    }

    fn describe(&self, step: &Step) -> Option<String> {
        describe_install(step)
    }

    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        let record_on = RecordOn::Deployment(GATEWAY_NAME.into());
        Box::pin(async move { uninstall_operator(cx, Phase::Eastwest, GATEWAY_FILE, record_on).await })
    }
}

/// The east-west gateway's IstioOperator file in a plan.
pub const GATEWAY_FILE: &str = "eastwest-gateway.yaml";

/// Waits until the gateway has an address and records it: a remote's IstioOperator carries its
/// primary's (`remotePilotAddress`).
async fn record_address(cx: StepContext<'_>, namespace: &str, name: &str) -> Result<Option<String>> {
    let client = cx.client().await?;
    let address = wait::load_balancer_address(&client, namespace, name, cx.settings().timeout).await?;
    cx.record(|c| c.eastwest_ip = Some(address.clone()))?;
    Ok(Some(format!("{name} at {address}")))
}

/// Context of `templates/eastwest/eastwest-gateway.yaml.j2`.
#[derive(Serialize)]
struct EastWest<'a> {
    istio_version: &'a str,
    network: &'a str,
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
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
        GATEWAY_FILE,
        "eastwest/eastwest-gateway.yaml.j2",
        &context,
        GATEWAY_NAME,
    )?;
    // istioctl does not wait for this; without an IP, remote endpoints degrade to unreachable pod
    // IPs, and on kind the address comes only from MetalLB.
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
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
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
