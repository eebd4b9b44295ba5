//! The files and folders `up` is told to use, checked before anything else: clap cannot tell
//! whether a path is there, and a path that is not is a mistake in what was typed (exit 2), for
//! `--dry-run` as for the real run.

use anyhow::Result;

use super::UsageError;
use crate::cli::UpArgs;

pub(super) fn check(args: &UpArgs) -> Result<()> {
    let files = [
        (
            "--metallb-manifest",
            &args.metallb_manifest,
            "the MetalLB manifest file (metallb-native.yaml)",
        ),
        (
            "--gateway-api-crds",
            &args.gateway_api_crds,
            "the Gateway API CRD file (standard-install.yaml)",
        ),
    ];
    for (flag, path, what) in files {
        if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
            let why = if path.is_dir() {
                "is a directory"
            } else {
                "does not exist"
            };
            return Err(UsageError(format!("{flag} `{}` {why}: name {what}", path.display())).into());
        }
    }
    if let Some(path) = &args.istioctl {
        crate::istioctl_choice::refuse_missing_program(path)?;
    }
    // A CA folder that is not there would get a root of its own: a typo would mint a second root
    // beside the mesh's, and every cluster would then refuse it as another root.
    if let Some(dir) = args.certs_dir.as_ref().filter(|d| !d.is_dir()) {
        let why = if dir.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        return Err(UsageError(format!(
            "--certs-dir `{}` {why}: name the mesh's CA folder (its root-cert.pem and root-key.pem)\nhint: for a new CA there, make it first (`meshctl certs gen --clusters N --out {0}`), or leave --certs-dir out to keep the CA in meshctl's work dir",
            dir.display()
        ))
        .into());
    }
    // Half a root (a certificate without its key, or the other way round) is no CA to reuse.
    if let Some(dir) = &args.certs_dir
        && let Err(e @ crate::pki::layout::CertsError::Partial { .. }) = crate::pki::layout::load_root(dir)
    {
        return Err(UsageError(format!("--certs-dir: {e}")).into());
    }
    Ok(())
}
