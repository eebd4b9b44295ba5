//! The Istio networking objects `expose` makes: their names, and handles to read and remove them
//! (Istio's CRDs have no typed client; these name their group, version and plural once).

/// The Gateway that exposes `*.local` services, as rendered.
pub const GATEWAY_NAME: &str = "cross-network-gateway";

/// The Gateway that exposes istiod, as rendered.
pub const ISTIOD_GATEWAY_NAME: &str = "istiod-gateway";
/// The VirtualService routing it to istiod, as rendered.
pub const ISTIOD_VIRTUAL_SERVICE: &str = "istiod-vs";

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
