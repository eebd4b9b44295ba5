//! `meshctl doctor`: are the prerequisites of `up` there?

use std::path::PathBuf;

use anyhow::Result;

use super::Exit;
use crate::check::{self, Check, Fix, State};
use crate::cli::{DoctorArgs, DocumentFormat};
use crate::tools::ProcessRunner;
use crate::tools::docker::Docker;
use crate::tools::istioctl::{self, Istioctl};
use crate::tools::kind::Kind;
use crate::{ipam, versions};

/// kind's documented inotify limits for several clusters on one host (known-issues page).
const MIN_WATCHES: u64 = 524_288;
const MIN_INSTANCES: u64 = 512;
/// Memory one kind cluster with Istio, MetalLB and the samples needs, roughly.
const BYTES_PER_CLUSTER: u64 = 3 << 30;

fn finding(check: &str, state: State, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check::new(check, state, detail).hinted(hint)
}

/// Where `/proc` is; tests point `MESHCTL_PROC_ROOT` at a prepared folder.
fn proc_root() -> PathBuf {
    std::env::var_os("MESHCTL_PROC_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc"))
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(proc_root().join(path))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string(proc_root().join("meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(super) async fn run(args: DoctorArgs) -> Result<Exit> {
    let mesh = super::resolve_topology(&args.topology)?;
    let runner = ProcessRunner;
    let mut findings = tools(&runner).await;
    findings.extend(host_limits(mesh.clusters.len()));
    findings.extend(subnet_clash(&runner, &mesh).await);
    // Warnings pass: the host may still do, only not as meshctl is tested with.
    let failed = !check::all_passed(&findings);
    let spell = |fix: &Fix| match fix {
        Fix::ByHand(words) => words.clone(),
        other => format!("{other:?}"),
    };
    match args.output {
        DocumentFormat::Json | DocumentFormat::Yaml => super::print_document(
            args.output,
            &serde_json::json!({"ok": !failed, "checks": check::document(&findings, &spell)}),
        )?,
        DocumentFormat::Text => check::print(&findings, &spell),
    }
    Ok(if failed { Exit::Failure } else { Exit::Success })
}

/// docker, kind, istioctl and curl: present, and at versions meshctl works with.
async fn tools(runner: &ProcessRunner) -> Vec<Check> {
    let mut findings = Vec::new();
    match Docker::new(runner).server_version().await {
        Ok(v) => findings.push(finding("docker", State::Ok, format!("daemon {v} reachable"), "")),
        Err(e) => findings.push(finding(
            "docker",
            State::Fail,
            e.without_hint(),
            crate::tools::install_hint("docker"),
        )),
    }
    match Kind::new(runner).version().await {
        Ok(v) if v.contains(versions::KIND_VERSION) => findings.push(finding("kind", State::Ok, v, "")),
        Ok(v) => findings.push(finding(
            "kind",
            State::Warn,
            format!("{v} (meshctl is tested with {})", versions::KIND_VERSION),
            crate::tools::install_hint("kind"),
        )),
        Err(e) => findings.push(finding(
            "kind",
            State::Fail,
            e.without_hint(),
            crate::tools::install_hint("kind"),
        )),
    }
    match Istioctl::new(runner).version().await {
        Ok(v) => match istioctl::check_skew(&v, false) {
            Ok(()) => findings.push(finding("istioctl", State::Ok, format!("istioctl {v}"), "")),
            Err(e) => findings.push(finding(
                "istioctl",
                State::Fail,
                e,
                crate::tools::install_hint("istioctl"),
            )),
        },
        Err(e) => findings.push(finding(
            "istioctl",
            State::Fail,
            e.without_hint(),
            crate::tools::install_hint("istioctl"),
        )),
    }
    if runner
        .run("curl", &["--version".to_string()], &crate::tools::query())
        .await
        .is_err()
    {
        findings.push(finding(
            "curl",
            State::Warn,
            "curl not found: the MetalLB manifest cannot be downloaded",
            "install curl, or pass --metallb-manifest FILE",
        ));
    }
    findings
}

/// inotify limits and memory for `count` kind clusters.
fn host_limits(count: usize) -> Vec<Check> {
    let mut findings = Vec::new();
    let sysctl_hint = format!(
        "sudo sysctl fs.inotify.max_user_watches={MIN_WATCHES} fs.inotify.max_user_instances={MIN_INSTANCES}"
    );
    for (name, min) in [
        ("max_user_watches", MIN_WATCHES),
        ("max_user_instances", MIN_INSTANCES),
    ] {
        let check = format!("inotify {name}");
        match read_number(&format!("sys/fs/inotify/{name}")) {
            Some(v) if v >= min => findings.push(finding(&check, State::Ok, v.to_string(), "")),
            Some(v) => findings.push(finding(
                &check,
                State::Warn,
                format!("{v} < {min}: pods may fail with \"too many open files\""),
                sysctl_hint.clone(),
            )),
            None => findings.push(finding(&check, State::Warn, "cannot read it", "")),
        }
    }
    let need = BYTES_PER_CLUSTER * count as u64;
    match available_memory() {
        Some(have) if have >= need => findings.push(finding(
            "memory",
            State::Ok,
            format!("{} GiB available", have >> 30),
            "",
        )),
        Some(have) => findings.push(finding(
            "memory",
            State::Warn,
            format!(
                "{} GiB available, about {} GiB wanted for {count} clusters",
                have >> 30,
                need >> 30
            ),
            "use fewer clusters or free memory",
        )),
        None => findings.push(finding("memory", State::Warn, "cannot read /proc/meminfo", "")),
    }
    findings
}

/// The docker network's subnet against the clusters' pod and service subnets.
async fn subnet_clash(runner: &ProcessRunner, mesh: &crate::topology::Mesh) -> Vec<Check> {
    let mut findings = Vec::new();
    let network = crate::tools::docker::kind_network();
    if let Ok(net) = Docker::new(runner).network(&network).await
        && let Ok(subnet) = ipam::ipv4_subnet(&net.subnets)
    {
        let clash = mesh
            .clusters
            .iter()
            .filter_map(|c| c.kind.as_ref())
            .flat_map(|k| [k.pod_subnet, k.service_subnet])
            .find(|n| n.contains(&subnet) || subnet.contains(n));
        match clash {
            Some(n) => findings.push(finding(
                "subnets",
                State::Fail,
                format!("docker network `{network}` ({subnet}) overlaps cluster subnet {n}"),
                "set podSubnet/serviceSubnet in meshctl.yaml",
            )),
            None => findings.push(finding(
                "subnets",
                State::Ok,
                format!("docker network `{network}` is {subnet}; no clash with pod or service subnets"),
                "",
            )),
        }
    }
    findings
}
