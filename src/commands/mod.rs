//! The command layer: turns parsed arguments into settings once, then calls the library.
//! Nothing below this module sees a clap type.

mod certs;
mod command_line;
mod diagnose;
mod doctor;
mod down;
mod membership;
mod named_files;
mod remote_secret;
mod status;
mod up;
mod upgrade;
mod verify;
mod version;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Command, OutputFormat, TopologyArgs};
use crate::topology::{DEFAULT_MESH_ID, Mesh, Provider};
use command_line::{Flags, diagnose_command, spell_fix};

pub use crate::exit::{Exit, UsageError};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<Exit> {
    // The commands that keep no state (`certs gen` writes where it is told) run without one.
    let stateless = matches!(
        cli.command,
        Command::Certs(crate::cli::CertsCommand::Gen(_))
            | Command::Version(_)
            | Command::Completions(_)
            | Command::RemoteSecret(_)
            | Command::Doctor(_)
    );
    let workdir = match crate::work_dir::resolve(cli.workdir.as_deref()) {
        Ok(dir) => dir,
        Err(_) if stateless => PathBuf::new(),
        Err(e) => return Err(e.into()),
    };
    // A `--kubeconfig` that cannot be used is a mistake on the command line (exit 2), said once,
    // before any cluster is asked: not a cluster that is "not ready".
    // Only kind's `up` and `down` may find it missing: `up` writes the kind contexts there, and
    // `down` of kind clusters has nothing to remove from a file that is not there. Existing
    // clusters are reached through it, so a missing one is a typo there too.
    let may_create = match &cli.command {
        Command::Up(args) => resolve_topology(&args.topology).is_ok_and(|m| m.provider == Provider::Kind),
        Command::Down(args) => !args.uninstall,
        _ => false,
    };
    if let Some(path) = cli.kubeconfig.as_deref()
        && (path.exists() || !may_create)
    {
        crate::kube::read_kubeconfig(Some(path)).map_err(|e| UsageError(format!("--kubeconfig: {e}")))?;
    }
    // A context of existing clusters that the kubeconfig does not have is a mistake in the command
    // (exit 2), said once before any cluster is asked, by every command that asks them: not a
    // cluster that does not answer. `diagnose` collects what it can, and a dry run asks nothing.
    let asks_clusters = match &cli.command {
        Command::Up(args) if !args.dry_run => Some(&args.topology),
        Command::Upgrade(args) if !args.dry_run => Some(&args.topology),
        Command::Status(args) => Some(&args.topology),
        Command::Verify(args) => Some(&args.topology),
        Command::Certs(crate::cli::CertsCommand::Status(args)) => Some(&args.topology),
        Command::Certs(crate::cli::CertsCommand::Rotate(args)) => Some(&args.topology),
        Command::Isolate(args) | Command::Rejoin(args) => Some(&args.topology),
        _ => None,
    };
    if let Some(mesh) = asks_clusters.and_then(|t| resolve_topology(t).ok()) {
        refuse_unknown_contexts(&mesh, cli.kubeconfig.as_deref())?;
    }
    // `up` and `upgrade` stop at a safe point on Ctrl-C and say how to resume. The other commands
    // that change clusters finish what is under way (a `kind delete` or `istioctl uninstall`
    // killed half-way leaves what no later run finds to finish), unless interrupted twice. The
    // rest only read, and are dropped where they stand, which stops the tool they run with them
    // rather than leaving it to go on alone when the signal reached meshctl only.
    let stops_itself = matches!(cli.command, Command::Up(_) | Command::Upgrade(_));
    let finishes_first = matches!(
        cli.command,
        Command::Down(_)
            | Command::Isolate(_)
            | Command::Rejoin(_)
            | Command::Certs(crate::cli::CertsCommand::Rotate(_))
    );
    let work = async move {
        // What a printed command repeats of this one.
        let flags = Flags {
            kubeconfig: cli.kubeconfig.as_deref(),
            workdir: cli.workdir.as_deref(),
        };
        match cli.command {
            Command::Certs(crate::cli::CertsCommand::Gen(args)) => certs::generate(args),
            Command::Certs(crate::cli::CertsCommand::Status(args)) => {
                certs::status(args, &workdir, flags).await
            }
            Command::Certs(crate::cli::CertsCommand::Rotate(args)) => {
                certs::rotate(args, &workdir, cli.kubeconfig.as_deref()).await
            }
            Command::Up(args) => up::run(args, &workdir, cli.kubeconfig.as_deref()).await,
            Command::Version(args) => version::run(args.output),
            Command::Completions(args) => {
                let mut cmd = Cli::command();
                clap_complete::generate(args.shell, &mut cmd, "meshctl", &mut std::io::stdout());
                Ok(Exit::Success)
            }
            Command::Down(args) => down::run(args, &workdir, cli.kubeconfig.as_deref()).await,
            Command::Status(args) => status::run(args, &workdir, flags).await,
            Command::Verify(args) => verify::run(args, &workdir, flags).await,
            Command::RemoteSecret(args) => remote_secret::run(args, cli.kubeconfig.as_deref()).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Isolate(args) => membership::isolate(args, &workdir, cli.kubeconfig.as_deref()).await,
            Command::Rejoin(args) => membership::rejoin(args, &workdir, cli.kubeconfig.as_deref()).await,
            Command::Upgrade(args) => upgrade::run(args, &workdir, cli.kubeconfig.as_deref()).await,
            Command::Diagnose(args) => diagnose::run(args, &workdir, cli.kubeconfig.as_deref()).await,
        }
    };
    if stops_itself {
        return work.await;
    }
    tokio::pin!(work);
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        result = &mut work => return result,
    }
    if !finishes_first {
        eprintln!("interrupted: stopped, and the tool it was running with it");
        return Ok(Exit::Interrupted);
    }
    eprintln!("interrupted: letting it finish what it changes (Ctrl-C again stops at once, maybe half-way)");
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted again: stopped at once; what was under way may be half done: run the same command again");
            Ok(Exit::Interrupted)
        }
        result = &mut work => result,
    }
}

/// A document on stdout: JSON on one line (a script reads it by line), or YAML.
fn print_document(format: crate::cli::DocumentFormat, doc: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        crate::cli::DocumentFormat::Yaml => write!(out, "{}", serde_saphyr::to_string(doc)?)?,
        _ => writeln!(out, "{}", serde_json::to_string(doc)?)?,
    }
    Ok(())
}

/// How a reporting command reports for `-o`.
fn report_format(output: OutputFormat) -> crate::report::Format {
    match output {
        OutputFormat::Json => crate::report::Format::Json,
        OutputFormat::Text => crate::report::Format::Text,
    }
}

/// Asks on the terminal before a change that cannot simply be undone; `what` says what changes and
/// `question` is the prompt. Never waits for an answer that cannot come: without a terminal the
/// command is refused (exit 2), naming `--yes`.
fn confirm(what: &str, question: &str) -> Result<()> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!("{what}: pass --yes to confirm when not on a terminal")).into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Err(UsageError("not confirmed; nothing was changed".into()).into());
    }
    Ok(())
}

/// `command` is not built for a mesh with an external control plane yet: refused before anything
/// is read from or changed in a cluster, naming that cluster.
fn refuse_external_control_plane(mesh: &Mesh, command: &str) -> Result<()> {
    match mesh.external_control_plane() {
        Some(external) => Err(UsageError(format!(
            "{command}: mesh `{}` has an external control plane (cluster `{}`, `role: external`); meshctl does not {command} such a mesh yet",
            mesh.mesh_id, external.name
        ))
        .into()),
        None => Ok(()),
    }
}

/// The topology the flags describe: `--config`, `--contexts` or `--clusters` (default 2 kind clusters).
fn resolve_topology(args: &TopologyArgs) -> Result<Mesh> {
    let mesh_id = args.mesh_id.as_deref();
    let mesh = if let Some(path) = &args.config {
        Mesh::from_file(path, mesh_id)
    } else if !args.contexts.is_empty() {
        Mesh::for_contexts(&args.contexts, mesh_id.unwrap_or(DEFAULT_MESH_ID))
    } else {
        Mesh::for_kind(args.clusters.unwrap_or(2), mesh_id.unwrap_or(DEFAULT_MESH_ID))
    };
    let mesh = match args.dataplane {
        Some(dataplane) => mesh.and_then(|m| m.with_dataplane(dataplane)),
        None => mesh,
    };
    Ok(mesh.map_err(UsageError::from_display)?)
}

/// Every context of an existing mesh's clusters is in the kubeconfig (a kind mesh's contexts
/// appear only when `up` creates its clusters); every one that is not is named with its cluster.
fn refuse_unknown_contexts(mesh: &Mesh, kubeconfig: Option<&std::path::Path>) -> Result<(), UsageError> {
    if mesh.provider != Provider::Existing {
        return Ok(());
    }
    let unknown: Vec<String> = mesh
        .clusters
        .iter()
        .filter_map(|c| {
            crate::kube::server_of(kubeconfig, &c.context)
                .err()
                .map(|e| format!("cluster `{}`: {e}", c.name))
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(UsageError(unknown.join("\n")))
}
