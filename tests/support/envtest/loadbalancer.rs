//! Plays the load balancer an existing cluster brings (a cloud's, or MetalLB already installed):
//! every Service of type LoadBalancer gets an ingress IP through the status subresource, as
//! k8s.io/cloud-provider's service controller writes it (`status.loadBalancer.ingress[].ip`).

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use serde_json::json;

/// Assigns `prefix.N` (N from 10 up) to LoadBalancer Services until the task is aborted.
pub fn run(client: kube::Client, prefix: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let services: Api<Service> = Api::all(client.clone());
        let mut stream = watcher(services, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut next = 10;
        while let Some(event) = stream.next().await {
            let svc = match event {
                Ok(Event::Apply(s) | Event::InitApply(s)) => s,
                _ => continue,
            };
            let wants = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            let has = meshctl::kube::wait::ingress_address(&svc).is_some();
            if !wants || has {
                continue;
            }
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": format!("{prefix}.{next}"), "ipMode": "VIP"}]}}});
            next += 1;
            let _ = api
                .patch_status(
                    &svc.metadata.name.clone().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await;
        }
    })
}
