//! `meshctl up`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Exit, NotImplemented};
use crate::cli::{OutputFormat, UpArgs};
use crate::phases::{self, Phase};
use crate::pki::Validity;
use crate::pki::layout::{self, CertsRequest};
use crate::plan::{self, PlanInput};
use crate::{dry_run, ipam};

pub(super) fn run(args: UpArgs, _workdir: &Path) -> Result<Exit> {
    let mesh = super::resolve_topology(&args.topology)?;
    let phases = plan::select_phases(mesh.provider, &args.only, &args.skip)?;
    let timeout = humantime::parse_duration(&args.timeout)
        .with_context(|| format!("--timeout `{}` is not a duration such as 90s or 5m", args.timeout))?;
    if !args.dry_run {
        return Err(NotImplemented {
            what: "meshctl up (without --dry-run)".into(),
        }
        .into());
    }
    let Some(out) = args.out.as_deref() else {
        bail!("--dry-run needs --out DIR")
    };

    // Gather the inputs planning needs: first what can be checked without writing anything, then
    // the certificate authorities (the only I/O before the plan itself is written).
    let pools = if phases.contains(&Phase::Metallb) {
        let subnet: ipnet::IpNet = args
            .lb_subnet
            .parse()
            .with_context(|| format!("--lb-subnet `{}` is not a CIDR", args.lb_subnet))?;
        ipam::plan_pools(ipam::ipv4_subnet(&[subnet])?, mesh.clusters.len(), &[])
            .context("phase metallb: cannot plan the address pools")?
    } else {
        Vec::new()
    };

    let cas = if phases.contains(&Phase::Certs) {
        let dir = args.certs_dir.clone().unwrap_or_else(|| out.join("certs"));
        let request = CertsRequest {
            dir: dir.clone(),
            clusters: mesh.clusters.iter().map(|c| c.name.clone()).collect(),
            key_type: args.key_type,
            validity: Validity::default(),
            force: false,
        };
        let outcome = layout::ensure(&request).with_context(|| {
            format!(
                "phase certs: cannot prepare the certificate authorities in `{}`",
                dir.display()
            )
        })?;
        outcome.clusters.into_iter().map(|(ca, _)| ca).collect()
    } else {
        Vec::new()
    };
    let plan = plan::build(&PlanInput {
        mesh: &mesh,
        phases,
        pools,
        cas,
        timeout_secs: timeout.as_secs(),
    })?;
    let verify = phases::verify::artifacts(&mesh)?;
    dry_run::write(out, &plan, &verify)
        .with_context(|| format!("cannot write the plan to `{}`", out.display()))?;

    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string(&plan)?)?,
        OutputFormat::Text => {
            write!(stdout, "{}", dry_run::listing(&plan))?;
            writeln!(
                stdout,
                "\nplan written to `{}` ({} files); nothing was changed",
                out.display(),
                plan.artifacts.len() + verify.len() + 2
            )?;
        }
    }
    Ok(Exit::Success)
}
