//! `kind`: create, list, delete clusters and read their kubeconfig.

use std::time::Duration;

use super::{RunOptions, ToolError, ToolRunner};

pub struct Kind<'a> {
    runner: &'a dyn ToolRunner,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Arguments of `kind create cluster` as meshctl runs it: named, from a config file, waiting for the
/// control plane up to `wait_secs`.
pub fn create_args(name: &str, config: &str, wait_secs: u64) -> Vec<String> {
    args(&[
        "create",
        "cluster",
        "--name",
        name,
        "--config",
        config,
        "--wait",
        &format!("{wait_secs}s"),
    ])
}

impl<'a> Kind<'a> {
    /// Over `runner`.
    pub fn new(runner: &'a dyn ToolRunner) -> Kind<'a> {
        Kind { runner }
    }

    /// `kind version`, e.g. `kind v0.32.0 go1.24.2 linux/amd64`.
    pub async fn version(&self) -> Result<String, ToolError> {
        Ok(self
            .runner
            .run("kind", &args(&["version"]), &super::query())
            .await?
            .stdout
            .trim()
            .to_string())
    }

    /// Names of existing kind clusters (kind prints "No kind clusters found." to stderr when none).
    pub async fn clusters(&self) -> Result<Vec<String>, ToolError> {
        let out = self
            .runner
            .run("kind", &args(&["get", "clusters"]), &RunOptions::default())
            .await?;
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The external kubeconfig of cluster `name` (server on the host's port mapping).
    pub async fn kubeconfig(&self, name: &str) -> Result<String, ToolError> {
        Ok(self
            .runner
            .run(
                "kind",
                &args(&["get", "kubeconfig", "--name", name]),
                &RunOptions::default(),
            )
            .await?
            .stdout)
    }

    /// `kind delete cluster --name <name>`.
    /// Deletes cluster `name`, with kind keeping its kubeconfig entries in `kubeconfig`: the file
    /// it was created with, so kind neither locks nor edits any other.
    pub async fn delete(
        &self,
        name: &str,
        timeout: Duration,
        kubeconfig: &std::path::Path,
    ) -> Result<(), ToolError> {
        let options = RunOptions {
            timeout: Some(timeout),
            env: vec![(
                "KUBECONFIG".to_string(),
                kubeconfig.to_string_lossy().into_owned(),
            )],
            ..Default::default()
        };
        self.runner
            .run("kind", &args(&["delete", "cluster", "--name", name]), &options)
            .await
            .map(|_| ())
    }
}

/// The address other clusters reach a kind cluster's API server at: its control-plane node's
/// address on the docker network (kind gives the kubelet `--node-ip` and kubeadm's advertise
/// address that address), port 6443.
pub fn api_endpoint(ip: &str) -> String {
    format!("https://{ip}:6443")
}

/// Name of a kind cluster's control-plane node container (and of its Node).
pub fn control_plane_container(cluster: &str) -> String {
    format!("{cluster}-control-plane")
}
