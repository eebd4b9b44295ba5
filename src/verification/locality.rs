//! Locality checks: failover when the nearest cluster drains, and the weighted split of
//! `--locality distribute`.

use super::checks::calls_from;
use super::exec::exec;
use super::{Options, with_rules};
use crate::plan::Artifact;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde::Serialize;

use super::workloads::{self, NAMESPACE};
use crate::topology::Mesh;

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

/// Weighted locality distribution: with the distribute rule in every cluster, the first cluster's
/// client sends [`workloads::DISTRIBUTE_LOCAL_WEIGHT`]% of its calls to its own locality and the
/// rest to the other region; the observed split must match within the tolerance. The rule is
/// removed afterwards, so other checks see the mesh without it.
pub(super) async fn distribute(
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
pub(super) async fn failover(
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
pub(super) async fn failover_calls(
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
    let helloworld = format!("app=helloworld,version={}", workloads::version_of(0));
    super::exec::ready_pod(client, &helloworld, options.timeout).await?;
    Ok((before, after, failed, passed))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
