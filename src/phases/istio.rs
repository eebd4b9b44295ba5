//! Phase `istio`: the primary control plane of each cluster. Reference section 6.

use serde::Serialize;

use crate::plan::{Condition, PhaseBuilder, PlanError, Step};
use crate::probe::{self, Finding, Probe};
use crate::versions;

/// Name of the control-plane IstioOperator; a name keeps istioctl's pruning away from the east-west
/// gateway on a re-install (pitfall 26).
pub const OPERATOR_NAME: &str = "control-plane";
/// Istio's namespace.
pub const NAMESPACE: &str = "istio-system";
/// Annotation on an installed Deployment (istiod, the east-west gateway) holding the digest of the
/// IstioOperator it was installed from: kept in the cluster, so any run, from any machine, can
/// tell whether the cluster runs what the plan renders.
pub const INSTALLED_DIGEST: &str = "meshctl.io/installed-operator-digest";

/// Context of `templates/istio/control-plane.yaml.j2`.
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
    b.step(Step::IstioctlInstall {
        context: b.cluster.context.clone(),
        file: path,
        deployment: deployment.into(),
        timeout_secs: b.input.timeout_secs,
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
        mesh_config: (!b.input.mesh.mesh_config.is_empty())
            .then(|| serde_json::to_string(&b.input.mesh.mesh_config).expect("plain data serializes")),
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

/// What each `istioctl install` of the phase installed: its Deployment available and recorded as
/// installed from this very rendering.
pub(super) async fn installed(p: &Probe<'_>, client: &kube::Client) -> Vec<Finding> {
    let mut out = Vec::new();
    for step in p.steps {
        if let Step::IstioctlInstall { file, deployment, .. } = step {
            let digest = p.artifact(file).map(|a| a.digest()).unwrap_or_default();
            out.push(
                probe::deployment(client, NAMESPACE, deployment, Some((INSTALLED_DIGEST, &digest))).await,
            );
        }
    }
    out
}

/// istiod installed from this cluster's rendered IstioOperator, and available.
pub(super) async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    match p.client().await {
        Ok(client) => installed(p, &client).await,
        Err(f) => vec![f],
    }
}
