//! How `meshctl up` scales with the number of clusters. Clusters are independent inside a phase, so
//! four clusters should take about as long as one. The fake tools take realistic times, scaled down
//! tenfold: `kind create cluster` 30 s → 3 s, each `istioctl install` 20 s → 2 s. The API work runs
//! for real against real kube-apiservers (envtest, `KUBEBUILDER_ASSETS`), one per cluster.
//!
//! Run: `scripts/bench-up.sh` (or `cargo bench --bench up_scaling`). Target: wall(4) / wall(1) < 1.5.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::Instant;

use support::envtest::kind::KindLab;
use support::fake_tools::FakeToolOptions;

fn main() {
    let options = FakeToolOptions {
        kind_create_secs: 3.0,
        istioctl_install_secs: 2.0,
        ..Default::default()
    };
    let mut walls = Vec::new();
    for n in [1usize, 2, 4] {
        let Some(lab) = KindLab::new(n, options.clone()) else {
            println!(
                "up --clusters: not measured, no real API servers here ({})",
                support::envtest::HOW_TO_GET
            );
            return;
        };
        let started = Instant::now();
        let out = lab.run(&["up", "--clusters", &n.to_string()]);
        let wall = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "up --clusters {n} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("up --clusters {n}: {wall:.2}s");
        walls.push(wall);
    }
    let ratio = walls[2] / walls[0];
    println!("wall(4) / wall(1) = {ratio:.2} (target < 1.5)");
}
