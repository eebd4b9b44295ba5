//! The report as JUnit XML, for CI systems that show test cases. Pure.

use super::Report;
use std::fmt::Write as _;

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How every report meshctl writes opens its test suite.
const SUITE_OPENING: &str = "<testsuite name=\"meshctl verify (";

/// Why the file at `path` must not be replaced by a report, if it must not: it holds something
/// other than an earlier report of meshctl's (CI runs `verify` again with the same `--junit`).
pub fn refuse_foreign_report(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let ours = String::from_utf8_lossy(&text).contains(SUITE_OPENING);
    (!ours).then(|| {
        format!(
            "`{}` exists and is not a report meshctl wrote: nothing was written; remove it or name another file",
            path.display()
        )
    })
}

/// The report as JUnit XML: one test case per pair of clusters, plus failover.
pub fn junit(report: &Report) -> String {
    let cases: Vec<Case> = pair_cases(report)
        .into_iter()
        .chain(check_cases(report))
        .collect();
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let mut text = String::new();
    for case in &cases {
        let _ = write!(
            text,
            "  <testcase classname=\"meshctl.verify\" name=\"{}\">",
            case.name
        );
        if let Some((message, detail)) = &case.failure {
            let _ = write!(
                text,
                "<failure message=\"{}\">{}</failure>",
                xml_escape(message),
                xml_escape(detail)
            );
        }
        text.push_str("</testcase>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{SUITE_OPENING}{})\" tests=\"{}\" failures=\"{failures}\">\n{text}</testsuite>\n",
        xml_escape(&report.mesh_id),
        cases.len()
    )
}

/// One test case: its name (escaped already: a pair's arrow stays as it reads) and, when it
/// failed, the message and the detail.
struct Case {
    name: String,
    failure: Option<(String, String)>,
}

/// One case per ordered pair of clusters.
fn pair_cases(report: &Report) -> Vec<Case> {
    let m = &report.matrix;
    let mut cases = Vec::new();
    for (f, from) in m.clusters.iter().enumerate() {
        for (t, to) in m.clusters.iter().enumerate() {
            // A cluster-local host must answer within the cluster and never across.
            let crossed = report.cluster_local && f != t && m.counts[f][t] > 0;
            let failure = if crossed {
                let message = format!(
                    "{to} answered {} times although the host is cluster-local",
                    m.counts[f][t]
                );
                Some((message, String::new()))
            } else if m.counts[f][t] == 0 && !(report.cluster_local && f != t) {
                let pair = format!("{from} -> {to}");
                let reason = report
                    .reasons
                    .iter()
                    .find(|r| r.object.as_deref() == Some(pair.as_str()))
                    .map(|r| r.detail.clone())
                    .unwrap_or_default();
                let calls = m.counts[f].iter().sum::<usize>() + m.failed[f];
                Some((format!("no answer from {to} in {calls} calls"), reason))
            } else {
                None
            };
            cases.push(Case {
                name: format!("{} -> {}", xml_escape(from), xml_escape(to)),
                failure,
            });
        }
    }
    cases
}

/// One case per further check: weighted distribution, each remote's control plane, failover.
fn check_cases(report: &Report) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut push = |name: String, passed: bool, message: String, detail: &str| {
        let failure = (!passed).then(|| (message, detail.to_string()));
        cases.push(Case {
            name: xml_escape(&name),
            failure,
        });
    };
    if let Some(d) = &report.distribute {
        let message = "observed split outside the tolerance".to_string();
        push(
            format!("locality distribute from {}", d.client),
            d.passed,
            message,
            &d.detail,
        );
    }
    for cp in &report.control_planes {
        let message = format!("not configured by {}'s istiod", cp.primary);
        push(
            format!("{} configured by {}", cp.remote, cp.primary),
            cp.passed,
            message,
            &cp.detail,
        );
    }
    if let Some(fo) = &report.failover {
        let message = format!("traffic did not move to {}", fo.expected);
        push(
            format!("failover from {}", fo.client),
            fo.passed,
            message,
            &fo.detail,
        );
    }
    cases
}

/// A JUnit report for a verify that could not run at all (a cluster unreachable, workloads that
/// never started): one failed test case naming why, so a CI job that asked for the file always
/// finds one, and it says what happened.
pub fn junit_not_run(mesh_id: &str, why: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{SUITE_OPENING}{})\" tests=\"1\" failures=\"1\">\n  <testcase classname=\"meshctl.verify\" name=\"verify\"><failure message=\"verify could not run\">{}</failure></testcase>\n</testsuite>\n",
        xml_escape(mesh_id),
        xml_escape(why)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_report_meshctl_wrote_may_be_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.xml");
        std::fs::write(&ours, junit_not_run("mesh1", "no cluster answered")).unwrap();
        assert_eq!(refuse_foreign_report(&ours), None);
        assert_eq!(
            refuse_foreign_report(&dir.path().join("new.xml")),
            None,
            "a new file"
        );
        let theirs = dir.path().join("theirs.xml");
        std::fs::write(&theirs, "<testsuites/>").unwrap();
        assert!(refuse_foreign_report(&theirs).is_some_and(|why| why.contains("not a report meshctl wrote")));
    }
}
