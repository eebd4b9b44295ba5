//! Shared test helpers: running the real `meshctl` binary, and (in submodules) the fakes it talks to.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Records that the running test skipped, and `why`, in the file `MESHCTL_SKIP_LOG` names (one
/// test a line), so `scripts/test.sh` counts it as skipped, not passed, across every test binary.
pub fn record_skip(why: &str) {
    let Some(log) = std::env::var_os("MESHCTL_SKIP_LOG").filter(|v| !v.is_empty()) else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| {
            stem.rsplit_once('-')
                .map_or(stem.clone(), |(name, _hash)| name.to_string())
        })
        .unwrap_or_default();
    // libtest runs each test on a thread named after it.
    let test = std::thread::current().name().unwrap_or("unnamed").to_string();
    envtest::append(Path::new(&log), &format!("{binary} {test}: {why}"));
}

/// Runs the built `meshctl` with `args`, no colour, and returns its output.
pub fn meshctl(args: &[&str]) -> Output {
    meshctl_in(Path::new("."), args, &[])
}

/// [`meshctl`] from an async test whose runtime serves the clusters the binary talks to: run on a
/// blocking thread, so the runtime keeps answering.
pub fn meshctl_off_runtime(args: &[&str]) -> impl std::future::Future<Output = Output> + use<> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            meshctl(&args)
        })
        .await
        .unwrap()
    }
}

/// Runs `meshctl` in `cwd` with extra environment variables.
pub fn meshctl_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    // Never the developer's own state folder: a test that does not name a work dir gets one of its
    // test binary's.
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("MESHCTL_HOME", home.path())
        .env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("meshctl runs")
}

/// The commands `meshctl status` prints behind `fix:`, as argument lists without `meshctl`, in
/// order and without repeats.
pub fn fixes(out: &Output) -> Vec<Vec<String>> {
    let mut all: Vec<Vec<String>> = Vec::new();
    for line in stdout(out).lines() {
        if let Some(cmd) = line.trim().strip_prefix("fix: ") {
            let words: Vec<String> = cmd.split_whitespace().skip(1).map(String::from).collect();
            assert_eq!(cmd.split_whitespace().next(), Some("meshctl"), "{line}");
            if !all.contains(&words) {
                all.push(words);
            }
        }
    }
    all
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts success and returns stdout, showing stderr when it failed.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "meshctl failed ({:?}):\n{}",
        out.status.code(),
        stderr(&out)
    );
    stdout(&out)
}
pub mod envtest;
pub mod fake_tools;
pub mod istio_lab;
pub mod kubelet_port_forward;
pub mod memory_apiserver;
pub mod played_destination_rules;
pub mod played_eastwest;
pub mod played_istioctl;
pub mod played_istiod;
pub mod played_service_scope;
pub mod played_ztunnel;
pub mod schema;

/// The decoded values of `key` in a URL query, in order.
pub fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

/// A URL query value, percent-decoded (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `condition` holds, checking it every few milliseconds (for state another thread
/// changes and nothing announces), and fails the test after ten seconds.
pub async fn eventually(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "condition never held");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Fixed, readable stand-ins for each cluster's CA files (snapshots stay deterministic; nothing
/// here parses them).
pub fn fixed_cas(mesh: &meshctl::topology::Mesh) -> Vec<meshctl::pki::IntermediateCa> {
    mesh.clusters
        .iter()
        .map(|c| meshctl::pki::IntermediateCa {
            cluster: c.name.clone(),
            ca_cert_pem: format!("ca-cert of {}\n", c.name),
            ca_key_pem: format!("ca-key of {}\n", c.name),
            cert_chain_pem: format!("ca-cert of {}\nroot-cert\n", c.name),
            root_cert_pem: "root-cert\n".into(),
        })
        .collect()
}
