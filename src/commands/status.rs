//! `meshctl status`: per cluster and phase, what exists, what is ready, what is missing.

use std::path::Path;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::Exit;
use crate::cli::{OutputFormat, StatusArgs};
use crate::kube::{inspect, wait};
use crate::phases::Phase;
use crate::topology::{Cluster, Mesh, Provider};

/// One line of the status.
#[derive(Debug, Clone, Serialize)]
struct Check {
    cluster: String,
    phase: &'static str,
    state: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    hint: String,
}

fn check(cluster: &Cluster, phase: Phase, ok: bool, detail: String, hint: &str) -> Check {
    Check {
        cluster: cluster.name.clone(),
        phase: phase.name(),
        state: if ok { "ready" } else { "missing" },
        detail,
        hint: if ok { String::new() } else { hint.to_string() },
    }
}

async fn checks_for(mesh: &Mesh, cluster: &Cluster, kubeconfig: Option<&Path>) -> Vec<Check> {
    let client = match crate::kube::connect(kubeconfig, &cluster.context).await {
        Ok(c) => c,
        Err(e) => {
            return vec![Check {
                cluster: cluster.name.clone(),
                phase: "clusters",
                state: "unreachable",
                detail: e.to_string(),
                hint: "create it with `meshctl up --only clusters`, or check the kubeconfig context".into(),
            }];
        }
    };
    let mut out = Vec::new();
    match client.apiserver_version().await {
        Ok(v) => out.push(check(
            cluster,
            Phase::Clusters,
            true,
            format!("Kubernetes {}", v.git_version),
            "",
        )),
        Err(e) => {
            out.push(Check {
                cluster: cluster.name.clone(),
                phase: "clusters",
                state: "unreachable",
                detail: e.to_string(),
                hint: "is the cluster running? (`kind get clusters`, `docker ps`)".into(),
            });
            return out;
        }
    }
    let deployment_available = |d: Option<Deployment>| d.as_ref().is_some_and(wait::deployment_available);
    if mesh.provider == Provider::Kind {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "metallb-system");
        let ready = deployment_available(deployments.get_opt("controller").await.ok().flatten());
        out.push(check(
            cluster,
            Phase::Metallb,
            ready,
            if ready {
                "controller available".into()
            } else {
                "controller not available".into()
            },
            "run `meshctl up --only metallb`",
        ));
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let network = namespaces
        .get_opt("istio-system")
        .await
        .ok()
        .flatten()
        .and_then(|n| n.metadata.labels)
        .and_then(|l| l.get("topology.istio.io/network").cloned());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    let cacerts = secrets
        .get_opt("cacerts")
        .await
        .ok()
        .flatten()
        .and_then(|s| s.data)
        .map(|d| d.len())
        .unwrap_or(0);
    let certs_ok = network.as_deref() == Some(cluster.network.as_str()) && cacerts == 4;
    out.push(check(
        cluster,
        Phase::Certs,
        certs_ok,
        format!(
            "network label {}, cacerts with {cacerts}/4 files",
            network.as_deref().unwrap_or("<none>")
        ),
        "run `meshctl up --only certs`",
    ));
    let istio: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    let istiod = deployment_available(istio.get_opt("istiod").await.ok().flatten());
    out.push(check(
        cluster,
        Phase::Istio,
        istiod,
        format!("istiod {}", if istiod { "available" } else { "not available" }),
        "run `meshctl up --only istio`",
    ));
    let ip = inspect::eastwest_ip(&client).await;
    out.push(check(
        cluster,
        Phase::Eastwest,
        ip.is_some(),
        format!("east-west gateway IP {}", ip.as_deref().unwrap_or("<pending>")),
        "no LoadBalancer IP: is MetalLB running with a pool? (`meshctl up --only metallb,eastwest`)",
    ));
    let exposed = inspect::services_exposed(&client).await;
    out.push(check(
        cluster,
        Phase::Expose,
        exposed,
        format!(
            "cross-network-gateway {}",
            if exposed { "present" } else { "absent" }
        ),
        "run `meshctl up --only expose`",
    ));
    let remote = secrets
        .list(&ListParams::default().labels("istio/multiCluster=true"))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);
    let want = mesh.clusters.len() - 1;
    out.push(check(
        cluster,
        Phase::RemoteSecrets,
        remote >= want,
        format!("{remote}/{want} remote secrets"),
        "run `meshctl up --only remote-secrets`",
    ));
    out
}

pub(super) async fn run(args: StatusArgs, kubeconfig: Option<&Path>) -> Result<Exit> {
    let mesh = super::resolve_topology(&args.topology)?;
    let per_cluster =
        futures::future::join_all(mesh.clusters.iter().map(|c| checks_for(&mesh, c, kubeconfig))).await;
    let checks: Vec<Check> = per_cluster.into_iter().flatten().collect();
    let all_ready = checks.iter().all(|c| c.state == "ready");
    match args.output {
        OutputFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"meshID": mesh.mesh_id, "ready": all_ready, "checks": checks})
                )?
            );
        }
        OutputFormat::Text => {
            println!("{:<10} {:<15} {:<11} DETAIL", "CLUSTER", "PHASE", "STATE");
            for c in &checks {
                println!("{:<10} {:<15} {:<11} {}", c.cluster, c.phase, c.state, c.detail);
                if !c.hint.is_empty() {
                    println!("{:<38}hint: {}", "", c.hint);
                }
            }
        }
    }
    Ok(if all_ready { Exit::Success } else { Exit::NotReady })
}
