//! `meshctl verify`: prove the mesh carries traffic between every pair of clusters, the way Istio's
//! docs verify a multicluster install ("Verify the installation"), without kubectl.
//!
//! Deploy the sample workloads (helloworld in every cluster, one version per cluster, and a curl
//! client), wait until their pods run with a sidecar, then call `helloworld.sample:5000/hello` from
//! every cluster's client through the exec API and count which cluster answered. The mesh passes when
//! every client reached every cluster. With `--failover`, apply the locality DestinationRule, drain
//! the first cluster's helloworld and check that its traffic moves to the failover region
//! (Istio's "Locality failover" task); in an ambient mesh, ambient's own failover instead
//! ([`ambient_failover`]). Parsing, the matrix and the JUnit report are pure; the rest talks to the
//! clusters.

pub mod ambient_failover;
mod checks;
mod exec;
mod junit;
mod locality;
mod matrix;
pub mod workloads;

pub use checks::{ControlPlaneCheck, ZtunnelCheck, ztunnel_views};
pub use exec::{exec, has_sidecar, meshed_pod};
pub use junit::{junit, junit_not_run, refuse_foreign_report};
pub use locality::{DISTRIBUTE_MIN_CALLS, DISTRIBUTE_TOLERANCE_POINTS, Distribute, Failover, judge_split};
pub use matrix::{Matrix, STATUS_MARK, call_script, responder, table, tally, totals};

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use serde::Serialize;

use crate::check::Check;
use crate::kube::apply::Applier;
use crate::kube::wait;
use crate::plan::Artifact;
use crate::report::Reporter;
use crate::topology::Mesh;
use checks::{call_matrix, control_planes, why_unanswered};
use locality::{distribute, failover};
use workloads::{HELLOWORLD_HOST, NAMESPACE};

#[derive(Debug, Clone)]
pub struct Options {
    /// Calls each client makes (spread over the clusters by the mesh's load balancing).
    pub calls_per_client: usize,
    /// Bound on each wait.
    pub timeout: Duration,
    /// Also test locality failover.
    pub failover: bool,
    /// Also test weighted locality distribution.
    pub distribute: bool,
    /// Keep the workloads afterwards.
    pub keep: bool,
    /// The host is cluster-local: each client must be answered by its own cluster only.
    pub cluster_local: bool,
    /// Apply the per-cluster subsets (DestinationRule and VirtualService) first; each client must
    /// then be answered by its own cluster only.
    pub per_cluster_subsets: bool,
}

impl Options {
    /// Whether every client must be answered by its own cluster only.
    pub fn local_only(&self) -> bool {
        self.cluster_local || self.per_cluster_subsets
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(rename = "meshID")]
    pub mesh_id: String,
    pub matrix: Matrix,
    /// Why a pair had no answer, one check each, with what fixes it.
    pub reasons: Vec<Check>,
    /// The failover check, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// The host was expected to be cluster-local: answers only from the caller's own cluster.
    #[serde(rename = "clusterLocal")]
    pub cluster_local: bool,
    /// The weighted locality check, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribute: Option<Distribute>,
    /// One per remote cluster: configured by its primary's istiod.
    #[serde(rename = "controlPlanes", skip_serializing_if = "Vec::is_empty")]
    pub control_planes: Vec<ControlPlaneCheck>,
    /// In an ambient mesh, one per cluster: its ztunnels send helloworld's calls to every network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ztunnels: Vec<ZtunnelCheck>,
}

impl Report {
    /// Traffic passed as expected (every pair, or only each cluster itself for a cluster-local
    /// host), and failover too when tested.
    pub fn passed(&self) -> bool {
        let traffic = if self.cluster_local {
            self.matrix.only_local()
        } else {
            self.matrix.passed()
        };
        traffic
            && self.failover.as_ref().is_none_or(|f| f.passed)
            && self.distribute.as_ref().is_none_or(|d| d.passed)
            && self.control_planes.iter().all(|c| c.passed)
            && self.ztunnels.iter().all(|z| z.passed)
    }
}

/// Removes what an earlier verify left in a cluster (a kept `sample` namespace with its failover
/// DestinationRule, a drained pod) and waits until the namespace is really gone, so this run
/// measures the mesh rather than the leftovers, and re-creating the namespace does not hit
/// "namespace is being terminated".
pub async fn clear_previous(client: &kube::Client, timeout: Duration) -> Result<bool> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces
        .get_opt(NAMESPACE)
        .await
        .with_context(|| format!("cannot read namespace {NAMESPACE}"))?
    else {
        return Ok(false);
    };
    if !crate::kube::managed_by_meshctl(&ns.metadata) {
        bail!(
            "namespace `{NAMESPACE}` exists and meshctl did not create it (it lacks the label app.kubernetes.io/managed-by=meshctl): verify runs its sample workloads in a namespace of its own and neither uses nor deletes yours\nhint: rename or remove your namespace `{NAMESPACE}` in this cluster, then run verify again"
        );
    }
    if ns.metadata.deletion_timestamp.is_none() {
        match namespaces.delete(NAMESPACE, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(true),
            Err(e) => return Err(e).with_context(|| format!("cannot delete namespace {NAMESPACE}")),
        }
    }
    let deleted = wait::Condition::absent(
        NAMESPACE,
        format!("namespace {NAMESPACE} left by an earlier verify: deleted"),
        |n: &Namespace| {
            let phase = n
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let conditions: Vec<String> = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.status == "True")
                .filter_map(|c| c.message)
                .collect();
            format!("{phase} {}", conditions.join("; ")).trim().to_string()
        },
    );
    wait::until(&namespaces, deleted, timeout).await?;
    Ok(true)
}

/// The workloads of `cluster`, without the rules that only some checks apply.
fn workload_artifacts(all: &[Artifact], cluster: &str) -> String {
    all.iter()
        .filter(|a| {
            a.path.starts_with(&format!("{cluster}/verify/"))
                && !a.path.ends_with(workloads::FAILOVER_FILE)
                && !a.path.ends_with(workloads::DISTRIBUTE_FILE)
                && !a.path.ends_with(workloads::SUBSETS_FILE)
        })
        .map(|a| a.content.clone())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

pub async fn run(
    mesh: &Mesh,
    kubeconfig: Option<&Path>,
    options: &Options,
    reporter: &Reporter,
) -> Result<Report> {
    let every_client = connect_all(mesh, kubeconfig).await?;
    // Workloads run where proxies do: an external control plane runs none, but its istiod is
    // asked which remote proxies it configures.
    let whole_mesh = mesh;
    let (data_plane, clients) = data_plane(whole_mesh, &every_client);
    let mesh = &data_plane;
    let artifacts = workloads::artifacts(mesh)?;
    deploy_workloads(mesh, &clients, &artifacts, options, reporter).await?;
    let pods = ready_pods(mesh, &clients, options.timeout).await?;
    let control_planes = control_planes(whole_mesh, &every_client, (mesh, &pods), options.timeout).await;
    let (hello_pods, curl_pods): (Vec<String>, Vec<String>) = pods.into_iter().unzip();
    let joined = if mesh.dataplane.is_sidecar() {
        "pods ready with their sidecars; calling across clusters"
    } else {
        "pods ready and redirected to ztunnel; calling across clusters"
    };
    reporter.ok("verify", joined);

    let calling = call_until_settled(mesh, &clients, &curl_pods, options, reporter);
    let m = if options.per_cluster_subsets {
        // Every istiod reads its own cluster's rules: the subsets go into every cluster.
        let file = workloads::SUBSETS_FILE;
        with_rules(mesh, &clients, &artifacts, file, options.timeout, calling).await?
    } else {
        calling.await?
    };
    let reasons = reasons(mesh, (whole_mesh, &every_client), &m, options).await;
    let ztunnels = if mesh.dataplane.is_sidecar() {
        Vec::new()
    } else {
        checks::ztunnel_views(mesh, &clients).await
    };
    let failover = if options.failover && mesh.clusters.len() >= 2 {
        Some(if mesh.dataplane.is_sidecar() {
            failover(mesh, &clients, &artifacts, &hello_pods, &curl_pods, options).await?
        } else {
            ambient_failover::failover(mesh, &clients, &curl_pods, options).await?
        })
    } else {
        if options.failover {
            reporter.note("verify", "failover needs at least two clusters; skipped");
        }
        None
    };
    let distribute = match (options.distribute, workloads::distribute_localities(mesh)) {
        (false, _) => None,
        (true, Some(pair)) => Some(distribute(mesh, &clients, &artifacts, &curl_pods, pair, options).await?),
        (true, None) => {
            reporter.note(
                "verify",
                "locality distribute needs clusters in two regions; skipped",
            );
            None
        }
    };
    if !options.keep {
        remove_workloads(mesh, &clients, reporter).await;
    }
    Ok(Report {
        mesh_id: mesh.mesh_id.clone(),
        matrix: m,
        reasons,
        failover,
        cluster_local: options.local_only(),
        distribute,
        control_planes,
        ztunnels,
    })
}

/// The clusters that run workloads (all but an external control plane), with their clients.
fn data_plane(mesh: &Mesh, clients: &[kube::Client]) -> (Mesh, Vec<kube::Client>) {
    let data_plane = mesh.data_plane();
    let kept = mesh
        .clusters
        .iter()
        .zip(clients)
        .filter(|(c, _)| data_plane.cluster(&c.name).is_some())
        .map(|(_, client)| client.clone())
        .collect();
    (data_plane, kept)
}

/// Per cluster, its helloworld pod and its curl pod, each running in the mesh.
async fn ready_pods(
    mesh: &Mesh,
    clients: &[kube::Client],
    timeout: Duration,
) -> Result<Vec<(String, String)>> {
    futures::future::try_join_all(mesh.clusters.iter().zip(clients).enumerate().map(
        |(i, (c, client))| async move {
            let hello = meshed_pod(
                client,
                (&c.name, mesh.dataplane),
                &format!("app=helloworld,version={}", workloads::version_of(i)),
                timeout,
            )
            .await?;
            let curl = meshed_pod(client, (&c.name, mesh.dataplane), "app=curl", timeout).await?;
            Ok::<_, anyhow::Error>((hello, curl))
        },
    ))
    .await
}

async fn connect_all(mesh: &Mesh, kubeconfig: Option<&Path>) -> Result<Vec<kube::Client>> {
    let mut clients = Vec::with_capacity(mesh.clusters.len());
    for c in &mesh.clusters {
        clients.push(
            crate::kube::connect(kubeconfig, &c.context)
                .await
                .with_context(|| format!("cluster `{}`", c.name))?,
        );
    }
    Ok(clients)
}

/// Removes what an earlier verify left (its rules would skew this one), then applies each
/// cluster's sample workloads.
async fn deploy_workloads(
    mesh: &Mesh,
    clients: &[kube::Client],
    artifacts: &[Artifact],
    options: &Options,
    reporter: &Reporter,
) -> Result<()> {
    let cleared =
        futures::future::try_join_all(mesh.clusters.iter().zip(clients).map(|(c, client)| async move {
            clear_previous(client, options.timeout)
                .await
                .with_context(|| format!("cluster `{}`", c.name))
        }))
        .await?;
    if cleared.iter().any(|c| *c) {
        reporter.note(
            "verify",
            &format!(
                "removed namespace {NAMESPACE} left by an earlier verify (its rules would skew this one)"
            ),
        );
    }
    futures::future::try_join_all(mesh.clusters.iter().zip(clients).map(|(c, client)| {
        let yaml = workload_artifacts(artifacts, &c.name);
        async move {
            Applier::new(client.clone())
                .apply_yaml(&yaml, &format!("{}/verify", c.name))
                .await
                .with_context(|| format!("cluster `{}`", c.name))
        }
    }))
    .await?;
    reporter.ok(
        "verify",
        &format!(
            "sample workloads applied in {} cluster(s); waiting for their pods",
            mesh.clusters.len()
        ),
    );
    Ok(())
}

/// One line per pair that failed: a missing pair that should have answered, or, for a
/// cluster-local check, an answer that crossed clusters.
/// Why each expected pair did not answer; `mesh` the clusters of the matrix, `whole` the whole
/// mesh with a client for each of its clusters (where the control planes are looked at).
async fn reasons(mesh: &Mesh, whole: (&Mesh, &[kube::Client]), m: &Matrix, options: &Options) -> Vec<Check> {
    let mut reasons = Vec::new();
    let expected_missing: Vec<(usize, usize)> = if options.local_only() {
        m.missing().into_iter().filter(|(f, t)| f == t).collect()
    } else {
        m.missing()
    };
    for (f, t) in expected_missing {
        let (from, to) = (&mesh.clusters[f].name, &mesh.clusters[t].name);
        reasons.push(why_unanswered(whole.0, whole.1, from, to).await);
    }
    if options.local_only() {
        let (why, hint) = if options.per_cluster_subsets {
            (
                "although the per-cluster VirtualService routes each cluster's callers to its own subset",
                "is the VirtualService applied in the caller's cluster?",
            )
        } else {
            (
                "although it is cluster-local",
                "is the IstioOperator with this meshConfig installed? (`meshctl status`, phase istio)",
            )
        };
        for (f, t) in m.crossed() {
            let (from, to) = (&mesh.clusters[f].name, &mesh.clusters[t].name);
            reasons.push(
                checks::unanswered(
                    from,
                    to,
                    format!("{HELLOWORLD_HOST} answered across clusters {why}"),
                )
                .hinted(hint),
            );
        }
    }
    reasons
}

async fn remove_workloads(mesh: &Mesh, clients: &[kube::Client], reporter: &Reporter) {
    for (c, client) in mesh.clusters.iter().zip(clients) {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        match namespaces.delete(NAMESPACE, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => reporter.note(&c.name, &format!("could not remove namespace {NAMESPACE}: {e}")),
        }
    }
}

/// Calls across every pair until every pair has answered (or, for a cluster-local check, until the
/// answers have settled) or the bound is reached. Right after `up`, istiod may still be syncing the
/// other clusters' endpoints, so the rounds repeat with growing pauses; answers add up.
async fn call_until_settled(
    mesh: &Mesh,
    clients: &[kube::Client],
    curl_pods: &[String],
    options: &Options,
    reporter: &Reporter,
) -> Result<Matrix> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_secs(1);
    let mut m = Matrix::empty(mesh);
    loop {
        m.add(
            &call_matrix(
                mesh,
                clients,
                curl_pods,
                options.calls_per_client,
                options.timeout,
            )
            .await?,
        );
        // A cluster-local host that answered across clusters will not stop doing so: no retry.
        let settled = if options.local_only() {
            m.only_local() || !m.crossed().is_empty()
        } else {
            m.passed()
        };
        if settled || started.elapsed() + pause >= options.timeout {
            return Ok(m);
        }
        reporter.note(
            "verify",
            &format!(
                "{} pair(s) not answered yet; calling again in {}s",
                m.missing().len(),
                pause.as_secs()
            ),
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(16));
    }
}

/// Runs `check` with the rules of `file` applied in every cluster (each cluster's own rendering),
/// then removes them from every cluster, whatever the check's outcome, and waits until they are
/// gone, so the next check never runs under them. istiod merges every DestinationRule of a host
/// into the oldest one: a later rule adds only subsets the oldest lacks, and the oldest rule's
/// traffic policy is the one proxies get (Istio `pilot/pkg/model/push_context.go`,
/// `setDestinationRules`, which sorts rules by creation time; `destination_rule.go`,
/// `mergeDestinationRule`). A failover rule left in place would decide the distribute check.
pub async fn with_rules<T>(
    mesh: &Mesh,
    clients: &[kube::Client],
    artifacts: &[Artifact],
    file: &str,
    timeout: Duration,
    check: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let rules: Vec<(&str, String, String)> = mesh
        .clusters
        .iter()
        .map(|c| {
            let path = format!("{}/verify/{file}", c.name);
            let yaml = artifacts
                .iter()
                .find(|a| a.path == path)
                .map(|a| a.content.clone())
                .ok_or_else(|| anyhow!("no {path} rendered"))?;
            Ok((c.name.as_str(), path, yaml))
        })
        .collect::<Result<_>>()?;
    futures::future::try_join_all(
        rules
            .iter()
            .zip(clients)
            .map(|((name, path, yaml), client)| async move {
                Applier::new(client.clone())
                    .apply_yaml(yaml, path)
                    .await
                    .with_context(|| format!("cluster `{name}`: apply {path}"))
            }),
    )
    .await?;
    let outcome = check.await;
    let removed = futures::future::try_join_all(rules.iter().zip(clients).map(
        |((name, path, yaml), client)| async move {
            Applier::new(client.clone())
                .delete_yaml(yaml, path, timeout)
                .await
                .with_context(|| format!("cluster `{name}`: remove the rules of {path}"))
        },
    ))
    .await;
    let value = outcome?;
    removed?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_not_configured_by_its_primary_fails_the_report_and_its_junit_case() {
        let m = Matrix {
            clusters: vec!["a".into(), "b".into()],
            counts: vec![vec![3, 2], vec![2, 5]],
            failed: vec![0, 0],
        };
        let cp = |passed| ControlPlaneCheck {
            remote: "b".into(),
            primary: "a".into(),
            passed,
            detail: "a's istiod lists 0 of 2".into(),
        };
        let report = |passed| Report {
            mesh_id: "m".into(),
            matrix: m.clone(),
            reasons: vec![],
            failover: None,
            cluster_local: false,
            distribute: None,
            control_planes: vec![cp(passed)],
            ztunnels: vec![],
        };
        assert!(report(true).passed());
        assert!(
            !report(false).passed(),
            "traffic alone does not prove who configures b"
        );
        let xml = junit(&report(false));
        assert!(
            xml.contains("tests=\"5\" failures=\"1\"") && xml.contains("name=\"b configured by a\"><failure"),
            "{xml}"
        );
    }
}
