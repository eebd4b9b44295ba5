//! What the clusters say about a pair: the calls made from one cluster, the N×N matrix, each
//! remote configured by its primary's istiod, and why a pair that never answered did not.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::exec::exec;
use super::matrix::{Matrix, call_script, tally};
use super::workloads::NAMESPACE;
use crate::check::{Check, Fix, State};
use crate::plan::Phase;
use crate::topology::Mesh;

/// A remote cluster's proxies, as its primary's istiod lists them (`/debug/syncz`): proof that the
/// remote's sidecars are configured by the primary.
#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneCheck {
    pub remote: String,
    /// The primary whose istiod should configure it.
    pub primary: String,
    /// Whether every sample proxy of the remote is listed there.
    pub passed: bool,
    pub detail: String,
}

/// One cluster's ztunnels, in an ambient mesh: each knows helloworld's workloads in every network
/// of the mesh (its own pods, and for each other network the workload istiod makes of that
/// network's east-west gateway), so a call from there can reach every cluster through ztunnel.
#[derive(Debug, Clone, Serialize)]
pub struct ZtunnelCheck {
    pub cluster: String,
    /// The networks the cluster's ztunnels all send helloworld's calls to.
    pub networks: Vec<String>,
    pub passed: bool,
    pub detail: String,
}

/// Asks every ztunnel of every cluster (its `/config_dump`) which networks it sends helloworld's
/// calls to, after the calls (by then istiod has pushed what it will push).
pub async fn ztunnel_views(mesh: &Mesh, clients: &[kube::Client]) -> Vec<ZtunnelCheck> {
    let every: std::collections::BTreeSet<String> = mesh.clusters.iter().map(|c| c.network.clone()).collect();
    let asked = mesh.clusters.iter().zip(clients).map(|(c, client)| {
        let every = &every;
        async move {
            let namespace = mesh.istio_namespace(c);
            match crate::ztunnel::views_of(client, namespace, super::workloads::HELLOWORLD_HOST).await {
                Err(e) => ZtunnelCheck {
                    cluster: c.name.clone(),
                    networks: Vec::new(),
                    passed: false,
                    detail: e,
                },
                Ok(views) => {
                    let missing: Vec<String> = views
                        .iter()
                        .flat_map(|v| every.difference(&v.networks).map(move |n| format!("{} lacks {n}", v.pod)))
                        .collect();
                    let seen: std::collections::BTreeSet<String> =
                        views.iter().flat_map(|v| v.networks.iter().cloned()).collect();
                    ZtunnelCheck {
                        cluster: c.name.clone(),
                        networks: seen.into_iter().collect(),
                        passed: missing.is_empty(),
                        detail: if missing.is_empty() {
                            format!("{} ztunnel pod(s) asked", views.len())
                        } else {
                            format!("{} (is helloworld global in every cluster, and each east-west Gateway programmed?)", missing.join("; "))
                        },
                    }
                }
            }
        }
    });
    futures::future::join_all(asked).await
}

/// For every remote: its sample proxies (`<pod>.sample`, `pods` of the `data_plane` clusters in
/// order) are listed by its primary's istiod, asked again with growing pauses until `timeout` (a
/// proxy connects once its pod runs).
pub(super) async fn control_planes(
    mesh: &Mesh,
    clients: &[kube::Client],
    (data_plane, pods): (&Mesh, &[(String, String)]),
    timeout: Duration,
) -> Vec<ControlPlaneCheck> {
    let mut checks = Vec::new();
    for remote in &mesh.clusters {
        let Some(primary) = remote.primary.as_deref() else {
            continue;
        };
        let Some(p) = mesh.clusters.iter().position(|c| c.name == primary) else {
            continue;
        };
        // The remote's pods, by its place among the clusters that run workloads.
        let Some((hello, curl)) = data_plane
            .clusters
            .iter()
            .position(|c| c.name == remote.name)
            .map(|i| &pods[i])
        else {
            continue;
        };
        let expected = [hello, curl].map(|pod| format!("{pod}.{NAMESPACE}"));
        let reads = how_read(mesh, remote, primary);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(500);
        let check = loop {
            let (passed, detail) = proxies_on_primary(
                (&clients[p], mesh.istio_namespace(&mesh.clusters[p])),
                (&remote.name, &reads),
                primary,
                &expected,
            )
            .await;
            if passed || started.elapsed() + pause >= timeout {
                break ControlPlaneCheck {
                    remote: remote.name.clone(),
                    primary: primary.to_string(),
                    passed,
                    detail,
                };
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(8));
        };
        checks.push(check);
    }
    checks
}

/// How `remote`'s control plane (`primary`) reads it, as a hint names it: a remote secret there,
/// or an external istiod's own kubeconfig of its config cluster.
fn how_read(mesh: &Mesh, remote: &crate::topology::Cluster, primary: &str) -> String {
    if mesh.is_config_cluster(remote) {
        format!("{primary}'s kubeconfig of it (`meshctl up --only external-istiod`)")
    } else {
        format!("{}'s secret in {primary}", remote.name)
    }
}

/// Whether the primary's istiod lists the remote's sample proxies (`expected`, as
/// `<pod>.<namespace>`) as connected from the remote's cluster, and what it said.
async fn proxies_on_primary(
    (primary_client, istiod_namespace): (&kube::Client, &str),
    (remote, reads): (&str, &str),
    primary: &str,
    expected: &[String],
) -> (bool, String) {
    match crate::istiod::proxies(primary_client, istiod_namespace).await {
        Ok(crate::istiod::Answered {
            pod: istiod,
            value: proxies,
        }) => {
            let listed: Vec<&String> = expected
                .iter()
                .filter(|want| {
                    proxies
                        .iter()
                        .any(|s| &s.proxy_id == *want && s.cluster_id == remote)
                })
                .collect();
            if listed.len() == expected.len() {
                (
                    true,
                    format!(
                        "{} of its sample proxies on {primary}'s istiod ({istiod} /debug/syncz, cluster {})",
                        listed.len(),
                        remote
                    ),
                )
            } else {
                (
                    false,
                    format!(
                        "{primary}'s istiod lists {} of {} sample proxies of {} (/debug/syncz): is {}'s istiod Service pointed at {primary}'s east-west gateway, istiod exposed there (`meshctl up --only expose`), and {reads}?",
                        listed.len(),
                        expected.len(),
                        remote,
                        remote
                    ),
                )
            }
        }
        Err(e) => (
            false,
            format!("{primary}'s istiod did not answer /debug/syncz: {e}"),
        ),
    }
}

/// Whether `client`'s cluster holds the remote secret of cluster `source`.
pub(super) async fn has_remote_secret(client: &kube::Client, namespace: &str, source: &str) -> bool {
    let secrets: kube::api::Api<k8s_openapi::api::core::v1::Secret> =
        kube::api::Api::namespaced(client.clone(), namespace);
    let name = crate::remote_secret::secret_name(source);
    matches!(secrets.get_opt(&name).await, Ok(Some(_)))
}

/// Why calls from `from` never reached `to` (clusters of `mesh`, the whole mesh, with `clients`
/// in its order): the first missing precondition of the mesh's model, else where to look. The
/// caller's proxy is configured by its control plane's istiod (its own, or its primary's), which
/// sees `to`'s endpoints only through `to`'s remote secret (an external istiod sees its config
/// cluster through its own kubeconfig); on one network pods call each other directly, across
/// networks through `to`'s east-west gateway, whose services Gateway lives where `to`'s gateway is
/// configured from.
pub(super) async fn why_unanswered(mesh: &Mesh, clients: &[kube::Client], from: &str, to: &str) -> Check {
    let index = |name: &str| mesh.clusters.iter().position(|m| m.name == name).unwrap_or(0);
    let (fc, tc) = (&mesh.clusters[index(from)], &mesh.clusters[index(to)]);
    let (f, t) = (&fc.name, &tc.name);
    if from == to {
        return unanswered(f, t, "the local helloworld did not answer").hinted(format!(
            "is its pod ready? (`kubectl get pods -n {NAMESPACE} --context {}`)",
            fc.context
        ));
    }
    let cp_from = mesh.control_plane_of(fc);
    let reads_by_secret = cp_from.name != *t && mesh.config_cluster_of(cp_from).is_none_or(|c| c.name != *t);
    let secrets_in = mesh.istio_namespace(cp_from);
    if reads_by_secret && !has_remote_secret(&clients[index(&cp_from.name)], secrets_in, t).await {
        let whose = if cp_from.name == *f {
            format!("{f} has no remote secret for {t}, so its istiod")
        } else {
            format!(
                "{f} is configured by {}'s istiod, which has no remote secret for {t} and",
                cp_from.name
            )
        };
        return unanswered(f, t, format!("{whose} does not see {t}'s endpoints"))
            .of_phase(Phase::RemoteSecrets)
            .fixed_by(Fix::UpOnly(Phase::RemoteSecrets));
    }
    if fc.network == tc.network {
        let hint = if tc.kind.is_some() {
            "are the routes between their nodes in place? (`meshctl status`, phase routes)"
        } else {
            "do pods of one cluster reach the other's pod IPs? (one network means a flat pod network)"
        };
        let detail = format!(
            "both are on network {}: pods call each other directly",
            fc.network
        );
        return unanswered(f, t, detail).hinted(hint);
    }
    if !mesh.dataplane.is_sidecar() {
        return why_unanswered_in_ambient(clients, (fc, index(f)), (tc, index(t))).await;
    }
    // A declared gateway is in every istiod's meshNetworks: no LoadBalancer address to look for.
    let gateway_namespace = mesh.gateway_namespace(tc);
    if tc.eastwest.declared().is_none()
        && crate::kube::inspect::service_address(
            &clients[index(t)],
            gateway_namespace,
            crate::topology::GATEWAY_NAME,
        )
        .await
        .is_none()
    {
        let detail = format!(
            "{t}'s east-west gateway has no LoadBalancer IP or hostname, so {f} gets unreachable pod IPs"
        );
        return unanswered(f, t, detail)
            .of_phase(Phase::Eastwest)
            .hinted("see what holds it back: `meshctl status`");
    }
    let exposing = mesh.exposing_cluster_of(tc);
    let exposed_in = mesh.gateway_namespace(exposing);
    if !crate::istio_config::exposed(&clients[index(&exposing.name)], exposed_in).await {
        let detail = format!(
            "{} does not expose services on the east-west gateways it configures",
            exposing.name
        );
        return unanswered(f, t, detail)
            .of_phase(Phase::Expose)
            .fixed_by(Fix::UpOnly(Phase::Expose));
    }
    unanswered(f, t, "no answer although the mesh is wired").hinted(format!(
        "run `istioctl proxy-config endpoint <curl-pod>.{NAMESPACE} --context {}`: {t}'s endpoints must be its east-west gateway IP on port 15443, not pod IPs",
        fc.context
    ))
}

/// Why calls through ztunnel from `fc` never reached `tc` (each with its index in `clients`): `tc`'s
/// east-west Gateway has no address in its status (the other istiods dial what it says:
/// pilot/pkg/serviceregistry/ambient/networks.go), or helloworld is not global in one of the two
/// clusters (a local copy that is not global takes no remote endpoints, and a remote one that is
/// not global is dropped: ambient/services.go, multicluster.go); else where to look.
async fn why_unanswered_in_ambient(
    clients: &[kube::Client],
    (fc, from): (&crate::topology::Cluster, usize),
    (tc, to): (&crate::topology::Cluster, usize),
) -> Check {
    let (f, t) = (&fc.name, &tc.name);
    if gateway_addresses(&clients[to]).await.is_empty() {
        let detail = format!(
            "{t}'s east-west Gateway has no address in its status, so {f}'s istiod has no way into {t}'s network"
        );
        return unanswered(f, t, detail)
            .of_phase(Phase::Eastwest)
            .fixed_by(Fix::UpOnly(Phase::Eastwest));
    }
    for (cluster, index) in [(fc, from), (tc, to)] {
        if !helloworld_is_global(&clients[index]).await {
            let detail = format!(
                "helloworld in {} is not labelled istio.io/global=true, so the other cluster's endpoints are not merged into it",
                cluster.name
            );
            return unanswered(f, t, detail).hinted(format!(
                "kubectl label service helloworld -n {NAMESPACE} istio.io/global=true --context {}",
                cluster.context
            ));
        }
    }
    unanswered(f, t, "no answer although the mesh is wired").hinted(format!(
        "run `istioctl ztunnel-config service --context {}`: helloworld.{NAMESPACE} must list {t}'s endpoints through its east-west gateway (network {})",
        fc.context, tc.network
    ))
}

/// The addresses in the status of the cluster's ambient east-west Gateway (none when it or
/// Gateway API is missing).
async fn gateway_addresses(client: &kube::Client) -> Vec<String> {
    let gateways = crate::kube::gateways(client, crate::topology::ISTIO_NAMESPACE);
    let Ok(Some(gateway)) = gateways.get_opt(crate::topology::GATEWAY_NAME).await else {
        return Vec::new();
    };
    gateway.data["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["value"].as_str().map(String::from))
        .collect()
}

/// Whether the cluster's helloworld Service carries `istio.io/global=true`.
async fn helloworld_is_global(client: &kube::Client) -> bool {
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), NAMESPACE);
    matches!(services.get_opt("helloworld").await, Ok(Some(s))
        if s.metadata.labels.as_ref().and_then(|l| l.get("istio.io/global")).is_some_and(|v| v == "true"))
}

/// Calls from `from` that `to` did not answer, and why.
pub(super) fn unanswered(from: &str, to: &str, why: impl std::fmt::Display) -> Check {
    Check::new("calls", State::Fail, format!("{from} -> {to}: {why}"))
        .in_cluster(from)
        .on(format!("{from} -> {to}"))
}

/// Runs the calls from every client at once.
/// `calls` calls from the curl client `pod`: answers per cluster, and calls that failed.
pub(super) async fn calls_from(
    client: &kube::Client,
    pod: &str,
    calls: usize,
    clusters: usize,
    timeout: Duration,
) -> Result<(Vec<usize>, usize)> {
    let output = exec(
        client,
        pod,
        "curl",
        vec!["sh".into(), "-c".into(), call_script(calls)],
        timeout,
    )
    .await?;
    Ok(tally(&output, clusters, calls))
}

pub(super) async fn call_matrix(
    mesh: &Mesh,
    clients: &[kube::Client],
    curl_pods: &[String],
    calls: usize,
    timeout: Duration,
) -> Result<Matrix> {
    let n = mesh.clusters.len();
    let outputs = futures::future::try_join_all(
        clients
            .iter()
            .zip(curl_pods)
            .map(|(client, pod)| calls_from(client, pod, calls, n, timeout)),
    )
    .await?;
    let (counts, failed) = outputs.into_iter().unzip();
    Ok(Matrix {
        clusters: mesh.clusters.iter().map(|c| c.name.clone()).collect(),
        counts,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote is read through its secret in its primary; an external istiod's config cluster
    /// through the external istiod's own kubeconfig, which its own phase makes.
    #[test]
    fn the_hint_names_how_each_remote_is_read() {
        let external = Mesh::from_yaml(
            "clusters:\n  - {role: external}\n  - {role: remote}\n  - {role: remote}\n",
            None,
        )
        .unwrap();
        let [config, other] = [1, 2].map(|i| &external.clusters[i]);
        assert_eq!(
            how_read(&external, config, "cluster1"),
            "cluster1's kubeconfig of it (`meshctl up --only external-istiod`)"
        );
        assert_eq!(
            how_read(&external, other, "cluster1"),
            "cluster3's secret in cluster1"
        );
        let primary_remote = Mesh::from_yaml("clusters:\n  - {}\n  - {role: remote}\n", None).unwrap();
        assert_eq!(
            how_read(&primary_remote, &primary_remote.clusters[1], "cluster1"),
            "cluster2's secret in cluster1"
        );
    }
}
