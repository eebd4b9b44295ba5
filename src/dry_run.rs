//! `up --dry-run`: the plan written to disk, for review or GitOps.
//!
//! ```text
//! OUT/plan.json, OUT/plan.yaml           phases × clusters × steps, and the artifact list
//! OUT/<cluster>/<NN-phase>/<file>.yaml   every rendered manifest (secrets 0600)
//! OUT/<cluster>/verify/*.yaml            what `meshctl verify` applies
//! ```
//! Paths inside the plan are relative to OUT, so `cd OUT` and the listed commands run as shown.

use std::io;
use std::path::Path;

use serde::Serialize;

use crate::atomic_file::{self, PRIVATE, PUBLIC};
use crate::plan::{Artifact, Plan, Step};

/// What `plan.json` holds: the plan and the verification manifests.
#[derive(Serialize)]
struct PlanFile<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    verify: Vec<&'a str>,
}

/// Writes the plan and every artifact under `out`. Existing files are replaced atomically.
pub fn write(out: &Path, plan: &Plan, verify: &[Artifact]) -> io::Result<()> {
    atomic_file::create_dir_all(out, 0o755)?;
    for artifact in plan.artifacts.iter().chain(verify) {
        let path = out.join(&artifact.path);
        atomic_file::create_dir_all(atomic_file::parent_of(&path), 0o755)?;
        let mode = if artifact.secret { PRIVATE } else { PUBLIC };
        atomic_file::write(&path, artifact.content.as_bytes(), mode)?;
    }
    let file = PlanFile {
        plan,
        verify: verify.iter().map(|a| a.path.as_str()).collect(),
    };
    let json = serde_json::to_string_pretty(&file).map_err(io::Error::other)?;
    atomic_file::write(&out.join("plan.json"), format!("{json}\n").as_bytes(), PUBLIC)?;
    let yaml = serde_saphyr::to_string(&file).map_err(io::Error::other)?;
    atomic_file::write(&out.join("plan.yaml"), yaml.as_bytes(), PUBLIC)?;
    Ok(())
}

/// The plan as text a reviewer reads top to bottom: per phase, per cluster, each step.
pub fn listing(plan: &Plan) -> String {
    let mut text = format!(
        "mesh `{}`: {} cluster(s), provider {:?}\n",
        plan.mesh_id,
        plan.clusters.len(),
        plan.provider
    );
    for c in &plan.clusters {
        let pool = c
            .metallb_pool
            .as_deref()
            .map(|p| format!("  pool {p}"))
            .unwrap_or_default();
        text.push_str(&format!(
            "  {:<10} context {}  network {}  locality {}{pool}\n",
            c.name, c.context, c.network, c.locality
        ));
    }
    for phase in &plan.phases {
        text.push_str(&format!("\n{}\n", phase.phase.folder()));
        for cluster in &phase.clusters {
            for step in &cluster.steps {
                text.push_str(&format!("  {:<10} {}\n", cluster.cluster, describe(step)));
            }
        }
    }
    text
}

/// One line for a step.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Run { tool, args, unless } => {
            let unless = unless
                .as_deref()
                .map(|u| format!("   (skipped if {u})"))
                .unwrap_or_default();
            format!("run: {} {}{unless}", tool.program(), args.join(" "))
        }
        Step::Apply { file } => format!("apply: {file}"),
        Step::ApplyUpstream { name, url, .. } => format!("apply: {name} from {url} (sha256-checked)"),
        Step::Wait { until } => format!("wait: {until}"),
        Step::ImportKubeconfig {
            kind_cluster,
            context,
        } => {
            format!("kubeconfig: `kind get kubeconfig --name {kind_cluster}`, context renamed to `{context}`")
        }
        Step::RecordApiEndpoint { container, network } => {
            format!("record: API server of `{container}` on docker network `{network}` (https://<ip>:6443)")
        }
        Step::LabelNodes { labels, overwrite } => {
            let l: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "label nodes: {}{}",
                l.join(" "),
                if *overwrite { "" } else { " (only where missing)" }
            )
        }
        Step::RemoteSecret { source } => {
            format!("remote secret: read `{source}`, apply istio-remote-secret-{source} here")
        }
    }
}
