//! `meshctl diagnose`: one `.tar.gz` with what a person debugging the mesh needs from every cluster
//! (what `istioctl bug-report` and `cilium sysdump` collect, for meshctl's part of the mesh), and
//! nothing secret: Secrets are listed by name, labels and the keys of their annotations and data,
//! never a value that could hold a credential.
//!
//! ```text
//! summary.txt                       per cluster: collected, unreachable, or cut off at the bound
//! meshctl/state.json, plan.json     what meshctl recorded and planned (no rendered file: cacerts has a key)
//! <cluster>/version.json, nodes.yaml, istiod-clusterz.json, remote-secrets.yaml, metallb.yaml
//! <cluster>/<namespace>/{events,pods,services,deployments,daemonsets}.yaml   istio-system, metallb-system, sample
//! <cluster>/istio-system/gateways.yaml   Gateway API Gateways with their status (ambient's east-west gateway)
//! <cluster>/logs/<pod>.log          istiod, the east-west gateway, ztunnel, istio-cni (last 2000 lines)
//! ```
//! Every cluster is collected at the same time, each bounded by a timeout; a cluster that does not
//! answer is named in the summary and the others are collected anyway.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Event, Node, Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, LogParams};
use serde::Serialize;

use crate::kube::Clients;
use crate::mesh_dir::MeshDir;
use crate::topology::{Cluster, Mesh};

/// Namespaces whose objects are collected.
pub const NAMESPACES: [&str; 3] = [
    crate::topology::ISTIO_NAMESPACE,
    "metallb-system",
    crate::verification::workloads::NAMESPACE,
];
/// Lines of each log kept.
const LOG_LINES: i64 = 2000;

/// Files of the archive, by path.
#[derive(Debug, Default)]
pub struct Bundle {
    files: Vec<(String, Vec<u8>)>,
}

impl Bundle {
    fn add(&mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) {
        self.files.push((path.into(), content.into()));
    }

    /// The content of the file at `path`, when the bundle has one.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_slice())
    }

    pub fn paths(&self) -> Vec<&str> {
        self.files.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// The archive: gzip-compressed tar, files 0644 under one top folder.
    pub fn to_tar_gz(&self, top: &str) -> std::io::Result<Vec<u8>> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, content) in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            header.set_cksum();
            tar.append_data(&mut header, format!("{top}/{path}"), content.as_slice())?;
        }
        tar.into_inner()?.finish()
    }
}

/// How one cluster's collection ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Collected {
    pub cluster: String,
    /// `collected`, `unreachable` or `timed out`.
    pub outcome: String,
    /// Files written for it.
    pub files: usize,
    /// Why, when not collected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// YAML of a list of objects without their `managedFields` (noise for a reader).
fn yaml_of<T: Serialize>(items: &[T]) -> Vec<u8> {
    let mut values: Vec<serde_json::Value> = items
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect();
    for v in &mut values {
        if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
    }
    serde_saphyr::to_string(&values)
        .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
        .into_bytes()
}

/// A remote secret's metadata and the server its kubeconfig points at, never its data.
/// What a bug report may show of a remote secret: names, labels, the annotations' keys (never their
/// values: `kubectl apply`, as Istio's docs apply remote secrets, stores the whole Secret, token
/// included, in `kubectl.kubernetes.io/last-applied-configuration`), the data's keys and the API
/// servers its kubeconfig names.
fn remote_secret_summary(secret: &Secret) -> serde_json::Value {
    let meta = &secret.metadata;
    let annotation_keys: Option<Vec<&String>> = meta.annotations.as_ref().map(|a| a.keys().collect());
    let servers: Vec<String> = secret
        .data
        .iter()
        .flatten()
        .filter_map(|(_, v)| crate::render::parse_documents(&String::from_utf8_lossy(&v.0)).ok())
        .filter_map(|docs| {
            docs.first()?["clusters"][0]["cluster"]["server"]
                .as_str()
                .map(String::from)
        })
        .collect();
    serde_json::json!({
        "name": meta.name, "namespace": meta.namespace, "labels": meta.labels,
        "annotationKeys": annotation_keys, "created": meta.creation_timestamp,
        "keys": secret.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()),
        "servers": servers,
    })
}

/// Everything of cluster `name` whose Istio lives in `istio_namespace` (istio-system, or
/// `external-istiod` in an external control plane's clusters).
async fn collect_cluster(client: Client, (name, istio_namespace): (&str, &str), bundle: &mut Bundle) {
    collect_objects(&client, (name, istio_namespace), bundle).await;
    collect_logs(&client, (name, istio_namespace), bundle).await;
    collect_istio(&client, (name, istio_namespace), bundle).await;
    collect_metallb(&client, name, bundle).await;
}

/// The API server's version, the nodes, and events, pods, services and deployments of each
/// namespace meshctl works in.
async fn collect_objects(client: &Client, (name, istio_namespace): (&str, &str), bundle: &mut Bundle) {
    let at = |file: &str| format!("{name}/{file}");
    let err = |e: kube::Error| format!("# not collected: {}\n", crate::kube::human_reason(&e));
    match client.apiserver_version().await {
        Ok(v) => bundle.add(
            at("version.json"),
            serde_json::to_vec_pretty(&v).unwrap_or_default(),
        ),
        Err(e) => bundle.add(at("version.json"), err(e)),
    }
    let all = ListParams::default();
    match Api::<Node>::all(client.clone()).list(&all).await {
        Ok(l) => bundle.add(at("nodes.yaml"), yaml_of(&l.items)),
        Err(e) => bundle.add(at("nodes.yaml"), err(e)),
    }
    let extra = (!NAMESPACES.contains(&istio_namespace)).then_some(istio_namespace);
    for ns in NAMESPACES.into_iter().chain(extra) {
        macro_rules! listed {
            ($ty:ty, $file:literal) => {
                match Api::<$ty>::namespaced(client.clone(), ns).list(&all).await {
                    Ok(l) => bundle.add(at(&format!("{ns}/{}", $file)), yaml_of(&l.items)),
                    Err(e) => bundle.add(at(&format!("{ns}/{}", $file)), err(e)),
                }
            };
        }
        listed!(Event, "events.yaml");
        listed!(Pod, "pods.yaml");
        listed!(Service, "services.yaml");
        listed!(Deployment, "deployments.yaml");
        listed!(DaemonSet, "daemonsets.yaml");
    }
    // An ambient mesh's east-west gateway is a Gateway API Gateway whose status says whether istiod
    // took it; a cluster without Gateway API has none to show.
    let ns = crate::topology::ISTIO_NAMESPACE;
    match crate::kube::gateways(client, ns).list(&all).await {
        Ok(l) => bundle.add(at(&format!("{ns}/gateways.yaml")), yaml_of(&l.items)),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => bundle.add(at(&format!("{ns}/gateways.yaml")), err(e)),
    }
}

/// The pods whose logs are collected, by the labels their makers give them: istiod and the
/// sidecar mesh's east-west gateway (Istio's charts), the ambient east-west gateway (istiod's
/// gateway deployment controller labels it with its Gateway's name), ztunnel and the istio-cni
/// node agent (their charts).
fn logged() -> [String; 5] {
    [
        "app=istiod".into(),
        "istio=eastwestgateway".into(),
        format!(
            "gateway.networking.k8s.io/gateway-name={}",
            crate::topology::GATEWAY_NAME
        ),
        "app=ztunnel".into(),
        "k8s-app=istio-cni-node".into(),
    ]
}
/// Logs of the pods of [`logged`], in istio-system and the cluster's Istio namespace.
async fn collect_logs(client: &Client, (name, istio_namespace): (&str, &str), bundle: &mut Bundle) {
    let mut namespaces = vec![crate::topology::ISTIO_NAMESPACE];
    namespaces.extend((istio_namespace != crate::topology::ISTIO_NAMESPACE).then_some(istio_namespace));
    for namespace in namespaces {
        collect_logs_in(client, name, namespace, bundle).await;
    }
}

async fn collect_logs_in(client: &Client, name: &str, namespace: &str, bundle: &mut Bundle) {
    let at = |file: &str| format!("{name}/{file}");
    let err = |e: kube::Error| format!("# not collected: {}\n", crate::kube::human_reason(&e));
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    for selector in logged() {
        let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
            continue;
        };
        for pod in list.items {
            let pod_name = pod.metadata.name.unwrap_or_default();
            let params = LogParams {
                tail_lines: Some(LOG_LINES),
                ..Default::default()
            };
            let text = match pods.logs(&pod_name, &params).await {
                Ok(t) => t,
                Err(e) => err(e),
            };
            bundle.add(at(&format!("logs/{pod_name}.log")), text);
        }
    }
}

/// What istiod says of its remote clusters, and the remote secrets it reads (names, never data).
async fn collect_istio(client: &Client, (name, istio_namespace): (&str, &str), bundle: &mut Bundle) {
    let at = |file: &str| format!("{name}/{file}");
    let err = |e: kube::Error| format!("# not collected: {}\n", crate::kube::human_reason(&e));
    match crate::istiod::clusters(client, istio_namespace).await {
        Ok(seen) => bundle.add(
            at("istiod-clusterz.json"),
            serde_json::to_vec_pretty(&serde_json::json!({"pod": seen.pod, "clusters": seen.value}))
                .unwrap_or_default(),
        ),
        Err(e) => bundle.add(at("istiod-clusterz.json"), format!("# not collected: {e}\n")),
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), istio_namespace);
    match secrets.list(&crate::remote_secret::selector()).await {
        Ok(l) => {
            let summaries: Vec<serde_json::Value> = l.items.iter().map(remote_secret_summary).collect();
            bundle.add(at("remote-secrets.yaml"), yaml_of(&summaries));
        }
        Err(e) => bundle.add(at("remote-secrets.yaml"), err(e)),
    }
}

async fn collect_metallb(client: &Client, name: &str, bundle: &mut Bundle) {
    let at = |file: &str| format!("{name}/{file}");
    let all = ListParams::default();
    let mut metallb = Vec::new();
    for (kind, plural) in [
        ("IPAddressPool", "ipaddresspools"),
        ("L2Advertisement", "l2advertisements"),
    ] {
        let gvk = GroupVersionKind::gvk("metallb.io", "v1beta1", kind);
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            "metallb-system",
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        );
        if let Ok(l) = api.list(&all).await {
            metallb.extend(l.items);
        }
    }
    bundle.add(at("metallb.yaml"), yaml_of(&metallb));
}

/// One cluster, bounded by `timeout`.
async fn collect_one(
    (cluster, istio_namespace): (&Cluster, &str),
    clients: &Clients,
    timeout: Duration,
    on_done: &(dyn Fn(&Collected) + Sync),
) -> (Bundle, Collected) {
    let mut bundle = Bundle::default();
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, async {
        match clients.get(&cluster.context).await {
            Ok(client) => {
                collect_cluster(client, (&cluster.name, istio_namespace), &mut bundle).await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let (word, reason) = match outcome {
        Ok(Ok(())) => ("collected", String::new()),
        Ok(Err(reason)) => ("unreachable", reason),
        Err(_) => (
            "timed out",
            format!(
                "stopped after {}s; what was collected by then is kept",
                timeout.as_secs()
            ),
        ),
    };
    if !reason.is_empty() {
        bundle.add(
            format!("{}/NOT-COLLECTED.txt", cluster.name),
            format!("{word}: {reason}\n"),
        );
    }
    let done = Collected {
        cluster: cluster.name.clone(),
        outcome: format!("{word} in {:.1}s", started.elapsed().as_secs_f64()),
        files: bundle.files.len(),
        reason,
    };
    on_done(&done);
    (bundle, done)
}

/// Collects every cluster of `mesh` (each bounded by `timeout`) and what meshctl keeps locally.
pub async fn collect(
    mesh: &Mesh,
    clients: &Clients,
    dir: &MeshDir,
    timeout: Duration,
    on_done: &(dyn Fn(&Collected) + Sync),
) -> (Bundle, Vec<Collected>) {
    let results = futures::future::join_all(
        mesh.clusters
            .iter()
            .map(|c| collect_one((c, mesh.istio_namespace(c)), clients, timeout, on_done)),
    )
    .await;
    let mut bundle = Bundle::default();
    let mut summary = Vec::new();
    for (b, done) in results {
        bundle.files.extend(b.files);
        summary.push(done);
    }
    for (path, name) in [
        (dir.state(), "state.json"),
        (dir.plan().join("plan.json"), "plan.json"),
    ] {
        match std::fs::read(&path) {
            Ok(bytes) => bundle.add(format!("meshctl/{name}"), bytes),
            Err(e) => bundle.add(
                format!("meshctl/{name}.missing"),
                format!("{}: {e}\n", path.display()),
            ),
        }
    }
    let mut text = format!("meshctl diagnose, mesh `{}`\n\n", mesh.mesh_id);
    for s in &summary {
        text.push_str(&format!("{:<12} {} ({} files)", s.cluster, s.outcome, s.files));
        if !s.reason.is_empty() {
            text.push_str(&format!(": {}", s.reason));
        }
        text.push('\n');
    }
    text.push_str("\nNot included: Secret data and Secret annotation values (remote secrets are listed by name, labels, annotation keys and server only), the rendered plan files (cacerts holds a private key).\n");
    bundle.add("summary.txt", text);
    (bundle, summary)
}

/// Writes the archive to `out` atomically, readable by its owner only (logs may hold addresses and
/// names a user would rather not share without looking). An existing file is replaced only with
/// `replace`; without it, one that appeared meanwhile is an `AlreadyExists` error.
pub fn write(bundle: &Bundle, out: &Path, top: &str, replace: bool) -> std::io::Result<()> {
    let bytes = bundle.to_tar_gz(top)?;
    if replace {
        crate::atomic_file::write(out, &bytes, crate::atomic_file::PRIVATE)
    } else {
        crate::atomic_file::write_new(out, &bytes, crate::atomic_file::PRIVATE)
    }
}

#[cfg(test)]
mod tests {
    use super::remote_secret_summary;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    #[test]
    fn a_remote_secret_applied_with_kubectl_leaves_no_token_in_the_summary() {
        // `istioctl create-remote-secret | kubectl apply -f -`: kubectl keeps the whole Secret,
        // token included, in its last-applied annotation.
        let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster2\n  cluster:\n    server: https://172.18.0.3:6443\nusers:\n- name: cluster2\n  user:\n    token: eyJhbGciOiJSUzI1NiJ9.s3cr3t-t0ken\n";
        let last_applied = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "istio-remote-secret-cluster2", "namespace": "istio-system"},
            "stringData": {"cluster2": kubeconfig}})
        .to_string();
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "istio-remote-secret-cluster2", "namespace": "istio-system",
                "labels": {"istio/multiCluster": "true"},
                "annotations": {"networking.istio.io/cluster": "cluster2",
                    "kubectl.kubernetes.io/last-applied-configuration": last_applied}},
        }))
        .unwrap();
        let secret = Secret {
            data: Some([("cluster2".to_string(), ByteString(kubeconfig.as_bytes().to_vec()))].into()),
            ..secret
        };
        let summary = remote_secret_summary(&secret).to_string();
        assert!(!summary.contains("s3cr3t"), "{summary}");
        assert!(!summary.contains("last-applied-configuration\":"), "{summary}");
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(
            summary["annotationKeys"],
            serde_json::json!([
                "kubectl.kubernetes.io/last-applied-configuration",
                "networking.istio.io/cluster"
            ])
        );
        assert_eq!(summary["servers"], serde_json::json!(["https://172.18.0.3:6443"]));
        assert_eq!(summary["keys"], serde_json::json!(["cluster2"]));
    }
}
