//! `isolate` and `rejoin` against in-process API servers on loopback, one per cluster, with the
//! isolated cluster's server stopped: nothing is asked of it, and nothing is lost.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use meshctl::isolation::{self, PeerOutcome};
use meshctl::mesh_dir::MeshDir;
use meshctl::plan::RemoteSecretsStep;
use meshctl::plan::{Phase, PlanInput, Step};
use meshctl::state::StateStore;
use meshctl::topology::Mesh;
use serde_json::json;
use support::memory_apiserver::{Loopback, MemoryApiServer};
use support::played_istiod::PlayedIstiod;

const BOUND: Duration = Duration::from_secs(3);

/// Three primaries, each holding the two others' remote secrets as meshctl applies them (its
/// field manager owns them: that is how meshctl tells its own from a user's).
struct Lab {
    servers: Vec<MemoryApiServer>,
    loopbacks: Vec<Option<Loopback>>,
    kubeconfig: std::path::PathBuf,
    mesh: Mesh,
    dir: tempfile::TempDir,
}

fn remote_secret(source: &str, manager: &str) -> serde_json::Value {
    let kubeconfig = format!(
        "apiVersion: v1\nclusters:\n- cluster: {{server: 'https://{source}:6443'}}\n  name: {source}\n"
    );
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("istio-remote-secret-{source}"), "namespace": "istio-system",
            "uid": format!("uid-{source}-{manager}"),
            "labels": {"istio/multiCluster": "true"},
            "annotations": {"networking.istio.io/cluster": source},
            "managedFields": [{"manager": manager, "operation": "Apply", "apiVersion": "v1"}]},
        "data": {source: base64_of(&kubeconfig)}})
}

fn put_istiod(server: &MemoryApiServer, cluster: &str) {
    server.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istiod", "namespace": "istio-system", "labels": {"app": "istiod"}},
        "spec": {"selector": {"matchLabels": {"app": "istiod"}}, "template": {"metadata": {"labels": {"app": "istiod"}},
            "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.31.1", "env": [{"name": "CLUSTER_ID", "value": cluster}]}]}}}}));
    server.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "istiod-5d8f7c9b4-x2x7q", "namespace": "istio-system", "labels": {"app": "istiod"}},
        "spec": {"nodeName": format!("{cluster}-control-plane"), "containers": [{"name": "discovery", "image": "istio/pilot"}]},
        "status": {"phase": "Running"}}));
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn lab() -> Lab {
    lab_with(Vec::new())
}

/// The lab, with `istiods[i]` playing istiod in cluster i (Deployment `istiod` with its cluster ID,
/// one running pod) where given.
fn lab_with(istiods: Vec<Option<std::sync::Arc<PlayedIstiod>>>) -> Lab {
    let names = ["cluster1", "cluster2", "cluster3"];
    let servers: Vec<MemoryApiServer> = (0..names.len())
        .map(|i| match istiods.get(i).cloned().flatten() {
            Some(played) => {
                let server = MemoryApiServer::new().with_istiod(played);
                put_istiod(&server, names[i]);
                server
            }
            None => MemoryApiServer::new(),
        })
        .collect();
    for (i, server) in servers.iter().enumerate() {
        // Istio's namespace, as its install leaves it.
        server.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}));
        for (j, source) in names.iter().enumerate() {
            if i != j {
                server.put(remote_secret(source, "meshctl"));
            }
        }
    }
    let loopbacks: Vec<Option<Loopback>> = servers.iter().map(|s| Some(s.serve_on_loopback())).collect();
    let dir = tempfile::tempdir().unwrap();
    // The mesh as `up` recorded it: isolation acts on a mesh built here.
    std::fs::create_dir_all(dir.path().join("mesh1")).unwrap();
    std::fs::write(dir.path().join("mesh1/state.json"), r#"{"meshID": "mesh1"}"#).unwrap();
    let (mut clusters, mut contexts, mut users) = (String::new(), String::new(), String::new());
    for (name, loopback) in names.iter().zip(&loopbacks) {
        let addr = loopback.as_ref().unwrap().addr;
        clusters += &format!("- name: {name}\n  cluster:\n    server: http://{addr}\n");
        contexts += &format!("- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n");
        users += &format!("- name: {name}\n  user: {{}}\n");
    }
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}users:\n{users}"),
    )
    .unwrap();
    let mesh = Mesh::for_contexts(&names.map(String::from), "mesh1").unwrap();
    Lab {
        servers,
        loopbacks,
        kubeconfig,
        mesh,
        dir,
    }
}

impl Lab {
    fn stop(&mut self, i: usize) {
        self.loopbacks[i] = None;
    }

    fn secret(&self, i: usize, source: &str) -> Option<serde_json::Value> {
        self.servers[i].object(
            "v1",
            "secrets",
            "istio-system",
            &format!("istio-remote-secret-{source}"),
        )
    }

    fn mesh_dir(&self) -> MeshDir {
        MeshDir::new(self.dir.path(), "mesh1")
    }

    fn state(&self) -> StateStore {
        StateStore::load(&self.mesh_dir().state()).unwrap()
    }

    async fn isolate(&self, cluster: &str) -> Vec<(String, PeerOutcome)> {
        let dir = self.mesh_dir();
        isolation::Membership::open(&self.mesh, &dir, Some(&self.kubeconfig), BOUND)
            .unwrap()
            .isolate(cluster)
            .await
            .unwrap()
    }

    async fn rejoin(&self, cluster: &str) -> Vec<(String, PeerOutcome)> {
        let dir = self.mesh_dir();
        isolation::Membership::open(&self.mesh, &dir, Some(&self.kubeconfig), BOUND)
            .unwrap()
            .rejoin(cluster)
            .await
            .unwrap()
    }
}

fn outcome_names(outcomes: &[(String, PeerOutcome)]) -> Vec<(String, &'static str)> {
    outcomes
        .iter()
        .map(|(p, o)| {
            let name = match o {
                PeerOutcome::Done => "done",
                PeerOutcome::NothingToDo { .. } => "nothing",
                PeerOutcome::NotMeshctls => "not meshctl's",
                PeerOutcome::Unreachable { .. } => "unreachable",
            };
            (p.clone(), name)
        })
        .collect()
}

#[tokio::test]
async fn a_stopped_cluster_is_isolated_and_rejoined_with_nothing_lost() {
    let mut lab = lab();
    let before = [
        lab.secret(0, "cluster3").unwrap(),
        lab.secret(1, "cluster3").unwrap(),
    ];
    lab.stop(2);

    let started = std::time::Instant::now();
    let outcomes = lab.isolate("cluster3").await;
    assert_eq!(
        outcome_names(&outcomes),
        [("cluster1".to_string(), "done"), ("cluster2".to_string(), "done")],
        "{outcomes:?}"
    );
    assert!(started.elapsed() < BOUND, "the stopped cluster is never asked");
    assert!(lab.secret(0, "cluster3").is_none() && lab.secret(1, "cluster3").is_none());
    assert!(
        lab.secret(0, "cluster2").is_some(),
        "only the isolated cluster's secrets go"
    );
    let state = lab.state().snapshot();
    assert_eq!(
        state.isolated["cluster3"].removed_from,
        BTreeSet::from(["cluster1".to_string(), "cluster2".to_string()])
    );
    // Recorded before removal, private: the Secret carries the reader's token.
    let kept = lab.mesh_dir().isolated("cluster3").join("cluster1.yaml");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(
        text.contains("istio-remote-secret-cluster3") && !text.contains("uid-"),
        "{text}"
    );

    // `up` keeps it out: nothing planned in it, no other cluster reads it, and its secret is
    // pruned wherever it came back.
    let input = PlanInput {
        mesh: &lab.mesh,
        phases: vec![Phase::RemoteSecrets],
        pools: Vec::new(),
        cas: Vec::new(),
        timeout_secs: 5,
        docker_network: "kind".into(),
        gateway_ips: Default::default(),
        isolated: state.isolated.keys().cloned().collect(),
        only_cluster: None,
    };
    let plan = meshctl::planner::build(&input).unwrap();
    let planned: Vec<&str> = plan.phases[0]
        .clusters
        .iter()
        .map(|c| c.cluster.as_str())
        .collect();
    assert_eq!(planned, ["cluster1", "cluster2"]);
    for cs in &plan.phases[0].clusters {
        for step in &cs.steps {
            match step {
                Step::RemoteSecrets(RemoteSecretsStep::PruneRemoteSecrets { keep }) => {
                    assert!(!keep.contains(&"cluster3".to_string()))
                }
                Step::RemoteSecrets(RemoteSecretsStep::RemoteSecret { source, .. }) => {
                    assert_ne!(source, "cluster3")
                }
                _ => {}
            }
        }
    }

    // Back, with its server still stopped: the recorded secrets return as they were.
    let outcomes = lab.rejoin("cluster3").await;
    assert_eq!(
        outcome_names(&outcomes),
        [("cluster1".to_string(), "done"), ("cluster2".to_string(), "done")],
        "{outcomes:?}"
    );
    for (i, was) in before.iter().enumerate() {
        let now = lab.secret(i, "cluster3").unwrap();
        assert_eq!(now["data"], was["data"]);
        assert_eq!(now["metadata"]["annotations"], was["metadata"]["annotations"]);
        assert_eq!(now["metadata"]["labels"], was["metadata"]["labels"]);
    }
    assert!(lab.state().snapshot().isolated.is_empty());
    assert!(!lab.mesh_dir().isolated("cluster3").exists());
}

#[tokio::test]
async fn a_peer_that_does_not_answer_keeps_the_isolation_pending_there() {
    let mut lab = lab();
    lab.stop(1);
    let outcomes = lab.isolate("cluster3").await;
    assert_eq!(
        outcome_names(&outcomes),
        [
            ("cluster1".to_string(), "done"),
            ("cluster2".to_string(), "unreachable")
        ]
    );
    let PeerOutcome::Unreachable { error } = &outcomes[1].1 else {
        unreachable!()
    };
    assert!(
        error.contains("cluster2") || error.contains("127.0.0.1"),
        "{error}"
    );
    assert_eq!(
        lab.state().snapshot().isolated["cluster3"].removed_from,
        BTreeSet::from(["cluster1".to_string()]),
        "isolated all the same: `up` removes the rest once cluster2 answers"
    );
    // Rejoin needs only the peers isolate removed it from.
    let outcomes = lab.rejoin("cluster3").await;
    assert_eq!(
        outcome_names(&outcomes),
        [
            ("cluster1".to_string(), "done"),
            ("cluster2".to_string(), "nothing")
        ]
    );
    assert!(lab.secret(0, "cluster3").is_some());
}

#[tokio::test]
async fn a_remote_secret_meshctl_did_not_apply_is_left_where_it_is() {
    let lab = lab();
    // cluster2's secret for cluster3 was applied by someone else (`istioctl create-remote-secret |
    // kubectl apply`).
    lab.servers[1].put(remote_secret("cluster3", "kubectl-client-side-apply"));
    let outcomes = lab.isolate("cluster3").await;
    assert_eq!(
        outcome_names(&outcomes),
        [
            ("cluster1".to_string(), "done"),
            ("cluster2".to_string(), "not meshctl's")
        ]
    );
    assert!(lab.secret(1, "cluster3").is_some(), "never deleted");
    assert!(lab.secret(0, "cluster3").is_none());
}

/// A remote secret meshctl did not apply now stands where the recorded one would go back: the
/// rejoin is refused before anything is put back anywhere, and the isolation stays recorded, with
/// its files, so a second `rejoin` (once the secret is gone) finishes the job.
#[tokio::test]
async fn a_refused_rejoin_changes_nothing_the_record_included() {
    let lab = lab();
    lab.isolate("cluster3").await;
    let recorded = lab.state().snapshot().isolated["cluster3"].clone();
    lab.servers[1].put(remote_secret("cluster3", "kubectl-client-side-apply"));
    let dir = lab.mesh_dir();
    let err = isolation::Membership::open(&lab.mesh, &dir, Some(&lab.kubeconfig), BOUND)
        .unwrap()
        .rejoin("cluster3")
        .await
        .expect_err("someone else's secret is in the way");
    let said = format!("{err:#}");
    assert!(
        said.contains("cluster `cluster2`: Secret istio-system/istio-remote-secret-cluster3")
            && said.contains("nothing was changed"),
        "{said}"
    );
    assert!(
        lab.secret(0, "cluster3").is_none(),
        "nothing put back in cluster1 either"
    );
    assert_eq!(lab.state().snapshot().isolated["cluster3"], recorded);
    assert!(lab.mesh_dir().isolated("cluster3").join("cluster1.yaml").exists());

    // Their secret gone, the rejoin goes through.
    lab.servers[1].remove("v1", "secrets", "istio-system", "istio-remote-secret-cluster3");
    let outcomes = lab.rejoin("cluster3").await;
    assert_eq!(outcome_names(&outcomes)[0], ("cluster1".to_string(), "done"));
    assert!(lab.state().snapshot().isolated.is_empty());
}

/// The commands end to end: `isolate` names each peer, `status` shows the cluster as isolated
/// (one line, never asked) with `rejoin` as the fix, and a cluster not in the mesh is a usage
/// error that changes nothing.
#[test]
fn isolate_status_and_rejoin_from_the_command_line() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut lab = runtime.block_on(async { lab() });
    lab.stop(2);
    let kubeconfig = lab.kubeconfig.to_str().unwrap().to_string();
    let workdir = lab.dir.path().to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", &kubeconfig, "--workdir", &workdir];
        all.extend_from_slice(args);
        support::meshctl(&all)
    };
    let contexts = ["--contexts", "cluster1,cluster2,cluster3"];

    let out = run(&[&["isolate", "cluster9"][..], &contexts].concat());
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
    assert!(support::stderr(&out).contains("cluster `cluster9` is not in mesh `mesh1`"));
    // A mesh never built here (a typo in --mesh-id): refused, nothing recorded, nothing removed.
    let out = run(&[&["isolate", "cluster3", "--mesh-id", "mesh2"][..], &contexts].concat());
    let said = support::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("no mesh `mesh2` recorded") && said.contains("`mesh1`"),
        "{said}"
    );
    assert!(!lab.dir.path().join("mesh2").exists());
    assert!(lab.secret(0, "cluster3").is_some());

    let out = run(&[&["isolate", "cluster3"][..], &contexts].concat());
    let said = support::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("cluster1") && said.contains("no longer reads `cluster3`"),
        "{said}"
    );

    let out = run(&[&["status", "-o", "json"][..], &contexts].concat());
    assert_eq!(out.status.code(), Some(3), "{}", support::stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    let rows: Vec<&serde_json::Value> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cluster"] == "cluster3")
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["state"], "isolated");
    assert!(rows[0]["fix"].as_str().unwrap().contains(" rejoin "), "{rows:?}");
    assert!(rows[0]["fix"].as_str().unwrap().ends_with("cluster3"), "{rows:?}");

    // Its server still stopped: the secrets come back, and rejoin says the cluster does not answer.
    let out = run(&[&["rejoin", "cluster3", "--timeout", "3s"][..], &contexts].concat());
    let said = support::stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("reads `cluster3` again") && said.contains("does not answer"),
        "{said}"
    );
    assert!(lab.secret(0, "cluster3").is_some() && lab.secret(1, "cluster3").is_some());

    let out = run(&[&["rejoin", "cluster3"][..], &contexts].concat());
    assert_eq!(out.status.code(), Some(2), "not isolated any more");

    // Isolated, then taken out of the topology: status no longer counts it, and the next `up`
    // forgets the isolation and the secrets kept for its rejoin.
    let out = run(&[&["isolate", "cluster3"][..], &contexts].concat());
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let two = ["--contexts", "cluster1,cluster2"];
    let out = run(&[&["status", "-o", "json"][..], &two].concat());
    let doc: serde_json::Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    assert!(
        !doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["state"] == "isolated"),
        "{doc:#}"
    );
    let up = [
        "up",
        "--only",
        "certs",
        "--key-type",
        "ecdsa-p256",
        "--timeout",
        "10s",
    ];
    let out = run(&[&up[..], &two].concat());
    let said = support::stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("no longer in the mesh: its isolation is forgotten"),
        "{said}"
    );
    assert!(lab.state().snapshot().isolated.is_empty());
    assert!(!lab.mesh_dir().isolated("cluster3").exists());
}

/// `down --purge` removes the secrets `isolate` kept (they carry tokens), and only those.
#[test]
fn purge_removes_the_kept_secrets() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lab = runtime.block_on(async { lab() });
    runtime.block_on(lab.isolate("cluster3"));
    let kept = lab.mesh_dir().isolated("cluster3");
    assert!(kept.join("cluster1.yaml").is_file());
    let theirs = lab.mesh_dir().root().join("notes.txt");
    std::fs::write(&theirs, "mine").unwrap();
    let workdir = lab.dir.path().to_str().unwrap();
    let out = support::meshctl(&["--workdir", workdir, "down", "--purge", "--mesh-id", "mesh1"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    assert!(
        !lab.mesh_dir().isolated_root().exists(),
        "{}",
        support::stderr(&out)
    );
    assert!(theirs.is_file(), "a file meshctl did not write stays");
}

/// A stopped API server: `status` answers at once (the connection is refused, well within the
/// 10 s bound), names that cluster in one line as unreachable, offers `isolate` as the fix, and
/// still checks the others.
#[test]
fn status_names_a_stopped_cluster_once_and_offers_to_isolate_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut lab = runtime.block_on(async { lab() });
    lab.stop(1);
    let started = std::time::Instant::now();
    let out = support::meshctl(&[
        "--kubeconfig",
        lab.kubeconfig.to_str().unwrap(),
        "--workdir",
        lab.dir.path().to_str().unwrap(),
        "status",
        "-o",
        "json",
        "--contexts",
        "cluster1,cluster2,cluster3",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(3), "{}", support::stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    let checks = doc["checks"].as_array().unwrap();
    let down: Vec<&serde_json::Value> = checks.iter().filter(|c| c["cluster"] == "cluster2").collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(down[0]["state"], "unreachable");
    let hint = down[0]["fix"].as_str().unwrap();
    assert!(hint.contains(" isolate ") && hint.ends_with("cluster2"), "{hint}");
    assert!(
        checks.iter().filter(|c| c["cluster"] == "cluster1").count() > 1,
        "the clusters that answer are checked phase by phase"
    );

    // From a work dir that recorded no mesh, `isolate` would refuse: it is not offered.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = support::meshctl(&[
        "--kubeconfig",
        lab.kubeconfig.to_str().unwrap(),
        "--workdir",
        elsewhere.path().to_str().unwrap(),
        "status",
        "-o",
        "json",
        "--contexts",
        "cluster1,cluster2,cluster3",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    let down = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == "cluster2" && c["state"] == "unreachable")
        .cloned()
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(
        !down["fix"].as_str().unwrap_or_default().contains(" isolate "),
        "{down:#}"
    );
}

/// The mesh across clusters in `status`: each istiod's view of the others (`/debug/clusterz`
/// through a port-forward), and the stopped cluster named as the problem, with `isolate` as its
/// fix; once isolated, the other istiods no longer read it and that problem is gone.
#[test]
fn status_shows_what_each_istiod_sees_and_isolating_the_stopped_cluster_clears_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let played = [PlayedIstiod::new(), PlayedIstiod::new()];
    for istiod in &played {
        istiod.set_remote_cluster_status("cluster3", "timeout");
    }
    let mut lab =
        runtime.block_on(async { lab_with(vec![Some(played[0].clone()), Some(played[1].clone()), None]) });
    lab.stop(2);
    let kubeconfig = lab.kubeconfig.to_str().unwrap().to_string();
    let workdir = lab.dir.path().to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", &kubeconfig, "--workdir", &workdir];
        all.extend_from_slice(args);
        all.extend(["--contexts", "cluster1,cluster2,cluster3"]);
        support::meshctl(&all)
    };
    let mesh_problems = |out: &std::process::Output| {
        let doc: serde_json::Value = serde_json::from_str(&support::stdout(out)).unwrap();
        (doc["mesh"].clone(), doc["problems"].as_array().unwrap().clone())
    };

    let out = run(&["status", "-o", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", support::stderr(&out));
    let (mesh, problems) = mesh_problems(&out);
    let seen: Vec<(String, String)> = mesh["istiods"][0]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["syncStatus"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("cluster1".to_string(), "synced".to_string()),
            ("cluster2".to_string(), "synced".to_string()),
            ("cluster3".to_string(), "timeout".to_string())
        ]
    );
    assert_eq!(
        mesh["istiods"][0]["controlPlanes"],
        json!([{"revision": "default", "version": "1.31.1"}]),
        "{mesh}"
    );
    let about_3: Vec<&serde_json::Value> = problems.iter().filter(|p| p["cluster"] == "cluster3").collect();
    assert_eq!(about_3.len(), 2, "one per istiod that waits on it: {problems:?}");
    for p in &about_3 {
        assert!(
            p["detail"].as_str().unwrap().contains("reports cluster3 timeout"),
            "{p}"
        );
        assert!(
            p["fix"].as_str().unwrap().contains(" isolate ")
                && p["fix"].as_str().unwrap().ends_with("cluster3"),
            "{p}"
        );
    }

    let out = run(&["isolate", "cluster3"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let out = run(&["status", "-o", "json"]);
    let (mesh, problems) = mesh_problems(&out);
    assert!(
        problems.iter().all(|p| p["cluster"] != "cluster3"),
        "{problems:?}"
    );
    assert!(
        mesh["istiods"][0]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "cluster3"),
        "{mesh}"
    );
}

/// `status --wait`: a mesh that is not ready is looked at again (each look connects anew, so a
/// cluster that comes back is seen), and the command still ends, not ready, once the time is up.
#[test]
fn status_wait_looks_again_until_the_time_is_up() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lab = runtime.block_on(async { lab() });
    let looks = |server: &MemoryApiServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /version"))
            .count()
    };
    let before = looks(&lab.servers[0]);
    let out = support::meshctl(&[
        "--kubeconfig",
        lab.kubeconfig.to_str().unwrap(),
        "--workdir",
        lab.dir.path().to_str().unwrap(),
        "status",
        "--wait",
        "3s",
        "--contexts",
        "cluster1,cluster2,cluster3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", support::stderr(&out));
    assert!(
        looks(&lab.servers[0]) - before >= 2,
        "{:?}",
        lab.servers[0].requests()
    );
    assert!(
        support::stdout(&out).contains("\nMESH\n"),
        "{}",
        support::stdout(&out)
    );
}

/// Isolating a remote cuts it off from its own control plane as well (its istiod authenticates the
/// remote's proxies through the secret isolation removes): said first, and done only when asked
/// (`--yes` without a terminal); `status` then says what the isolated remote lacks.
#[test]
fn isolating_a_remote_says_what_it_costs_and_needs_yes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lab = runtime.block_on(async { lab() });
    let kubeconfig = lab.kubeconfig.to_str().unwrap().to_string();
    let workdir = lab.dir.path().to_str().unwrap().to_string();
    let config = lab.dir.path().join("meshctl.yaml");
    std::fs::write(
        &config,
        "provider: existing\nclusters:\n  - {context: cluster1}\n  - {context: cluster2}\n  - {context: cluster3, role: remote, primary: cluster1}\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", &kubeconfig, "--workdir", &workdir];
        all.extend_from_slice(args);
        all.extend(["--config", config.to_str().unwrap()]);
        support::meshctl(&all)
    };

    let out = run(&["isolate", "cluster3"]);
    let said = support::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("cluster `cluster3` is a remote")
            && said.contains("`cluster1`'s istiod")
            && said.contains("new pods never become ready")
            && said.contains("--yes"),
        "{said}"
    );
    assert!(lab.secret(0, "cluster3").is_some(), "nothing changed");
    assert!(lab.state().snapshot().isolated.is_empty());

    let out = run(&["isolate", "cluster3", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    assert!(lab.secret(0, "cluster3").is_none());
    let out = run(&["status", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    let row = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == "cluster3" && c["state"] == "isolated")
        .cloned()
        .unwrap_or_default();
    assert!(
        row["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("certificates lapse within 24 h"),
        "{doc:#}"
    );

    // A primary is isolated without asking: its own istiod keeps serving its proxies.
    let out = run(&["isolate", "cluster2"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
}
