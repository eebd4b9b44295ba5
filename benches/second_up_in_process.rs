//! What `up` costs at 2 and at 10 clusters on the in-process API servers (loopback, a played
//! istiod and istioctl per cluster), where no real API servers are at hand: the first `up` of a
//! multi-primary mesh on ten networks (certs, istio, eastwest, expose, remote-secrets), then the
//! second `up` on the mesh it left, which must change nothing.
//!
//! The in-process servers answer in microseconds, so the walls here measure meshctl's own work
//! (planning, rendering, probing, their concurrency), not a network's; what a real cluster adds is
//! proportional to the requests counted: per run, the API requests by kind, the port-forwards to
//! istiod, and the external programs run. `scripts/bench-second-up.sh` measures the same on real
//! API servers where they are.
//!
//! Run: `cargo bench --bench second_up_in_process`.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use meshctl::executor::RunEnd;
use meshctl::plan::Phase;

const PHASES: [Phase; 5] = support::istio_lab::MULTI_PRIMARY_PHASES;
const RUNS: usize = 5;

/// Existing clusters, each on a network of its own, each reachable at an address of its own.
fn topology(clusters: usize) -> String {
    let mut yaml = String::from("provider: existing\nclusters:\n");
    for i in 1..=clusters {
        yaml.push_str(&format!(
            "  - {{network: network{i}, apiServer: 'https://10.0.0.{i}:6443'}}\n"
        ));
    }
    yaml
}

/// What the servers were asked since `before` (one count per server), by kind of request.
fn asked(lab: &support::istio_lab::Lab, before: &[usize]) -> (usize, BTreeMap<String, usize>) {
    let mut kinds = BTreeMap::new();
    let mut total = 0;
    for ((_, server), from) in lab.servers.iter().zip(before) {
        for request in server.requests().into_iter().skip(*from) {
            total += 1;
            let (method, path) = request.split_once(' ').unwrap_or(("?", &request));
            let path = path.split('?').next().unwrap_or(path);
            // `GET /api/v1/namespaces/istio-system/secrets/x` → `GET secrets`; the resource is the
            // segment after the namespace (or after the group version).
            let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let resource = match segments.iter().position(|s| *s == "namespaces") {
                Some(i) if segments.len() > i + 2 => segments[i + 2..].join("/"),
                _ => segments.last().copied().unwrap_or("").to_string(),
            };
            let resource = resource.split('/').next().unwrap_or("").to_string()
                + if path.ends_with("/portforward") {
                    "/portforward"
                } else {
                    ""
                };
            *kinds.entry(format!("{method} {resource}")).or_insert(0) += 1;
        }
    }
    (total, kinds)
}

fn counts(lab: &support::istio_lab::Lab) -> Vec<usize> {
    lab.servers.iter().map(|(_, s)| s.requests().len()).collect()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut firsts = Vec::new();
    for clusters in [2, 10] {
        let lab = support::istio_lab::lab(&topology(clusters));
        let cas = support::fixed_cas(&lab.mesh);
        let started = Instant::now();
        let (end, tools, said) = runtime.block_on(lab.run("1.31.1", &PHASES, cas.clone()));
        let first = started.elapsed().as_secs_f64();
        assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
        println!(
            "first up, {clusters} clusters: {:.0} ms, {} API requests, {} istioctl runs",
            first * 1000.0,
            lab.servers.iter().map(|(_, s)| s.requests().len()).sum::<usize>(),
            tools.calls().len()
        );
        firsts.push(first);

        let mut walls = Vec::new();
        let mut last = (0, BTreeMap::new(), 0);
        for _ in 0..RUNS {
            let before = counts(&lab);
            let started = Instant::now();
            let (end, tools, said) = runtime.block_on(lab.run("1.31.1", &PHASES, cas.clone()));
            walls.push(started.elapsed().as_secs_f64());
            assert_eq!(end, RunEnd::Finished { changed: false }, "{}", said.join("\n"));
            let (total, kinds) = asked(&lab, &before);
            last = (total, kinds, tools.calls().len());
        }
        walls.sort_by(f64::total_cmp);
        let (total, kinds, runs) = last;
        println!(
            "second up, {clusters} clusters: median {:.0} ms of {RUNS}, {total} API requests ({:.1} per cluster), {runs} istioctl runs",
            walls[RUNS / 2] * 1000.0,
            total as f64 / clusters as f64
        );
        for (kind, n) in kinds.iter().filter(|(_, n)| **n > 0) {
            println!("    {n:>5}  {kind}");
        }
    }
    println!(
        "first up, wall(10)/wall(2): {:.1}× (goal: at most 5×)",
        firsts[1] / firsts[0]
    );
}
