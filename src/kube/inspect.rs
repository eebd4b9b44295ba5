//! Read-only facts about a cluster's part of the mesh, shared by `status` and `verify`.

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

use crate::phases::eastwest::GATEWAY_NAME;

/// Istio's namespace.
const ISTIO_NAMESPACE: &str = "istio-system";

/// The east-west gateway's LoadBalancer IP, if it has one.
pub async fn eastwest_ip(client: &Client) -> Option<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    services
        .get_opt(GATEWAY_NAME)
        .await
        .ok()
        .flatten()?
        .status?
        .load_balancer?
        .ingress?
        .into_iter()
        .find_map(|i| i.ip)
}

/// Whether Gateway `cross-network-gateway` exists (false also when Istio's CRDs do not).
pub async fn services_exposed(client: &Client) -> bool {
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway");
    let gateways: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ISTIO_NAMESPACE,
        &ApiResource::from_gvk_with_plural(&gvk, "gateways"),
    );
    matches!(gateways.get_opt("cross-network-gateway").await, Ok(Some(_)))
}

/// Whether this cluster holds the remote secret of cluster `source`.
pub async fn has_remote_secret(client: &Client, source: &str) -> bool {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    matches!(
        secrets.get_opt(&format!("istio-remote-secret-{source}")).await,
        Ok(Some(_))
    )
}
