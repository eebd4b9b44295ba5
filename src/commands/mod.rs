//! The command layer: turns parsed arguments into settings once, then calls the library.
//! Nothing below this module sees a clap type.

mod certs;
mod diagnose;
mod doctor;
mod down;
mod membership;
mod remote_secret;
mod status;
mod up;
mod upgrade;
mod verify;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::CommandFactory;

use crate::cli::{Cli, Command, OutputFormat, TopologyArgs};
use crate::mesh_dir::MeshDir;
use crate::topology::{DEFAULT_MESH_ID, Mesh};
use crate::versions;

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
    let workdir = match workdir(cli.workdir.as_deref()) {
        Ok(dir) => dir,
        Err(_) if stateless => PathBuf::new(),
        Err(e) => return Err(e.into()),
    };
    // A `--kubeconfig` that cannot be used is a mistake on the command line (exit 2), said once,
    // before any cluster is asked: not a cluster that is "not ready".
    // `up` and `down` may be the ones that create it (kind contexts are written there).
    let may_create = matches!(cli.command, Command::Up(_) | Command::Down(_));
    if let Some(path) = cli.kubeconfig.as_deref()
        && (path.exists() || !may_create)
    {
        crate::kube::read_kubeconfig(Some(path)).map_err(|e| UsageError(format!("--kubeconfig: {e}")))?;
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
        match cli.command {
            Command::Certs(crate::cli::CertsCommand::Gen(args)) => certs::generate(args),
            Command::Certs(crate::cli::CertsCommand::Status(args)) => {
                certs::status(args, &workdir, cli.kubeconfig.as_deref()).await
            }
            Command::Certs(crate::cli::CertsCommand::Rotate(args)) => {
                certs::rotate(args, &workdir, cli.kubeconfig.as_deref()).await
            }
            Command::Up(args) => up::run(args, &workdir, cli.kubeconfig.as_deref()).await,
            Command::Version(args) => version(args.output),
            Command::Completions(args) => {
                let mut cmd = Cli::command();
                clap_complete::generate(args.shell, &mut cmd, "meshctl", &mut std::io::stdout());
                Ok(Exit::Success)
            }
            Command::Down(args) => down::run(args, &workdir, cli.kubeconfig.as_deref()).await,
            Command::Status(args) => {
                let flags = status::Flags {
                    kubeconfig: cli.kubeconfig.as_deref(),
                    workdir: cli.workdir.as_deref(),
                };
                status::run(args, &workdir, flags).await
            }
            Command::Verify(args) => verify::run(args, &workdir, cli.kubeconfig.as_deref()).await,
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

fn version(output: crate::cli::DocumentFormat) -> Result<Exit> {
    let summary = versions::summary();
    match output {
        crate::cli::DocumentFormat::Json | crate::cli::DocumentFormat::Yaml => {
            let map: serde_json::Map<_, _> = summary
                .into_iter()
                .map(|(k, v)| (camel_case(k), serde_json::Value::String(v)))
                .collect();
            print_document(output, &serde_json::Value::Object(map))?;
        }
        crate::cli::DocumentFormat::Text => {
            let mut out = std::io::stdout().lock();
            for (name, value) in summary {
                writeln!(out, "{name:<16} {value}")?;
            }
        }
    }
    Ok(Exit::Success)
}

/// `kind node image` → `kindNodeImage`: JSON keys in one style everywhere, Kubernetes' own.
fn camel_case(words: &str) -> String {
    let mut out = String::new();
    for (i, word) in words.split([' ', '_', '-']).filter(|w| !w.is_empty()).enumerate() {
        let mut chars = word.chars();
        if i == 0 {
            out.push_str(word);
        } else if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// How a reporting command reports for `-o`.
fn report_format(output: OutputFormat) -> crate::report::Format {
    match output {
        OutputFormat::Json => crate::report::Format::Json,
        OutputFormat::Text => crate::report::Format::Text,
    }
}

/// A meshctl command line printed for the user to run: the global flags that were given, the
/// subcommand, the same topology flags, then `extra`.
fn command_line(
    kubeconfig: Option<&std::path::Path>,
    workdir: Option<&std::path::Path>,
    subcommand: &str,
    topology: &TopologyArgs,
    extra: &[&str],
) -> String {
    let mut words = vec!["meshctl".to_string()];
    if let Some(k) = kubeconfig {
        words.extend(["--kubeconfig".into(), k.display().to_string()]);
    }
    if let Some(w) = workdir {
        words.extend(["--workdir".into(), w.display().to_string()]);
    }
    words.push(subcommand.into());
    words.extend(topology.to_args());
    words.extend(extra.iter().map(|s| s.to_string()));
    words.join(" ")
}

/// The `meshctl diagnose` command line that collects what `topology`'s clusters hold, printed when
/// `up` or `verify` fails.
fn diagnose_command(
    kubeconfig: Option<&std::path::Path>,
    workdir: &std::path::Path,
    topology: &TopologyArgs,
) -> String {
    command_line(kubeconfig, Some(workdir), "diagnose", topology, &[])
}

/// The state folder: `--workdir`, else `MESHCTL_HOME` (set and not empty: an empty variable is
/// unset, as for `KUBECONFIG`), else the default. One that exists as something other than a
/// folder is refused, naming where it came from.
fn workdir(flag: Option<&std::path::Path>) -> Result<PathBuf, UsageError> {
    let (dir, from) = match (flag, std::env::var_os("MESHCTL_HOME").filter(|v| !v.is_empty())) {
        (Some(dir), _) => (dir.to_path_buf(), "--workdir"),
        (None, Some(home)) => (PathBuf::from(home), "MESHCTL_HOME"),
        (None, None) => (default_workdir()?, "the default state folder"),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(UsageError(format!(
            "{from} `{}` is not a folder: meshctl keeps its state (certificates, progress, kubeconfigs) in a folder{}",
            dir.display(),
            if from == "MESHCTL_HOME" {
                "; name a folder, or unset MESHCTL_HOME"
            } else {
                "; name a folder"
            }
        )));
    }
    // Tools run from the plan folder (kind writes the kubeconfig it is given there): a relative
    // work dir would name another file for them than for meshctl.
    std::path::absolute(&dir).map_err(|e| UsageError(format!("{from} `{}`: {e}", dir.display())))
}

/// `$XDG_STATE_HOME/meshctl`, else `~/.local/state/meshctl`. A relative `XDG_STATE_HOME` is
/// ignored, as the XDG Base Directory specification says it must be (it would put the CA keys
/// wherever the command happens to run); without `HOME` there is no default at all: the state
/// folder holds private keys, so it is never guessed to be the current folder.
fn default_workdir() -> Result<PathBuf, UsageError> {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(state.join("meshctl"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/meshctl")),
        None => Err(UsageError(
            "HOME is not set, so meshctl has no state folder for the mesh's certificates and progress\nhint: set MESHCTL_HOME (or pass --workdir) to the folder meshctl keeps them in".into(),
        )),
    }
}

/// The folder of a mesh `up` recorded in `workdir`, for a command that acts on a built mesh
/// (`down --uninstall`, `upgrade`, `isolate`): a mesh never recorded here (a typo in `--mesh-id`,
/// a mesh built on another machine) is refused before any cluster is asked or anything fetched.
fn recorded_mesh(workdir: &std::path::Path, mesh_id: &str, command: &str) -> Result<MeshDir, UsageError> {
    let dir = MeshDir::new(workdir, mesh_id);
    if dir.state().is_file() {
        return Ok(dir);
    }
    let others = recorded_meshes(workdir);
    Err(UsageError(format!(
        "{command}: no mesh `{mesh_id}` recorded in `{}`{}; nothing was asked of any cluster\nhint: name the mesh `up` built (`--mesh-id`, or `--config` with its file), and run where it was built (its `MESHCTL_HOME` or `--workdir`)",
        workdir.display(),
        if others.is_empty() {
            String::new()
        } else {
            format!(
                " (recorded here: {})",
                others
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )))
}

/// Refuses to start a mesh not yet recorded in `workdir` on clusters another recorded mesh was
/// built on: a mistyped `--mesh-id` would otherwise record a second mesh over the first one's
/// clusters. A mesh already recorded is never refused here (it converges on its own clusters).
fn refuse_clusters_of_other_meshes(
    workdir: &std::path::Path,
    mesh: &Mesh,
    kubeconfig: Option<&std::path::Path>,
    command: &str,
) -> Result<(), UsageError> {
    if MeshDir::new(workdir, &mesh.mesh_id).state().is_file() {
        return Ok(());
    }
    // A context is the same cluster when it names the server recorded with it (a context of the
    // same name in another kubeconfig is another cluster); where no server was recorded, or the
    // context is not in this kubeconfig yet, its name alone says it.
    let same = |context: &str, recorded: &Option<String>| match (
        recorded,
        crate::kube::server_of(kubeconfig, context),
    ) {
        (Some(then), Ok(now)) => *then == now,
        _ => true,
    };
    let mut taken = Vec::new();
    for other in recorded_meshes(workdir)
        .into_iter()
        .filter(|m| *m != mesh.mesh_id)
    {
        let Ok(store) = crate::state::StateStore::load(&MeshDir::new(workdir, &other).state()) else {
            continue;
        };
        let contexts = store.snapshot().contexts();
        taken.extend(
            mesh.clusters
                .iter()
                .filter(|c| {
                    contexts
                        .get(&c.context)
                        .is_some_and(|server| same(&c.context, server))
                })
                .map(|c| (other.clone(), c.name.clone(), c.context.clone())),
        );
    }
    let Some((first_mesh, _, _)) = taken.first().cloned() else {
        return Ok(());
    };
    Err(UsageError(format!(
        "{command}: mesh `{}` is not recorded in `{}`, and its clusters belong to another mesh: {}; a cluster is in one mesh, so nothing was changed\nhint: `--mesh-id {first_mesh}` to converge the mesh these clusters are in; to build another mesh, name other clusters (or `meshctl down --mesh-id {first_mesh}` first)",
        mesh.mesh_id,
        workdir.display(),
        taken
            .iter()
            .map(|(m, c, ctx)| format!("{c} (context `{ctx}`) is in `{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The meshes whose state is recorded in `workdir` (folders holding a state file), by name.
fn recorded_meshes(workdir: &std::path::Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(workdir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| MeshDir::new(workdir, name).state().is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
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

/// The release `meshctl upgrade` moved the mesh to (recorded in its state), on `mesh`: every
/// command then plans, probes and removes what the clusters run, not the release before.
fn follow_recorded_release(mesh: &mut Mesh, state: &crate::state::MeshState) {
    if let Some(recorded) = &state.istio {
        mesh.istio_version = Some(recorded.version.clone());
        mesh.istio_revision = recorded.revision.clone();
    }
    mesh.istio_revision_beside = state
        .upgrade
        .as_ref()
        .and_then(|u| u.beside(&mesh.istio_revision));
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
    Ok(mesh.map_err(UsageError::from_display)?)
}

/// The programs of a command that runs istioctl: the file `explicit` names (`--istioctl`), else
/// the `chosen` release's istioctl (downloaded once, checked against its published sha256, cached
/// by version), else the one on PATH. Every other program runs from PATH.
async fn istioctl_runner(
    explicit: Option<&std::path::Path>,
    chosen: Option<&str>,
    cache: &std::path::Path,
    reporter: &crate::report::Reporter,
) -> Result<std::sync::Arc<dyn crate::tools::ToolRunner>> {
    use crate::tools::ProcessRunner;
    let path = match (explicit, chosen) {
        // A program named by its path that is not there is a mistake in what was typed (exit 2),
        // not a program missing from PATH.
        (Some(path), _) if path.components().count() > 1 && !path.is_file() => {
            return Err(UsageError(format!(
                "--istioctl `{}` {}: name the istioctl binary of the chosen release",
                path.display(),
                if path.exists() {
                    "is not a file"
                } else {
                    "does not exist"
                }
            ))
            .into());
        }
        (Some(path), _) => path.to_path_buf(),
        (None, Some(version)) => {
            let version: crate::istio_version::IstioVersion = version.parse().map_err(UsageError)?;
            let base = crate::istio_release::releases_url();
            let path = crate::istio_release::istioctl(&ProcessRunner, &version, &base, cache)
                .await
                .with_context(|| format!("istioctl {version}"))?;
            reporter.note("istio", &format!("istioctl {version}: `{}`", path.display()));
            path
        }
        (None, None) => return Ok(std::sync::Arc::new(ProcessRunner)),
    };
    let runner: std::sync::Arc<dyn crate::tools::ToolRunner> =
        std::sync::Arc::new(crate::tools::WithProgram {
            inner: std::sync::Arc::new(ProcessRunner),
            program: "istioctl",
            path: path.display().to_string(),
        });
    // Both named by the user and disagreeing is a mistake in what was typed, said even when the
    // mesh is finished and the program would not run (a program that does not answer is left to
    // the check before it is needed, which names what it needs it for).
    if let (Some(given), Some(chosen)) = (explicit, chosen)
        && let Ok(version) = crate::tools::istioctl::Istioctl::new(runner.as_ref())
            .version()
            .await
        && version != chosen
    {
        return Err(UsageError(format!(
            "--istioctl `{}` is istioctl {version}, not the chosen Istio {chosen}; nothing was changed\nhint: name the istioctl of Istio {chosen}, or leave `--istioctl` out to use that release's own",
            given.display()
        ))
        .into());
    }
    Ok(runner)
}
