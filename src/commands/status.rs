//! `meshctl status`: per cluster and phase, what the phase's probe finds (the same probes `up`
//! runs before deciding what to do), and for anything missing or different the command that fixes it.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::Exit;
use super::Flags;
use crate::check::{self, Fix};
use crate::cli::{DocumentFormat, StatusArgs};
use crate::mesh_dir::MeshDir;
use crate::mesh_health::MeshHealth;
use crate::mesh_status::{self, Report};
use crate::state::StateStore;
use crate::topology::Mesh;

pub(super) async fn run(args: StatusArgs, workdir: &Path, flags: Flags<'_>) -> Result<Exit> {
    let mut mesh = super::resolve_topology(&args.topology)?;
    let dir = MeshDir::new(workdir, &mesh.mesh_id);
    crate::upgrade::follow_recorded_release(&mut mesh, &StateStore::load(&dir.state())?.snapshot());
    // `--wait`: look again until the mesh is ready or the time is up, as `cilium status --wait`:
    // each look says what is still missing, the pauses grow but never pass the deadline, one last
    // look is taken at it, and a look still running then is not waited for.
    let started = std::time::Instant::now();
    let deadline = args.wait.map(|w| started + w);
    let mut pause = Duration::from_secs(1);
    let mut report = mesh_status::look(&mesh, &dir, flags.kubeconfig).await?;
    while let Some(d) = deadline.filter(|_| !report.ready) {
        let now = std::time::Instant::now();
        if now >= d {
            break;
        }
        let left = d - now;
        let missing: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.state.passed())
            .chain(&report.health.problems)
            .map(|c| format!("{} {}", c.cluster.as_deref().unwrap_or("mesh"), c.check))
            .collect();
        eprintln!(
            "status: not ready after {}s ({}); looking again, {}s left",
            started.elapsed().as_secs(),
            if missing.is_empty() {
                "see below".to_string()
            } else {
                missing.join(", ")
            },
            left.as_secs()
        );
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(10));
        let left = d
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_secs(1));
        match tokio::time::timeout(left, mesh_status::look(&mesh, &dir, flags.kubeconfig)).await {
            Ok(next) => report = next?,
            Err(_) => break,
        }
    }
    print(&mesh, &report, &flags, &args)?;
    Ok(if report.ready {
        Exit::Success
    } else {
        Exit::NotReady
    })
}

fn print(mesh: &Mesh, report: &Report, flags: &Flags<'_>, args: &StatusArgs) -> Result<()> {
    let spell = |fix: &Fix| super::spell_fix(fix, flags, &args.topology);
    match args.output {
        DocumentFormat::Json | DocumentFormat::Yaml => super::print_document(
            args.output,
            &serde_json::json!({"meshID": mesh.mesh_id, "dataplane": mesh.dataplane, "ready": report.ready,
                "checks": check::document(&report.checks, &spell),
                "mesh": report.health, "problems": check::document(&report.health.problems, &spell)}),
        )?,
        DocumentFormat::Text => {
            check::print(&report.checks, &spell);
            print_mesh(&report.health);
            if !mesh.dataplane.is_sidecar() {
                println!("  {AMBIENT_SCOPE}");
            }
            check::print(&report.health.problems, &spell);
        }
    }
    Ok(())
}

/// How a user's service becomes reachable from the other clusters of an ambient mesh: the
/// ambient profile's meshConfig.serviceScopeConfigs makes a Service labelled so global, and the
/// other clusters' istiods drop any that is not (pilot/pkg/serviceregistry/ambient/services.go).
const AMBIENT_SCOPE: &str = "ambient: another cluster calls a service only when it is global: `kubectl label service NAME -n NAMESPACE istio.io/global=true`, in every cluster that runs it";

/// The mesh across clusters, for people.
fn print_mesh(health: &MeshHealth) {
    println!("\nMESH");
    for seen in &health.istiods {
        let what = match &seen.error {
            Some(e) => format!("no answer: {e}"),
            None => seen
                .clusters
                .iter()
                .filter(|c| c.id != seen.cluster)
                .map(|c| format!("{} {}", c.id, c.sync_status))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let planes: Vec<String> = seen
            .control_planes
            .iter()
            .map(|p| format!("{} {}", p.revision, p.version))
            .collect();
        let planes = if planes.is_empty() {
            "no istiod Deployment".to_string()
        } else {
            planes.join(", ")
        };
        let what = if what.is_empty() {
            "no other cluster".to_string()
        } else {
            what
        };
        println!("  istiod of {:<10} ({planes}) reads: {what}", seen.cluster);
    }
    for line in health.revision_lines().into_iter().chain(health.proxy_lines()) {
        println!("{line}");
    }
    for (network, gateways) in &health.gateways {
        println!("  gateways of {network}: {}", gateways.join(", "));
    }
    for ca in &health.cas {
        println!(
            "  intermediate CA of {:<10} valid until {} ({} days)",
            ca.cluster, ca.not_after, ca.days_left
        );
    }
}
