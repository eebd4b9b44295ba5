//! Phase `expose`: what a primary's east-west gateway serves. `*.local`
//! services for other networks (samples/multicluster/expose-services.yaml) when the mesh spans
//! several networks; istiod itself (samples/multicluster/expose-istiod.yaml, 15012 and 15017) when
//! remotes are configured by this primary. A remote exposes nothing of its own: its primary's
//! Gateway configures the remote's east-west gateway too.

use anyhow::Result;
use futures::future::BoxFuture;
use serde::Serialize;

use super::{PhaseLogic, RemoveContext};
use crate::kube::delete_owned;
use crate::plan::{Phase, PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};

/// The Gateway that exposes `*.local` services, as rendered.
pub const GATEWAY_NAME: &str = "cross-network-gateway";

/// The Gateway that exposes istiod, as rendered.
pub const ISTIOD_GATEWAY_NAME: &str = "istiod-gateway";
/// The VirtualService routing it to istiod, as rendered.
pub const ISTIOD_VIRTUAL_SERVICE: &str = "istiod-vs";

/// Exposes services (and istiod, for remotes) through the east-west gateway.
pub struct Expose;

impl PhaseLogic for Expose {
    fn phase(&self) -> Phase {
        Phase::Expose
    }

    fn plan(&self, b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
        plan(b)
    }

    fn probe<'a>(&'a self, p: &'a Probe<'a>) -> BoxFuture<'a, Vec<Finding>> {
        Box::pin(probe(p))
    }

    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(remove(cx))
    }
}

/// Context of `templates/expose/cross-network-gateway.yaml.j2`.
#[derive(Serialize)]
struct CrossNetworkGateway {
    name: &'static str,
    /// Beside the gateways it configures: istio-system, or `external-istiod` in the config cluster
    /// of an external control plane.
    namespace: &'static str,
}

/// Context of `templates/expose/expose-istiod.yaml.j2`.
#[derive(Serialize)]
struct ExposeIstiod {
    name: &'static str,
    vs_name: &'static str,
    /// istiod's Service of the mesh's revision: what any other name reaches.
    istiod: String,
    /// While an upgrade is under way, each running revision's istiod Service, reached by its own
    /// name (the TLS server name its proxies and the remotes' API servers send), as Istio's
    /// `expose-istiod-rev.yaml.tmpl` routes a revision: a remote's pods injected by either
    /// revision must reach the istiod that injected them, and a remote's injector the istiod of
    /// its own revision.
    by_name: Vec<String>,
    /// Where that istiod runs: `external-istiod` for an external control plane, whose gateway
    /// its own istio-system istiod configures.
    istiod_namespace: &'static str,
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let mesh = b.input.mesh;
    // The executor retries these applies until Istio's validation webhook serves: applied before it, the
    // API server refuses them (`failed calling webhook "validation.istio.io"`).
    if mesh.exposes_services(b.cluster) {
        let file = b.render(
            "cross-network-gateway.yaml",
            "expose/cross-network-gateway.yaml.j2",
            &CrossNetworkGateway {
                name: GATEWAY_NAME,
                namespace: mesh.gateway_namespace(b.cluster),
            },
            false,
        )?;
        b.step(Step::Apply { file });
    }
    if mesh.controls_remotes(b.cluster) {
        let file = b.render(
            "expose-istiod.yaml",
            "expose/expose-istiod.yaml.j2",
            &ExposeIstiod {
                name: ISTIOD_GATEWAY_NAME,
                vs_name: ISTIOD_VIRTUAL_SERVICE,
                istiod: mesh.istio_revision.istiod(),
                // Outside an upgrade one istiod runs, and every name reaches it (Istio's
                // `expose-istiod.yaml`).
                by_name: match &mesh.istio_revision_beside {
                    Some(beside) => vec![mesh.istio_revision.istiod(), beside.istiod()],
                    None => Vec::new(),
                },
                istiod_namespace: mesh.istio_namespace(b.cluster),
            },
            false,
        )?;
        b.step(Step::Apply { file });
    }
    Ok(())
}

/// The Gateways (and istiod's VirtualService) as rendered (missing too when Istio's CRDs are not
/// installed).
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    match p.client().await {
        Ok(client) => p.all_applied(&client).await,
        Err(f) => vec![f],
    }
}

/// Istio Gateways in `namespace`, where the expose Gateways live.
pub fn gateways(client: &kube::Client, namespace: &str) -> kube::api::Api<kube::api::DynamicObject> {
    networking(client, namespace, "Gateway", "gateways")
}

/// Istio VirtualServices in `namespace`, where istiod's lives.
pub fn virtual_services(client: &kube::Client, namespace: &str) -> kube::api::Api<kube::api::DynamicObject> {
    networking(client, namespace, "VirtualService", "virtualservices")
}

fn networking(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    plural: &str,
) -> kube::api::Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", kind);
    kube::api::Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// Whether the Gateway exists in `namespace` (false also when Istio's CRDs do not).
pub async fn exposed(client: &kube::Client, namespace: &str) -> bool {
    matches!(
        gateways(client, namespace).get_opt(GATEWAY_NAME).await,
        Ok(Some(_))
    )
}

/// The Gateways and istiod's VirtualService meshctl applied (they route through the east-west
/// gateway, so they go before it).
async fn remove(cx: &RemoveContext<'_>) -> Result<Vec<String>> {
    let namespace = cx.gateway_namespace();
    let mut removed = Vec::new();
    let gateways = gateways(&cx.client, namespace);
    for name in [GATEWAY_NAME, ISTIOD_GATEWAY_NAME] {
        let what = format!("Gateway {namespace}/{name}");
        removed.extend(delete_owned(&gateways, (name, cx.mesh_id), &what).await?);
    }
    let what = format!("VirtualService {namespace}/{ISTIOD_VIRTUAL_SERVICE}");
    removed.extend(
        delete_owned(
            &virtual_services(&cx.client, namespace),
            (ISTIOD_VIRTUAL_SERVICE, cx.mesh_id),
            &what,
        )
        .await?,
    );
    Ok(removed)
}
