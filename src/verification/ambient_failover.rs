//! `verify --failover` in an ambient mesh, as ztunnel does failover: no DestinationRule (ztunnel
//! reads none), but the Service's traffic distribution, set by Istio's annotation
//! `networking.istio.io/traffic-distribution: PreferClose` (read after `spec.trafficDistribution`,
//! pilot/pkg/model/service.go `GetTrafficDistribution`; the annotation works on every Kubernetes
//! release Istio supports, and Istio's own waypoint template sets it so). istiod turns it into
//! ztunnel's failover over network, region and zone (pilot/pkg/serviceregistry/ambient/services.go,
//! `preferSameZoneLoadBalancer`; the client cluster's Service decides, multicluster.go
//! `mergeServiceInfosWithCluster`). ztunnel then sends every call to the endpoints that match the
//! most of those, network first (ztunnel src/state.rs, `load_balance`): the client's own network
//! while it has a helloworld there, every other network's once it has none.
//!
//! The check: with the preference set on every cluster's helloworld Service, the first cluster's
//! client is answered by its own cluster only; with that cluster's helloworld scaled to nothing,
//! by other clusters only; then the replica and the Service are put back as they were.

use std::time::Instant;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams};

use super::checks::calls_from;
use super::locality::Failover;
use super::workloads::{self, NAMESPACE};
use super::{Options, exec};
use crate::kube::wait;
use crate::topology::{Dataplane, Mesh};

/// Who sets and takes back the preference on meshctl's Service: a field manager of its own, so
/// the Service's other fields stay meshctl's verify's.
const MANAGER: &str = "meshctl-verify-failover";

/// Istio's annotation for a Service's traffic distribution (istio/api
/// `annotation.NetworkingTrafficDistribution`).
pub const ANNOTATION: &str = "networking.istio.io/traffic-distribution";

/// Fewest calls in a batch the check judges: a preference not in force sends each call to the
/// local cluster by chance about once in as many clusters, so twenty calls all local by luck are
/// less likely than one in a million with two clusters.
const MIN_CALLS: usize = 20;

/// All answers from the first cluster, none elsewhere, none failed.
fn all_local(answers: &[usize], failed: usize) -> bool {
    failed == 0 && answers.first().is_some_and(|local| *local > 0) && answers[1..].iter().all(|c| *c == 0)
}

/// None from the first cluster, some elsewhere, none failed.
fn all_elsewhere(answers: &[usize], failed: usize) -> bool {
    failed == 0 && answers.first() == Some(&0) && answers[1..].iter().sum::<usize>() > 0
}

/// Whether the batches judged before and after the local helloworld went away show failover: all
/// local before (the preference is in force), all elsewhere after, no call failed in either.
pub fn judge((before, failed_before): (&[usize], usize), (after, failed_after): (&[usize], usize)) -> bool {
    all_local(before, failed_before) && all_elsewhere(after, failed_after)
}

/// Istio's traffic-distribution annotation on every cluster's helloworld Service set to `value`,
/// or taken away (`None`), by a merge patch.
pub async fn prefer_close(clients: &[kube::Client], value: Option<&str>) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION: value}}});
    let params = PatchParams::apply(MANAGER);
    futures::future::try_join_all(clients.iter().map(|client| {
        let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
        let patch = patch.clone();
        let params = params.clone();
        async move {
            services
                .patch("helloworld", &params, &Patch::Merge(&patch))
                .await
                .with_context(|| format!("set annotation {ANNOTATION} of Service {NAMESPACE}/helloworld"))
        }
    }))
    .await?;
    Ok(())
}

/// The first cluster's helloworld scaled to `replicas`.
async fn scale(client: &kube::Client, replicas: i32) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let name = format!("helloworld-{}", workloads::version_of(0));
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    deployments
        .patch(&name, &PatchParams::apply(MANAGER), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("scale Deployment {NAMESPACE}/{name} to {replicas}"))?;
    Ok(())
}

/// Batches of calls from the first cluster's client until `settled` holds for one (ztunnel takes
/// a change from istiod a moment after the API server has it), at most for `options.timeout`;
/// then one more batch, the one judged, so a batch that settled by chance is not the verdict.
async fn settled_batch(
    client: &kube::Client,
    curl_pod: &str,
    clusters: usize,
    options: &Options,
    settled: fn(&[usize], usize) -> bool,
) -> Result<(Vec<usize>, usize)> {
    let calls = options.calls_per_client.max(MIN_CALLS);
    let deadline = Instant::now() + options.timeout;
    loop {
        let (answers, failed) = calls_from(client, curl_pod, calls, clusters, options.timeout).await?;
        if settled(&answers, failed) || Instant::now() >= deadline {
            break;
        }
    }
    calls_from(client, curl_pod, calls, clusters, options.timeout).await
}

pub(super) async fn failover(
    mesh: &Mesh,
    clients: &[kube::Client],
    curl_pods: &[String],
    options: &Options,
) -> Result<Failover> {
    let n = mesh.clusters.len();
    let (client, curl) = (&clients[0], &curl_pods[0]);
    let checked = async {
        prefer_close(clients, Some("PreferClose")).await?;
        let before = settled_batch(client, curl, n, options, all_local).await?;
        scale(client, 0).await?;
        let selector = format!("app=helloworld,version={}", workloads::version_of(0));
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let gone = wait::Condition::labelled(
            &selector,
            format!("no pod `{selector}` in namespace {NAMESPACE}"),
            |set| set.is_empty(),
            |set| format!("{} still there", set.len()),
        );
        wait::until(&pods, gone, options.timeout).await?;
        let after = settled_batch(client, curl, n, options, all_elsewhere).await?;
        Ok::<_, anyhow::Error>((before, after))
    };
    let outcome = checked.await;
    // Put back what the check changed, whatever it found.
    let scaled_back = scale(client, 1).await;
    let unset = prefer_close(clients, None).await;
    let ((before, failed_before), (after, failed_after)) = outcome?;
    scaled_back?;
    unset?;
    let hello = format!("app=helloworld,version={}", workloads::version_of(0));
    exec::meshed_pod(
        client,
        (&mesh.clusters[0].name, Dataplane::Ambient),
        &hello,
        options.timeout,
    )
    .await?;
    let others: Vec<&str> = mesh.clusters[1..].iter().map(|c| c.name.as_str()).collect();
    let expected = others.join(" or ");
    let passed = judge((&before, failed_before), (&after, failed_after));
    let local = &mesh.clusters[0].name;
    let detail = format!(
        "with traffic distribution PreferClose: {before:?} answers per cluster ({failed_before} failed calls); with {local}'s helloworld scaled to 0: {after:?} ({failed_after} failed calls); expected {local} only, then {expected} only, no call failing"
    );
    Ok(Failover {
        client: mesh.clusters[0].name.clone(),
        before,
        after,
        expected,
        passed,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn failover_is_all_local_first_then_elsewhere_only() {
        assert!(judge((&[20, 0, 0], 0), (&[0, 12, 8], 0)));
        assert!(
            !judge((&[12, 8, 0], 0), (&[0, 20, 0], 0)),
            "the preference was not in force"
        );
        assert!(
            !judge((&[20, 0, 0], 0), (&[3, 17, 0], 0)),
            "the local cluster still answered"
        );
        assert!(
            !judge((&[20, 0, 0], 0), (&[0, 0, 0], 0)),
            "nothing answered after"
        );
        assert!(
            !judge((&[0, 0, 0], 0), (&[0, 20, 0], 0)),
            "nothing answered before"
        );
        assert!(
            !judge((&[20, 0, 0], 0), (&[0, 14, 0], 6)),
            "a network that does not answer"
        );
        assert!(!judge((&[18, 0, 0], 2), (&[0, 20, 0], 0)), "calls failed before");
    }
}
