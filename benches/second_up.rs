//! What a second `meshctl up` costs on a healthy mesh of three clusters: every phase's probe in
//! every cluster, and nothing else (issue 11: zero API writes, zero tool runs, under 1 s). The mesh
//! is built once against real kube-apiservers (envtest, `KUBEBUILDER_ASSETS`) with the fake tools;
//! then `up` runs again several times and each wall time is measured, with the writes the API
//! servers saw and the tools that ran.
//!
//! Run: `scripts/bench-second-up.sh` (or `cargo bench --bench second_up`). Target: median < 1 s.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::Instant;

use support::envtest::kind::KindLab;
use support::fake_tools::FakeToolOptions;

const RUNS: usize = 5;

fn main() {
    let Some(lab) = KindLab::new(3, FakeToolOptions::default()) else {
        println!(
            "second up: not measured, no real API servers here ({})",
            support::envtest::HOW_TO_GET
        );
        return;
    };
    let first = lab.run(&["up", "--clusters", "3"]);
    assert!(
        first.status.success(),
        "the first up failed:\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let mut walls = Vec::new();
    for _ in 0..RUNS {
        let (calls, writes) = (lab.tools.calls().len(), lab.writes());
        let started = Instant::now();
        let out = lab.run(&["up", "--clusters", "3"]);
        let wall = started.elapsed().as_secs_f64();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (runs, wrote) = (lab.tools.calls().len() - calls, lab.writes() - writes);
        println!("second up --clusters 3: {wall:.3}s, {wrote} API writes, {runs} tool runs");
        walls.push(wall);
    }
    walls.sort_by(f64::total_cmp);
    println!("median of {RUNS}: {:.3}s (target < 1 s)", walls[RUNS / 2]);
}
