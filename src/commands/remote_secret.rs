//! `meshctl remote-secret`: istioctl's create-remote-secret, natively.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Exit, UsageError};
use crate::cli::{ManifestFormat, RemoteSecretArgs, SecretType};
use crate::kube::apply::Applier;
use crate::remote_secret::create::{self, Account, Placement, is_loopback};
use crate::report::Reporter;
use crate::topology::dns1123_label_problem;

/// How long the token controller may take to fill the token Secret.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) async fn run(args: RemoteSecretArgs, kubeconfig: Option<&Path>) -> Result<Exit> {
    if let Some(reason) = dns1123_label_problem(&args.name) {
        // The name is the Istio cluster ID and the secret's key; istioctl requires a DNS-1123 label.
        return Err(UsageError(format!("--name: `{}` {reason}", args.name)).into());
    }
    let reporter = Reporter::for_stderr();
    let server = checked_server(&args, kubeconfig, &reporter)?;
    refuse_bad_targets(&args, kubeconfig)?;
    if let Some(reason) = dns1123_label_problem(&args.namespace) {
        return Err(UsageError(format!("--namespace: `{}` {reason}", args.namespace)).into());
    }
    let config = args.secret_type == SecretType::Config;
    let account = if config {
        Account::config_istiod(&args.namespace)
    } else {
        Account::reader(&args.namespace)
    };
    // Every cluster it will be applied to answers before the source cluster is changed (the
    // reader account and its token are made there).
    let targets =
        futures::future::join_all(args.apply_to.iter().map(|t| crate::kube::connect(kubeconfig, t))).await;
    let targets: Vec<kube::Client> = targets.into_iter().collect::<Result<_, _>>()?;
    let client = crate::kube::connect(kubeconfig, &args.context).await?;
    let creds = create::credentials_of(&client, &args.name, &account, TOKEN_TIMEOUT)
        .await
        .with_context(|| {
            format!(
                "remote-secret: cannot read the credentials of context `{}`",
                args.context
            )
        })?;
    let placement = Placement {
        namespace: &args.namespace,
        config,
    };
    let text = create::render_secret_in(placement, &args.name, &server, &creds)?;
    let secret_name = if config {
        create::CONFIG_SECRET.to_string()
    } else {
        format!("istio-remote-secret-{}", args.name)
    };

    if args.apply_to.is_empty() {
        let mut out = std::io::stdout().lock();
        match args.output {
            ManifestFormat::Yaml => write!(out, "{text}")?,
            ManifestFormat::Json => {
                let doc = crate::render::parse_documents(&text).map_err(anyhow::Error::msg)?;
                writeln!(out, "{}", serde_json::to_string_pretty(&doc[0])?)?;
            }
        }
        return Ok(Exit::Success);
    }
    for (target, target_client) in args.apply_to.iter().zip(targets) {
        let applied = Applier::new(target_client)
            .apply_yaml(&text, &secret_name)
            .await
            .with_context(|| format!("remote-secret: cannot apply the secret to context `{target}`"))?;
        for a in applied {
            reporter.ok(target, &format!("{} {}", a.object, a.change.as_str()));
        }
    }
    Ok(Exit::Success)
}

/// The contexts named are in the kubeconfig, each `--apply-to` once, and none reaches the cluster
/// the secret gives access to (by its API server, whatever the context is called): there its own
/// istiod ignores a secret of its own cluster ID (pkg/kube/multicluster/secretcontroller.go,
/// `addRemoteConfig`), so applying it there is a mistake in what was typed (exit 2), found before
/// any cluster is asked.
fn refuse_bad_targets(args: &RemoteSecretArgs, kubeconfig: Option<&Path>) -> Result<(), UsageError> {
    let server_of = |flag: &str, context: &str| {
        crate::kube::server_of(kubeconfig, context).map_err(|e| UsageError(format!("{flag}: {e}")))
    };
    let source = server_of("--context", &args.context)?;
    for (i, target) in args.apply_to.iter().enumerate() {
        if args.apply_to[..i].contains(target) {
            return Err(UsageError(format!("--apply-to names `{target}` twice")));
        }
        if server_of("--apply-to", target)? == source {
            return Err(UsageError(format!(
                "--apply-to `{target}` reaches the cluster the secret gives access to (--context `{}`, {source}): its istiod ignores a remote secret of its own cluster; apply it to the other clusters' istiods",
                args.context
            )));
        }
    }
    Ok(())
}

/// The API server address the secret carries: `--server`, else the kubeconfig's (refused when it
/// is a loopback address); a loopback `--server` is the user's word, with a warning.
fn checked_server(args: &RemoteSecretArgs, kubeconfig: Option<&Path>, reporter: &Reporter) -> Result<String> {
    let (server, explicit) = match &args.server {
        Some(s) => (s.clone(), true),
        None => (
            crate::kube::server_of(kubeconfig, &args.context)
                .map_err(|e| UsageError(format!("--context: {e}")))?,
            false,
        ),
    };
    // A `--server` that is not an https URL is a mistake on the command line (exit 2); the same
    // found in the kubeconfig is the cluster's configuration (exit 1).
    match create::check_server(&args.name, &server, explicit) {
        Err(e @ create::RemoteSecretError::BadServer { .. }) if explicit => {
            return Err(UsageError(format!("--server: {e}")).into());
        }
        other => other?,
    }
    if explicit && is_loopback(&server) {
        reporter.note(
            &args.name,
            &format!("warning: `{server}` is a loopback address; only this machine can reach it"),
        );
    }
    Ok(server)
}
