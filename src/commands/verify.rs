//! `meshctl verify`.

use std::path::Path;

use anyhow::{Context, Result};

use super::Exit;
use crate::atomic_file::{self, PUBLIC};
use crate::check::{self, Fix};
use crate::cli::{OutputFormat, VerifyArgs};
use crate::report::Reporter;
use crate::verification::{self, Options};

pub(super) async fn run(args: VerifyArgs, workdir: &Path, flags: super::Flags<'_>) -> Result<Exit> {
    let kubeconfig = flags.kubeconfig;
    let mut mesh = super::resolve_topology(&args.topology)?;
    // The mesh as built: its data plane and release, as its state recorded them.
    let dir = crate::mesh_dir::MeshDir::new(workdir, &mesh.mesh_id);
    let state = crate::state::StateStore::load(&dir.state())?.snapshot();
    crate::upgrade::follow_recorded_release(&mut mesh, &state);
    refuse_what_cannot_pass(&args, &mesh)?;
    let options = Options {
        calls_per_client: args
            .calls
            .map(|n| n as usize)
            .unwrap_or((10 * mesh.clusters.len()).max(20)),
        timeout: args.timeout,
        failover: args.failover || args.locality.contains(&crate::cli::LocalityCheck::Failover),
        distribute: args.locality.contains(&crate::cli::LocalityCheck::Distribute),
        cluster_local: args.cluster_local,
        per_cluster_subsets: args.per_cluster_subsets,
        keep: args.keep,
    };
    let junit = args.junit.as_deref();
    if let Some(why) =
        junit.and_then(|p| atomic_file::unwritable(p).or_else(|| verification::refuse_foreign_report(p)))
    {
        return Err(super::UsageError(format!("--junit {why}")).into());
    }
    let reporter = Reporter::new(super::report_format(args.output));
    let diagnose = || {
        reporter.note(
            "diagnose",
            &format!(
                "to collect what the clusters hold (for you or a bug report): {}",
                super::diagnose_command(kubeconfig, workdir, &args.topology)
            ),
        )
    };
    let report = match verification::run(&mesh, kubeconfig, &options, &reporter).await {
        Ok(report) => report,
        Err(e) => {
            diagnose();
            if let Some(path) = &args.junit {
                let text = verification::junit_not_run(&mesh.mesh_id, &format!("{e:#}"));
                atomic_file::write(path, text.as_bytes(), PUBLIC)
                    .with_context(|| format!("cannot write the JUnit report `{}`", path.display()))?;
            }
            return Err(e.context("verify"));
        }
    };
    if !report.passed() {
        diagnose();
    }
    if let Some(path) = &args.junit {
        atomic_file::write(path, verification::junit(&report).as_bytes(), PUBLIC)
            .with_context(|| format!("cannot write the JUnit report `{}`", path.display()))?;
    }
    let spell = |fix: &Fix| super::spell_fix(fix, &flags, &args.topology);
    match args.output {
        OutputFormat::Json => {
            // The last event of the stream, one line like the others.
            let mut doc = serde_json::json!({"event": "verify-result", "passed": report.passed(), "totals": verification::totals(&report.matrix), "report": report});
            doc["report"]["reasons"] = check::document(&report.reasons, &spell);
            println!("{doc}");
        }
        OutputFormat::Text => {
            print_text(&report, &spell);
        }
    }
    Ok(if report.passed() {
        Exit::Success
    } else {
        Exit::NotReady
    })
}

/// The checks verify does not make in an ambient mesh: weighted distribution and per-cluster
/// subsets are DestinationRules, which ztunnel does not read (across clusters they would need a
/// waypoint per cluster, which meshctl does not install), and a cluster-local host is a
/// mesh-config rule of sidecar meshes (an ambient service is local unless it is global).
/// Failover is checked, the ambient way (`verification::ambient_failover`).
fn ambient_refusal(args: &VerifyArgs, mesh: &crate::topology::Mesh) -> Option<String> {
    if mesh.dataplane.is_sidecar() {
        return None;
    }
    let asked = [
        (
            args.locality.contains(&crate::cli::LocalityCheck::Distribute),
            "--locality distribute",
        ),
        (args.per_cluster_subsets, "--per-cluster-subsets"),
        (args.cluster_local, "--cluster-local"),
    ];
    let (_, flag) = asked.into_iter().find(|(on, _)| *on)?;
    Some(format!(
        "{flag} is not checked in an ambient mesh: its check applies DestinationRules, which ztunnel does not read (weighted distribution and subsets across clusters need a waypoint per cluster, which meshctl does not install); a service is cluster-local in ambient unless labelled istio.io/global=true. `meshctl verify` without it proves every pair through ztunnel, and `--failover` proves ambient's own failover (a Service's traffic distribution PreferClose, applied by ztunnel)"
    ))
}

/// What no call could pass under this topology, said before touching a cluster.
fn refuse_what_cannot_pass(args: &VerifyArgs, mesh: &crate::topology::Mesh) -> Result<()> {
    if let Some(why) = ambient_refusal(args, mesh) {
        return Err(super::UsageError(why).into());
    }
    if args.cluster_local
        && !mesh.mesh_config.is_cluster_local_beside(
            crate::verification::workloads::HELLOWORLD_HOST,
            &mesh.istio_revision.istiod(),
        )
    {
        return Err(super::UsageError(format!(
            "--cluster-local: the topology does not make {} cluster-local; add it (or a wildcard such as *.sample.svc.cluster.local) to meshConfig.serviceSettings with clusterLocal: true, and run `meshctl up` with that topology first",
            crate::verification::workloads::HELLOWORLD_HOST
        ))
        .into());
    }
    // Under a mesh config that hides the sample workloads from istiod no call could pass: say why
    // before touching a cluster.
    if crate::verification::workloads::discovery_labels(mesh).is_none() {
        return Err(super::UsageError(format!(
            "meshConfig.discoverySelectors select no namespace `{}` could join by its labels, so istiod would ignore the verification workloads; add a selector such as `matchLabels: {{istio-discovery: enabled}}`",
            crate::verification::workloads::NAMESPACE
        ))
        .into());
    }
    let locality = |mode| args.locality.contains(&mode);
    let used = crate::verification::workloads::RulesUsed {
        virtual_service: args.per_cluster_subsets,
        destination_rule: args.per_cluster_subsets
            || args.failover
            || locality(crate::cli::LocalityCheck::Failover)
            || locality(crate::cli::LocalityCheck::Distribute),
    };
    if let Some(problem) = crate::verification::workloads::export_problem(&mesh.mesh_config, used) {
        return Err(super::UsageError(problem).into());
    }
    Ok(())
}

fn print_text(report: &verification::Report, spell: check::Spell<'_>) {
    print!("{}", verification::table(&report.matrix));
    check::print(&report.reasons, spell);
    if let Some(d) = &report.distribute {
        let mark = if d.passed { "✓" } else { "✗" };
        println!("{mark} locality distribute from {}: {}", d.client, d.detail);
    }
    for z in &report.ztunnels {
        let verdict = if z.passed { "PASS" } else { "FAIL" };
        println!(
            "{verdict}: {}'s ztunnels send {} to networks {} ({})",
            z.cluster,
            crate::verification::workloads::HELLOWORLD_HOST,
            z.networks.join(", "),
            z.detail
        );
    }
    for cp in &report.control_planes {
        let verdict = if cp.passed { "PASS" } else { "FAIL" };
        println!(
            "{verdict}: {}'s proxies are configured by {}'s istiod ({})",
            cp.remote, cp.primary, cp.detail
        );
    }
    if let Some(f) = &report.failover {
        let mark = if f.passed { "✓" } else { "✗" };
        println!(
            "{mark} failover: {} drained, traffic {} to {}; {}",
            f.client,
            if f.passed { "moved" } else { "did not move" },
            f.expected,
            f.detail
        );
    }
    let t = verification::totals(&report.matrix);
    if report.cluster_local {
        let verdict = if report.matrix.only_local() {
            "PASS"
        } else {
            "FAIL"
        };
        println!(
            "{verdict}: cluster-local {}: every client answered only by its own cluster ({} answers, {} across clusters)",
            crate::verification::workloads::HELLOWORLD_HOST,
            t["answered"],
            report.matrix.crossed().len()
        );
    } else if report.matrix.passed() {
        println!(
            "PASS: every cluster reached every cluster ({} answers, {} failed calls)",
            t["answered"], t["failed"]
        );
    } else {
        println!(
            "FAIL: {} of {} cluster pairs got no answer",
            t["pairsMissing"], t["pairs"]
        );
    }
}
