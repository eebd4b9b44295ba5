//! Who answered whom: the curl script every client runs, how its output is attributed to a
//! cluster, and the matrix built from it. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::workloads::NAMESPACE;
use crate::topology::Mesh;

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
    use crate::verification::{Report, junit};

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
            ztunnels: vec![],
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
            reasons: vec![
                crate::check::Check::new("calls", crate::check::State::Fail, "b -> a: no secret")
                    .on("b -> a"),
            ],
            failover: None,
            cluster_local: false,
            distribute: None,
            control_planes: vec![],
            ztunnels: vec![],
        };
        let xml = junit(&report);
        assert!(
            xml.contains("tests=\"4\" failures=\"1\"")
                && xml.contains("name=\"b -> a\"><failure")
                && xml.contains("b -&gt; a: no secret"),
            "{xml}"
        );
    }
}
