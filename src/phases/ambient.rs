//! What Istio's ambient mode changes in the `istio` and `eastwest` phases: the control plane is
//! `profile: ambient` (istiod, the istio-cni node agent, ztunnel on every node) with
//! `AMBIENT_ENABLE_MULTI_NETWORK`, the Gateway API CRDs come first (they are not Istio's), and
//! the east-west gateway is a Gateway API `Gateway` of class `istio-east-west`, whose
//! Deployment and Service istiod makes. No injector to wait for, no IstioOperator for the gateway,
//! no expose-services Gateway.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use serde::Serialize;

use super::istioctl_install::{install_operator, installed};
use crate::plan::{Condition, PhaseBuilder, PlanError, Step};
use crate::probe::{self, Finding, Probe};
use crate::topology::{GATEWAY_NAME, ISTIO_NAMESPACE as NAMESPACE};
use crate::versions;

/// ztunnel's DaemonSet (the chart's `resourceName`, set by the default profile).
pub const ZTUNNEL: &str = "ztunnel";

/// The istio-cni node agent's DaemonSet (manifests/charts/istio-cni).
pub const CNI_NODE: &str = "istio-cni-node";

/// The east-west Gateway's file in a plan.
pub const GATEWAY_FILE: &str = "eastwest-gateway.yaml";

/// Context of `templates/istio/ambient.yaml.j2`.
#[derive(Serialize)]
struct ControlPlane<'a> {
    name: &'a str,
    istio_version: &'a str,
    mesh_id: &'a str,
    cluster_name: &'a str,
    network: &'a str,
    /// `meshConfig`, as JSON, when the topology sets any.
    mesh_config: Option<String>,
}

/// Context of `templates/eastwest/ambient-gateway.yaml.j2`.
#[derive(Serialize)]
struct EastWestGateway<'a> {
    istio_version: &'a str,
    name: &'a str,
    namespace: &'a str,
    network: &'a str,
}

/// The Gateway API CRDs where the cluster has none, then the ambient control plane, ready on
/// every node: `(operator, file)` name the IstioOperator and its file in the plan, as the sidecar
/// control plane's (so either is found and removed the same way).
pub fn plan_control_plane(b: &mut PhaseBuilder<'_>, (operator, file): (&str, &str)) -> Result<(), PlanError> {
    b.step(Step::ApplyUpstream {
        name: format!("gateway-api standard-install {}", versions::GATEWAY_API_VERSION),
        url: versions::GATEWAY_API_CRDS_URL.to_string(),
        sha256: versions::GATEWAY_API_CRDS_SHA256.to_string(),
        unless_crd: Some(versions::GATEWAY_API_PROBE_CRD.to_string()),
    });
    let mesh = b.input.mesh;
    let control_plane = ControlPlane {
        name: operator,
        istio_version: versions::ISTIO_VERSION,
        mesh_id: &mesh.mesh_id,
        cluster_name: &b.cluster.name,
        network: &b.cluster.network,
        mesh_config: (!mesh.mesh_config.is_empty())
            .then(|| serde_json::to_string(&mesh.mesh_config).expect("plain data serializes")),
    };
    install_operator(
        b,
        file,
        "istio/ambient.yaml.j2",
        &control_plane,
        (NAMESPACE, &mesh.istio_revision.istiod()),
    )?;
    // istioctl waits for what it installs, but a node agent on a node that joins later, or one
    // that restarts, is not waited for: the phase is in place when every node runs both.
    for daemonset in [CNI_NODE, ZTUNNEL] {
        b.step(Step::Wait {
            until: Condition::DaemonSetReady {
                namespace: NAMESPACE.into(),
                name: daemonset.into(),
            },
        });
    }
    Ok(())
}

/// istiod installed from this rendering, ztunnel and the CNI agent ready on every node, and the
/// Gateway API CRDs present (whoever installed them).
pub async fn probe_control_plane(p: &Probe<'_>, client: &kube::Client) -> Vec<Finding> {
    let mut out = installed(p, client).await;
    for daemonset in [CNI_NODE, ZTUNNEL] {
        out.push(probe::daemonset(client, NAMESPACE, daemonset).await);
    }
    let object = format!("CRD {}", versions::GATEWAY_API_PROBE_CRD);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    out.push(match crds.get_opt(versions::GATEWAY_API_PROBE_CRD).await {
        Ok(Some(crd)) => Finding::present(object, gateway_api_installed(&crd)),
        Ok(None) => Finding::missing(object, "Gateway API is not installed"),
        Err(e) => Finding::unreachable(object, e.to_string()),
    });
    out
}

/// The first Gateway API release whose standard `Gateway` has `spec.infrastructure`, which
/// meshctl's east-west Gateway sets (checked in the CRDs of the v1.0.0 to v1.6.0 tags).
const GATEWAY_INFRASTRUCTURE_SINCE: (u32, u32) = (1, 2);

/// What the cluster's Gateway API is, by its bundle's own annotation. An older bundle than the
/// one with `spec.infrastructure` drops that field, so every `up` finds meshctl's Gateway
/// different and applies it again (istiod still labels its Deployment with the network, from the
/// Gateway's own labels): said here, since the CRDs are not meshctl's to replace.
fn gateway_api_installed(crd: &CustomResourceDefinition) -> String {
    let version = crd
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("gateway.networking.k8s.io/bundle-version"))
        .cloned();
    let minor_of = |v: &str| -> Option<(u32, u32)> {
        let mut parts = v
            .trim_start_matches('v')
            .split('.')
            .map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    };
    match version {
        Some(v) if minor_of(&v).is_some_and(|m| m < GATEWAY_INFRASTRUCTURE_SINCE) => format!(
            "Gateway API {v} is installed; it is older than v{}.{}, whose Gateway has spec.infrastructure, so the east-west Gateway is applied again on every run (upgrade the cluster's Gateway API to {} to stop it)",
            GATEWAY_INFRASTRUCTURE_SINCE.0,
            GATEWAY_INFRASTRUCTURE_SINCE.1,
            versions::GATEWAY_API_VERSION
        ),
        Some(v) => format!("Gateway API {v} is installed"),
        None => "Gateway API is installed".into(),
    }
}

/// The east-west Gateway, its address recorded once its Service has one, and Programmed: the
/// other clusters' istiods dial what its status says.
pub fn plan_gateway(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let gateway = EastWestGateway {
        istio_version: versions::ISTIO_VERSION,
        name: GATEWAY_NAME,
        namespace: NAMESPACE,
        network: &b.cluster.network,
    };
    let file = b.render(GATEWAY_FILE, "eastwest/ambient-gateway.yaml.j2", &gateway, false)?;
    b.step(Step::Apply { file });
    b.step(Step::Wait {
        until: Condition::LoadBalancerIp {
            namespace: NAMESPACE.into(),
            name: GATEWAY_NAME.into(),
        },
    });
    b.step(Step::Wait {
        until: Condition::GatewayProgrammed {
            namespace: NAMESPACE.into(),
            name: GATEWAY_NAME.into(),
        },
    });
    // Programmed says only that the Service has an address, not that a gateway pod serves it
    // (pilot/pkg/config/kube/gatewaycommon/conversion.go, `SetProgrammedCondition`): the
    // Deployment istiod made, named after the Gateway, is awaited too.
    b.step(Step::Wait {
        until: Condition::DeploymentAvailable {
            namespace: NAMESPACE.into(),
            name: GATEWAY_NAME.into(),
        },
    });
    Ok(())
}

/// The Gateway as rendered, the Deployment istiod made for it available, and the address of the
/// Service istiod made for it.
pub async fn probe_gateway(p: &Probe<'_>, client: &kube::Client) -> Vec<Finding> {
    let mut out = p.all_applied(client).await;
    out.push(probe::deployment(client, NAMESPACE, GATEWAY_NAME, None).await);
    let object = format!("Service {NAMESPACE}/{GATEWAY_NAME}");
    out.push(
        match crate::kube::inspect::service_address(client, NAMESPACE, GATEWAY_NAME).await {
            Some(address) => Finding::present(object, crate::kube::wait::describe_address(&address)),
            None => Finding::missing(
                object,
                "no LoadBalancer IP or hostname (istiod makes it from the Gateway)",
            ),
        },
    );
    out
}

/// Deletes the east-west Gateway where this mesh's meshctl applied it; nothing where Gateway API is
/// not installed or the Gateway is someone else's.
pub async fn remove_gateway(cx: &super::RemoveContext<'_>) -> anyhow::Result<Option<String>> {
    let gateways = crate::kube::gateways(&cx.client, NAMESPACE);
    let what = format!("Gateway {NAMESPACE}/{GATEWAY_NAME}");
    crate::kube::delete_owned(&gateways, (GATEWAY_NAME, cx.mesh_id), &what).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(version: Option<&str>) -> CustomResourceDefinition {
        let mut crd = CustomResourceDefinition::default();
        crd.metadata.annotations = version.map(|v| {
            [(
                "gateway.networking.k8s.io/bundle-version".to_string(),
                v.to_string(),
            )]
            .into()
        });
        crd
    }

    #[test]
    fn a_gateway_api_without_spec_infrastructure_is_said_to_make_the_gateway_drift() {
        assert!(gateway_api_installed(&crd(Some("v1.1.0"))).contains("applied again on every run"));
        assert!(gateway_api_installed(&crd(Some("v1.0.0"))).contains("older than v1.2"));
        assert_eq!(
            gateway_api_installed(&crd(Some("v1.2.1"))),
            "Gateway API v1.2.1 is installed"
        );
        assert_eq!(
            gateway_api_installed(&crd(Some("v1.6.0"))),
            "Gateway API v1.6.0 is installed"
        );
        assert_eq!(gateway_api_installed(&crd(None)), "Gateway API is installed");
    }
}
