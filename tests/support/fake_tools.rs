//! Fake `kind`, `docker`, `istioctl` and `curl` executables, put first on PATH. Each records its
//! arguments in `calls.log` and answers like the real one:
//!
//! * `kind create cluster` "creates" a cluster whose API server already runs (a real control plane
//!   of the test's, tests/support/envtest/kind.rs); `kind get kubeconfig` prints the kubeconfig it
//!   was given for it, with kind's `kind-<name>` names; `get clusters`, `delete`.
//! * `docker network inspect kind` describes a dual-stack network (IPv6 entry first, as docker may
//!   order it) with the created clusters' node containers; `docker inspect` gives a node's address;
//!   `docker exec NODE ip route replace|show` keeps a routing table per node.
//! * `istioctl install` (and `uninstall`) hands the request to the harness thread, whose
//!   [`InstallHandler`] applies (or deletes) what istioctl would create in the cluster of
//!   `--context` (tests/support/envtest/istioctl.rs), then lets the script exit as istioctl would.
//!
//! Delays (for benchmarks) and failures (per tool and cluster) can be injected.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Timing and version of the fakes.
#[derive(Debug, Clone)]
pub struct FakeToolOptions {
    /// Seconds `kind create cluster` takes.
    pub kind_create_secs: f64,
    /// Seconds `istioctl install` takes.
    pub istioctl_install_secs: f64,
    /// What `istioctl version` prints.
    pub istioctl_version: String,
}

impl Default for FakeToolOptions {
    fn default() -> Self {
        FakeToolOptions {
            kind_create_secs: 0.0,
            istioctl_install_secs: 0.0,
            istioctl_version: "1.31.1".into(),
        }
    }
}

/// The fake tools of one test.
pub struct FakeTools {
    /// Holds bin/, calls.log, and the fakes' own state.
    pub dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
}

const KIND: &str = r#"#!/usr/bin/env bash
D="__DIR__"
echo "kind $*" >> "$D/calls.log"
# Hands `create NAME` / `delete NAME` to the test's harness (when it has a kind hook) and waits.
ask() {
  [ -f "$D/kind-hook" ] || return 0
  id="$(date +%s%N)-$$"
  printf '%s\n%s\n' "$1" "$2" > "$D/spool/$id.tmp" && mv "$D/spool/$id.tmp" "$D/spool/$id.kind"
  for _ in $(seq 1 12000); do
    if [ -f "$D/spool/$id.done" ]; then
      code=$(head -n 1 "$D/spool/$id.done"); tail -n +2 "$D/spool/$id.done" >&2
      [ "$code" = 0 ] || exit "$code"
      return 0
    fi
    sleep 0.01
  done
  echo "fake kind: the harness did not answer" >&2; exit 1
}
verb="$1 $2"
name=""; config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="$2"; shift ;;
    --config) config="$2"; shift ;;
  esac
  shift
done
case "$verb" in
  "version "*) echo "kind v0.32.0 go1.24.2 linux/amd64" ;;
  "get clusters")
    if [ -z "$(ls -A "$D/kind" 2>/dev/null)" ]; then echo "No kind clusters found." >&2; else ls "$D/kind"; fi ;;
  "get kubeconfig")
    if [ -f "$D/kind/$name" ]; then cat "$D/kubeconfig/$name.yaml"; else
      echo "ERROR: could not locate any control plane nodes for cluster named '$name'" >&2; exit 1; fi ;;
  "create cluster")
    [ -f "$config" ] || { echo "ERROR: failed to create cluster: open $config: no such file or directory" >&2; exit 1; }
    echo "Creating cluster \"$name\" ..." >&2
    sleep "$(cat "$D/kind_create_secs")"
    if [ -f "$D/fail/kind-$name" ]; then echo "ERROR: failed to create cluster: command \"docker run --name $name-control-plane\" failed with error: exit status 125" >&2; exit 1; fi
    ask create "$name"
    [ -f "$D/kubeconfig/$name.yaml" ] || { echo "ERROR: failed to create cluster: no control plane for $name" >&2; exit 1; }
    cp "$config" "$D/created-config-$name.yaml"
    touch "$D/kind/$name" ;;
  "delete cluster") echo "Deleting cluster \"$name\" ..." >&2; ask delete "$name"; rm -f "$D/kind/$name" ;;
  *) echo "fake kind: unsupported: $verb" >&2; exit 2 ;;
esac
"#;

const DOCKER: &str = r#"#!/usr/bin/env bash
D="__DIR__"
echo "docker $*" >> "$D/calls.log"
case "$1" in
  info) echo "28.2.2" ;;
  network)
    # kind puts its nodes on KIND_EXPERIMENTAL_DOCKER_NETWORK when set, else on `kind`.
    net="${KIND_EXPERIMENTAL_DOCKER_NETWORK:-kind}"
    if [ -z "$(ls -A "$D/kind" 2>/dev/null)" ] || [ "$3" != "$net" ]; then echo "Error response from daemon: network $3 not found" >&2; exit 1; fi
    containers=""
    for f in "$D"/kind/*; do
      n=$(basename "$f"); ip=$(cat "$D/ips/$n")
      containers="$containers${containers:+,}\"id-$n\":{\"Name\":\"$n-control-plane\",\"IPv4Address\":\"$ip/16\",\"IPv6Address\":\"\"}"
    done
    echo "[{\"Name\":\"$net\",\"IPAM\":{\"Driver\":\"default\",\"Config\":[{\"Subnet\":\"fc00:f853:ccd:e793::/64\"},{\"Subnet\":\"172.18.0.0/16\",\"Gateway\":\"172.18.0.1\"}]},\"Containers\":{$containers}}]" ;;
  inspect)
    container="${!#}"; n="${container%-control-plane}"
    if [ -f "$D/kind/$n" ]; then echo "{\"${KIND_EXPERIMENTAL_DOCKER_NETWORK:-kind}\":{\"IPAddress\":\"$(cat "$D/ips/$n")\",\"IPPrefixLen\":16}}"; else
      echo "Error: No such object: $container" >&2; exit 1; fi ;;
  exec)
    # `docker exec NODE ip route replace|show CIDR [via IP]` on a kind node: one routing table file
    # per node; `ip route show CIDR` prints iproute2's line (`10.20.0.0/16 via 172.18.0.3 dev eth0`).
    node="$2"; n="${node%-control-plane}"
    if [ ! -f "$D/kind/$n" ]; then echo "Error response from daemon: No such container: $node" >&2; exit 1; fi
    table="$D/routes/$node"; touch "$table"
    case "$3 $4 $5" in
      "ip route replace")
        cidr="$6"; via="$8"
        grep -v "^$cidr " "$table" > "$table.tmp"; echo "$cidr via $via dev eth0 " >> "$table.tmp"; mv "$table.tmp" "$table" ;;
      "ip route show") grep "^$6 " "$table" || true ;;
      *) echo "fake docker: unsupported exec: ${*:3}" >&2; exit 2 ;;
    esac ;;
  *) echo "fake docker: unsupported: $1" >&2; exit 2 ;;
esac
"#;

const ISTIOCTL: &str = r#"#!/usr/bin/env bash
D="__DIR__"
echo "istioctl $*" >> "$D/calls.log"
case "$1" in
  version) echo "client version: $(cat "$D/istioctl_version")" ;;
  install|uninstall)
    [ "$1" = install ] && sleep "$(cat "$D/istioctl_install_secs")"
    id="$(date +%s%N)-$$"
    { pwd; printf '%s\n' "$@"; } > "$D/spool/$id.tmp" && mv "$D/spool/$id.tmp" "$D/spool/$id.req"
    for _ in $(seq 1 6000); do
      if [ -f "$D/spool/$id.done" ]; then code=$(head -n 1 "$D/spool/$id.done"); tail -n +2 "$D/spool/$id.done" >&2; exit "$code"; fi
      sleep 0.01
    done
    echo "fake istioctl: the harness did not answer" >&2; exit 1 ;;
  *) echo "fake istioctl: unsupported: $1" >&2; exit 2 ;;
esac
"#;

const CURL: &str = r#"#!/usr/bin/env bash
D="__DIR__"
echo "curl $*" >> "$D/calls.log"
out=""; url=""
while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift ;; http*) url="$1" ;; esac; shift; done
[ -f "$D/curl_body" ] || { echo "curl: (6) Could not resolve host" >&2; exit 6; }
cp "$D/curl_body" "$out"
"#;

/// Answers a fake's request: its `.done` file, written whole before it appears (the script polls
/// for the file and reads it at once; a file still being written would read as empty).
fn answer_request(request: &Path, answer: &str) {
    let done = request.with_extension("done");
    let partial = request.with_extension("done-partial");
    std::fs::write(&partial, answer).unwrap();
    std::fs::rename(&partial, &done).unwrap();
}

/// What `istioctl install` does in the test: given the request file (the working directory, then
/// one argument a line) and the folder of failure switches, the exit code and stderr.
pub type InstallHandler = Box<dyn Fn(&Path, &Path) -> (i32, String) + Send>;

/// What `kind create cluster` / `kind delete cluster` do in the test: `("create" | "delete", name)`
/// → the kubeconfig of a created cluster (kind's `kind-<name>` names inside), or why it failed.
pub type KindHandler = Arc<dyn Fn(&str, &str) -> Result<Option<String>, String> + Send + Sync>;

impl FakeTools {
    /// Fakes for the clusters `(name, kubeconfig)`: node container i gets 172.18.0.<i+2>, and
    /// `kind get kubeconfig --name N` prints N's kubeconfig (kind's `kind-<name>` names inside) once
    /// it is known: given here, or returned by `kind` (a [`KindHandler`] that starts the cluster at
    /// `kind create` and stops it at `kind delete`). `istioctl install` is `install`.
    pub fn with(
        clusters: Vec<(String, Option<String>)>,
        options: FakeToolOptions,
        install: InstallHandler,
        kind: Option<KindHandler>,
    ) -> FakeTools {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["bin", "kind", "ips", "kubeconfig", "spool", "fail", "routes"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("kind_create_secs"), options.kind_create_secs.to_string()).unwrap();
        std::fs::write(
            d.join("istioctl_install_secs"),
            options.istioctl_install_secs.to_string(),
        )
        .unwrap();
        std::fs::write(d.join("istioctl_version"), &options.istioctl_version).unwrap();
        std::fs::write(d.join("calls.log"), "").unwrap();
        for (i, (name, text)) in clusters.iter().enumerate() {
            if let Some(text) = text {
                std::fs::write(d.join("kubeconfig").join(format!("{name}.yaml")), text).unwrap();
            }
            std::fs::write(d.join("ips").join(name), format!("172.18.0.{}", i + 2)).unwrap();
        }
        if kind.is_some() {
            std::fs::write(d.join("kind-hook"), "").unwrap();
        }
        for (name, body) in [
            ("kind", KIND),
            ("docker", DOCKER),
            ("istioctl", ISTIOCTL),
            ("curl", CURL),
        ] {
            let path = d.join("bin").join(name);
            std::fs::write(&path, body.replace("__DIR__", &d.to_string_lossy())).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (spool, flag) = (d.join("spool"), stop.clone());
        let fail_dir = d.join("fail");
        let kubeconfigs = d.join("kubeconfig");
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                // kind requests in threads of their own: clusters are created concurrently.
                let kind_requests: Vec<PathBuf> = std::fs::read_dir(&spool)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|x| x == "kind"))
                            .collect()
                    })
                    .unwrap_or_default();
                for req in kind_requests {
                    let taken = req.with_extension("taken");
                    if std::fs::rename(&req, &taken).is_err() {
                        continue;
                    }
                    let (handler, kubeconfigs) = (kind.clone(), kubeconfigs.clone());
                    std::thread::spawn(move || {
                        let text = std::fs::read_to_string(&taken).unwrap();
                        let mut lines = text.lines();
                        let (verb, name) =
                            (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
                        let file = kubeconfigs.join(format!("{name}.yaml"));
                        let answer = match handler.map(|h| h(verb, name)) {
                            Some(Ok(Some(kubeconfig))) => std::fs::write(&file, kubeconfig)
                                .map(|_| "0\n".to_string())
                                .unwrap(),
                            Some(Ok(None)) => {
                                let _ = std::fs::remove_file(&file);
                                "0\n".to_string()
                            }
                            Some(Err(e)) => format!("1\nERROR: {e}"),
                            None => "0\n".to_string(),
                        };
                        answer_request(&taken, &answer);
                    });
                }
                let mut requests: Vec<PathBuf> = std::fs::read_dir(&spool)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|x| x == "req"))
                            .collect()
                    })
                    .unwrap_or_default();
                requests.sort();
                for req in requests {
                    let (code, stderr) = install(&req, &fail_dir);
                    answer_request(&req, &format!("{code}\n{stderr}"));
                    std::fs::remove_file(&req).unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        FakeTools { dir, stop }
    }

    /// `PATH` with the fakes first.
    pub fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Every recorded invocation, one line each (`tool arg arg ...`).
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Makes `tool` (`kind` or `istioctl`) fail for cluster (kind) or context (istioctl) `name`.
    pub fn fail(&self, tool: &str, name: &str, on: bool) {
        let path = self.dir.path().join("fail").join(format!("{tool}-{name}"));
        if on {
            std::fs::write(path, "").unwrap()
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// What the fake curl downloads.
    pub fn set_download(&self, body: &[u8]) {
        std::fs::write(self.dir.path().join("curl_body"), body).unwrap();
    }

    /// The routes `docker exec NODE ip route replace` left on a node: `(cidr, via)`.
    pub fn routes(&self, node: &str) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.path().join("routes").join(node))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                Some((w.first()?.to_string(), w.get(2)?.to_string()))
            })
            .collect()
    }

    /// Removes a node's routes (a node container restarted: its routing table is gone).
    pub fn clear_routes(&self, node: &str) {
        let _ = std::fs::remove_file(self.dir.path().join("routes").join(node));
    }

    /// Whether a kind cluster of that name "exists".
    pub fn kind_cluster_exists(&self, name: &str) -> bool {
        self.dir.path().join("kind").join(name).exists()
    }

    /// Makes a kind cluster "exist" without meshctl creating it.
    pub fn preexisting_kind_cluster(&self, name: &str) {
        std::fs::write(self.dir.path().join("kind").join(name), "").unwrap();
    }
}

impl Drop for FakeTools {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
