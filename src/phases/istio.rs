//! Phase `istio`: each cluster's control plane. A primary gets istiod; a
//! remote gets Istio's `remote` profile, pointed at its primary's istiod through the primary's
//! east-west gateway (Istio docs, "Install Primary-Remote" and "… on different networks").

use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde::Serialize;

use super::istioctl_install::{
    DISCOVERY_ADDRESS_UNKNOWN, install_operator, installed, plan_install, recorded, uninstall_operator,
};
use super::{Fact, PhaseLogic, RemoveContext, SummaryColumn};
use crate::plan::{Condition, Phase, PhaseBuilder, PlanError, RecordOn, Step};
use crate::probe::{Finding, Probe};
use crate::topology::{Cluster, Mesh, Role};
use crate::versions;

/// Name of the control-plane IstioOperator; a name keeps istioctl's pruning away from the east-west
/// gateway on a re-install (an unnamed re-install prunes every install-owned object it did not
/// render, the gateway included).
pub const OPERATOR_NAME: &str = "control-plane";
pub const NAMESPACE: &str = crate::topology::ISTIO_NAMESPACE;
/// Each cluster's control plane: istiod on a primary, the remote profile on a remote.
pub struct Istio;

impl PhaseLogic for Istio {
    fn summary(&self, _mesh: &Mesh, cluster: &Cluster) -> Option<SummaryColumn> {
        let value = match &cluster.primary {
            None => "ready".to_string(),
            Some(primary) => format!("of {primary}"),
        };
        Some(SummaryColumn {
            header: "ISTIOD",
            key: "istiod",
            value,
        })
    }

    plan_and_probe_are_the_modules!();

    fn needs(&self) -> &'static [Fact] {
        &[Fact::GatewayAddresses]
    }

    fn runs_istioctl(&self) -> bool {
        true
    }

    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let Some((record_on, namespace)) = recorded_control_plane(cx).await? else {
                return Ok(Vec::new());
            };
            uninstall_operator(cx, Phase::Istio, CONTROL_PLANE_FILE, record_on, namespace).await
        })
    }
}

/// The control plane's IstioOperator file in a plan.
pub const CONTROL_PLANE_FILE: &str = "control-plane.yaml";

/// Context of `templates/istio/control-plane.yaml.j2`.
#[derive(Serialize)]
struct ControlPlane<'a> {
    name: &'a str,
    /// `spec.revision`: empty for Istio's default revision.
    revision: &'a str,
    istio_version: &'a str,
    mesh_id: &'a str,
    cluster_name: &'a str,
    network: &'a str,
    /// `meshConfig`, as JSON, when the topology sets any.
    mesh_config: Option<String>,
    /// `values.global.externalIstiod`: this istiod also configures remote clusters.
    external_istiod: bool,
    /// `values.global.meshNetworks`: the networks whose gateways are declared.
    mesh_networks: Vec<crate::topology::DeclaredNetwork>,
}

/// Context of `templates/istio/remote.yaml.j2`.
#[derive(Serialize)]
struct Remote<'a> {
    name: &'a str,
    revision: &'a str,
    /// `values.global.istioNamespace`: `external-istiod` for the remotes of an external control
    /// plane, else empty (istio-system).
    istio_namespace: &'a str,
    /// The config cluster of an external control plane: `configCluster`, and the `istio`
    /// ConfigMap the external istiod reads its mesh config from.
    config_cluster: bool,
    istio_version: &'a str,
    cluster_name: &'a str,
    network: &'a str,
    primary: &'a str,
    remote_pilot_address: &'a str,
    /// In the config cluster: `values.global.meshNetworks` of its `istio` ConfigMap, the one the
    /// external istiod takes its networks from (Istio `pkg/config/mesh/meshwatcher`,
    /// `NewNetworksCollection`: the first source there is, and `SHARED_MESH_CONFIG`'s comes first).
    mesh_networks: Vec<crate::topology::DeclaredNetwork>,
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    if b.cluster.role == Role::Remote {
        return plan_remote(b);
    }
    if !b.input.mesh.dataplane.is_sidecar() {
        return super::ambient::plan_control_plane(b, (OPERATOR_NAME, CONTROL_PLANE_FILE));
    }
    let cluster = b.cluster;
    let mesh = b.input.mesh;
    let revision = &mesh.istio_revision;
    // An external control plane's own istiod only configures the gateway in front of the
    // external istiod (Istio's docs install it from the default profile with that gateway): the
    // mesh's options and its remotes belong to the external istiod (phase `external-istiod`).
    let primary = cluster.role == Role::Primary;
    let control_plane = ControlPlane {
        revision: revision.operator_value(),
        external_istiod: primary && mesh.controls_remotes(cluster),
        mesh_networks: if primary {
            mesh.declared_networks()
        } else {
            Vec::new()
        },
        name: OPERATOR_NAME,
        istio_version: versions::ISTIO_VERSION,
        mesh_id: &mesh.mesh_id,
        cluster_name: &cluster.name,
        network: &cluster.network,
        mesh_config: (primary && !mesh.mesh_config.is_empty())
            .then(|| serde_json::to_string(&mesh.mesh_config).expect("plain data serializes")),
    };
    install_operator(
        b,
        CONTROL_PLANE_FILE,
        "istio/control-plane.yaml.j2",
        &control_plane,
        (NAMESPACE, &revision.istiod()),
    )?;
    // The east-west gateway's `image: auto` is filled in by this webhook: a gateway
    // created before it serves keeps the literal image `auto` and never starts.
    b.step(Step::Wait {
        until: Condition::WebhookCaBundle {
            kind: "MutatingWebhookConfiguration".into(),
            name: b.input.mesh.injector_webhook(cluster),
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
    let revision = &mesh.istio_revision;
    let namespace = mesh.istio_namespace(b.cluster);
    let remote = Remote {
        name: OPERATOR_NAME,
        revision: revision.operator_value(),
        istio_namespace: if namespace == NAMESPACE { "" } else { namespace },
        config_cluster: mesh.is_config_cluster(b.cluster),
        istio_version: versions::ISTIO_VERSION,
        cluster_name: &b.cluster.name,
        network: &b.cluster.network,
        primary: &primary.name,
        remote_pilot_address: address,
        mesh_networks: if mesh.is_config_cluster(b.cluster) {
            mesh.declared_networks()
        } else {
            Vec::new()
        },
    };
    let path = b.render(CONTROL_PLANE_FILE, "istio/remote.yaml.j2", &remote, false)?;
    // A remote runs no istiod: its install is recorded on the istiod Service that points at its
    // primary's.
    plan_install(b, path, RecordOn::Service(revision.istiod()), namespace);
    Ok(())
}

/// istiod installed from this cluster's rendered IstioOperator, and available.
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    match p.client().await {
        Ok(client) if !p.mesh.dataplane.is_sidecar() => super::ambient::probe_control_plane(p, &client).await,
        Ok(client) => installed(p, &client).await,
        Err(f) => vec![f],
    }
}

/// The istiod Deployment (primary, external control plane's own) or Service (remote) of any
/// revision that carries meshctl's install record, with its namespace: `down` removes what the
/// last `up` or `upgrade` installed, whatever its revision.
async fn recorded_control_plane(cx: &RemoveContext<'_>) -> Result<Option<(RecordOn, &'static str)>> {
    let remote = cx.cluster.role == Role::Remote;
    let namespace = if remote { cx.istio_namespace } else { NAMESPACE };
    let names = if remote {
        names_in_namespace::<Service>(&cx.client, namespace).await
    } else {
        names_in_namespace::<Deployment>(&cx.client, namespace).await
    }
    .with_context(|| format!("cannot list istiod in {namespace}"))?;
    for name in names
        .into_iter()
        .filter(|n| n == "istiod" || n.starts_with("istiod-"))
    {
        let record_on = if remote {
            RecordOn::Service(name)
        } else {
            RecordOn::Deployment(name)
        };
        if recorded(&cx.client, &record_on, namespace).await? {
            return Ok(Some((record_on, namespace)));
        }
    }
    Ok(None)
}

/// The names of every `K` in `namespace`.
async fn names_in_namespace<K>(client: &kube::Client, namespace: &str) -> kube::Result<Vec<String>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let listed = Api::<K>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect())
}
