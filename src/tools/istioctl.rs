//! `istioctl`: version check and the planned `install` invocations.

use super::{ToolError, ToolRunner};
use crate::versions;

pub struct Istioctl<'a> {
    runner: &'a dyn ToolRunner,
}

/// `major.minor.patch` found in istioctl's version output.
pub fn parse_version(output: &str) -> Option<String> {
    output
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .find_map(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            (parts.len() >= 3
                && parts[..3]
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
            .then(|| parts[..3].join("."))
        })
}

/// Refuses an istioctl whose minor version is not the pinned one, unless skew is allowed.
pub fn check_skew(found: &str, allow_skew: bool) -> Result<(), String> {
    let minor = found.split('.').take(2).collect::<Vec<_>>().join(".");
    if minor == versions::ISTIO_MINOR || allow_skew {
        Ok(())
    } else {
        Err(format!(
            "istioctl {found} does not match the pinned Istio {} (templates follow {}); install istioctl {} or pass --allow-version-skew",
            versions::ISTIO_VERSION,
            versions::ISTIO_MINOR,
            versions::ISTIO_VERSION
        ))
    }
}

/// Arguments of `istioctl install` as meshctl runs it: no prompt, an explicit context, a bounded
/// readiness wait.
pub fn install_args(context: &str, file: &str, timeout_secs: u64) -> Vec<String> {
    let timeout = format!("{timeout_secs}s");
    [
        "install",
        "-y",
        "--context",
        context,
        "-f",
        file,
        "--readiness-timeout",
        &timeout,
    ]
    .map(String::from)
    .to_vec()
}

impl<'a> Istioctl<'a> {
    /// Over `runner`.
    pub fn new(runner: &'a dyn ToolRunner) -> Istioctl<'a> {
        Istioctl { runner }
    }

    /// The client version, e.g. `1.31.1`.
    pub async fn version(&self) -> Result<String, ToolError> {
        let args = ["version", "--remote=false"].map(String::from);
        let out = self.runner.run("istioctl", &args, &super::query()).await?;
        parse_version(&out.stdout).ok_or_else(|| ToolError::Other {
            command: "istioctl version --remote=false".into(),
            reason: format!("no version in its output: {}", out.stdout.trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_found_in_istioctl_output_and_skew_is_refused() {
        assert_eq!(
            parse_version("client version: 1.31.1\n").as_deref(),
            Some("1.31.1")
        );
        assert_eq!(parse_version("1.30.5").as_deref(), Some("1.30.5"));
        assert_eq!(parse_version("nothing"), None);
        assert!(check_skew("1.31.0", false).is_ok());
        let err = check_skew("1.30.5", false).unwrap_err();
        assert!(
            err.contains("--allow-version-skew") && err.contains("1.31"),
            "{err}"
        );
        assert!(check_skew("1.30.5", true).is_ok());
    }
}
