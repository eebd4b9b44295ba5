//! Read-only facts about a cluster, for the phases' probes and `verify`.

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::Api;

/// The LoadBalancer IP or hostname of Service `namespace/name`, if it exists and has one.
pub async fn service_address(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc = services.get_opt(name).await.ok().flatten()?;
    super::wait::ingress_address(&svc)
}
