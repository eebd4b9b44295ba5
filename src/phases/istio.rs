//! Phase `istio`: the primary control plane of each cluster. Reference section 6.

use serde::Serialize;

use crate::plan::{Condition, PhaseBuilder, PlanError, Step, Tool};
use crate::versions;

/// Name of the control-plane IstioOperator; a name keeps istioctl's pruning away from the east-west
/// gateway on a re-install (pitfall 26).
pub const OPERATOR_NAME: &str = "control-plane";
/// Istio's namespace.
pub const NAMESPACE: &str = "istio-system";

/// Context of `templates/istio/control-plane.yaml.j2`.
#[derive(Serialize)]
struct ControlPlane<'a> {
    name: &'a str,
    istio_version: &'a str,
    mesh_id: &'a str,
    cluster_name: &'a str,
    network: &'a str,
}

/// `istioctl install` with meshctl's fixed flags: no prompt, explicit context, bounded wait.
pub fn istioctl_install(context: &str, file: &str, timeout_secs: u64) -> Vec<String> {
    let timeout = format!("{timeout_secs}s");
    [
        "install",
        "-y",
        "--context",
        context,
        "-f",
        file,
        "--readiness-timeout",
        &timeout,
    ]
    .map(String::from)
    .to_vec()
}

/// Renders an IstioOperator into `file`, installs it with istioctl, and waits until `deployment`
/// (in istio-system) is available: the shape shared by the control plane and the east-west gateway.
pub(super) fn install_operator<C: Serialize>(
    b: &mut PhaseBuilder<'_>,
    file: &str,
    template: &'static str,
    context: &C,
    deployment: &str,
) -> Result<(), PlanError> {
    let path = b.render(file, template, context, false)?;
    b.step(Step::Run {
        tool: Tool::Istioctl,
        args: istioctl_install(&b.cluster.context, &path, b.input.timeout_secs),
        unless: None,
    });
    b.step(Step::Wait {
        until: Condition::DeploymentAvailable {
            namespace: NAMESPACE.into(),
            name: deployment.into(),
        },
    });
    Ok(())
}

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let cluster = b.cluster;
    let control_plane = ControlPlane {
        name: OPERATOR_NAME,
        istio_version: versions::ISTIO_VERSION,
        mesh_id: &b.input.mesh.mesh_id,
        cluster_name: &cluster.name,
        network: &cluster.network,
    };
    install_operator(
        b,
        "control-plane.yaml",
        "istio/control-plane.yaml.j2",
        &control_plane,
        "istiod",
    )?;
    // The east-west gateway's `image: auto` is filled in by this webhook (pitfall 29).
    b.step(Step::Wait {
        until: Condition::WebhookCaBundle {
            kind: "MutatingWebhookConfiguration".into(),
            name: "istio-sidecar-injector".into(),
        },
    });
    Ok(())
}
