//! Phase `eastwest`: the gateway other networks reach this cluster through. It listens on 15443
//! (`AUTO_PASSTHROUGH`) and carries the `topology.istio.io/network` label istiod discovers it by.

use anyhow::Result;
use futures::future::BoxFuture;
use serde::Serialize;

use super::istioctl_install::{install_operator, installed, uninstall_operator};
use super::{PhaseLogic, RemoveContext, StepContext, StepResult};
use crate::kube::{inspect, wait};
use crate::plan::EastwestStep;
use crate::plan::{Condition, Phase, PhaseBuilder, PlanError, RecordOn, Step};
use crate::probe::{Finding, Probe};
use crate::topology::ISTIO_NAMESPACE as NAMESPACE;
use crate::topology::{GatewayService, Role};
use crate::versions;

pub use crate::topology::GATEWAY_NAME;

/// The gateway other networks reach this cluster through; records its address.
pub struct Eastwest;

impl PhaseLogic for Eastwest {
    plan_and_probe_are_the_modules!();

    fn runs_istioctl(&self) -> bool {
        true
    }

    /// An ambient mesh's Gateway (istiod's Deployment and Service for it go with it, theirs by
    /// owner reference), else the sidecar gateway istioctl installed from its recorded file.
    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        let record_on = RecordOn::Deployment(GATEWAY_NAME.into());
        let namespace = cx.gateway_namespace();
        Box::pin(async move {
            let mut removed: Vec<String> = super::ambient::remove_gateway(cx).await?.into_iter().collect();
            removed
                .extend(uninstall_operator(cx, Phase::Eastwest, GATEWAY_FILE, record_on, namespace).await?);
            Ok(removed)
        })
    }
}

/// Runs the phase's own step.
pub(super) fn run<'a>(step: &'a EastwestStep, cx: StepContext<'a>) -> StepResult<'a> {
    let EastwestStep::RecordGatewayAddress { address, port } = step;
    Box::pin(record_declared(cx, address, *port))
}

/// How the phase's own step reads.
pub(super) fn describe(step: &EastwestStep) -> String {
    let EastwestStep::RecordGatewayAddress { address, port } = step;
    format!(
        "record: other networks reach this gateway at {address}:{port} (declared; in every istiod's meshNetworks)"
    )
}

/// How long a declared address has to accept a connection from here before it is reported as not
/// answering (from where meshctl runs it may be unroutable and still right for the other networks).
const ANSWER_BOUND: std::time::Duration = std::time::Duration::from_secs(3);

/// Records the declared address, and says whether it accepts a connection from here.
async fn record_declared(cx: StepContext<'_>, address: &str, port: u16) -> Result<Option<String>> {
    cx.record(|c| c.eastwest_ip = Some(address.to_string()))?;
    let dial = tokio::net::TcpStream::connect((address, port));
    let answer = match tokio::time::timeout(ANSWER_BOUND, dial).await {
        Ok(Ok(_)) => "accepts connections from here".to_string(),
        Ok(Err(e)) => {
            format!("does not accept connections from here ({e}); the other networks must reach it")
        }
        Err(_) => format!(
            "did not answer from here within {}s; the other networks must reach it",
            ANSWER_BOUND.as_secs()
        ),
    };
    Ok(Some(format!(
        "{GATEWAY_NAME} at {address}:{port} (declared) {answer}"
    )))
}

/// The east-west gateway's IstioOperator file in a plan.
pub const GATEWAY_FILE: &str = "eastwest-gateway.yaml";

/// Waits until the gateway has an address and records it: a remote's IstioOperator carries its
/// primary's (`remotePilotAddress`).
pub(super) fn record_address<'a>(cx: StepContext<'a>, namespace: &'a str, name: &'a str) -> StepResult<'a> {
    Box::pin(record_gateway_address(cx, namespace, name))
}

async fn record_gateway_address(cx: StepContext<'_>, namespace: &str, name: &str) -> Result<Option<String>> {
    let client = cx.client().await?;
    let address = wait::load_balancer_address(&client, namespace, name, cx.settings().timeout).await?;
    cx.record(|c| c.eastwest_ip = Some(address.clone()))?;
    Ok(Some(format!("{name} at {address}")))
}

/// Context of `templates/eastwest/eastwest-gateway.yaml.j2`.
#[derive(Serialize)]
struct EastWest<'a> {
    istio_version: &'a str,
    /// `values.global.istioNamespace` (and the IstioOperator's namespace) of a remote of an
    /// external control plane: its gateway runs beside its Istio. Empty: istio-system.
    istio_namespace: &'a str,
    /// `spec.revision`: the control plane that injects the gateway (empty: the default one).
    revision: &'a str,
    network: &'a str,
    /// The node port of 15443 when the Service is a NodePort.
    node_port: Option<u16>,
    /// A LoadBalancer with a declared address in front: its Service loses the network label
    /// istiod would find it by. A gateway found from its Service is tagged with its cluster and
    /// preferred over a `meshNetworks` one (Istio `pilot/pkg/xds/endpoints/ep_filters.go`,
    /// `selectNetworkGateways`; `controller/network.go` `getGatewayDetails`), so the
    /// LoadBalancer's own address would win over the declared one. (A NodePort Service gives istiod
    /// no address of its own to prefer.)
    address_in_front: bool,
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    if !b.input.mesh.needs_eastwest(b.cluster) {
        // One network and no remotes: pods call each other directly (flat multi-primary).
        return Ok(());
    }
    let mesh = b.input.mesh;
    if !mesh.dataplane.is_sidecar() {
        return super::ambient::plan_gateway(b);
    }
    if b.cluster.role == Role::Remote {
        // The gateway's pods are injected by the primary's istiod, which serves this cluster's
        // injector only once it has taken the cluster over and patched the webhook's CA bundle
        // (docs: attach the remote, then install its east-west gateway).
        b.step(Step::Wait {
            until: Condition::WebhookCaBundle {
                kind: "MutatingWebhookConfiguration".into(),
                name: mesh.injector_webhook(b.cluster),
            },
        });
    }
    let namespace = mesh.gateway_namespace(b.cluster);
    let eastwest = &b.cluster.eastwest;
    let context = EastWest {
        istio_namespace: if namespace == NAMESPACE { "" } else { namespace },
        istio_version: versions::ISTIO_VERSION,
        revision: b.input.mesh.istio_revision.operator_value(),
        network: &b.cluster.network,
        node_port: (eastwest.service == GatewayService::NodePort).then_some(eastwest.node_port),
        address_in_front: eastwest.service == GatewayService::LoadBalancer && eastwest.declared().is_some(),
    };
    install_operator(
        b,
        GATEWAY_FILE,
        "eastwest/eastwest-gateway.yaml.j2",
        &context,
        (namespace, GATEWAY_NAME),
    )?;
    match eastwest.declared() {
        // The address is the topology's, in every istiod's meshNetworks already: recorded (a
        // remote's IstioOperator carries its primary's), and checked for an answer.
        Some((address, port)) => b.step(Step::Eastwest(EastwestStep::RecordGatewayAddress {
            address: address.to_string(),
            port,
        })),
        // istioctl does not wait for this; without an IP, remote endpoints degrade to unreachable
        // pod IPs, and on kind the address comes only from MetalLB.
        None => b.step(Step::Wait {
            until: Condition::LoadBalancerIp {
                namespace: namespace.into(),
                name: GATEWAY_NAME.into(),
            },
        }),
    }
    Ok(())
}

/// The east-west gateway's LoadBalancer address (IP, or hostname on clouds that give one) in
/// `namespace` (`Mesh::gateway_namespace`), if it has one.
async fn gateway_ip(client: &kube::Client, namespace: &str) -> Option<String> {
    inspect::service_address(client, namespace, GATEWAY_NAME).await
}

/// A declared gateway: a Service of the declared type (with the declared node port), and the
/// declared address recorded for the remotes.
async fn declared_finding(
    p: &Probe<'_>,
    client: &kube::Client,
    object: String,
    address: &str,
    port: u16,
) -> Finding {
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), p.mesh.gateway_namespace(p.cluster));
    let Ok(Some(service)) = services.get_opt(GATEWAY_NAME).await else {
        return Finding::missing(object, "no Service");
    };
    let spec = service.spec.unwrap_or_default();
    let node_port = spec
        .ports
        .iter()
        .flatten()
        .find(|sp| sp.port == 15443)
        .and_then(|sp| sp.node_port);
    let recorded = p
        .state
        .clusters
        .get(&p.cluster.name)
        .and_then(|c| c.eastwest_ip.clone());
    match p.cluster.eastwest.service {
        GatewayService::NodePort
            if spec.type_.as_deref() != Some("NodePort") || node_port != Some(i32::from(port)) =>
        {
            Finding::different(
                object,
                format!("not a NodePort Service with 15443 on node port {port}"),
            )
        }
        _ if recorded.as_deref() != Some(address) => {
            Finding::missing(object, format!("{address} not recorded yet"))
        }
        _ => Finding::present(object, format!("reached at {address}:{port} (declared)")),
    }
}

/// The gateway installed from this rendering, available, with an external IP.
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![f],
    };
    if !p.mesh.dataplane.is_sidecar() {
        return super::ambient::probe_gateway(p, &client).await;
    }
    let mut out = installed(p, &client).await;
    let namespace = p.mesh.gateway_namespace(p.cluster);
    let object = format!("Service {namespace}/{GATEWAY_NAME}");
    out.push(match p.cluster.eastwest.declared() {
        Some((address, port)) => declared_finding(p, &client, object, address, port).await,
        None => match gateway_ip(&client, namespace).await {
            Some(address) => Finding::present(object, crate::kube::wait::describe_address(&address)),
            None => Finding::missing(object, "no LoadBalancer IP or hostname"),
        },
    });
    out
}
