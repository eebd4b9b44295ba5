//! Plays MetalLB's two running parts once its real manifest is applied to a real apiserver (the
//! images cannot run here; the manifest, CRDs, webhook configuration and Services are real):
//! * the controller's certificate rotator (`internal/k8s/webhook.go`): it makes a serving
//!   certificate, starts the webhook server, and patches the CA into every webhook of
//!   `metallb-webhook-configuration`; the server is played by [`super::webhook::WebhookServer`] on
//!   the webhook Service's loopback cluster IP, so the real apiserver calls it;
//! * address allocation (`internal/allocator`): each `LoadBalancer` Service gets the first free
//!   address of the first `IPAddressPool` in `metallb-system`, written to `status.loadBalancer`;
//!   without a pool it stays `<pending>`, as on kind without MetalLB. Pools and Services are both
//!   watched, so a Service created before its pool gets an address once the pool appears.

use meshctl::kube::wait::Condition;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use serde_json::json;

use super::webhook::WebhookServer;

const NAMESPACE: &str = "metallb-system";

/// Runs both parts until the returned tasks are aborted.
pub fn run(client: kube::Client) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(certificate_rotator(client.clone())),
        tokio::spawn(allocator(client)),
    ]
}

async fn certificate_rotator(client: kube::Client) {
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let exists = Condition::exists("metallb-webhook-configuration", "metallb webhook configuration");
    let _ = meshctl::kube::wait::until(&hooks, exists, Duration::from_secs(3600)).await;
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let Ok(svc) = services.get("metallb-webhook-service").await else {
        return;
    };
    let spec = svc.spec.unwrap_or_default();
    let (Some(ip), Some(port)) = (
        spec.cluster_ip,
        spec.ports.and_then(|p| p.first().map(|p| p.port)),
    ) else {
        return;
    };
    let server = WebhookServer::start(
        format!("{ip}:{port}").parse().unwrap(),
        "metallb-webhook-service",
        NAMESPACE,
    );
    // A conflicting write (the manifest applied again) is retried with the fresh object.
    for _ in 0..20 {
        let Ok(mut config) = hooks.get("metallb-webhook-configuration").await else {
            break;
        };
        for hook in config.webhooks.iter_mut().flatten() {
            hook.client_config.ca_bundle = Some(k8s_openapi::ByteString(server.ca_pem.clone().into_bytes()));
        }
        config.metadata.managed_fields = None;
        if hooks
            .replace("metallb-webhook-configuration", &PostParams::default(), &config)
            .await
            .is_ok()
        {
            break;
        }
    }
    // Serve for as long as the cluster lives.
    futures::future::pending::<()>().await;
    drop(server);
}

/// `172.18.255.1-172.18.255.254` or `172.18.255.0/24` → every address it holds.
fn addresses(range: &str) -> Vec<Ipv4Addr> {
    if let Some((a, b)) = range.split_once('-') {
        let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
        (u32::from(a)..=u32::from(b)).map(Ipv4Addr::from).collect()
    } else if let Ok(net) = range.parse::<ipnet::Ipv4Net>() {
        net.hosts().collect()
    } else {
        Vec::new()
    }
}

async fn allocator(client: kube::Client) {
    let gvk = GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool");
    let pools: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &ApiResource::from_gvk_with_plural(&gvk, "ipaddresspools"),
    );
    let services: Api<Service> = Api::all(client.clone());
    let pool_events = watcher(pools.clone(), watcher::Config::default())
        .default_backoff()
        .map(|_| ());
    let service_events = watcher(services.clone(), watcher::Config::default())
        .default_backoff()
        .map(|_| ());
    let mut events = futures::stream::select(pool_events, service_events).boxed();
    while events.next().await.is_some() {
        let Ok(list) = pools.list(&Default::default()).await else {
            continue;
        };
        let Some(range) = list
            .items
            .first()
            .and_then(|p| p.data["spec"]["addresses"][0].as_str().map(String::from))
        else {
            continue;
        };
        let Ok(all) = services.list(&Default::default()).await else {
            continue;
        };
        let ip_of = meshctl::kube::wait::ingress_address;
        let taken: BTreeSet<String> = all.items.iter().filter_map(ip_of).collect();
        let mut free = addresses(&range)
            .into_iter()
            .map(|ip| ip.to_string())
            .filter(|ip| !taken.contains(ip));
        for svc in &all.items {
            let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            if !is_lb || ip_of(svc).is_some() {
                continue;
            }
            let Some(ip) = free.next() else { break };
            let api: Api<Service> = Api::namespaced(
                client.clone(),
                svc.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
            let _ = api
                .patch_status(
                    svc.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await;
        }
    }
}
