//! The report as JUnit XML, for CI systems that show test cases. Pure.

use super::Report;
use std::fmt::Write as _;

pub(super) fn xml_escape(s: &str) -> String {
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
