//! meshctl never takes over or deletes what it did not create: against in-process API servers
//! (tests/support/memory_apiserver.rs), the real binary included, served on loopback.

mod support;

use std::path::PathBuf;

use meshctl::kube::KubeError;
use meshctl::kube::apply::{Applier, Comparison};
use serde_json::{Value, json};
use support::memory_apiserver::{Loopback, MemoryApiServer};
use support::{meshctl_in, stderr};

const THEIR_KEY: &str = "dGhlaXIta2V5"; // base64 of "their-key"

/// A cluster with one node and a `cacerts` someone plugged in by hand.
fn cluster_with_their_ca(server: MemoryApiServer) -> MemoryApiServer {
    server.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1", "labels": {"kubernetes.io/hostname": "node1"}}}));
    server.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}));
    server.put(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "type": "Opaque", "data": {"ca-key.pem": THEIR_KEY}}));
    server
}

struct Run {
    _loopback: Loopback,
    work: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Run {
    fn new(server: &MemoryApiServer) -> Run {
        let loopback = server.serve_on_loopback();
        let work = tempfile::tempdir().unwrap();
        let kubeconfig = work.path().join("kubeconfig");
        std::fs::write(&kubeconfig, loopback.kubeconfig("east")).unwrap();
        Run {
            _loopback: loopback,
            work,
            kubeconfig,
        }
    }

    fn meshctl(&self, args: &[&str]) -> std::process::Output {
        self.meshctl_from("home", args)
    }

    /// The same, from another machine: its own `MESHCTL_HOME` (`work/<home>`).
    fn meshctl_from(&self, home: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--kubeconfig", self.kubeconfig.to_str().unwrap()];
        all.extend_from_slice(args);
        let home = self.work.path().join(home);
        meshctl_in(
            self.work.path(),
            &all,
            &[("MESHCTL_HOME", home.to_str().unwrap())],
        )
    }
}

fn cacerts(server: &MemoryApiServer) -> Value {
    server.object("v1", "secrets", "istio-system", "cacerts").unwrap()
}

#[test]
fn up_refuses_to_take_over_a_ca_it_did_not_create_and_changes_nothing() {
    let server = cluster_with_their_ca(MemoryApiServer::new());
    let run = Run::new(&server);
    let out = run.meshctl(&[
        "up",
        "--contexts",
        "east",
        "--only",
        "certs",
        "--key-type",
        "ecdsa-p256",
        "--timeout",
        "10s",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cluster `cluster1`, phase certs: Secret istio-system/cacerts already exists and meshctl did not create it")
            && err.contains("nothing was changed")
            && err.contains("meshctl up --adopt"),
        "{err}"
    );
    let writes: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .collect();
    assert!(writes.is_empty(), "nothing is written: {writes:?}");
    assert_eq!(cacerts(&server)["data"], json!({"ca-key.pem": THEIR_KEY}));

    // status names it too, with the way to adopt it.
    let status = run.meshctl(&["status", "--contexts", "east"]);
    let text = support::stdout(&status);
    assert_eq!(status.status.code(), Some(3), "{text}{}", stderr(&status));
    assert!(
        text.contains("not meshctl's") && text.contains("--adopt"),
        "{text}"
    );

    // And down --uninstall leaves it alone: it is not meshctl's.
    let down = run.meshctl(&["down", "--uninstall", "--yes", "--contexts", "east"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(cacerts(&server)["data"], json!({"ca-key.pem": THEIR_KEY}));
}

#[test]
fn adopting_replaces_the_ca_and_restarts_the_istiod_that_runs_with_it() {
    let server = cluster_with_their_ca(MemoryApiServer::new().with_rollouts());
    // Labelled as Istio's chart labels istiod (istio-discovery/templates/deployment.yaml).
    server.put(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod", "namespace": "istio-system", "generation": 1,
            "labels": {"app": "istiod", "istio.io/rev": "default", "istio": "pilot"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istiod"}}, "template": {"metadata": {"labels": {"app": "istiod"}},
            "spec": {"containers": [{"name": "discovery", "image": "istio/pilot"}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}));
    let run = Run::new(&server);
    let out = run.meshctl(&[
        "up",
        "--contexts",
        "east",
        "--only",
        "certs",
        "--adopt",
        "--key-type",
        "ecdsa-p256",
        "--timeout",
        "10s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ca = cacerts(&server);
    assert_eq!(
        ca["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshctl",
        "now meshctl's"
    );
    assert_ne!(ca["data"]["ca-key.pem"], THEIR_KEY);
    // istiod ignores a new root until it restarts: meshctl restarted it.
    let istiod = server
        .object("apps/v1", "deployments", "istio-system", "istiod")
        .unwrap();
    assert!(
        istiod["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{istiod:#}"
    );
    assert!(stderr(&out).contains("istiod restarted"), "{}", stderr(&out));
}

/// A second machine (a CI runner, another laptop, another `MESHCTL_HOME`) has a root CA of its
/// own: the mesh's `cacerts` chained to the mesh's root is never "repaired" with it, `--adopt` or
/// not; it is refused before anything is written, with both roots' fingerprints and the way to
/// carry the mesh's root over, which then converges without a change.
#[test]
fn a_second_machine_never_replaces_the_meshs_root_ca() {
    let server = MemoryApiServer::new();
    server.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}}));
    let run = Run::new(&server);
    let up = [
        "up",
        "--contexts",
        "east",
        "--only",
        "certs",
        "--key-type",
        "ecdsa-p256",
        "--timeout",
        "10s",
    ];
    let first = run.meshctl(&up);
    assert!(first.status.success(), "{}", stderr(&first));
    let built = cacerts(&server);
    let mesh_root = run.work.path().join("home/mesh1/certs/root-cert.pem");
    let mesh_print = fingerprint(&mesh_root);

    for extra in [&[][..], &["--adopt"][..], &["--force"][..]] {
        let before = server.requests().len();
        let second = run.meshctl_from("laptop2", &[&up[..], extra].concat());
        let err = stderr(&second);
        assert_eq!(second.status.code(), Some(1), "{extra:?}: {err}");
        let laptop_print = fingerprint(&run.work.path().join("laptop2/mesh1/certs/root-cert.pem"));
        assert!(
            err.contains(
                "cluster `cluster1`, phase certs: Secret istio-system/cacerts is chained to another root CA"
            ) && err.contains(&format!("in the cluster: {mesh_print}; here: {laptop_print}"))
                && err.contains("nothing was changed")
                && err.contains("--certs-dir"),
            "{extra:?}: {err}"
        );
        // Refused before any phase: there is nothing new in the clusters for a bug report.
        assert!(!err.contains(" diagnose"), "{extra:?}: {err}");
        let writes: Vec<String> = server.requests()[before..]
            .iter()
            .filter(|r| !r.starts_with("GET "))
            .cloned()
            .collect();
        assert!(writes.is_empty(), "{extra:?}: nothing is written: {writes:?}");
        assert_eq!(cacerts(&server)["data"], built["data"]);
    }

    // status on that machine says so, with the way out.
    let status = run.meshctl_from("laptop2", &["status", "--contexts", "east"]);
    let text = support::stdout(&status);
    assert_eq!(status.status.code(), Some(3), "{text}{}", stderr(&status));
    assert!(
        text.contains("in conflict") && text.contains("--certs-dir"),
        "{text}"
    );

    // Carried over, the mesh's root converges: nothing to repair.
    let certs = run.work.path().join("home/mesh1/certs");
    let carried = run.meshctl_from(
        "laptop2",
        &[&up[..], &["--certs-dir", certs.to_str().unwrap()]].concat(),
    );
    assert!(carried.status.success(), "{}", stderr(&carried));
    assert!(!stderr(&carried).contains("repaired"), "{}", stderr(&carried));
    assert_eq!(cacerts(&server)["data"], built["data"]);
}

/// What meshctl makes records the mesh it made it for (`meshctl.io/mesh`): another mesh's meshctl
/// on the same cluster neither takes it over nor removes it, and `down --uninstall` of a mesh
/// never recorded here is refused before any cluster is asked.
#[test]
fn ownership_is_per_mesh_and_an_unknown_mesh_is_never_uninstalled() {
    let server = MemoryApiServer::new();
    server.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}}));
    let run = Run::new(&server);
    let up = |workdir: &[&str], mesh: &str| {
        let args: Vec<&str> = workdir
            .iter()
            .copied()
            .chain([
                "up",
                "--contexts",
                "east",
                "--mesh-id",
                mesh,
                "--only",
                "certs",
                "--key-type",
                "ecdsa-p256",
                "--timeout",
                "10s",
            ])
            .collect();
        run.meshctl(&args)
    };
    let built = up(&[], "alpha");
    assert!(built.status.success(), "{}", stderr(&built));
    let ca = cacerts(&server);
    assert_eq!(ca["metadata"]["labels"]["meshctl.io/mesh"], "alpha");

    // Mesh `beta` on the same cluster, from the same work dir: refused before any cluster is
    // asked, as the likely typo it is (the clusters are recorded as alpha's).
    let before = server.requests().len();
    let typo = up(&[], "beta");
    assert_eq!(typo.status.code(), Some(2), "{}", stderr(&typo));
    assert!(stderr(&typo).contains("is in `alpha`"), "{}", stderr(&typo));
    assert_eq!(server.requests().len(), before, "no cluster was asked");

    // From another work dir nothing local says so: alpha's CA in the cluster is not beta's to
    // repair.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = up(&["--workdir", elsewhere.path().to_str().unwrap()], "beta");
    let err = stderr(&other);
    assert_eq!(other.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "Secret istio-system/cacerts already exists and meshctl did not create it for mesh `beta`"
        ) && err.contains("meshctl.io/mesh names another mesh"),
        "{err}"
    );
    let writes: Vec<String> = server.requests()[before..]
        .iter()
        .filter(|r| !r.starts_with("GET "))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(cacerts(&server), ca);

    // Removing mesh `beta` (recorded by its refused run, or not) leaves alpha's CA alone; a mesh
    // never recorded is refused before anything is asked.
    let before = server.requests().len();
    let unknown = run.meshctl(&[
        "down",
        "--uninstall",
        "--yes",
        "--contexts",
        "east",
        "--mesh-id",
        "gamma",
    ]);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("no mesh `gamma` recorded") && stderr(&unknown).contains("`alpha`"),
        "{}",
        stderr(&unknown)
    );
    assert_eq!(server.requests().len(), before, "no cluster was asked");
    assert_eq!(cacerts(&server), ca);
}

/// istiod as Istio's chart names a revisioned install: `istiod-<revision>`, labelled `app: istiod`.
fn revisioned_istiod(server: &MemoryApiServer, revision: &str) {
    server.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("istiod-{revision}"), "namespace": "istio-system", "generation": 1,
            "labels": {"app": "istiod", "istio.io/rev": revision, "istio": "pilot"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": revision}},
            "template": {"metadata": {"labels": {"app": "istiod", "istio.io/rev": revision}},
            "spec": {"containers": [{"name": "discovery", "image": "istio/pilot"}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}));
}

/// `certs rotate` restarts every istiod that signs with `cacerts`, found by the label Istio's chart
/// gives it: after `upgrade --finish` only `istiod-<revision>` runs (no Deployment is named
/// `istiod`), and in the middle of an upgrade both revisions' istiods must take up a new root.
#[test]
fn certs_rotate_restarts_every_revisions_istiod_whatever_its_name() {
    let server = MemoryApiServer::new().with_rollouts();
    server.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}}));
    let run = Run::new(&server);
    let up = [
        "up",
        "--contexts",
        "east",
        "--only",
        "certs",
        "--key-type",
        "ecdsa-p256",
        "--timeout",
        "10s",
    ];
    let built = run.meshctl(&up);
    assert!(built.status.success(), "{}", stderr(&built));
    let restarted = |name: &str| {
        server
            .object("apps/v1", "deployments", "istio-system", name)
            .unwrap()["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    };
    let rotate = [
        "certs",
        "rotate",
        "--contexts",
        "east",
        "--key-type",
        "ecdsa-p256",
        "--timeout",
        "10s",
    ];

    // After `upgrade --finish`: one revisioned istiod.
    revisioned_istiod(&server, "1-31-1");
    let out = run.meshctl(&rotate);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(restarted("istiod-1-31-1"));

    // Mid-upgrade, step 1 of a root rotation: both revisions' istiods restart.
    revisioned_istiod(&server, "1-31-1");
    revisioned_istiod(&server, "1-30-3");
    let out = run.meshctl(&[&rotate[..], &["--root"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(restarted("istiod-1-31-1") && restarted("istiod-1-30-3"));
}

/// `openssl x509 -fingerprint -sha256` of a certificate file, as `AB:CD:…`.
fn fingerprint(cert: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl is installed (see .ci/run)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit('=').next().unwrap().to_string()
}

#[tokio::test]
async fn the_applier_refuses_someone_elses_object_unless_adopting() {
    let server = cluster_with_their_ca(MemoryApiServer::new());
    let ours = "apiVersion: v1\nkind: Secret\nmetadata: {name: cacerts, namespace: istio-system, labels: {app.kubernetes.io/managed-by: meshctl}}\ndata: {ca-key.pem: b3Vycw==}\n";
    let applier = Applier::new(server.client());
    let compared = applier.compare_yaml(ours, "cacerts.yaml").await.unwrap();
    assert_eq!(compared[0].comparison, Comparison::Foreign);
    let err = applier.apply_yaml(ours, "cacerts.yaml").await.unwrap_err();
    assert!(
        matches!(&err, KubeError::Foreign { object } if object == "Secret istio-system/cacerts"),
        "{err:?}"
    );
    assert_eq!(cacerts(&server)["data"], json!({"ca-key.pem": THEIR_KEY}));
    Applier::new(server.client())
        .with_adoption(true)
        .apply_yaml(ours, "cacerts.yaml")
        .await
        .unwrap();
    assert_eq!(cacerts(&server)["data"]["ca-key.pem"], "b3Vycw==");
}

#[tokio::test]
async fn verify_neither_uses_nor_deletes_a_sample_namespace_it_did_not_create() {
    let server = MemoryApiServer::new();
    server.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sample"}}));
    let err = meshctl::verification::clear_previous(&server.client(), std::time::Duration::from_secs(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("namespace `sample` exists and meshctl did not create it"),
        "{err}"
    );
    assert!(
        server.object("v1", "namespaces", "", "sample").is_some(),
        "left as it is"
    );

    // verify's own (labelled) namespace from an earlier run is removed, and waited for.
    let server = MemoryApiServer::new();
    server.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sample", "labels": {"app.kubernetes.io/managed-by": "meshctl"}}}));
    let cleared = meshctl::verification::clear_previous(&server.client(), std::time::Duration::from_secs(2))
        .await
        .unwrap();
    assert!(cleared);
    assert!(server.object("v1", "namespaces", "", "sample").is_none());
}
