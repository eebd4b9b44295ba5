//! The meshctl command lines printed for the user to run: a fix, the diagnose that collects what
//! the clusters hold, each with the flags the user gave.

use crate::cli::TopologyArgs;

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

/// The global flags to repeat in a command printed for the user.
#[derive(Clone, Copy)]
pub(super) struct Flags<'a> {
    /// `--kubeconfig`.
    pub kubeconfig: Option<&'a std::path::Path>,
    /// `--workdir`.
    pub workdir: Option<&'a std::path::Path>,
}

/// A fix spelt as the command line that runs it, with the global flags and the topology given;
/// a fix by hand is its words.
pub(super) fn spell_fix(fix: &crate::check::Fix, flags: &Flags<'_>, topology: &TopologyArgs) -> String {
    use crate::check::Fix;
    let line =
        |sub: &str, extra: &[&str]| command_line(flags.kubeconfig, flags.workdir, sub, topology, extra);
    let up = |only: &Option<crate::plan::Phase>, adopt: bool| {
        let mut extra: Vec<&str> = match only {
            Some(phase) => vec!["--only", phase.name()],
            None => Vec::new(),
        };
        if adopt {
            extra.push("--adopt");
        }
        line("up", &extra)
    };
    match fix {
        Fix::UpOnly(phase) => up(&Some(*phase), false),
        Fix::Up(only) => up(only, false),
        Fix::Adopt(only) => up(only, true),
        Fix::Isolate(cluster) => line("isolate", &[cluster]),
        Fix::Rejoin(cluster) => line("rejoin", &[cluster]),
        Fix::RotateCa(cluster) => line("certs rotate", &["--cluster", cluster]),
        Fix::ByHand(what) => what.clone(),
    }
}

/// The `meshctl diagnose` command line that collects what `topology`'s clusters hold, printed when
/// `up` or `verify` fails.
pub(super) fn diagnose_command(
    kubeconfig: Option<&std::path::Path>,
    workdir: &std::path::Path,
    topology: &TopologyArgs,
) -> String {
    // The work dir the user did not name (the default one) is left out, as they typed it.
    let named = crate::work_dir::resolve(None)
        .ok()
        .is_none_or(|default| default != workdir);
    command_line(kubeconfig, named.then_some(workdir), "diagnose", topology, &[])
}
