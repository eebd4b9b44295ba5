//! `meshctl diagnose`: collect, then write one archive (see [`crate::diagnostic_bundle`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Exit;
use crate::cli::{DiagnoseArgs, OutputFormat};
use crate::kube::Clients;
use crate::mesh_dir::MeshDir;
use crate::report::Reporter;

pub(super) async fn run(args: DiagnoseArgs, workdir: &Path, kubeconfig: Option<&Path>) -> Result<Exit> {
    let mesh = super::resolve_topology(&args.topology)?;
    let top = format!(
        "meshctl-diagnose-{}-{}",
        mesh.mesh_id,
        stamp(time::OffsetDateTime::now_utc())
    );
    let out = archive_path(&args, &top)?;
    let reporter = Reporter::new(super::report_format(args.output));
    let clients = Clients::new(kubeconfig);
    // A spinner per cluster on a terminal, a line per cluster as each ends.
    let started = std::time::Instant::now();
    for c in &mesh.clusters {
        reporter.started("diagnose", &c.name);
    }
    let report = |c: &crate::diagnostic_bundle::Collected| {
        if c.reason.is_empty() {
            reporter.finished(
                "diagnose",
                &c.cluster,
                started.elapsed(),
                &format!("{} ({} files)", c.outcome, c.files),
            );
        } else {
            reporter.failed(
                "diagnose",
                &c.cluster,
                started.elapsed(),
                &format!("{}: {}", c.outcome, c.reason),
            );
        }
    };
    let (bundle, summary) = crate::diagnostic_bundle::collect(
        &mesh,
        &clients,
        &MeshDir::new(workdir, &mesh.mesh_id),
        args.timeout,
        &report,
    )
    .await;
    crate::diagnostic_bundle::write(&bundle, &out, &top, args.force)
        .with_context(|| format!("diagnose: cannot write `{}`", out.display()))?;
    match args.output {
        OutputFormat::Json => reporter.event(
            "diagnose",
            serde_json::json!({"archive": out, "clusters": summary}),
        ),
        OutputFormat::Text => reporter.ok(
            "diagnose",
            &format!(
                "`{}` written ({} files); it holds no secret data, but read it before you share it",
                out.display(),
                bundle.paths().len()
            ),
        ),
    }
    Ok(Exit::Success)
}

/// `20261203-130405`: sorts by time, and is safe in a file name.
fn stamp(now: time::OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Where the archive goes, checked before anything is collected: a user's file is never replaced
/// unless asked.
fn archive_path(args: &DiagnoseArgs, top: &str) -> Result<PathBuf> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{top}.tar.gz")));
    if out.exists() && !args.force && !out.is_dir() {
        return Err(super::UsageError(format!(
            "--out `{}` already exists: pass --force to replace it, or name another file",
            out.display()
        ))
        .into());
    }
    if let Some(why) = crate::atomic_file::unwritable(&out) {
        return Err(super::UsageError(format!("--out {why}")).into());
    }
    Ok(out)
}
