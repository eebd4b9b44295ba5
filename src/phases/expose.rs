//! Phase `expose`: what a primary's east-west gateway serves. `*.local`
//! services for other networks (samples/multicluster/expose-services.yaml) when the mesh spans
//! several networks; istiod itself (samples/multicluster/expose-istiod.yaml, 15012 and 15017) when
//! remotes are configured by this primary. A remote exposes nothing of its own: its primary's
//! Gateway configures the remote's east-west gateway too.

use anyhow::Result;
use futures::future::BoxFuture;
use serde::Serialize;

use super::{PhaseLogic, RemoveContext};
use crate::istio_config::{
    GATEWAY_NAME, ISTIOD_GATEWAY_NAME, ISTIOD_VIRTUAL_SERVICE, gateways, virtual_services,
};
use crate::kube::delete_owned;
use crate::plan::{PhaseBuilder, PlanError, Step};
use crate::probe::{Finding, Probe};

/// Exposes services (and istiod, for remotes) through the east-west gateway.
pub struct Expose;

impl PhaseLogic for Expose {
    plan_and_probe_are_the_modules!();

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
        let gateway = CrossNetworkGateway {
            name: GATEWAY_NAME,
            namespace: mesh.gateway_namespace(b.cluster),
        };
        apply(
            b,
            (
                "cross-network-gateway.yaml",
                "expose/cross-network-gateway.yaml.j2",
            ),
            &gateway,
        )?;
    }
    if mesh.controls_remotes(b.cluster) {
        let istiod = ExposeIstiod {
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
        };
        apply(b, ("expose-istiod.yaml", "expose/expose-istiod.yaml.j2"), &istiod)?;
    }
    Ok(())
}

/// Renders `file` from `template` and applies it.
fn apply<C: Serialize>(
    b: &mut PhaseBuilder<'_>,
    (file, template): (&str, &'static str),
    context: &C,
) -> Result<(), PlanError> {
    let file = b.render(file, template, context, false)?;
    b.step(Step::Apply { file });
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
