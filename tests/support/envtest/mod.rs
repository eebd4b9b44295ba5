//! Real Kubernetes control planes for tests: etcd, kube-apiserver and kube-controller-manager
//! (v1.36), found as controller-runtime's envtest finds them (see [`assets`]); where they are not
//! there, the tests that need them skip with one line. Each control plane listens on its own loopback address with the standard
//! ports and a loopback service range, so a webhook's Service cluster IP is an address a test can
//! bind (nothing a test does leaves this machine).
//!
//! The flags follow controller-runtime's `pkg/internal/testing/controlplane/apiserver.go` (serving cert for the IP, admin client cert with
//! `O=system:masters`, service-account issuer and keys, RBAC, request-header CA).
//!
//! Every control plane runs under a small bash supervisor whose stdin is a pipe held by the test
//! process: when the test process ends, however it ends (all tests done, a panic, a kill), the pipe
//! closes and the supervisor stops the three processes and removes their data directory.
//!
//! What is not there: kubelet, scheduler, kube-proxy, CNI. [`kubelet`] plays the scheduler and the
//! kubelet for the tests that need running pods; [`proxy`] sits in front of an apiserver to inject
//! faults and to answer `pods/exec`, which needs a kubelet.

pub mod data_plane;
pub mod istioctl;
pub mod kind;
pub mod kubelet;
pub mod loadbalancer;
pub mod metallb;
pub mod proxy;
pub mod webhook;

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// The binaries a control plane needs, in the order a missing one is named.
const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// The Kubernetes minor these tests are written for (k8s-openapi's `v1_36` feature).
const KUBERNETES_MINOR: &str = "1.36";

/// How to get the binaries, for the skip line and the README.
pub const HOW_TO_GET: &str = "run `export KUBEBUILDER_ASSETS=\"$(setup-envtest use 1.36.x -p path)\"`, \
     or point it at a folder holding etcd, kube-apiserver and kube-controller-manager from a Kubernetes 1.36 release";

/// Where the binaries are, as controller-runtime's envtest finds them: `KUBEBUILDER_ASSETS` when
/// it is set (a folder that lacks one of them is a failure, never a skip: whoever set it meant the
/// tests to run), else where `setup-envtest` keeps them by default
/// (`$XDG_DATA_HOME` or `~/.local/share`, then `kubebuilder-envtest/k8s/1.36.<patch>-<os>-<arch>`,
/// the newest patch) or envtest's own default `/usr/local/kubebuilder/bin`. `Err` says why there
/// are none.
pub fn assets() -> Result<PathBuf, String> {
    if let Some(set) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(set);
        if let Some(missing) = BINARIES.iter().find(|b| !dir.join(b).is_file()) {
            panic!(
                "KUBEBUILDER_ASSETS={} has no `{missing}`: the real-API-server tests need etcd, \
                 kube-apiserver and kube-controller-manager there ({HOW_TO_GET})",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let complete = |dir: &Path| BINARIES.iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = setup_envtest_store().filter(|d| complete(d)) {
        return Ok(dir);
    }
    let default = PathBuf::from("/usr/local/kubebuilder/bin");
    if complete(&default) {
        return Ok(default);
    }
    Err(format!(
        "KUBEBUILDER_ASSETS is not set and setup-envtest has no {KUBERNETES_MINOR}.x binaries in its store"
    ))
}

/// The newest `1.36.<patch>` folder of setup-envtest's store for this machine, if any.
fn setup_envtest_store() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let suffix = format!("-{}-{arch}", std::env::consts::OS);
    let prefix = format!("{KUBERNETES_MINOR}.");
    std::fs::read_dir(data.join("kubebuilder-envtest/k8s"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let patch: u32 = name.strip_prefix(&prefix)?.strip_suffix(&suffix)?.parse().ok()?;
            Some((patch, e.path()))
        })
        .max_by_key(|(patch, _)| *patch)
        .map(|(_, path)| path)
}

/// The assets, or `None` after one line (once per test binary) saying why and how to get them.
/// Each skip is recorded for `scripts/test.sh` ([`crate::support::record_skip`]).
pub fn assets_or_skip() -> Option<PathBuf> {
    let why = match assets() {
        Ok(dir) => return Some(dir),
        Err(why) => why,
    };
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Straight to stderr: libtest captures what `eprintln!` prints in a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "skipping real-API-server tests: {why}; {HOW_TO_GET}"
        );
    });
    crate::support::record_skip(&why);
    None
}

/// PEM certificate and key.
#[derive(Clone)]
pub struct Pem {
    /// Certificate.
    pub cert: String,
    /// Private key (PKCS#8).
    pub key: String,
}

/// A CA that signs what the control plane needs.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A leaf with these subject alternative names (IPs or DNS names), CN and organisations.
    fn leaf(&self, sans: &[String], cn: &str, orgs: &[&str], server: bool) -> Pem {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(sans.to_vec()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A TLS serving certificate for `sans`, with the PEM of the CA that signed it (for a webhook's
/// `caBundle`, or a client's trust).
pub fn serving_cert(sans: &[String]) -> (Pem, String) {
    let ca = Ca::new("envtest-webhook-ca");
    (ca.leaf(sans, "envtest-webhook", &[], true), ca.pem)
}

/// How long each start stage (apiserver ready, controller-manager running) may take. Starts are
/// one at a time, so this is one control plane's bootstrap on a loaded 2-core machine, not three.
const START_BOUND: Duration = Duration::from_secs(120);

/// One running control plane.
pub struct ControlPlane {
    /// Cluster name, also its context name in [`ControlPlane::kubeconfig`].
    pub name: String,
    /// Loopback address it listens on.
    pub ip: Ipv4Addr,
    /// Service cluster IP range (loopback).
    pub service_range: String,
    /// PEM of the CA of its serving certificate and of client certificates.
    pub ca_pem: String,
    /// Admin client certificate (`O=system:masters`).
    pub admin: Pem,
    dir: PathBuf,
    supervisor: Mutex<Option<Child>>,
}

impl ControlPlane {
    /// `https://<ip>:6443`.
    pub fn url(&self) -> String {
        format!("https://{}:6443", self.ip)
    }

    /// Starts etcd, kube-apiserver and kube-controller-manager on `ip` and waits for `/readyz`.
    pub fn start(assets: &Path, name: &str, ip: Ipv4Addr, service_range: &str) -> ControlPlane {
        ControlPlane::start_without(assets, name, ip, service_range, &[])
    }

    /// Like [`ControlPlane::start`], with these kube-controller-manager controllers off (a test of
    /// what happens when one of them never does its part, e.g. `serviceaccount-token-controller`).
    pub fn start_without(
        assets: &Path,
        name: &str,
        ip: Ipv4Addr,
        service_range: &str,
        controllers_off: &[&str],
    ) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix(&format!("envtest-{name}-"))
            .tempdir_in(scratch_dir())
            .unwrap()
            .keep();
        let ca = Ca::new(&format!("{name}-ca"));
        let service_ip = first_host(service_range);
        let serving = ca.leaf(
            &[
                ip.to_string(),
                service_ip,
                "localhost".into(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                "kubernetes.default.svc.cluster.local".into(),
            ],
            "kube-apiserver",
            &[],
            true,
        );
        let admin = ca.leaf(&[], "envtest-admin", &["system:masters"], false);
        let front_proxy = Ca::new(&format!("{name}-front-proxy-ca"));
        let sa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (sa_key, sa_pub) = (sa.serialize_pem(), sa.public_key_pem());
        let files = [
            ("ca.crt", ca.pem.as_str()),
            ("ca.key", &ca.issuer.key().serialize_pem()),
            ("serving.crt", serving.cert.as_str()),
            ("serving.key", serving.key.as_str()),
            ("front-proxy-ca.crt", front_proxy.pem.as_str()),
            ("sa.key", sa_key.as_str()),
            ("sa.pub", sa_pub.as_str()),
        ];
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        let plane = ControlPlane {
            name: name.to_string(),
            ip,
            service_range: service_range.to_string(),
            ca_pem: ca.pem.clone(),
            admin,
            dir: dir.clone(),
            supervisor: Mutex::new(None),
        };
        std::fs::write(dir.join("kubeconfig"), plane.kubeconfig_for(&[&plane], &[])).unwrap();
        std::fs::write(
            dir.join("run.sh"),
            supervisor_script(assets, &dir, ip, service_range, controllers_off),
        )
        .unwrap();
        // One control plane starts at a time in this test process: on 2 cores, three etcds,
        // apiservers and controller-managers bootstrapping together (several tests' labs at once)
        // took kube-controller-manager past any fair bound. Once started, they run side by side.
        static STARTING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let child = Command::new("bash")
            .arg(dir.join("run.sh"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash starts the control-plane supervisor");
        *plane.supervisor.lock().unwrap() = Some(child);
        plane.wait_ready(START_BOUND);
        plane.wait_controllers(START_BOUND);
        plane
    }

    /// Waits until kube-controller-manager runs: the `default` ServiceAccount of namespace
    /// `default` appears once its serviceaccount controller has started (envtest README), and a
    /// cluster handed to a test before that would see Deployments stay without status (as kind's
    /// `--wait` waits for a usable cluster).
    fn wait_controllers(&self, bound: Duration) {
        let kubeconfig = self.kubeconfig(&self.name);
        let name = self.name.clone();
        let seen = block_on(async move {
            let client = client_from(&kubeconfig, &name).await;
            let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                kube::Api::namespaced(client, "default");
            let exists = meshctl::kube::wait::Condition::exists("default", "default ServiceAccount");
            meshctl::kube::wait::until(&accounts, exists, bound).await.is_ok()
        });
        assert!(
            seen,
            "control plane {}: kube-controller-manager did not start within {}s; the tail of {}:\n{}",
            self.name,
            bound.as_secs(),
            self.dir.join("controller-manager.log").display(),
            self.log_tail("controller-manager.log")
        );
    }

    /// The last lines of one of the control plane's logs, for a failure message.
    fn log_tail(&self, file: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Polls `/readyz` until it answers `ok` (the apiserver's own readiness endpoint: no watch
    /// exists before the server does).
    fn wait_ready(&self, bound: Duration) {
        let started = Instant::now();
        let kubeconfig = self.kubeconfig(&self.name);
        let name = self.name.clone();
        let pid_file = self.dir.join("apiserver.pid");
        // The apiserver exited (a bad flag, a port in use): no point in waiting out the bound.
        let exited = move || {
            std::fs::read_to_string(&pid_file)
                .is_ok_and(|pid| !Path::new(&format!("/proc/{}", pid.trim())).exists())
        };
        let ok = block_on(async move {
            let client = client_from(&kubeconfig, &name).await;
            loop {
                let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
                if client.request_text(request).await.is_ok_and(|t| t == "ok") {
                    return true;
                }
                if started.elapsed() > bound || exited() {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        if !ok {
            panic!(
                "control plane {} at {} not ready after {}s (or its apiserver exited); apiserver log tail:\n{}",
                self.name,
                self.url(),
                bound.as_secs(),
                self.log_tail("apiserver.log")
            );
        }
    }

    /// A kubeconfig holding `planes`, each as a context of its name (renamed by `rename`:
    /// `(cluster name, context name)` pairs), with embedded admin credentials.
    pub fn kubeconfig_for(&self, planes: &[&ControlPlane], rename: &[(&str, &str)]) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut clusters = String::new();
        let mut users = String::new();
        let mut contexts = String::new();
        for p in planes {
            let name = rename
                .iter()
                .find(|(from, _)| *from == p.name)
                .map(|(_, to)| to.to_string())
                .unwrap_or_else(|| p.name.clone());
            clusters.push_str(&format!(
                "- name: {name}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n",
                p.url(),
                b64(&p.ca_pem)
            ));
            users.push_str(&format!(
                "- name: {name}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&p.admin.cert),
                b64(&p.admin.key)
            ));
            contexts.push_str(&format!(
                "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n"
            ));
        }
        let current = planes.first().map(|p| p.name.clone()).unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n{clusters}users:\n{users}contexts:\n{contexts}"
        )
    }

    /// This control plane alone, as kubeconfig text with context `context`.
    pub fn kubeconfig(&self, context: &str) -> String {
        self.kubeconfig_for(&[self], &[(&self.name, context)])
    }

    /// An admin client (build it inside the runtime that uses it).
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig(&self.name), &self.name).await
    }

    /// Stops the processes and removes the data directory; waits until they are gone.
    pub fn stop(&self) {
        if let Some(mut child) = self.supervisor.lock().unwrap().take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Whether the supervisor still runs.
    pub fn running(&self) -> bool {
        self.supervisor
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bash supervisor of one control plane: starts the three processes (the apiserver retries
/// etcd and the controller-manager retries the apiserver, so they start together), then waits for
/// its stdin to close and stops them. The node lifecycle controller is off: no kubelet renews node
/// leases here, and it would mark every node NotReady after its grace period.
fn supervisor_script(
    assets: &Path,
    dir: &Path,
    ip: Ipv4Addr,
    service_range: &str,
    controllers_off: &[&str],
) -> String {
    let a = assets.display();
    let d = dir.display();
    let off: String = controllers_off.iter().map(|c| format!(",-{c}")).collect();
    // kube-controller-manager starts its token controller ahead of the others whatever
    // `--controllers` says; without a signing key it skips it ("service account token controller
    // disabled"), which is how a test gets a cluster whose token Secrets are never filled.
    let sa_key = if controllers_off.contains(&"serviceaccount-token-controller") {
        ""
    } else {
        "--service-account-private-key-file sa.key"
    };
    format!(
        r#"#!/usr/bin/env bash
cd "{d}" || exit 1
"{a}/etcd" --name default --data-dir "{d}/etcd" \
  --listen-client-urls http://{ip}:2379 --advertise-client-urls http://{ip}:2379 \
  --listen-peer-urls http://{ip}:2380 --initial-advertise-peer-urls http://{ip}:2380 \
  --initial-cluster default=http://{ip}:2380 --unsafe-no-fsync --quota-backend-bytes 268435456 \
  > etcd.log 2>&1 &
etcd=$!
"{a}/kube-apiserver" --bind-address {ip} --secure-port 6443 --etcd-servers http://{ip}:2379 \
  --cert-dir "{d}" --tls-cert-file serving.crt --tls-private-key-file serving.key \
  --client-ca-file ca.crt --authorization-mode Node,RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
  --service-cluster-ip-range {service_range} --endpoint-reconciler-type none \
  --requestheader-client-ca-file front-proxy-ca.crt --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  > apiserver.log 2>&1 &
apiserver=$!
echo "$apiserver" > apiserver.pid
"{a}/kube-controller-manager" --kubeconfig kubeconfig --root-ca-file ca.crt \
  {sa_key} --use-service-account-credentials \
  --controllers '*,-node-lifecycle-controller{off}' --leader-elect=false --secure-port 0 \
  --cluster-signing-cert-file ca.crt --cluster-signing-key-file ca.key \
  > controller-manager.log 2>&1 &
kcm=$!
# stdin is a pipe the test process holds: EOF means the tests are over (or the process died).
read -r _
# Politely, then for good: an apiserver whose etcd is gone can hang in its graceful shutdown.
stop() {{
  kill "$@" 2>/dev/null
  for p in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  wait "$@" 2>/dev/null
}}
stop "$kcm" "$apiserver"
stop "$etcd"
rm -rf "{d}"
"#
    )
}

/// tmpfs when there is one (etcd writes a lot), else the temp dir.
fn scratch_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(&shm).is_ok() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// `127.101.7.0/24` → `127.101.7.1` (the `kubernetes` Service's address).
fn first_host(range: &str) -> String {
    let base: Ipv4Addr = range.split('/').next().unwrap().parse().unwrap();
    Ipv4Addr::from(u32::from(base) + 1).to_string()
}

/// A loopback slot free for this test process: control plane `i` of slot `s` listens on
/// `127.20.s.i` and gets the service range `127.(100+i).s.0/24`.
fn free_slot(planes: usize) -> u8 {
    // Each call of this process takes the next slot, so two tests starting labs at the same moment
    // never pick the same one; the bind check keeps clear of other processes.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = (std::process::id() % 250) as u16;
    for _ in 0..250u16 {
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let s = ((start + k) % 250) as u8;
        let free = (1..=planes).all(|i| {
            TcpListener::bind((Ipv4Addr::new(127, 20, s, i as u8), 6443)).is_ok()
                && TcpListener::bind((Ipv4Addr::new(127, 20, s, i as u8), 2379)).is_ok()
        });
        if free {
            return s;
        }
    }
    panic!("no free loopback slot for {planes} control planes");
}

/// Addresses for `n` control planes: `(ip, service range)` each.
pub fn addresses(n: usize) -> Vec<(Ipv4Addr, String)> {
    let s = free_slot(n);
    (1..=n)
        .map(|i| {
            (
                Ipv4Addr::new(127, 20, s, i as u8),
                format!("127.{}.{s}.0/24", 100 + i),
            )
        })
        .collect()
}

/// Several control planes, started at once, named `cluster1..N`.
pub struct Envtest {
    /// The control planes, in order.
    pub planes: Vec<ControlPlane>,
}

impl Envtest {
    /// Starts `n` control planes concurrently.
    pub fn start(assets: &Path, n: usize) -> Envtest {
        let planes = std::thread::scope(|scope| {
            let handles: Vec<_> = addresses(n)
                .into_iter()
                .enumerate()
                .map(|(i, (ip, range))| {
                    scope.spawn(move || ControlPlane::start(assets, &format!("cluster{}", i + 1), ip, &range))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        });
        Envtest { planes }
    }

    /// The control planes shared by every test of this test binary (three), or `None` when the
    /// binaries are not there (see [`assets_or_skip`]).
    pub fn shared() -> Option<&'static Envtest> {
        // A failed start is kept too, so the other tests fail at once with its message instead of
        // each trying again.
        static SHARED: OnceLock<Result<Envtest, String>> = OnceLock::new();
        let assets = assets_or_skip()?;
        let started = SHARED.get_or_init(|| {
            std::panic::catch_unwind(|| Envtest::start(&assets, 3)).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the control planes did not start".into())
            })
        });
        match started {
            Ok(envtest) => Some(envtest),
            Err(why) => panic!("shared control planes: {why}"),
        }
    }

    /// A kubeconfig with every control plane as a context of its name.
    pub fn kubeconfig(&self) -> String {
        let all: Vec<&ControlPlane> = self.planes.iter().collect();
        self.planes[0].kubeconfig_for(&all, &[])
    }

    /// Writes [`Envtest::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) {
        std::fs::write(path, self.kubeconfig()).unwrap();
    }
}

/// A kube client for `context` of kubeconfig text `text`.
pub async fn client_from(text: &str, context: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text).unwrap();
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own, so synchronous
/// tests and async tests alike can call it.
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Appends a line to a log file (used by the fakes that record what they did).
pub fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    // One write of the whole line: with O_APPEND, lines of concurrent writers never interleave.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}
