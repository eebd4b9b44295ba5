//! Plays the two components envtest lacks for running pods: the scheduler (binds a pending pod to a
//! node through the `pods/binding` subresource, as kube-scheduler does) and the kubelet (registers
//! its Node with a Ready condition, and reports a bound pod as Running with every container ready,
//! through the `pods/status` subresource). Everything above them is real: the deployment,
//! replicaset, daemonset and endpointslice controllers of kube-controller-manager turn those pod
//! states into Deployment `Available`, DaemonSet `numberReady` and ready endpoints.
//!
//! The pod status mirrors what a kubelet writes (k8s.io/kubernetes `pkg/kubelet/status`): phase
//! `Running`; conditions `PodScheduled`, `Initialized`, `ContainersReady`, `Ready` all `True`;
//! one `containerStatuses` entry per container and one `initContainerStatuses` entry per init
//! container, where a native sidecar (an init container with `restartPolicy: Always`) is running
//! and ready, as the kubelet reports it since Kubernetes 1.29.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Registers node `name` with these labels and a Ready condition, as a kubelet does when it joins.
/// The kubelet always adds its well-known labels (`kubernetes.io/hostname`, `kubernetes.io/os`,
/// `kubernetes.io/arch`: k8s.io/kubernetes `pkg/kubelet/kubelet_node_status.go`); DaemonSets such
/// as MetalLB's speaker select nodes by them.
pub async fn register_node(client: &kube::Client, name: &str, labels: &BTreeMap<String, String>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut all = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    all.extend(labels.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": all}});
    nodes
        .patch(name, &PatchParams::apply("kubelet").force(), &Patch::Apply(&node))
        .await
        .unwrap();
    let now = chrono_now();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "Hostname", "address": name}],
        "nodeInfo": {"kubeletVersion": "v1.36.2", "containerRuntimeVersion": "containerd://2.1.0",
            "architecture": "amd64", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
            "kernelVersion": "6.1.0", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""}}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    // The apiserver taints a new node `node.kubernetes.io/not-ready:NoSchedule`; the node lifecycle
    // controller lifts it once the node reports Ready (`pkg/controller/nodelifecycle`,
    // `doNoScheduleTaintingPass`). That controller is off here (no kubelet renews leases), so the
    // stand-in lifts it, or no DaemonSet would schedule.
    let untaint = json!({"spec": {"taints": null}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&untaint))
        .await
        .unwrap();
}

/// Gives node `name` the InternalIP `ip`, as the kubelet reports the address of its `--node-ip`
/// (kind sets it to the node container's address on the docker network: kind
/// `pkg/cluster/internal/kubeadm/config.go`, `node-ip: "{{ .NodeAddress }}"`). A restarted node
/// whose container got another address reports the new one.
pub async fn set_internal_ip(client: &kube::Client, name: &str, ip: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"status": {"addresses": [
        {"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// RFC 3339 "now", as the API's `Time` fields take it.
fn chrono_now() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The node a pending pod goes to: the one a DaemonSet pod's node affinity names, else `default`.
fn node_for(pod: &Pod, default: &str) -> String {
    let affinity =
        serde_json::to_value(pod.spec.as_ref().and_then(|s| s.affinity.clone())).unwrap_or(Value::Null);
    affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
        ["matchFields"][0]["values"][0]
        .as_str()
        .unwrap_or(default)
        .to_string()
}

/// The status a kubelet reports for a pod whose containers all started.
pub fn running_status(pod: &Pod, ip: &str) -> Value {
    let now = chrono_now();
    let spec = pod.spec.clone().unwrap_or_default();
    let container = |c: &k8s_openapi::api::core::v1::Container, ready: bool| {
        json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
            "ready": ready, "started": ready, "restartCount": 0,
            "state": if ready { json!({"running": {"startedAt": now}}) }
                     else { json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}) }})
    };
    let inits: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container(c, c.restart_policy.as_deref() == Some("Always")))
        .collect();
    let containers: Vec<Value> = spec.containers.iter().map(|c| container(c, true)).collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.89.0.2",
        "startTime": now,
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "initContainerStatuses": inits, "containerStatuses": containers}})
}

/// Schedules and "runs" every pod of the cluster until the returned task is aborted. Pod IPs come
/// from 10.244.0.0/16 (recorded in status only: nothing dials them).
pub fn run_pods(client: kube::Client, node: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client.clone());
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut next_ip: u32 = 2;
        while let Some(event) = stream.next().await {
            let pod = match event {
                Ok(Event::Apply(p) | Event::InitApply(p)) => p,
                _ => continue,
            };
            if pod.metadata.deletion_timestamp.is_some() {
                // A kubelet confirms the deletion once the containers stopped.
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let _ = api
                    .delete(
                        &pod.metadata.name.clone().unwrap_or_default(),
                        &kube::api::DeleteParams::default().grace_period(0),
                    )
                    .await;
                continue;
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            if bound.is_none() {
                let binding = Binding {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    },
                    target: ObjectReference {
                        kind: Some("Node".into()),
                        name: Some(node_for(&pod, &node)),
                        ..Default::default()
                    },
                };
                let body = serde_json::to_vec(&binding).unwrap();
                let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap();
                let _ = client.request_text(request).await;
                continue;
            }
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                continue;
            }
            let ip = format!("10.244.{}.{}", next_ip / 250, next_ip % 250 + 1);
            next_ip += 1;
            let _ = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&running_status(&pod, &ip)),
                )
                .await;
        }
    })
}
