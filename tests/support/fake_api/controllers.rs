//! Controllers a real cluster runs and meshctl waits on, played by the fake: the deployment and
//! daemonset controllers (ready as soon as created), MetalLB's webhook certificate rotator (CA bundle
//! injected, webhook endpoint ready) and MetalLB itself (LoadBalancer IPs from the IPAddressPool in
//! `metallb-system`, or from `external_lb` for clusters that have their own load balancer). Without
//! a pool, a LoadBalancer Service stays `<pending>`, as on kind without MetalLB.

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::server::Shared;
use super::store::Store;

/// What the controllers do.
#[derive(Debug, Clone, Default)]
pub struct ControllerOptions {
    /// First address of a load balancer that works without MetalLB (existing clusters).
    pub external_lb: Option<Ipv4Addr>,
}

fn patch_status(s: &mut Store, group: &str, plural: &str, ns: &str, name: &str, status: Value) {
    if let Some(r) = s.resource(group, plural) {
        let _ = s.merge_patch(&r, ns, name, &json!({"status": status}), true);
    }
}

fn pool_range(s: &Store) -> Option<(u32, u32)> {
    let r = s.resource("metallb.io", "ipaddresspools")?;
    let pool = s.list(&r, Some("metallb-system")).into_iter().next()?;
    let range = pool["spec"]["addresses"][0].as_str()?.to_string();
    let (a, b) = range.split_once('-')?;
    Some((
        u32::from(a.trim().parse::<Ipv4Addr>().ok()?),
        u32::from(b.trim().parse::<Ipv4Addr>().ok()?),
    ))
}

/// One pass over the store: bring every object the controllers own to its ready state.
fn reconcile(s: &mut Store, options: &ControllerOptions) {
    let deployments = s
        .resource("apps", "deployments")
        .map(|r| s.list(&r, None))
        .unwrap_or_default();
    for d in deployments {
        let available = d["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
        });
        if !available {
            let (ns, name) = (
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            );
            patch_status(
                s,
                "apps",
                "deployments",
                &ns,
                &name,
                json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}),
            );
        }
    }
    reconcile_pods(s);
    let daemonsets = s
        .resource("apps", "daemonsets")
        .map(|r| s.list(&r, None))
        .unwrap_or_default();
    for d in daemonsets {
        if d["status"]["numberReady"].as_i64() != Some(1) {
            let (ns, name) = (
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            );
            patch_status(
                s,
                "apps",
                "daemonsets",
                &ns,
                &name,
                json!({"desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberReady": 1, "numberMisscheduled": 0}),
            );
        }
    }
    for plural in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
        let Some(r) = s.resource("admissionregistration.k8s.io", plural) else {
            continue;
        };
        for cfg in s.list(&r, None) {
            let hooks = cfg["webhooks"].as_array().cloned().unwrap_or_default();
            if hooks.is_empty()
                || hooks.iter().all(|h| {
                    h["clientConfig"]["caBundle"]
                        .as_str()
                        .is_some_and(|b| !b.is_empty())
                })
            {
                continue;
            }
            let mut updated = cfg.clone();
            for h in updated["webhooks"].as_array_mut().expect("checked above") {
                h["clientConfig"]["caBundle"] = json!("RkFLRS1DQQ==");
            }
            let name = cfg["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let _ = s.replace(&r, "", &name, updated, false);
            if let Some(svc) = hooks[0]["clientConfig"]["service"].as_object() {
                let (ns, svc_name) = (
                    svc["namespace"].as_str().unwrap_or_default(),
                    svc["name"].as_str().unwrap_or_default(),
                );
                if let Some(es) = s.resource("discovery.k8s.io", "endpointslices") {
                    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                        "metadata": {"name": format!("{svc_name}-fake"), "labels": {"kubernetes.io/service-name": svc_name}},
                        "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": true}}]});
                    let _ = s.create(&es, ns, slice, false);
                }
            }
        }
    }
    let Some(svc_r) = s.resource("", "services") else {
        return;
    };
    let services = s.list(&svc_r, None);
    let taken: Vec<u32> = services
        .iter()
        .filter_map(|svc| {
            svc["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()?
                .parse::<Ipv4Addr>()
                .ok()
        })
        .map(u32::from)
        .collect();
    let range = pool_range(s).or_else(|| options.external_lb.map(|ip| (u32::from(ip), u32::from(ip) + 250)));
    let Some((first, last)) = range else { return };
    let mut next = (first..=last).filter(|ip| !taken.contains(ip));
    for svc in services {
        if svc["spec"]["type"] != "LoadBalancer"
            || svc["status"]["loadBalancer"]["ingress"][0]["ip"].is_string()
        {
            continue;
        }
        let Some(ip) = next.next() else { return };
        let (ns, name) = (
            svc["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            svc["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        );
        patch_status(
            s,
            "",
            "services",
            &ns,
            &name,
            json!({"loadBalancer": {"ingress": [{"ip": Ipv4Addr::from(ip).to_string(), "ipMode": "VIP"}]}}),
        );
    }
}

/// The deployment and replicaset controllers, the scheduler, the kubelet and Istio's sidecar
/// injector at once: one Running, Ready pod per Deployment (a sidecar `istio-proxy` is added when
/// the namespace has `istio-injection=enabled`); pods of deleted Deployments go away, and a
/// deleted pod is replaced by one with a new name.
fn reconcile_pods(s: &mut Store) {
    let (Some(deploy_r), Some(pod_r), Some(ns_r)) = (
        s.resource("apps", "deployments"),
        s.resource("", "pods"),
        s.resource("", "namespaces"),
    ) else {
        return;
    };
    let deployments = s.list(&deploy_r, None);
    let pods = s.list(&pod_r, None);
    for pod in &pods {
        let owner = pod["metadata"]["labels"]["fake.meshctl/owner"]
            .as_str()
            .unwrap_or_default();
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        if !owner.is_empty()
            && !deployments
                .iter()
                .any(|d| d["metadata"]["name"] == owner && d["metadata"]["namespace"] == ns)
        {
            let _ = s.delete(&pod_r, ns, pod["metadata"]["name"].as_str().unwrap_or_default());
        }
    }
    for d in deployments {
        let (ns, name) = (
            d["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            d["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        );
        if pods.iter().any(|p| {
            p["metadata"]["labels"]["fake.meshctl/owner"] == name.as_str()
                && p["metadata"]["namespace"] == ns.as_str()
        }) && s
            .list(&pod_r, Some(&ns))
            .iter()
            .any(|p| p["metadata"]["labels"]["fake.meshctl/owner"] == name.as_str())
        {
            continue;
        }
        // Injection needs both the namespace label and istiod's injector webhook.
        let injector = s
            .resource("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
            .and_then(|r| s.get(&r, "", "istio-sidecar-injector").ok())
            .is_some();
        let injected = injector
            && s.get(&ns_r, "", &ns)
                .ok()
                .is_some_and(|n| n["metadata"]["labels"]["istio-injection"] == "enabled");
        let mut labels = d["spec"]["template"]["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["fake.meshctl/owner"] = json!(name);
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Istio 1.28+ on Kubernetes 1.33+ injects the proxy as a native sidecar: `istio-init`, then
        // `istio-proxy` with `restartPolicy: Always`, both in initContainers (the injection
        // template's NativeSidecars branch; see the fixture in src/verify.rs).
        let init_containers: Vec<Value> = if injected {
            vec![
                json!({"name": "istio-init", "image": "registry.istio.io/release/proxyv2:1.31.1"}),
                json!({"name": "istio-proxy", "image": "registry.istio.io/release/proxyv2:1.31.1", "restartPolicy": "Always"}),
            ]
        } else {
            Vec::new()
        };
        let status_of = |c: &Value, ready: bool| json!({"name": c["name"], "ready": ready, "restartCount": 0, "image": c["image"], "imageID": "", "started": ready});
        let statuses: Vec<Value> = containers.iter().map(|c| status_of(c, true)).collect();
        let init_statuses: Vec<Value> = init_containers
            .iter()
            .map(|c| status_of(c, c["restartPolicy"] == "Always"))
            .collect();
        let pod_name = format!("{name}-{:05x}", s.rv * 7919 % 0xfffff);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "labels": labels},
            "spec": {"initContainers": init_containers, "containers": containers},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "initContainerStatuses": init_statuses, "containerStatuses": statuses}});
        let _ = s.create(&pod_r, &ns, pod, false);
    }
}

/// Runs the controllers until the cluster stops: a pass after every change.
pub fn start(shared: Arc<Shared>, options: ControllerOptions) {
    let mut events = shared.store.lock().unwrap().events.subscribe();
    std::thread::spawn(move || {
        reconcile(&mut shared.store.lock().unwrap(), &options);
        loop {
            match events.blocking_recv() {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Controllers react after the writer's request has completed, as in a real cluster.
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    reconcile(&mut shared.store.lock().unwrap(), &options);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
