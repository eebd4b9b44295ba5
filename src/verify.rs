//! `meshctl verify`: prove the mesh carries traffic between every pair of clusters, the way Istio's
//! docs verify a multicluster install ("Verify the installation"), without kubectl.
//!
//! Deploy the sample workloads (helloworld in every cluster, one version per cluster, and a curl
//! client), wait until their pods run with a sidecar, then call `helloworld.sample:5000/hello` from
//! every cluster's client through the exec API and count which cluster answered. The mesh passes when
//! every client reached every cluster. With `--failover`, apply the locality DestinationRule, drain
//! the first cluster's helloworld and check that its traffic moves to the failover region
//! (Istio's "Locality failover" task). Parsing, the matrix and the JUnit report are pure; the rest talks to the
//! clusters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, AttachParams, DeleteParams};
use serde::Serialize;

use crate::kube::apply::Applier;
use crate::kube::wait;
use crate::phases::verify::{self as workloads, HELLOWORLD_HOST, NAMESPACE};
use crate::plan::Artifact;
use crate::report::Reporter;
use crate::topology::Mesh;

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

/// Who answered whom: `counts[from][to]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    /// Cluster names, in topology order.
    pub clusters: Vec<String>,
    /// Answers from cluster `to` to calls from cluster `from`.
    pub counts: Vec<Vec<usize>>,
    /// Calls per client that got no answer.
    pub failed: Vec<usize>,
}

impl Matrix {
    /// Every client reached every cluster.
    pub fn passed(&self) -> bool {
        self.counts.iter().all(|row| row.iter().all(|c| *c > 0))
    }

    /// No answers yet, for the clusters of `mesh`.
    pub fn empty(mesh: &Mesh) -> Matrix {
        let n = mesh.clusters.len();
        Matrix {
            clusters: mesh.clusters.iter().map(|c| c.name.clone()).collect(),
            counts: vec![vec![0; n]; n],
            failed: vec![0; n],
        }
    }

    /// Adds the answers of another round of calls.
    pub fn add(&mut self, round: &Matrix) {
        for (row, more) in self.counts.iter_mut().zip(&round.counts) {
            for (cell, n) in row.iter_mut().zip(more) {
                *cell += n;
            }
        }
        for (failed, more) in self.failed.iter_mut().zip(&round.failed) {
            *failed += more;
        }
    }

    /// Every client was answered, and only by its own cluster (a cluster-local host).
    pub fn only_local(&self) -> bool {
        self.counts.iter().enumerate().all(|(f, row)| {
            row.iter()
                .enumerate()
                .all(|(t, c)| if f == t { *c > 0 } else { *c == 0 })
        })
    }

    /// `(from, to)` pairs of different clusters that answered each other.
    pub fn crossed(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (f, row) in self.counts.iter().enumerate() {
            for (t, c) in row.iter().enumerate() {
                if f != t && *c > 0 {
                    out.push((f, t));
                }
            }
        }
        out
    }

    /// `(from, to)` pairs with no answer.
    pub fn missing(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (f, row) in self.counts.iter().enumerate() {
            for (t, c) in row.iter().enumerate() {
                if *c == 0 {
                    out.push((f, t));
                }
            }
        }
        out
    }
}

/// What the call loop prints after each call's body, then the HTTP status (`000` when curl got no
/// answer at all). Envoy's own answers (`no healthy upstream`, 503) end without a newline, so a
/// body alone cannot say where one call ends and the next begins: the status line can.
pub const STATUS_MARK: &str = "meshctl-http-status=";

/// The shell loop a client runs: `n` calls, each its body then [`STATUS_MARK`] and the status on a
/// line of its own (curl's `-w`, written out also when the transfer fails).
pub fn call_script(n: usize) -> String {
    format!(
        "for i in $(seq 1 {n}); do curl -s --max-time 5 -w '\\n{STATUS_MARK}%{{http_code}}\\n' http://helloworld.{NAMESPACE}:5000/hello; done"
    )
}

/// Which cluster (0-based) answered, from a body such as
/// `Hello version: v2, instance: helloworld-v2-5d8f7-xk2lq`: the instance names the deployment,
/// and deployment `helloworld-vN` runs only in cluster N.
pub fn responder(body: &str, clusters: usize) -> Option<usize> {
    let instance = body.split("instance:").nth(1)?.trim();
    let version = instance.strip_prefix("helloworld-v")?.split('-').next()?;
    let n: usize = version.parse().ok()?;
    (1..=clusters).contains(&n).then(|| n - 1)
}

/// Counts a client's `calls` calls by their status: a 200 is credited to the cluster its body
/// names; any other status, an unattributable body, or a call that printed no status at all is a
/// failure. Returns (answers per cluster, failed calls).
pub fn tally(output: &str, clusters: usize, calls: usize) -> (Vec<usize>, usize) {
    let mut counts = vec![0; clusters];
    let mut failed = 0;
    let mut seen = 0;
    let mut body = String::new();
    for line in output.split('\n') {
        match line.strip_prefix(STATUS_MARK) {
            Some(code) => {
                seen += 1;
                match (code.trim(), responder(&body, clusters)) {
                    ("200", Some(i)) => counts[i] += 1,
                    _ => failed += 1,
                }
                body.clear();
            }
            None => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    (counts, failed + calls.saturating_sub(seen))
}

/// Whether a pod carries Istio's proxy: as a native sidecar (an init container named
/// `istio-proxy` with `restartPolicy: Always`, what Istio's injector produces since 1.28 on
/// Kubernetes 1.33 and later) or, with older injectors or `sidecar.istio.io/nativeSidecar:
/// "false"`, as an ordinary container.
pub fn has_sidecar(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == "istio-proxy")
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == "istio-proxy" && c.restart_policy.as_deref() == Some("Always"))
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// The client whose local helloworld was drained.
    pub client: String,
    /// Answers per cluster before the drain.
    pub before: Vec<usize>,
    /// Answers per cluster after the drain.
    pub after: Vec<usize>,
    /// The cluster traffic should move to.
    pub expected: String,
    pub passed: bool,
    pub detail: String,
}

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

/// How far an observed share may be from the configured weight, in percentage points. With at
/// least [`DISTRIBUTE_MIN_CALLS`] calls and an 80/20 split, one standard deviation of the binomial
/// share is under 3 points: 10 points is more than three of them, so a working rule passes and a
/// rule that is ignored (an even split, or everything local) fails.
pub const DISTRIBUTE_TOLERANCE_POINTS: f64 = 10.0;
/// Fewest calls the distribute check makes.
pub const DISTRIBUTE_MIN_CALLS: usize = 200;

/// The weighted locality check.
#[derive(Debug, Clone, Serialize)]
pub struct Distribute {
    /// The client whose locality the rule is for.
    pub client: String,
    /// Its cluster and the other cluster of the rule, with their weights in percent.
    pub weights: Vec<(String, u32)>,
    /// Answers per cluster (all clusters).
    pub answers: Vec<usize>,
    pub failed: usize,
    /// Whether each observed share is within the tolerance of its weight.
    pub passed: bool,
    /// The split as configured and as observed, with the tolerance.
    pub detail: String,
}

/// Judges an observed split: every weighted cluster's share of the answers within `tolerance`
/// points of its weight, no answer from a cluster without weight, and no failed call.
pub fn judge_split(
    clusters: &[String],
    weights: &[(String, u32)],
    answers: &[usize],
    failed: usize,
    tolerance: f64,
) -> (bool, String) {
    let total: usize = answers.iter().sum();
    let share = |name: &str| {
        let i = clusters.iter().position(|c| c == name).unwrap_or(usize::MAX);
        let got = answers.get(i).copied().unwrap_or(0);
        if total == 0 {
            0.0
        } else {
            100.0 * got as f64 / total as f64
        }
    };
    let mut ok = total > 0 && failed == 0;
    let mut parts = Vec::new();
    for (name, weight) in weights {
        let seen = share(name);
        ok &= (seen - f64::from(*weight)).abs() <= tolerance;
        parts.push(format!("{name} {weight}% (observed {seen:.1}%)"));
    }
    let stray: usize = clusters
        .iter()
        .zip(answers)
        .filter(|(c, _)| !weights.iter().any(|(w, _)| w == *c))
        .map(|(_, n)| n)
        .sum();
    ok &= stray == 0;
    let detail = format!(
        "{} over {total} answers, {failed} failed calls, {stray} from clusters outside the rule; tolerance ±{tolerance:.0} points",
        parts.join(", ")
    );
    (ok, detail)
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(rename = "meshID")]
    pub mesh_id: String,
    pub matrix: Matrix,
    /// Why a pair had no answer, one line each.
    pub reasons: Vec<String>,
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
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as JUnit XML: one test case per pair of clusters, plus failover.
pub fn junit(report: &Report) -> String {
    let m = &report.matrix;
    let mut cases = String::new();
    let mut failures = 0;
    for (f, from) in m.clusters.iter().enumerate() {
        for (t, to) in m.clusters.iter().enumerate() {
            let _ = write!(
                cases,
                "  <testcase classname=\"meshctl.verify\" name=\"{} -> {}\">",
                xml_escape(from),
                xml_escape(to)
            );
            // A cluster-local host must answer within the cluster and never across.
            let crossed = report.cluster_local && f != t && m.counts[f][t] > 0;
            if crossed {
                failures += 1;
                let _ = write!(
                    cases,
                    "<failure message=\"{} answered {} times although the host is cluster-local\"></failure>",
                    xml_escape(to),
                    m.counts[f][t]
                );
            } else if m.counts[f][t] == 0 && !(report.cluster_local && f != t) {
                failures += 1;
                let reason = report
                    .reasons
                    .iter()
                    .find(|r| r.starts_with(&format!("{from} -> {to}:")))
                    .cloned()
                    .unwrap_or_default();
                let _ = write!(
                    cases,
                    "<failure message=\"no answer from {} in {} calls\">{}</failure>",
                    xml_escape(to),
                    m.counts[f].iter().sum::<usize>() + m.failed[f],
                    xml_escape(&reason)
                );
            }
            cases.push_str("</testcase>\n");
        }
    }
    let mut total = m.clusters.len() * m.clusters.len();
    // One test case per further check: (name, and when it failed, the message and the detail).
    let mut checks: Vec<(String, Option<(String, &str)>)> = Vec::new();
    if let Some(d) = &report.distribute {
        let failed = (!d.passed).then(|| {
            (
                "observed split outside the tolerance".to_string(),
                d.detail.as_str(),
            )
        });
        checks.push((format!("locality distribute from {}", d.client), failed));
    }
    for cp in &report.control_planes {
        let failed = (!cp.passed).then(|| {
            (
                format!("not configured by {}'s istiod", cp.primary),
                cp.detail.as_str(),
            )
        });
        checks.push((format!("{} configured by {}", cp.remote, cp.primary), failed));
    }
    if let Some(fo) = &report.failover {
        let failed = (!fo.passed).then(|| {
            (
                format!("traffic did not move to {}", fo.expected),
                fo.detail.as_str(),
            )
        });
        checks.push((format!("failover from {}", fo.client), failed));
    }
    for (name, failed) in checks {
        total += 1;
        let _ = write!(
            cases,
            "  <testcase classname=\"meshctl.verify\" name=\"{}\">",
            xml_escape(&name)
        );
        if let Some((message, detail)) = failed {
            failures += 1;
            let _ = write!(
                cases,
                "<failure message=\"{}\">{}</failure>",
                xml_escape(&message),
                xml_escape(detail)
            );
        }
        cases.push_str("</testcase>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"meshctl verify ({})\" tests=\"{total}\" failures=\"{failures}\">\n{cases}</testsuite>\n",
        xml_escape(&report.mesh_id)
    )
}

/// A JUnit report for a verify that could not run at all (a cluster unreachable, workloads that
/// never started): one failed test case naming why, so a CI job that asked for the file always
/// finds one, and it says what happened.
pub fn junit_not_run(mesh_id: &str, why: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"meshctl verify ({})\" tests=\"1\" failures=\"1\">\n  <testcase classname=\"meshctl.verify\" name=\"verify\"><failure message=\"verify could not run\">{}</failure></testcase>\n</testsuite>\n",
        xml_escape(mesh_id),
        xml_escape(why)
    )
}

/// Runs `command` in a container of pod `pod` in the verify namespace, bounded by `timeout`, and
/// returns what it printed on stdout.
pub async fn exec(
    client: &kube::Client,
    pod: &str,
    container: &str,
    command: Vec<String>,
    timeout: Duration,
) -> Result<String> {
    tokio::time::timeout(timeout, exec_unbounded(client, pod, container, command))
        .await
        .map_err(|_| {
            anyhow!(
                "exec into pod {NAMESPACE}/{pod} ({container}) did not finish within {}s",
                timeout.as_secs()
            )
        })?
}

async fn exec_unbounded(
    client: &kube::Client,
    pod: &str,
    container: &str,
    command: Vec<String>,
) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let params = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut attached = pods
        .exec(pod, command, &params)
        .await
        .with_context(|| format!("exec into pod {NAMESPACE}/{pod}"))?;
    // Both streams at once: kube buffers each in a small pipe, and a stream nobody reads blocks the
    // other (and the exec) once it fills.
    let (out, err) = (attached.stdout(), attached.stderr());
    let read = |stream: Option<_>| async move {
        let mut text = String::new();
        if let Some(mut s) = stream {
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut text).await?;
        }
        Ok::<String, std::io::Error>(text)
    };
    let (stdout, _stderr) = tokio::try_join!(read(out), read(err)).context("exec stream")?;
    let status = match attached.take_status() {
        Some(s) => s.await,
        None => None,
    };
    attached.join().await.context("exec stream")?;
    if let Some(s) = status.filter(|s| s.status.as_deref() == Some("Failure")) {
        bail!(
            "exec into pod {NAMESPACE}/{pod} ({container}) failed: {}",
            s.message.unwrap_or_default()
        );
    }
    Ok(stdout)
}

/// Waits for a running, ready pod matching `selector` and checks it has its sidecar.
async fn sidecar_pod(
    client: &kube::Client,
    cluster: &str,
    selector: &str,
    timeout: Duration,
) -> Result<String> {
    let pod = wait::pod_ready(client, NAMESPACE, selector, timeout)
        .await
        .with_context(|| format!("cluster `{cluster}`"))?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    if !has_sidecar(&pod) {
        bail!(
            "cluster `{cluster}`: pod {NAMESPACE}/{name} has no istio-proxy sidecar, so it cannot cross networks\nhint: is istiod's injector running (`meshctl status`), and is namespace `{NAMESPACE}` labelled istio-injection=enabled?"
        );
    }
    Ok(name)
}

/// Whether `client`'s cluster holds the remote secret of cluster `source`.
async fn has_remote_secret(client: &kube::Client, source: &str) -> bool {
    let secrets: kube::api::Api<k8s_openapi::api::core::v1::Secret> =
        kube::api::Api::namespaced(client.clone(), crate::remote_secret::NAMESPACE);
    let name = crate::phases::remote_secrets::secret_name(source);
    matches!(secrets.get_opt(&name).await, Ok(Some(_)))
}

/// Why calls from `from` never reached `to`: the first missing precondition of the mesh's model,
/// else where to look. The caller's proxy is configured by its control plane's istiod (its own,
/// or its primary's), which sees `to`'s endpoints only through `to`'s remote secret; on one
/// network pods call each other directly, across networks through `to`'s east-west gateway, whose
/// services Gateway lives where `to`'s gateway is configured from.
async fn diagnose(mesh: &Mesh, clients: &[kube::Client], from: usize, to: usize) -> String {
    let (fc, tc) = (&mesh.clusters[from], &mesh.clusters[to]);
    let (f, t) = (&fc.name, &tc.name);
    if from == to {
        return format!("{f} -> {t}: the local helloworld did not answer (is its pod ready?)");
    }
    let index =
        |c: &crate::topology::Cluster| mesh.clusters.iter().position(|m| m.name == c.name).unwrap_or(0);
    let (cp_from, cp_to) = (mesh.control_plane_of(fc), mesh.control_plane_of(tc));
    if cp_from.name != *t && !has_remote_secret(&clients[index(cp_from)], t).await {
        let whose = if cp_from.name == *f {
            format!("{f} has no remote secret for {t}, so its istiod")
        } else {
            format!(
                "{f} is configured by {}'s istiod, which has no remote secret for {t} and",
                cp_from.name
            )
        };
        return format!(
            "{f} -> {t}: {whose} does not see {t}'s endpoints (run `meshctl up --only remote-secrets`)"
        );
    }
    if fc.network == tc.network {
        let hint = if tc.kind.is_some() {
            "are the routes between their nodes in place? (`meshctl status`, phase routes)"
        } else {
            "do pods of one cluster reach the other's pod IPs? (one network means a flat pod network)"
        };
        return format!(
            "{f} -> {t}: both are on network {}: pods call each other directly; {hint}",
            fc.network
        );
    }
    if crate::phases::eastwest::gateway_ip(&clients[to]).await.is_none() {
        return format!(
            "{f} -> {t}: {t}'s east-west gateway has no LoadBalancer IP or hostname, so {f} gets unreachable pod IPs (run `meshctl status`)"
        );
    }
    if !crate::phases::expose::exposed(&clients[index(cp_to)]).await {
        return format!(
            "{f} -> {t}: {} does not expose services on the east-west gateways it configures (run `meshctl up --only expose`)",
            cp_to.name
        );
    }
    format!(
        "{f} -> {t}: no answer although the mesh is wired; run `istioctl proxy-config endpoint <curl-pod>.{NAMESPACE} --context {}`: {t}'s endpoints must be its east-west gateway IP on port 15443, not pod IPs",
        fc.context
    )
}

/// For every remote: its sample proxies (`<pod>.sample`) are listed by its primary's istiod, asked
/// again with growing pauses until `timeout` (a proxy connects once its pod runs).
async fn control_planes(
    mesh: &Mesh,
    clients: &[kube::Client],
    pods: &[(String, String)],
    timeout: Duration,
) -> Vec<ControlPlaneCheck> {
    let mut checks = Vec::new();
    for (r, remote) in mesh.clusters.iter().enumerate() {
        let Some(primary) = remote.primary.as_deref() else {
            continue;
        };
        let Some(p) = mesh.clusters.iter().position(|c| c.name == primary) else {
            continue;
        };
        let expected = [&pods[r].0, &pods[r].1].map(|pod| format!("{pod}.{NAMESPACE}"));
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(500);
        let check = loop {
            let (passed, detail) = match crate::istiod::proxies(&clients[p]).await {
                Ok(crate::istiod::Answered {
                    pod: istiod,
                    value: proxies,
                }) => {
                    let listed: Vec<&String> = expected
                        .iter()
                        .filter(|want| {
                            proxies
                                .iter()
                                .any(|s| &s.proxy_id == *want && s.cluster_id == remote.name)
                        })
                        .collect();
                    if listed.len() == expected.len() {
                        (
                            true,
                            format!(
                                "{} of its sample proxies on {primary}'s istiod ({istiod} /debug/syncz, cluster {})",
                                listed.len(),
                                remote.name
                            ),
                        )
                    } else {
                        (
                            false,
                            format!(
                                "{primary}'s istiod lists {} of {} sample proxies of {} (/debug/syncz): is {}'s istiod Service pointed at {primary}'s east-west gateway, istiod exposed there (`meshctl up --only expose`), and {}'s secret in {primary}?",
                                listed.len(),
                                expected.len(),
                                remote.name,
                                remote.name,
                                remote.name
                            ),
                        )
                    }
                }
                Err(e) => (
                    false,
                    format!("{primary}'s istiod did not answer /debug/syncz: {e}"),
                ),
            };
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

/// Runs the calls from every client at once.
/// `calls` calls from the curl client `pod`: answers per cluster, and calls that failed.
async fn calls_from(
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

async fn matrix(
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
    wait::gone(
        &namespaces,
        NAMESPACE,
        &format!("namespace {NAMESPACE} left by an earlier verify: deleted"),
        timeout,
        |n| {
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
    )
    .await?;
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
    let n = mesh.clusters.len();
    let mut clients = Vec::with_capacity(n);
    for c in &mesh.clusters {
        clients.push(
            crate::kube::connect(kubeconfig, &c.context)
                .await
                .with_context(|| format!("cluster `{}`", c.name))?,
        );
    }
    let artifacts = workloads::artifacts(mesh)?;
    let cleared =
        futures::future::try_join_all(mesh.clusters.iter().zip(&clients).map(|(c, client)| async move {
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
    futures::future::try_join_all(mesh.clusters.iter().zip(&clients).map(|(c, client)| {
        let yaml = workload_artifacts(&artifacts, &c.name);
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
        &format!("sample workloads applied in {n} cluster(s); waiting for their pods"),
    );

    let pods = futures::future::try_join_all(mesh.clusters.iter().zip(&clients).enumerate().map(
        |(i, (c, client))| async move {
            let hello = sidecar_pod(
                client,
                &c.name,
                &format!("app=helloworld,version={}", workloads::version_of(i)),
                options.timeout,
            )
            .await?;
            let curl = sidecar_pod(client, &c.name, "app=curl", options.timeout).await?;
            Ok::<_, anyhow::Error>((hello, curl))
        },
    ))
    .await?;
    let control_planes = control_planes(mesh, &clients, &pods, options.timeout).await;
    let (hello_pods, curl_pods): (Vec<String>, Vec<String>) = pods.into_iter().unzip();
    reporter.ok(
        "verify",
        "pods ready with their sidecars; calling across clusters",
    );

    let calling = call_until_settled(mesh, &clients, &curl_pods, options, reporter);
    let m = if options.per_cluster_subsets {
        // Every istiod reads its own cluster's rules: the subsets go into every cluster.
        with_rules(
            mesh,
            &clients,
            &artifacts,
            workloads::SUBSETS_FILE,
            options.timeout,
            calling,
        )
        .await?
    } else {
        calling.await?
    };
    let mut reasons = Vec::new();
    let expected_missing: Vec<(usize, usize)> = if options.local_only() {
        m.missing().into_iter().filter(|(f, t)| f == t).collect()
    } else {
        m.missing()
    };
    for (f, t) in expected_missing {
        reasons.push(diagnose(mesh, &clients, f, t).await);
    }
    if options.local_only() {
        let why = if options.per_cluster_subsets {
            "although the per-cluster VirtualService routes each cluster's callers to its own subset; is it applied in the caller's cluster?"
        } else {
            "although it is cluster-local; is the IstioOperator with this meshConfig installed? (`meshctl status`, phase istio)"
        };
        for (f, t) in m.crossed() {
            reasons.push(format!(
                "{} -> {}: {HELLOWORLD_HOST} answered across clusters {why}",
                mesh.clusters[f].name, mesh.clusters[t].name
            ));
        }
    }
    let failover = if options.failover && n >= 2 {
        Some(failover(mesh, &clients, &artifacts, &hello_pods, &curl_pods, options).await?)
    } else {
        if options.failover {
            reporter.note(
                "verify",
                "failover needs at least two clusters in different regions; skipped",
            );
        }
        None
    };
    let distribute = if options.distribute {
        match workloads::distribute_localities(mesh) {
            Some(pair) => Some(distribute(mesh, &clients, &artifacts, &curl_pods, pair, options).await?),
            None => {
                reporter.note(
                    "verify",
                    "locality distribute needs clusters in two regions; skipped",
                );
                None
            }
        }
    } else {
        None
    };
    if !options.keep {
        for (c, client) in mesh.clusters.iter().zip(&clients) {
            let namespaces: Api<Namespace> = Api::all(client.clone());
            match namespaces.delete(NAMESPACE, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => reporter.note(&c.name, &format!("could not remove namespace {NAMESPACE}: {e}")),
            }
        }
    }
    Ok(Report {
        mesh_id: mesh.mesh_id.clone(),
        matrix: m,
        reasons,
        failover,
        cluster_local: options.local_only(),
        distribute,
        control_planes,
    })
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
            &matrix(
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

/// Weighted locality distribution: with the distribute rule in every cluster, the first cluster's
/// client sends [`workloads::DISTRIBUTE_LOCAL_WEIGHT`]% of its calls to its own locality and the
/// rest to the other region; the observed split must match within the tolerance. The rule is
/// removed afterwards, so other checks see the mesh without it.
async fn distribute(
    mesh: &Mesh,
    clients: &[kube::Client],
    artifacts: &[Artifact],
    curl_pods: &[String],
    (local, other): (usize, usize),
    options: &Options,
) -> Result<Distribute> {
    let names: Vec<String> = mesh.clusters.iter().map(|c| c.name.clone()).collect();
    let weights = vec![
        (names[local].clone(), workloads::DISTRIBUTE_LOCAL_WEIGHT),
        (names[other].clone(), 100 - workloads::DISTRIBUTE_LOCAL_WEIGHT),
    ];
    let calls = options.calls_per_client.max(DISTRIBUTE_MIN_CALLS);
    let measure = async {
        // The rule reaches the proxies a moment after it is applied: measure until the split
        // holds or the bound is reached, keeping the last measurement.
        let started = std::time::Instant::now();
        let mut pause = Duration::from_secs(1);
        loop {
            let (answers, failed) = calls_from(
                &clients[local],
                &curl_pods[local],
                calls,
                names.len(),
                options.timeout,
            )
            .await?;
            let (passed, detail) =
                judge_split(&names, &weights, &answers, failed, DISTRIBUTE_TOLERANCE_POINTS);
            if passed || started.elapsed() + pause >= options.timeout {
                return Ok::<_, anyhow::Error>((answers, failed, passed, detail));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(8));
        }
    };
    let (answers, failed, passed, detail) = with_rules(
        mesh,
        clients,
        artifacts,
        workloads::DISTRIBUTE_FILE,
        options.timeout,
        measure,
    )
    .await?;
    Ok(Distribute {
        client: names[local].clone(),
        weights,
        answers,
        failed,
        passed,
        detail,
    })
}

/// Locality failover: with the DestinationRule, the first cluster's client is served locally; once
/// its local helloworld is drained, by the failover region.
async fn failover(
    mesh: &Mesh,
    clients: &[kube::Client],
    artifacts: &[Artifact],
    hello_pods: &[String],
    curl_pods: &[String],
    options: &Options,
) -> Result<Failover> {
    let client = &clients[0];
    let local = &mesh.clusters[0];
    let target_region = mesh
        .clusters
        .iter()
        .map(|c| &c.region)
        .find(|r| **r != local.region)
        .cloned()
        .unwrap_or_default();
    let expected = mesh
        .clusters
        .iter()
        .position(|c| c.region == target_region)
        .unwrap_or(1);
    let calls = options.calls_per_client;
    let n = mesh.clusters.len();
    let check = failover_calls(client, &hello_pods[0], &curl_pods[0], calls, n, expected, options);
    let (before, after, failed, passed) = with_rules(
        mesh,
        clients,
        artifacts,
        workloads::FAILOVER_FILE,
        options.timeout,
        check,
    )
    .await?;
    let detail = format!(
        "before the drain: {before:?} answers per cluster; after: {after:?} ({failed} failed calls); expected {} ({target_region})",
        mesh.clusters[expected].name
    );
    Ok(Failover {
        client: local.name.clone(),
        before,
        after,
        expected: mesh.clusters[expected].name.clone(),
        passed,
        detail,
    })
}

/// The calls of the failover check, under its rule: answered locally, then, once the local
/// instance is drained, by the failover region; the drained pod is replaced afterwards.
async fn failover_calls(
    client: &kube::Client,
    hello_pod: &str,
    curl_pod: &str,
    calls: usize,
    n: usize,
    expected: usize,
    options: &Options,
) -> Result<(Vec<usize>, Vec<usize>, usize, bool)> {
    let (before, _) = calls_from(client, curl_pod, calls, n, options.timeout).await?;
    // Make the local instance fail, as the Istio docs do: drain its sidecar's listeners.
    exec(
        client,
        hello_pod,
        "istio-proxy",
        vec![
            "curl".into(),
            "-sS".into(),
            "-X".into(),
            "POST".into(),
            "127.0.0.1:15000/drain_listeners".into(),
        ],
        options.timeout,
    )
    .await?;
    let (after, failed) = calls_from(client, curl_pod, calls, n, options.timeout).await?;
    let passed = after[0] == 0 && after[expected] > 0;
    // Restore: a new pod replaces the drained one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    pods.delete(hello_pod, &DeleteParams::default())
        .await
        .context("restore the drained helloworld pod")?;
    wait::pod_ready(
        client,
        NAMESPACE,
        &format!("app=helloworld,version={}", workloads::version_of(0)),
        options.timeout,
    )
    .await?;
    Ok((before, after, failed, passed))
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

/// Per-cluster counts as a table for people.
pub fn table(m: &Matrix) -> String {
    let width = m.clusters.iter().map(String::len).max().unwrap_or(8).max(10);
    let mut text = format!("{:<width$}", "FROM \\ TO");
    for c in &m.clusters {
        let _ = write!(text, "  {c:>width$}");
    }
    text.push_str("  FAILED\n");
    for (i, row) in m.counts.iter().enumerate() {
        let _ = write!(text, "{:<width$}", m.clusters[i]);
        for c in row {
            let _ = write!(text, "  {c:>width$}");
        }
        let _ = writeln!(text, "  {:>6}", m.failed[i]);
    }
    text
}

/// Totals for a summary line.
pub fn totals(m: &Matrix) -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("answered", m.counts.iter().flatten().sum()),
        ("failed", m.failed.iter().sum()),
        ("pairs", m.clusters.len() * m.clusters.len()),
        ("pairsMissing", m.missing().len()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `call_script` prints, call by call: the body, then curl's `-w` text.
    fn curl_output(bodies_and_codes: &[(&str, &str)]) -> String {
        bodies_and_codes
            .iter()
            .map(|(body, code)| format!("{body}\n{STATUS_MARK}{code}\n"))
            .collect()
    }

    #[test]
    fn answers_are_attributed_by_instance_and_failures_counted_by_status() {
        let out = curl_output(&[
            ("Hello version: v1, instance: helloworld-v1-5d8f7-xk2lq\n", "200"),
            ("Hello version: v1, instance: helloworld-v3-abcde\n", "200"),
            // Envoy's 503 body has no trailing newline (it is glued to the next text otherwise).
            ("no healthy upstream", "503"),
            ("Hello version: v2, instance: helloworld-v2-1\n", "200"),
            // curl got no answer at all.
            ("", "000"),
        ]);
        assert_eq!(
            tally(&out, 3, 5),
            (vec![1, 1, 1], 2),
            "cluster 3 runs the v1 image under deployment helloworld-v3"
        );
        assert_eq!(responder("Hello version: v9, instance: helloworld-v9-x", 3), None);
    }

    #[test]
    fn a_503_glued_to_a_good_answer_is_not_counted_as_one() {
        // Without a status per call, `no healthy upstreamHello version: v2, instance: helloworld-v2-1`
        // reads as one answer from cluster 2, and the failure disappears.
        let out = format!(
            "no healthy upstream\n{STATUS_MARK}503\nHello version: v2, instance: helloworld-v2-1\n\n{STATUS_MARK}200\n"
        );
        assert_eq!(tally(&out, 2, 2), (vec![0, 1], 1));
    }

    #[test]
    fn calls_that_printed_nothing_are_failures() {
        let out = curl_output(&[("Hello version: v1, instance: helloworld-v1-a\n", "200")]);
        assert_eq!(tally(&out, 2, 4), (vec![1, 0], 3), "three calls never reported");
    }

    #[test]
    fn a_200_whose_body_names_no_cluster_is_a_failure() {
        let out = curl_output(&[("<html>proxy page</html>", "200")]);
        assert_eq!(tally(&out, 2, 1), (vec![0, 0], 1));
    }

    /// The pod spec of `kubectl get pod -o yaml` after Istio 1.28+ injected a native sidecar: the
    /// shape of Istio's injection template (`manifests/charts/istio-control/istio-discovery/files/
    /// injection-template.yaml`, `{{ if .NativeSidecars }}`) and of the pods its golden files and
    /// users show: `istio-init` then `istio-proxy` (restartPolicy Always) in `initContainers`, and
    /// `sidecar.istio.io/status` listing both as init containers with `"containers":null`.
    const NATIVE_SIDECAR_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: curl-5b5c7bcd6b-x7kfz
  namespace: sample
  annotations:
    sidecar.istio.io/status: '{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert","istio-ca-crl"],"imagePullSecrets":null,"revision":"default"}'
spec:
  initContainers:
  - name: istio-init
    image: docker.io/istio/proxyv2:1.31.1
    args: [istio-iptables, -p, "15001", -z, "15006", -u, "1337", -m, REDIRECT]
  - name: istio-proxy
    image: docker.io/istio/proxyv2:1.31.1
    args: [proxy, sidecar, --domain, $(POD_NAMESPACE).svc.cluster.local]
    restartPolicy: Always
    ports:
    - {containerPort: 15090, name: http-envoy-prom, protocol: TCP}
  containers:
  - name: curl
    image: curlimages/curl
    command: [/bin/sleep, infinity]
"#;

    #[test]
    fn a_native_sidecar_counts_as_the_proxy_and_a_plain_init_container_does_not() {
        let native: Pod = serde_saphyr::from_str(NATIVE_SIDECAR_POD).unwrap();
        assert!(has_sidecar(&native), "Istio 1.28+ on Kubernetes 1.33+");
        // The pre-1.28 shape (Istio's golden `hello-multi.yaml.injected`): a second container.
        let mut classic = native.clone();
        let spec = classic.spec.as_mut().unwrap();
        let mut proxy = spec.init_containers.as_mut().unwrap().pop().unwrap();
        proxy.restart_policy = None;
        spec.containers.push(proxy.clone());
        assert!(has_sidecar(&classic));
        // An init container that runs to completion is no proxy.
        let mut init_only = native.clone();
        init_only.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[1].restart_policy = None;
        assert!(!has_sidecar(&init_only));
    }

    #[test]
    fn rounds_of_calls_add_up() {
        let mesh = Mesh::for_kind(2, "m").unwrap();
        let mut m = Matrix::empty(&mesh);
        assert!(!m.passed());
        m.add(&Matrix {
            clusters: m.clusters.clone(),
            counts: vec![vec![2, 0], vec![1, 1]],
            failed: vec![3, 0],
        });
        m.add(&Matrix {
            clusters: m.clusters.clone(),
            counts: vec![vec![0, 4], vec![0, 0]],
            failed: vec![0, 1],
        });
        assert_eq!(
            (m.counts.clone(), m.failed.clone()),
            (vec![vec![2, 4], vec![1, 1]], vec![3, 1])
        );
        assert!(m.passed());
    }

    #[test]
    fn a_cluster_local_host_passes_only_when_each_cluster_answers_itself_alone() {
        let local = Matrix {
            clusters: vec!["a".into(), "b".into()],
            counts: vec![vec![4, 0], vec![0, 3]],
            failed: vec![0, 0],
        };
        assert!(local.only_local() && !local.passed() && local.crossed().is_empty());
        let leaked = Matrix {
            counts: vec![vec![4, 1], vec![0, 3]],
            ..local.clone()
        };
        assert!(!leaked.only_local());
        assert_eq!(leaked.crossed(), vec![(0, 1)]);
        let report = |matrix| Report {
            mesh_id: "m".into(),
            matrix,
            reasons: vec![],
            failover: None,
            cluster_local: true,
            distribute: None,
            control_planes: vec![],
        };
        assert!(report(local).passed());
        let xml = junit(&report(leaked.clone()));
        assert!(
            xml.contains("failures=\"1\"")
                && xml.contains("answered 1 times although the host is cluster-local"),
            "{xml}"
        );
        assert!(!report(leaked).passed());
    }

    #[test]
    fn matrix_passes_only_when_every_pair_answered() {
        let m = Matrix {
            clusters: vec!["a".into(), "b".into()],
            counts: vec![vec![3, 2], vec![0, 5]],
            failed: vec![0, 0],
        };
        assert!(!m.passed());
        assert_eq!(m.missing(), vec![(1, 0)]);
        let report = Report {
            mesh_id: "m".into(),
            matrix: m,
            reasons: vec!["b -> a: no secret".into()],
            failover: None,
            cluster_local: false,
            distribute: None,
            control_planes: vec![],
        };
        let xml = junit(&report);
        assert!(
            xml.contains("tests=\"4\" failures=\"1\"")
                && xml.contains("name=\"b -> a\"><failure")
                && xml.contains("b -&gt; a: no secret"),
            "{xml}"
        );
    }

    #[test]
    fn a_split_passes_within_the_tolerance_and_fails_outside_it_or_with_strays() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let weights = vec![("a".to_string(), 80), ("b".to_string(), 20)];
        let judge = |answers: &[usize], failed| judge_split(&names, &weights, answers, failed, 10.0);
        let (ok, detail) = judge(&[158, 42, 0], 0);
        assert!(ok, "{detail}");
        assert!(
            detail.contains("a 80% (observed 79.0%), b 20% (observed 21.0%)"),
            "{detail}"
        );
        assert!(detail.contains("tolerance ±10 points"), "{detail}");
        // An ignored rule: round robin over both, or everything local.
        assert!(!judge(&[100, 100, 0], 0).0);
        assert!(!judge(&[200, 0, 0], 0).0);
        // A third cluster answering, a failed call, or no answer at all.
        assert!(!judge(&[150, 40, 10], 0).0);
        assert!(!judge(&[160, 40, 0], 1).0);
        assert!(!judge(&[0, 0, 0], 0).0);
    }

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
