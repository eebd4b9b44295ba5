//! The istioctl a command runs: the one the user names, else the chosen release's (downloaded
//! once, checked against its published sha256, cached by version), else the one on PATH; the
//! user's refused where it is another release than the chosen one.

use anyhow::Context as _;

use crate::exit::UsageError;

/// A program named by its path that is not there is a mistake in what was typed (exit 2), not a
/// program missing from PATH.
pub fn refuse_missing_program(path: &std::path::Path) -> Result<(), UsageError> {
    if path.components().count() < 2 || path.is_file() {
        return Ok(());
    }
    let why = if path.exists() {
        "is not a file"
    } else {
        "does not exist"
    };
    Err(UsageError(format!(
        "--istioctl `{}` {why}: name the istioctl binary of the chosen release",
        path.display()
    )))
}

/// The programs of a command that runs istioctl: the file `explicit` names (`--istioctl`), else
/// the `chosen` release's istioctl (downloaded once, checked against its published sha256, cached
/// by version), else the one on PATH. Every other program runs from PATH.
pub async fn istioctl_runner(
    explicit: Option<&std::path::Path>,
    chosen: Option<&str>,
    allow_skew: bool,
    cache: &std::path::Path,
    reporter: &crate::report::Reporter,
) -> anyhow::Result<std::sync::Arc<dyn crate::tools::ToolRunner>> {
    use crate::tools::ProcessRunner;
    let path = match (explicit, chosen) {
        // A program named by its path that is not there is a mistake in what was typed (exit 2),
        // not a program missing from PATH.
        (Some(path), _) => {
            refuse_missing_program(path)?;
            path.to_path_buf()
        }
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
    // An istioctl the user named, of another minor than the pinned release (none chosen), is a
    // mistake in what was typed too, unless the skew is asked for.
    if let (Some(given), None, false) = (explicit, chosen, allow_skew)
        && let Ok(version) = crate::tools::istioctl::Istioctl::new(runner.as_ref())
            .version()
            .await
        && let Err(why) = crate::tools::istioctl::check_skew(&version, false)
    {
        return Err(UsageError(format!(
            "--istioctl `{}`: {why}; nothing was changed",
            given.display()
        ))
        .into());
    }
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
