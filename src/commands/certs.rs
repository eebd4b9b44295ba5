//! `meshctl certs gen`.

use std::io::Write;

use anyhow::{Context, Result};

use super::{Exit, UsageError};
use crate::cli::{CertsGenArgs, OutputFormat};
use crate::pki::Validity;
use crate::pki::layout::{self, CertsRequest, Disposition};
use crate::report::Reporter;
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
    };
    let outcome = layout::ensure(&request).with_context(|| {
        format!(
            "certs: cannot generate the certificate authorities in `{}`",
            args.out.display()
        )
    })?;

    let verb = |d: Disposition| match d {
        Disposition::Created => "created",
        Disposition::Reused => "kept (already present)",
        Disposition::Replaced => "replaced (--force)",
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
