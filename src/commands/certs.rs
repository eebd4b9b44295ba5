//! `meshctl certs gen`, `certs status`, `certs rotate`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Exit, UsageError};
use crate::check::{self, Fix};
use crate::cli::{CertsGenArgs, CertsRotateArgs, CertsStatusArgs, DocumentFormat, OutputFormat};
use crate::kube::Clients;
use crate::mesh_ca;
use crate::mesh_dir::MeshDir;
use crate::pki::Validity;
use crate::pki::layout::{self, CertsRequest, Disposition};
use crate::report::Reporter;
use crate::state::StateStore;
use crate::topology::{DEFAULT_MESH_ID, Mesh};

pub(super) fn generate(args: CertsGenArgs) -> Result<Exit> {
    // Names are validated like any topology, so `certs gen` and `up` agree on what a cluster is.
    let mesh = match args.clusters {
        Some(n) => Mesh::for_kind(n, DEFAULT_MESH_ID),
        None => Mesh::for_names(&args.cluster, DEFAULT_MESH_ID),
    }
    .map_err(UsageError::from_display)?;
    let request = CertsRequest {
        dir: args.out.clone(),
        clusters: mesh.clusters.iter().map(|c| c.name.clone()).collect(),
        key_type: args.key_type,
        validity: Validity {
            root_days: args.root_days,
            intermediate_days: args.intermediate_days,
        },
        force: args.force,
        replace_root: args.replace_root,
    };
    // RSA-4096 keys take about a second each (on every core at once): said before the wait, so
    // a large mesh does not look hung. Keys already in the folder are kept and cost nothing.
    let new_keys = 1 + request.clusters.len();
    if request.key_type == crate::pki::KeyType::Rsa4096
        && new_keys > 2
        && !args.out.join("root-key.pem").exists()
    {
        eprintln!(
            "certs: generating {new_keys} RSA-4096 keys (about a second each, {} at a time)…",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    let failed = || {
        format!(
            "certs: cannot generate the certificate authorities in `{}`",
            args.out.display()
        )
    };
    let outcome = match layout::ensure(&request) {
        Ok(outcome) => outcome,
        // What the folder holds and what was asked do not fit together: a mistake in the command
        // or the folder named (exit 2), with nothing written.
        Err(e @ (layout::CertsError::WouldOrphan { .. } | layout::CertsError::Partial { .. })) => {
            return Err(UsageError(format!("{}: {e}", failed())).into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(failed())),
    };

    let verb = |d: Disposition| match d {
        Disposition::Created => "created",
        Disposition::Reused => "kept (already present)",
        Disposition::Replaced => "replaced",
    };
    match args.output {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "dir": outcome.dir,
                "root": outcome.root,
                "clusters": outcome.clusters.iter()
                    .map(|(ca, d)| serde_json::json!({"name": ca.cluster, "intermediate": d}))
                    .collect::<Vec<_>>(),
                "warnings": outcome.warnings,
            });
            writeln!(std::io::stdout().lock(), "{doc}")?;
        }
        OutputFormat::Text => {
            let reporter = Reporter::for_stderr();
            let dir = outcome.dir.display();
            reporter.ok(
                "root CA",
                &format!("{} `{dir}/{}`", verb(outcome.root), layout::ROOT_CERT),
            );
            for (ca, d) in &outcome.clusters {
                reporter.ok(
                    &ca.cluster,
                    &format!("intermediate CA {} `{dir}/{}/`", verb(*d), ca.cluster),
                );
            }
            for warning in &outcome.warnings {
                reporter.warn("certs", warning);
            }
        }
    }
    Ok(Exit::Success)
}

/// The CA directory of the mesh: `--certs-dir`, else the one `up` recorded, else the mesh folder's.
fn certs_dir_of(flag: Option<&Path>, workdir: &Path, mesh: &Mesh) -> Result<PathBuf> {
    if let Some(dir) = flag {
        // A folder named on the command line that is not there is a mistake in what was typed,
        // not a mesh without a CA.
        if !dir.is_dir() {
            return Err(UsageError(format!(
                "--certs-dir `{}` {}: name the folder holding the mesh's root-cert.pem and root-key.pem",
                dir.display(),
                if dir.exists() {
                    "is not a folder"
                } else {
                    "does not exist"
                }
            ))
            .into());
        }
        return Ok(dir.to_path_buf());
    }
    let dir = MeshDir::new(workdir, &mesh.mesh_id);
    let state = StateStore::load(&dir.state())?.snapshot();
    Ok(dir.certs_in_use(&state))
}

pub(super) async fn status(args: CertsStatusArgs, workdir: &Path, flags: super::Flags<'_>) -> Result<Exit> {
    let mesh = super::resolve_topology(&args.topology)?;
    let dir = certs_dir_of(args.certs_dir.as_deref(), workdir, &mesh)?;
    let mesh_root = layout::load_root(&dir)
        .with_context(|| format!("cannot read the root CA in `{}`", dir.display()))?
        .map(|r| r.cert_pem);
    let report = mesh_ca::status(
        &mesh,
        &Clients::new(flags.kubeconfig),
        mesh_root.as_deref(),
        args.warn_days,
    )
    .await;
    let (statuses, shared, healthy) = (&report.statuses, report.shared_root(), report.healthy);
    let spell = |fix: &Fix| super::spell_fix(fix, &flags, &args.topology);
    let problems = report.problems();
    let doc = serde_json::json!({"meshID": mesh.mesh_id, "certsDir": dir, "sharedRoot": shared,
        "healthy": healthy, "clusters": statuses, "problems": check::document(&problems, &spell)});
    match args.output {
        DocumentFormat::Json | DocumentFormat::Yaml => super::print_document(args.output, &doc)?,
        DocumentFormat::Text => {
            println!(
                "{:<10} {:<34} {:<34} {:<10} {:>5}  {:<6} ROOT",
                "CLUSTER", "INTERMEDIATE", "SERIAL", "NOT AFTER", "DAYS", "CHAIN"
            );
            for s in statuses {
                let (subject, serial, not_after, days) = match &s.intermediate {
                    Some(f) => (
                        f.subject.clone(),
                        f.serial.clone(),
                        f.not_after.clone(),
                        f.days_left.to_string(),
                    ),
                    None => match &s.certificates_from {
                        Some(primary) => (
                            format!("(remote: {primary}'s istiod)"),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                        ),
                        None => ("-".into(), "-".into(), "-".into(), "-".into()),
                    },
                };
                println!(
                    "{:<10} {:<34} {:<34} {:<10} {:>5}  {:<6} {}",
                    s.cluster, subject, serial, not_after, days, s.chain, s.root
                );
            }
            check::print(&problems, &spell);
        }
    }
    Ok(if healthy { Exit::Success } else { Exit::NotReady })
}

pub(super) async fn rotate(args: CertsRotateArgs, workdir: &Path, kubeconfig: Option<&Path>) -> Result<Exit> {
    let mesh = super::resolve_topology(&args.topology)?;
    let chosen = mesh_ca::rotation_targets(&mesh, &args.cluster)?;
    let dir = certs_dir_of(args.certs_dir.as_deref(), workdir, &mesh)?;
    let options = mesh_ca::Rotation {
        root: args.root,
        key_type: args.key_type,
        intermediate_days: args.intermediate_days,
        timeout: args.timeout,
    };
    let reporter = Reporter::new(super::report_format(args.output));
    mesh_ca::rotate(
        &mesh,
        &chosen,
        &dir,
        &options,
        &Clients::new(kubeconfig),
        &reporter,
    )
    .await?;
    Ok(Exit::Success)
}
