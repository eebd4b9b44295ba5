//! Phase `istio`: each cluster's control plane. Reference section 6. A primary gets istiod; a
//! remote gets Istio's `remote` profile, pointed at its primary's istiod through the primary's
//! east-west gateway (Istio docs, "Install Primary-Remote" and "… on different networks").

use serde::Serialize;

use crate::plan::{Condition, PhaseBuilder, PlanError, RecordOn, Step};
use crate::probe::{self, Finding, Probe};
use crate::topology::Role;
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

/// What a remote's IstioOperator carries until its primary's east-west gateway has an address:
/// the variable Istio's docs use. `up` fills it in before it installs; a plan written by
/// `--dry-run` may show it.
pub const DISCOVERY_ADDRESS_UNKNOWN: &str = "${DISCOVERY_ADDRESS}";

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
    /// `values.global.externalIstiod`: this istiod also configures remote clusters.
    external_istiod: bool,
}

/// Context of `templates/istio/remote.yaml.j2`.
#[derive(Serialize)]
struct Remote<'a> {
    name: &'a str,
    istio_version: &'a str,
    cluster_name: &'a str,
    network: &'a str,
    primary: &'a str,
    remote_pilot_address: &'a str,
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
        record_on: RecordOn::Deployment(deployment.into()),
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
    if b.cluster.role == Role::Remote {
        return plan_remote(b);
    }
    let cluster = b.cluster;
    let control_plane = ControlPlane {
        external_istiod: b.input.mesh.controls_remotes(cluster),
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

/// A remote: the `remote` profile, its injector and istiod Service pointed at the primary's
/// east-west gateway. It runs no istiod, so there is nothing to wait for: the primary's istiod
/// takes the remote over once it holds the remote's secret (phase `remote-secrets`).
fn plan_remote(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let mesh = b.input.mesh;
    let primary = mesh.control_plane_of(b.cluster);
    let address = b
        .input
        .gateway_ips
        .get(&primary.name)
        .map_or(DISCOVERY_ADDRESS_UNKNOWN, String::as_str);
    let remote = Remote {
        name: OPERATOR_NAME,
        istio_version: versions::ISTIO_VERSION,
        cluster_name: &b.cluster.name,
        network: &b.cluster.network,
        primary: &primary.name,
        remote_pilot_address: address,
    };
    let path = b.render("control-plane.yaml", "istio/remote.yaml.j2", &remote, false)?;
    b.step(Step::IstioctlInstall {
        context: b.cluster.context.clone(),
        file: path,
        record_on: RecordOn::Service(REMOTE_RECORD_SERVICE.into()),
        timeout_secs: b.input.timeout_secs,
    });
    Ok(())
}

/// The Service a remote install creates (istiod's address in the remote, backed by the primary's
/// gateway: Istio chart `istio-discovery/templates/remote-istiod-service.yaml`); meshctl keeps its
/// install record there.
pub const REMOTE_RECORD_SERVICE: &str = "istiod";

/// What each `istioctl install` of the phase installed: its Deployment available and recorded as
/// installed from this very rendering.
pub(super) async fn installed(p: &Probe<'_>, client: &kube::Client) -> Vec<Finding> {
    let mut out = Vec::new();
    for step in p.steps {
        if let Step::IstioctlInstall { file, record_on, .. } = step {
            let digest = p.artifact(file).map(|a| a.digest()).unwrap_or_default();
            let installed = Some((INSTALLED_DIGEST, digest.as_str()));
            out.push(match record_on {
                RecordOn::Service(name) => probe::service(client, NAMESPACE, name, installed).await,
                RecordOn::Deployment(name) => probe::deployment(client, NAMESPACE, name, installed).await,
            });
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
