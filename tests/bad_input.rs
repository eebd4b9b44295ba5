//! Bad input as a new user types it: each refused with the object named, the exit code
//! docs/exit-codes.md promises (2 for a mistake in what was typed), and nothing written.

mod support;

use support::memory_apiserver::MemoryApiServer;
use support::{meshctl_in, stderr, stdout};

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let mut all: Vec<(&str, &str)> = vec![("MESHCTL_HOME", home.to_str().unwrap())];
    all.extend_from_slice(env);
    let out = meshctl_in(work.path(), args, &all);
    drop(work);
    out
}

/// `dir/kc.yaml`: one context, cluster and anonymous user per `(context, server)`, in order.
/// The servers the tests name are loopback ports nothing listens on: a check that asked a cluster
/// would say so.
fn kubeconfig_of(dir: &std::path::Path, contexts: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = String::from("apiVersion: v1\nkind: Config\nusers:\n- {name: u, user: {}}\nclusters:\n");
    for (name, server) in contexts {
        text.push_str(&format!("- {{name: {name}, cluster: {{server: '{server}'}}}}\n"));
    }
    text.push_str("contexts:\n");
    for (name, _) in contexts {
        text.push_str(&format!(
            "- {{name: {name}, context: {{cluster: {name}, user: u}}}}\n"
        ));
    }
    let path = dir.join("kc.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_empty_meshctl_home_is_unset_and_a_file_there_is_named() {
    let empty = run(
        &["up", "--clusters", "1", "--dry-run", "--out", "plan"],
        &[("MESHCTL_HOME", "")],
    );
    assert!(empty.status.success(), "{}", stderr(&empty));
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = run(
        &["status", "--clusters", "1"],
        &[("MESHCTL_HOME", file.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("MESHCTL_HOME") && stderr(&out).contains("is not a folder"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_negative_cluster_count_is_named_as_such() {
    let out = run(&["up", "--clusters", "-1", "--dry-run", "--out", "plan"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`-1` is not a valid number of clusters (1 to 16)"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("unexpected argument"), "{}", stderr(&out));
}

#[test]
fn yaml_mistakes_are_explained_without_the_parsers_advice_to_programmers() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, said) in [
        (
            "dup.yaml",
            "clusters: [{}]\nclusters: [{}]\n",
            "each key may appear once",
        ),
        (
            "two.yaml",
            "clusters: [{}]\n---\nclusters: [{}]\n",
            "more than one YAML document",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = run(
            &[
                "up",
                "--config",
                path.to_str().unwrap(),
                "--dry-run",
                "--out",
                "plan",
            ],
            &[],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(said) && err.contains(name), "{err}");
        for advice in ["DuplicateKeyPolicy", "from_str_multiple", "<input>", ": error: "] {
            assert!(!err.contains(advice), "{advice} in {err}");
        }
    }
}

#[test]
fn an_unusable_kubeconfig_is_a_mistake_in_the_command_not_a_cluster_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = run(
        &[
            "status",
            "--contexts",
            "a",
            "--kubeconfig",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nope.yaml") && stderr(&out).contains("no such file"),
        "{}",
        stderr(&out)
    );
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "clusters: [\n").unwrap();
    let out = run(
        &[
            "verify",
            "--contexts",
            "a",
            "--kubeconfig",
            broken.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("broken.yaml") && stderr(&out).contains("is not a usable kubeconfig"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_file_in_kubeconfig_is_skipped_as_kubectl_skips_it() {
    let server = MemoryApiServer::new();
    let loopback = server.serve_on_loopback();
    let dir = tempfile::tempdir().unwrap();
    let present = dir.path().join("present.yaml");
    std::fs::write(&present, loopback.kubeconfig("east")).unwrap();
    let list = format!(
        "{}:{}",
        dir.path().join("missing.yaml").display(),
        present.display()
    );
    let out = run(&["status", "--contexts", "east"], &[("KUBECONFIG", &list)]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !all.contains("missing.yaml") && !all.contains("unreachable"),
        "{all}"
    );
    assert!(stdout(&out).contains("cluster1"), "{all}");
}

#[test]
fn a_load_balancer_subnet_too_small_for_the_clusters_is_a_usage_error() {
    let out = run(
        &[
            "up",
            "--clusters",
            "16",
            "--lb-subnet",
            "172.18.255.0/30",
            "--dry-run",
            "--out",
            "plan",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--lb-subnet 172.18.255.0/30"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_remote_secret_server_that_is_not_https_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
    )
    .unwrap();
    let out = run(
        &[
            "remote-secret",
            "--context",
            "a",
            "--name",
            "east",
            "--server",
            "http://10.0.0.1:6443",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--server") && stderr(&out).contains("https://"),
        "{}",
        stderr(&out)
    );
}

/// Address plans that collide are refused before anything is planned, each range named: a pod
/// subnet on the docker network (where nodes and MetalLB's pools are), `--lb-subnet` inside a pod
/// subnet, a pod subnet smaller than a node's /24, a service range kube-apiserver refuses, and a
/// `--lb-subnet` that is the whole internet.
#[test]
fn address_plans_that_collide_are_refused_with_each_range_named() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, lb, said) in [
        (
            "clusters:\n  - {podSubnet: 172.18.0.0/16}\n  - {}\n",
            "172.18.0.0/16",
            "clusters[0].podSubnet: `172.18.0.0/16` overlaps the docker network",
        ),
        (
            "clusters:\n  - {}\n  - {}\n",
            "10.20.0.0/16",
            "clusters[1].podSubnet: `10.20.0.0/16` overlaps the docker network 10.20.0.0/16",
        ),
        (
            "clusters:\n  - {podSubnet: 10.30.0.0/30}\n",
            "172.18.0.0/16",
            "is smaller than one node's /24",
        ),
        (
            "clusters:\n  - {serviceSubnet: 10.96.0.0/30}\n",
            "172.18.0.0/16",
            "must be a /12 to /28 range",
        ),
        ("clusters:\n  - {}\n", "0.0.0.0/0", "spans every IPv4 address"),
    ] {
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = run(
            &[
                "up",
                "--config",
                path.to_str().unwrap(),
                "--lb-subnet",
                lb,
                "--dry-run",
                "--out",
                "plan",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{yaml}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{yaml}: {}", stderr(&out));
    }
}

/// An `apiServer` other clusters could not use is refused with the reason.
#[test]
fn an_api_server_address_nobody_could_dial_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (server, said) in [
        ("https://", "has no host"),
        ("https://admin:pw@10.0.0.1:6443", "carries credentials"),
        ("https://10.0.0.1:99999", "not 1 to 65535"),
        ("https://0.0.0.0:6443", "names no machine"),
        ("https://10.0.0 .1", "space"),
    ] {
        let path = dir.path().join("mesh.yaml");
        std::fs::write(
            &path,
            format!("provider: existing\nclusters:\n  - {{context: east, apiServer: '{server}'}}\n"),
        )
        .unwrap();
        let out = run(
            &[
                "up",
                "--config",
                path.to_str().unwrap(),
                "--dry-run",
                "--out",
                "plan",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{server}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("apiServer") && stderr(&out).contains(said),
            "{server}: {}",
            stderr(&out)
        );
    }
}

/// Values that cannot work are refused, each named: an image reference with a line break, an
/// exportTo list mixing `*` or `~` with others (Istio refuses those), a phase asked for by name
/// that has nothing to do in this mesh, a MetalLB manifest that is a folder or missing.
#[test]
fn values_that_cannot_work_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            "clusters:\n  - {nodeImage: \"kindest/node:v1.36.0\\nbad\"}\n".into(),
            vec![],
            "clusters[0].nodeImage",
        ),
        (
            "clusters: [{}, {}]\nmeshConfig:\n  defaultVirtualServiceExportTo: ['~', '*']\n".into(),
            vec![],
            "each stand alone",
        ),
        (
            "clusters: [{}, {}]\nmeshConfig:\n  defaultDestinationRuleExportTo: ['.', '.']\n".into(),
            vec![],
            "is listed twice",
        ),
        (
            "clusters: [{}, {}]\n".into(),
            vec!["--only".into(), "routes".into()],
            "--only routes: nothing to do",
        ),
        (
            "clusters: [{}, {}]\n".into(),
            vec!["--metallb-manifest".into(), dir.path().display().to_string()],
            "is a directory",
        ),
        (
            "clusters: [{}, {}]\n".into(),
            vec![
                "--metallb-manifest".into(),
                dir.path().join("none.yaml").display().to_string(),
            ],
            "does not exist",
        ),
    ];
    for (yaml, extra, said) in cases {
        std::fs::write(&mesh, &yaml).unwrap();
        let mut args = vec![
            "up",
            "--config",
            mesh.to_str().unwrap(),
            "--dry-run",
            "--out",
            "plan",
        ];
        args.extend(extra.iter().map(String::as_str));
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{yaml} {extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{yaml} {extra:?}: {}", stderr(&out));
    }
}

/// `certs rotate` asks every cluster before it mints anything: when none answers, the CA folder
/// is as it was (no new intermediate that no cluster holds), each cluster is named, and nothing
/// says workloads are moving to a new intermediate.
#[test]
fn a_rotation_whose_clusters_do_not_answer_changes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_of(
        dir.path(),
        &[("a", "http://127.0.0.1:1"), ("b", "http://127.0.0.1:2")],
    );
    let certs = dir.path().join("ca");
    let gen_out = run(
        &[
            "certs",
            "gen",
            "--out",
            certs.to_str().unwrap(),
            "--cluster",
            "cluster1",
            "--cluster",
            "cluster2",
        ],
        &[],
    );
    assert!(gen_out.status.success(), "{}", stderr(&gen_out));
    let intermediate = certs.join("cluster1/ca-cert.pem");
    let before = std::fs::read(&intermediate).unwrap();
    let out = run(
        &[
            "certs",
            "rotate",
            "--contexts",
            "a,b",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--certs-dir",
            certs.to_str().unwrap(),
            "--timeout",
            "5s",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("2 of 2 cluster(s) did not answer; nothing was changed")
            && said.contains("cluster cluster1 (context `a`)")
            && said.contains("cluster cluster2 (context `b`)"),
        "{said}"
    );
    assert!(!said.contains("new intermediate"), "{said}");
    assert_eq!(
        std::fs::read(&intermediate).unwrap(),
        before,
        "the intermediate on disk is kept"
    );
}

/// `remote-secret --apply-to` is checked before the source cluster is asked (it makes the reader
/// account and token there): a target that is the source itself, a target named twice, and a
/// context the kubeconfig does not have are mistakes in what was typed (exit 2), each named.
/// The kubeconfig's servers are closed loopback ports: a check that asked a cluster would say so.
#[test]
fn remote_secret_targets_are_checked_before_any_cluster_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_of(
        dir.path(),
        &[
            ("a", "https://127.0.0.1:1"),
            ("same-as-a", "https://127.0.0.1:1"),
            ("b", "https://127.0.0.1:2"),
        ],
    );
    for (targets, said) in [
        (
            "a",
            "--apply-to `a` reaches the cluster the secret gives access to (--context `a`",
        ),
        (
            "b,same-as-a",
            "--apply-to `same-as-a` reaches the cluster the secret gives access to",
        ),
        ("b,b", "--apply-to names `b` twice"),
        (
            "b,nope",
            "--apply-to: context `nope`: no such context in the kubeconfig (known: a, same-as-a, b)",
        ),
    ] {
        let out = run(
            &[
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "remote-secret",
                "--context",
                "a",
                "--name",
                "cluster1",
                "--server",
                "https://172.18.0.3:6443",
                "--apply-to",
                targets,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{targets}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{targets}: {}", stderr(&out));
    }
}

/// A context of existing clusters that the kubeconfig does not have is the same mistake for every
/// command that asks the clusters: exit 2, the cluster and the contexts there are named, before
/// any cluster is asked (the one context there is a closed loopback port).
#[test]
fn an_unknown_context_is_a_usage_error_for_every_command_that_asks_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_of(dir.path(), &[("a", "https://127.0.0.1:1")]);
    let kc = kubeconfig.to_str().unwrap();
    for command in [
        &["up"][..],
        &["status"][..],
        &["verify"][..],
        &["certs", "status"][..],
        &["certs", "rotate"][..],
        &["upgrade", "--to", "1.31.1"][..],
    ] {
        let out = run(
            &[&["--kubeconfig", kc][..], command, &["--contexts", "a,nope"]].concat(),
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{command:?}: {}", stderr(&out));
        assert!(
            stderr(&out)
                .contains("cluster `cluster2`: context `nope`: no such context in the kubeconfig (known: a)"),
            "{command:?}: {}",
            stderr(&out)
        );
    }
    // Every such cluster at once, not the first alone.
    let out = run(
        &["--kubeconfig", kc, "status", "--contexts", "nope1,a,nope2"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cluster `cluster1`: context `nope1`")
            && stderr(&out).contains("cluster `cluster3`: context `nope2`"),
        "{}",
        stderr(&out)
    );
}

/// `verify --junit FILE` with a cluster that does not answer still writes the file CI asked for,
/// with one failed test case saying why.
#[test]
fn verify_writes_its_junit_file_even_when_a_cluster_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_of(dir.path(), &[("gone", "http://127.0.0.1:1")]);
    let junit = dir.path().join("verify.xml");
    let out = run(
        &[
            "verify",
            "--contexts",
            "gone",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--timeout",
            "5s",
        ],
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file is written");
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("verify could not run") && xml.contains("gone"),
        "{xml}"
    );
}

/// `-o json` prints one JSON object per line, as its help says: `status` and `doctor` too.
#[test]
fn json_output_is_one_object_per_line() {
    let server = MemoryApiServer::new();
    let loopback = server.serve_on_loopback();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    std::fs::write(&kubeconfig, loopback.kubeconfig("east")).unwrap();
    for args in [
        vec![
            "status",
            "--contexts",
            "east",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "-o",
            "json",
        ],
        vec![
            "doctor",
            "--contexts",
            "east",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "-o",
            "json",
        ],
    ] {
        let out = run(&args, &[]);
        let text = stdout(&out);
        assert!(!text.trim().is_empty(), "{args:?}: {}", stderr(&out));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{args:?}: a line that is not one JSON object ({e}): {line}"));
        }
    }
}

/// `down` after `up --config lab.yaml` (mesh `lab`) without naming it: not a silent success that
/// leaves `lab` running, but the meshes recorded here and how to name one; `down --config
/// lab.yaml` names it by the file, without needing `--uninstall`.
#[test]
fn down_names_the_mesh_that_is_there_when_asked_for_another() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join("lab")).unwrap();
    std::fs::write(home.join("lab/state.json"), "{\"meshId\": \"lab\"}\n").unwrap();
    let env = [("MESHCTL_HOME", home.to_str().unwrap())];
    let out = meshctl_in(work.path(), &["down"], &env);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no mesh `mesh1`")
            && stderr(&out).contains("`lab`")
            && stderr(&out).contains("--mesh-id lab"),
        "{}",
        stderr(&out)
    );
    let config = work.path().join("lab.yaml");
    std::fs::write(&config, "meshID: lab\nclusters: [{}]\n").unwrap();
    let out = meshctl_in(
        work.path(),
        &["down", "--config", config.to_str().unwrap(), "--purge"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !home.join("lab/state.json").exists(),
        "mesh `lab` is the one taken down"
    );
}

/// A mistyped `--mesh-id` on clusters another recorded mesh was built on is refused before
/// anything is recorded or asked: by the contexts recorded, and (state older than that) by the
/// kind clusters the mesh created. The recorded mesh itself is not refused.
#[test]
fn a_new_mesh_id_on_clusters_of_a_recorded_mesh_is_refused_as_a_likely_typo() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "").unwrap();
    let env = [("MESHCTL_HOME", home.to_str().unwrap()), ("PATH", "/nonexistent")];
    let record = |state: &str| {
        std::fs::create_dir_all(home.join("mesh1")).unwrap();
        std::fs::write(home.join("mesh1/state.json"), state).unwrap();
    };
    let up = |kubeconfig: &std::path::Path, mesh_id: &str| {
        let out = meshctl_in(
            work.path(),
            &[
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "up",
                "--clusters",
                "2",
                "--mesh-id",
                mesh_id,
            ],
            &env,
        );
        (out.status.code(), stderr(&out))
    };
    for recorded in [
        r#"{"meshID": "mesh1", "clusters": {"cluster1": {"context": "cluster1"}}}"#,
        r#"{"meshID": "mesh1", "createdKindClusters": ["cluster2"]}"#,
    ] {
        record(recorded);
        let (code, said) = up(&kubeconfig, "mesh-1");
        assert_eq!(code, Some(2), "{said}");
        assert!(
            said.contains("mesh `mesh-1` is not recorded")
                && said.contains("is in `mesh1`")
                && said.contains("--mesh-id mesh1"),
            "{said}"
        );
        assert!(
            !home.join("mesh-1").exists(),
            "nothing recorded for the typo: {said}"
        );
    }
    // A context of that name naming another server than the one recorded is another cluster.
    record(
        r#"{"meshID": "mesh1", "clusters": {"cluster1": {"context": "cluster1", "server": "https://10.9.9.9:6443"}}}"#,
    );
    let elsewhere = work.path().join("elsewhere");
    std::fs::write(
        &elsewhere,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://10.0.0.1:6443'}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: cluster1, context: {cluster: c, user: u}}]\n",
    )
    .unwrap();
    let (_, said) = up(&elsewhere, "mesh-1");
    assert!(!said.contains("belong to another mesh"), "{said}");
    // The recorded mesh goes on to its own work (here: no docker on PATH), not to this refusal.
    let (_, said) = up(&kubeconfig, "mesh1");
    assert!(!said.contains("belong to another mesh"), "{said}");
}

/// A kubeconfig context whose server answers, but wrongly, is named by what was wrong, not called
/// unreachable: plain HTTP behind an https:// address, a web page instead of the API, a CA
/// certificate presented as the server's own.
#[test]
fn servers_that_answer_wrongly_are_named_by_what_they_did() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = |server: &str, ca: Option<&str>| {
        let cluster = match ca {
            Some(pem) => {
                use base64::Engine as _;
                format!(
                    "{{server: '{server}', certificate-authority-data: {}}}",
                    base64::engine::general_purpose::STANDARD.encode(pem)
                )
            }
            None => format!("{{server: '{server}', insecure-skip-tls-verify: true}}"),
        };
        let path = dir
            .path()
            .join(format!("kc-{}.yaml", server.len() + ca.map_or(0, str::len)));
        std::fs::write(
            &path,
            format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {cluster}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{}}\n"),
        )
        .unwrap();
        path
    };
    let status = |path: &std::path::Path| {
        let out = run(
            &[
                "status",
                "--contexts",
                "c",
                "--kubeconfig",
                path.to_str().unwrap(),
            ],
            &[],
        );
        format!("{}{}", stdout(&out), stderr(&out))
    };

    // Plain HTTP (the in-process API server) where the kubeconfig says https://.
    let server = MemoryApiServer::new();
    let plain = server.serve_on_loopback();
    let said = status(&kubeconfig(&format!("https://{}", plain.addr), None));
    assert!(said.contains("does not speak TLS"), "{said}");

    // A web page where the API should be.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "<html><body>It works!</body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let said = status(&kubeconfig(&format!("http://{web}"), None));
    assert!(
        said.contains("not as a Kubernetes API server") && !said.contains("expected value"),
        "{said}"
    );
}

/// A context name clash is found in every file KUBECONFIG merges, not only in the one meshctl
/// writes to: a `cluster1` context in the second file would be shadowed by meshctl's.
#[test]
fn a_context_clash_in_any_file_kubeconfig_lists_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.yaml");
    let second = dir.path().join("second.yaml");
    std::fs::write(
        &second,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: theirs\n  cluster: {server: 'https://10.0.0.1:6443'}\ncontexts:\n- name: cluster1\n  context: {cluster: theirs, user: theirs}\nusers:\n- name: theirs\n  user: {}\n",
    )
    .unwrap();
    let list = format!("{}:{}", first.display(), second.display());
    let out = run(&["up", "--clusters", "1"], &[("KUBECONFIG", &list)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("second.yaml") && stderr(&out).contains("context named `cluster1`"),
        "{}",
        stderr(&out)
    );
    assert!(!first.exists(), "nothing written");
}

/// doctor says each missing tool's install hint once, on its own line.
#[test]
fn doctor_says_each_hint_once() {
    let empty = tempfile::tempdir().unwrap();
    let out = run(
        &["doctor", "--clusters", "1"],
        &[("PATH", empty.path().to_str().unwrap())],
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    for tool in ["kind", "istioctl"] {
        assert!(
            text.contains(&format!("`{tool}` was not found on PATH")),
            "{text}"
        );
        assert_eq!(
            text.matches(&format!("hint: install {tool}")).count(),
            1,
            "{text}"
        );
    }
}

/// `-o yaml` where kubectl offers it: the document commands print their document as YAML.
#[test]
fn document_commands_print_yaml() {
    let server = MemoryApiServer::new();
    let loopback = server.serve_on_loopback();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    std::fs::write(&kubeconfig, loopback.kubeconfig("east")).unwrap();
    for (args, key) in [
        (
            vec![
                "status",
                "--contexts",
                "east",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "-o",
                "yaml",
            ],
            "ready",
        ),
        (vec!["version", "-o", "yaml"], "kindNodeImage"),
    ] {
        let out = run(&args, &[]);
        let doc: serde_json::Value = serde_saphyr::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("{args:?}: not YAML ({e}): {}", stdout(&out)));
        assert!(doc.get(key).is_some(), "{args:?}: {doc}");
    }
}

/// `--context CTX`, as kubectl spells it, names the one cluster where a command takes contexts.
#[test]
fn context_names_one_cluster_as_in_kubectl() {
    let server = MemoryApiServer::new();
    let loopback = server.serve_on_loopback();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    std::fs::write(&kubeconfig, loopback.kubeconfig("east")).unwrap();
    let out = run(
        &[
            "status",
            "--context",
            "east",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    let doc: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert!(
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["cluster"] == "cluster1"),
        "{doc}"
    );
    assert!(!server.requests().is_empty(), "the context named was asked");
}

/// An Istio release outside its published Kubernetes window, or one whose window meshctl does not
/// know, is a usage error with the reason, on the command line and in meshctl.yaml alike.
#[test]
fn an_istio_release_that_does_not_support_the_pinned_kubernetes_is_refused() {
    let out = run(
        &[
            "up",
            "--clusters",
            "2",
            "--istio-version",
            "1.25.0",
            "--dry-run",
            "--out",
            "plan",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("knows the Kubernetes support of Istio 1.30, 1.31 only"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &[
            "up",
            "--clusters",
            "2",
            "--istio-version",
            "v1.31.1",
            "--dry-run",
            "--out",
            "plan",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not an Istio release such as"),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("meshctl.yaml");
    std::fs::write(&config, "istio: {version: 1.29.3}\nclusters:\n  - {}\n  - {}\n").unwrap();
    let out = run(&["status", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("istio.version: `1.29.3`"),
        "{}",
        stderr(&out)
    );
}

/// A chosen release on a mesh whose istiod runs another one: `up` says so and changes nothing
/// (moving a running mesh is an upgrade's job, not a re-install's).
#[test]
fn a_chosen_release_that_differs_from_the_running_istiod_is_refused_before_any_change() {
    let server = MemoryApiServer::new();
    server.put(serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istiod", "namespace": "istio-system", "labels": {"app": "istiod"}},
        "spec": {"selector": {"matchLabels": {"app": "istiod"}}, "template": {"metadata": {"labels": {"app": "istiod"}},
            "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.30.5"}]}}}}));
    let loopback = server.serve_on_loopback();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    std::fs::write(&kubeconfig, loopback.kubeconfig("east")).unwrap();
    let before = server.requests().iter().filter(|r| !r.starts_with("GET")).count();
    let out = run(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "up",
            "--contexts",
            "east",
            "--only",
            "istio",
            "--istio-version",
            "1.31.1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cluster `cluster1` runs Istio 1.30.5")
            && stderr(&out).contains("chosen release is 1.31.1"),
        "{}",
        stderr(&out)
    );
    let writes = server.requests().iter().filter(|r| !r.starts_with("GET")).count();
    assert_eq!(writes, before, "nothing changed: {:?}", server.requests());
}

/// `--istioctl` of one patch and `--istio-version` of another are refused as typed, even on a
/// finished mesh where no istioctl would run: the two cannot both be what the mesh runs.
#[test]
fn an_istioctl_of_another_release_than_the_chosen_one_is_refused_on_a_finished_mesh() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = MemoryApiServer::new();
    server.put(serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istiod", "namespace": "istio-system", "labels": {"app": "istiod"}},
        "spec": {"selector": {"matchLabels": {"app": "istiod"}}, "template": {"metadata": {"labels": {"app": "istiod"}},
            "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.31.2"}]}}}}));
    let loopback = server.serve_on_loopback();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    std::fs::write(&kubeconfig, loopback.kubeconfig("east")).unwrap();
    let istioctl = dir.path().join("istioctl");
    std::fs::write(&istioctl, "#!/bin/sh\necho 'client version: 1.31.1'\n").unwrap();
    std::fs::set_permissions(&istioctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let writes = || server.requests().iter().filter(|r| !r.starts_with("GET")).count();
    let before = writes();
    let up = |extra: &[&str]| {
        let (kc, program) = (kubeconfig.to_str().unwrap(), istioctl.to_str().unwrap());
        let args = [
            "--kubeconfig",
            kc,
            "up",
            "--contexts",
            "east",
            "--only",
            "istio",
            "--istioctl",
            program,
        ];
        run(&[&args[..], extra].concat(), &[])
    };
    let out = up(&["--istio-version", "1.31.2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is istioctl 1.31.1, not the chosen Istio 1.31.2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(writes(), before, "nothing changed: {:?}", server.requests());

    // No release chosen: the istioctl named must be of the pinned minor, the same mistake (exit
    // 2), said before any phase, so no diagnose is offered for clusters nothing was done to.
    std::fs::write(&istioctl, "#!/bin/sh\necho 'client version: 1.30.2'\n").unwrap();
    let out = up(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("istioctl 1.30.2 does not match the pinned Istio") && !said.contains("diagnose"),
        "{said}"
    );
    assert_eq!(writes(), before, "nothing changed: {:?}", server.requests());
}

/// `down --uninstall` removes a mesh with the release it was installed with (istio.version): its
/// istioctl is the chosen one, fetched like `up` fetches it; when it cannot be had, nothing is
/// removed and the release's address is named.
#[test]
fn uninstall_uses_the_istioctl_of_the_chosen_release() {
    let server = MemoryApiServer::new();
    let loopback = server.serve_on_loopback();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    std::fs::write(&kubeconfig, loopback.kubeconfig("east")).unwrap();
    let config = dir.path().join("meshctl.yaml");
    std::fs::write(
        &config,
        "provider: existing\nistio: {version: 1.31.1}\nclusters:\n  - {context: east}\n",
    )
    .unwrap();
    // The mesh as `up` recorded it (down --uninstall removes only a recorded mesh).
    let workdir = dir.path().join("state");
    std::fs::create_dir_all(workdir.join("mesh1")).unwrap();
    std::fs::write(workdir.join("mesh1/state.json"), "{\"meshID\": \"mesh1\"}").unwrap();
    // Nothing listens on the discard port of loopback: the download fails at once.
    let releases = "http://127.0.0.1:9";
    let cache = dir.path().join("cache");
    let out = run(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--workdir",
            workdir.to_str().unwrap(),
            "down",
            "--uninstall",
            "--config",
            config.to_str().unwrap(),
            "--yes",
        ],
        &[
            ("MESHCTL_ISTIO_RELEASES", releases),
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("istioctl 1.31.1")
            && stderr(&out).contains("http://127.0.0.1:9/1.31.1/istioctl-1.31.1-"),
        "{}",
        stderr(&out)
    );
    let deletes = server
        .requests()
        .iter()
        .filter(|r| r.starts_with("DELETE"))
        .count();
    assert_eq!(deletes, 0, "{:?}", server.requests());
}

/// Every numeric and duration flag of every command, found in the command line's own
/// definition: a negative value reaches its parser and is named as a bad value of that flag (exit
/// 2), never taken for an unknown flag ("unexpected argument '-1'").
#[test]
fn a_negative_value_of_any_numeric_or_duration_flag_is_named_as_a_bad_value() {
    use clap::CommandFactory as _;
    let root = meshctl::cli::Cli::command();
    let mut tried = Vec::new();
    let mut walk = vec![(vec!["meshctl".to_string()], root.clone())];
    while let Some((path, cmd)) = walk.pop() {
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk.push((p, sub.clone()));
        }
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let names = arg.get_value_names().unwrap_or_default();
            let negative = match names.first().map(|n| n.as_str()) {
                Some("DURATION") => "-5s",
                Some("N") | Some("DAYS") => "-3",
                _ => continue,
            };
            let flag = format!("--{long}");
            let mut argv = path.clone();
            argv.extend([flag.clone(), negative.to_string()]);
            let err = root
                .clone()
                .try_get_matches_from(&argv)
                .expect_err("a negative value is refused");
            let text = err.to_string();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{argv:?}: {text}"
            );
            assert!(
                text.contains(&format!("'{negative}' for '{flag}")),
                "{argv:?}: {text}"
            );
            tried.push(argv.join(" "));
        }
    }
    // The flags the class is known by: each was found and tried.
    for known in [
        "meshctl up --timeout -5s",
        "meshctl status --wait -1s",
        "meshctl certs status --warn-days -3",
        "meshctl certs gen --clusters -3",
        "meshctl verify --calls -3",
    ] {
        let (stem, _) = known.rsplit_once(' ').unwrap();
        assert!(
            tried.iter().any(|t| t.starts_with(stem)),
            "{known} not tried: {tried:#?}"
        );
    }
}

/// A `--config` that is not a small regular file is refused at once, whatever command reads it:
/// `/dev/zero` never ends, a FIFO blocks until someone writes to it, a huge file is no topology.
#[test]
fn a_topology_that_is_no_small_regular_file_is_refused_at_once() {
    let work = tempfile::tempdir().unwrap();
    let fifo = work.path().join("meshctl.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let huge = work.path().join("huge.yaml");
    std::fs::write(&huge, "#".repeat(2 << 20)).unwrap();
    for (file, said) in [
        ("/dev/zero", "is not a regular file"),
        (fifo.to_str().unwrap(), "is not a regular file"),
        (work.path().to_str().unwrap(), "is a folder"),
        (huge.to_str().unwrap(), "is larger than 1024 KiB"),
    ] {
        for command in [&["up", "--dry-run", "--out", "plan"][..], &["status"][..]] {
            let out = run(&[command, &["--config", file]].concat(), &[]);
            assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(&format!("`{file}`")) && stderr(&out).contains(said),
                "{file}: {}",
                stderr(&out)
            );
        }
    }
}

/// Values that name nothing that could work are refused by name (exit 2) before anything runs: a
/// load-balancer subnet in a block no docker network can be, a namespace Kubernetes would refuse.
#[test]
fn values_no_cluster_could_use_are_refused_by_name() {
    for (subnet, said) in [
        ("0.0.0.0/8", "\"this network\""),
        ("127.0.0.0/16", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/8", "multicast"),
        ("240.0.0.0/8", "reserved"),
    ] {
        let out = run(
            &[
                "up",
                "--clusters",
                "2",
                "--lb-subnet",
                subnet,
                "--dry-run",
                "--out",
                "plan",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{subnet}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("`{subnet}` is {said}")),
            "{subnet}: {}",
            stderr(&out)
        );
    }
    for bad in ["Bad NS", "../x", ""] {
        let out = run(
            &[
                "upgrade",
                "--to",
                "1.31.1",
                "--restart-namespaces",
                bad,
                "--dry-run",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("namespace `{bad}`")),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
}

/// The state folder holds the CA's private keys: without `HOME` (or `MESHCTL_HOME`, `--workdir`)
/// there is none, and a command that needs it says so (exit 2) instead of writing keys into the
/// current folder; a relative `XDG_STATE_HOME` is ignored, as the XDG specification says. The
/// commands that keep no state still run.
#[test]
fn no_state_folder_is_ever_guessed_to_be_the_current_folder() {
    let work = tempfile::tempdir().unwrap();
    let meshctl = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"));
        cmd.args(args)
            .current_dir(work.path())
            .env("NO_COLOR", "1")
            .env_remove("HOME")
            .env_remove("MESHCTL_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("KUBECONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = meshctl(&["up", "--clusters", "1", "--dry-run", "--out", "plan"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("HOME is not set") && stderr(&out).contains("MESHCTL_HOME"),
        "{}",
        stderr(&out)
    );
    assert!(
        std::fs::read_dir(work.path()).unwrap().next().is_none(),
        "nothing written here"
    );
    assert!(meshctl(&["version"], &[]).status.success());

    let home = work.path().join("home");
    let out = meshctl(
        &[
            "up",
            "--clusters",
            "1",
            "--dry-run",
            "--out",
            "plan",
            "--key-type",
            "ecdsa-p256",
        ],
        &[
            ("HOME", home.to_str().unwrap()),
            ("XDG_STATE_HOME", "relative/state"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!work.path().join("relative").exists());
    assert!(
        home.join(".local/state/meshctl/mesh1/certs/root-key.pem")
            .is_file()
    );
}

/// Where a command writes a file is checked before any cluster is asked, and a refusal names the
/// user's path: `diagnose --out` and `verify --junit` onto `-`, a folder, a link to nothing, a
/// folder that does not exist (exit 2).
#[test]
fn output_paths_are_checked_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let dangling = dir.path().join("dangling.tar.gz");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let missing = dir.path().join("missing/report.xml");
    for (flag, command) in [("--out", "diagnose"), ("--junit", "verify")] {
        for (path, said) in [
            ("-".to_string(), "not stdout".to_string()),
            (dangling.display().to_string(), "is a link to nothing".to_string()),
            (
                missing.display().to_string(),
                format!(
                    "the folder `{}` does not exist",
                    dir.path().join("missing").display()
                ),
            ),
        ] {
            let out = run(&[command, "--clusters", "1", flag, &path], &[]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} {flag} {path}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains(&format!("{flag} `{path}`"))
                    || stderr(&out).contains(&format!("{flag} `-`")),
                "{command} {flag} {path}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains(&said),
                "{command} {flag} {path}: {}",
                stderr(&out)
            );
        }
    }
}

/// `verify --junit` replaces only a report it wrote before (CI runs it again with the same path):
/// any other file there is the user's, refused before any cluster is asked and left as it was.
#[test]
fn a_junit_path_holding_another_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("results.xml");
    std::fs::write(&theirs, "<testsuite name=\"unit\"/>\n").unwrap();
    let path = theirs.display().to_string();
    let out = run(&["verify", "--clusters", "1", "--junit", &path], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "--junit `{path}` exists and is not a report meshctl wrote"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&theirs).unwrap(),
        "<testsuite name=\"unit\"/>\n"
    );
}

/// The files `up` is told to use are checked for `--dry-run` as for the real run: a plan made
/// with an istioctl path that is not there would not be the run it shows.
#[test]
fn a_dry_run_checks_the_istioctl_it_is_told_to_use() {
    let out = run(
        &[
            "up",
            "--clusters",
            "1",
            "--dry-run",
            "--out",
            "plan",
            "--istioctl",
            "/nonexistent/istioctl",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--istioctl `/nonexistent/istioctl` does not exist"),
        "{}",
        stderr(&out)
    );
}

/// A CA folder named on the command line that is not there is a mistake in what was typed (exit
/// 2), not a mesh without a CA (which `certs status` reports with exit 0 or 3).
#[test]
fn a_certs_dir_that_is_not_there_is_named() {
    let up = ["up", "--dry-run", "--out", "plan"];
    for command in [
        &["certs", "status"][..],
        &["certs", "rotate"][..],
        &up[..1],
        &up[..],
    ] {
        let out = run(
            &[command, &["--clusters", "1", "--certs-dir", "/nonexistent/ca"]].concat(),
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{command:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--certs-dir `/nonexistent/ca` does not exist"),
            "{command:?}: {}",
            stderr(&out)
        );
    }
}

/// `status --wait` says on each look what is still missing, waits out its whole bound (never
/// stopping early because the next pause would pass it), and ends at it; a context the
/// kubeconfig does not have is a mistake in the command (exit 2), said at once, not a cluster
/// that does not answer for the whole wait.
#[test]
fn status_wait_keeps_its_bound_and_says_what_it_waits_for() {
    let started = std::time::Instant::now();
    let out = run(&["status", "--clusters", "1", "--wait", "4s"], &[]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("status: not ready after 0s (cluster1 clusters")
            && stderr(&out).contains("looking again"),
        "{}",
        stderr(&out)
    );
    assert!(
        took >= std::time::Duration::from_secs(4),
        "stopped early: {took:?}"
    );
    assert!(took < std::time::Duration::from_secs(12), "overran: {took:?}");

    let work = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_of(work.path(), &[("east", "https://127.0.0.1:9")]);
    let started = std::time::Instant::now();
    let out = run(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "status",
            "--contexts",
            "east,wset",
            "--wait",
            "30s",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cluster `cluster2`") && stderr(&out).contains("`wset`"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "said at once"
    );
}

/// A `docker` that answers with something other than a daemon version is no daemon: `doctor`
/// says what it printed, never "✓ docker".
#[test]
fn doctor_does_not_take_any_output_for_a_docker_daemon() {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = tempfile::tempdir().unwrap();
    let docker = bin.path().join("docker");
    std::fs::write(
        &docker,
        "#!/bin/sh\necho 'Segmentation fault (core dumped) lol'\n",
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(&["doctor"], &[("PATH", &path)]);
    let text = support::stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains("✗ docker")
            && text.contains("printed no daemon version")
            && text.contains("Segmentation fault"),
        "{text}"
    );
}

/// SIGINT sent to meshctl alone (not to its process group, as a supervisor or `kill -INT` sends
/// it) stops the tool it is running too: exit 130, and the tool is not left running on its own.
#[test]
fn an_interrupt_sent_to_meshctl_alone_stops_the_tool_it_runs() {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = tempfile::tempdir().unwrap();
    let started = bin.path().join("docker.pid");
    let docker = bin.path().join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\nsleep 60 &\necho $$ $! > {}.tmp\nmv {0}.tmp {0}\nexec sleep 60\n",
            started.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = tempfile::tempdir().unwrap();
    let meshctl = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("doctor")
        .env("MESHCTL_HOME", home.path())
        .env("PATH", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The tool has started once it wrote its pid (bounded: doctor starts it at once).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (tool, its_child): (u32, u32) = loop {
        if let Ok(text) = std::fs::read_to_string(&started) {
            let mut pids = text.split_whitespace().map(|p| p.parse().unwrap());
            break (pids.next().unwrap(), pids.next().unwrap());
        }
        assert!(std::time::Instant::now() < deadline, "doctor never ran docker");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let sent = std::process::Command::new("kill")
        .args(["-INT", &meshctl.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = meshctl.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted: stopped"), "{}", stderr(&out));
    // Gone, or a zombie waiting for whoever inherited it: either way no longer running; and what
    // the tool started itself went with it. (The kill was sent before meshctl ended; the kernel
    // ends the processes a moment later, so they are given a bounded moment.)
    let ended = |pid: u32| {
        let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        state.is_empty() || state.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for pid in [tool, its_child] {
        while !ended(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} is still running after meshctl stopped"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// `down` interrupted at the terminal while `kind delete` runs lets it finish (a delete killed
/// half-way can leave kind's kubeconfig lock behind) and says so: the tool runs in a process group
/// of its own, so the terminal's signal does not kill it behind meshctl's back. The cluster is
/// deleted and forgotten as usual.
#[test]
fn an_interrupted_down_lets_the_deletion_under_way_finish() {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt as _;
    let work = tempfile::tempdir().unwrap();
    let (started, go, done) = (
        work.path().join("started"),
        work.path().join("go"),
        work.path().join("done"),
    );
    let kind = work.path().join("kind");
    std::fs::write(
        &kind,
        format!(
            "#!/bin/sh\ncase \"$1 $2\" in\n  'get clusters') echo c1 ;;\n  'delete cluster')\n    touch {}\n    n=0; while [ ! -f {} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done\n    echo \"$KUBECONFIG\" > {} ;;\nesac\n",
            started.display(),
            go.display(),
            done.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&kind, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join("mesh1")).unwrap();
    std::fs::write(
        home.join("mesh1/state.json"),
        r#"{"meshID": "mesh1", "createdKindClusters": ["c1"]}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        work.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    use std::os::unix::process::CommandExt as _;
    // In a group of its own, so the signal below reaches meshctl and everything it started, as a
    // Ctrl-C at a terminal reaches the whole foreground group.
    let mut meshctl = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .process_group(0)
        .arg("down")
        .env("MESHCTL_HOME", &home)
        .env("PATH", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !started.exists() {
        assert!(std::time::Instant::now() < deadline, "down never ran kind delete");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", "--", &format!("-{}", meshctl.id())])
            .status()
            .unwrap()
            .success()
    );
    // The deletion is let go on only once meshctl said it will wait for it.
    let mut said = String::new();
    let mut lines = std::io::BufReader::new(meshctl.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("letting it finish") {
            break;
        }
    }
    assert!(said.contains("letting it finish"), "{said}");
    std::fs::write(&go, "").unwrap();
    said.extend(lines.map(|l| l.unwrap() + "\n"));
    let status = meshctl.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{said}");
    // kind deleted it with the kubeconfig it was created with, not the user's.
    assert_eq!(
        std::fs::read_to_string(&done).unwrap().trim(),
        home.join("mesh1/kind-kubeconfig").to_str().unwrap(),
        "{said}"
    );
    let state = std::fs::read_to_string(home.join("mesh1/state.json")).unwrap();
    assert!(!state.contains("c1"), "{state}");
}

/// `status` reports on a topology `up` accepted (here: pod ranges inside the network kind's nodes
/// would be on, which `up --skip metallb` builds), rather than judging it again as a mistake.
#[test]
fn status_reports_on_a_topology_it_does_not_judge_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, "clusters:\n  - {podSubnet: 172.16.0.0/12}\n  - {}\n").unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "").unwrap();
    let out = run(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "status",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        support::stdout(&out),
        stderr(&out)
    );
    assert!(
        support::stdout(&out).contains("cluster1"),
        "{}",
        support::stdout(&out)
    );
}

/// What Istio 1.31's ambient multicluster does not support is refused before anything is touched,
/// with exit 2 and the reason: a remote, a verify check that needs waypoints, an upgrade.
#[test]
fn what_ambient_multicluster_does_not_support_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote.yaml");
    std::fs::write(
        &remote,
        "dataplane: ambient\nclusters:\n  - {}\n  - {role: remote}\n",
    )
    .unwrap();
    let out = run(
        &[
            "up",
            "--config",
            remote.to_str().unwrap(),
            "--dry-run",
            "--out",
            "plan",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("clusters[1].role: `remote` is not supported with `dataplane: ambient`"),
        "{}",
        stderr(&out)
    );

    let out = run(
        &[
            "verify",
            "--clusters",
            "2",
            "--dataplane",
            "ambient",
            "--locality",
            "distribute",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--locality distribute is not checked in an ambient mesh")
            && stderr(&out).contains("waypoint"),
        "{}",
        stderr(&out)
    );

    let out = run(
        &[
            "upgrade",
            "--clusters",
            "2",
            "--dataplane",
            "ambient",
            "--to",
            "1.31.2",
            "--dry-run",
            "--out",
            "up",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("runs the ambient data plane") && stderr(&out).contains("ztunnel"),
        "{}",
        stderr(&out)
    );

    // The plan of an ambient mesh is written as any other.
    let out = run(
        &[
            "up",
            "--clusters",
            "2",
            "--dataplane",
            "ambient",
            "--dry-run",
            "--out",
            "plan",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("gateway-api standard-install v1.6.0"),
        "{}",
        stdout(&out)
    );
}

/// A topology's mistakes are said once each, with the value that was given: no empty backticks,
/// no value named twice, the field that was set (not the cluster's name), and the rule that was
/// broken where the fix the rule suggests is already there.
#[test]
fn topology_mistakes_name_the_value_given_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("meshctl.yaml");
    for (yaml, said, unsaid) in [
        ("{}\n", "clusters is required: one entry per cluster", "`0`"),
        (
            "istio: {version: banana}\nclusters:\n  - {}\n",
            "istio.version: `banana` is not an Istio release",
            "`banana` `banana`",
        ),
        (
            "istio: {version: 1.99.0}\nclusters:\n  - {}\n",
            "istio.version: `1.99.0` is not supported: meshctl knows",
            "Istio 1.99.0:",
        ),
        (
            "provider: existing\nclusters:\n  - {name: a, podSubnet: 10.9.0.0/16}\n",
            "clusters[0].podSubnet: `10.9.0.0/16` applies to `provider: kind` only",
            "`a` only",
        ),
        (
            "clusters:\n  - {name: ''}\n",
            "clusters[0].name: (empty) is not a DNS-1123 label",
            "``",
        ),
        (
            "clusters:\n  - {}\n  - {role: remote}\n  - {role: external}\n",
            "no `role: remote` cluster has it as its `primary`",
            "add a `role: remote` cluster",
        ),
    ] {
        std::fs::write(&config, yaml).unwrap();
        let out = run(
            &[
                "up",
                "--config",
                config.to_str().unwrap(),
                "--dry-run",
                "--out",
                "plan",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{yaml}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(said) && !stderr(&out).contains(unsaid),
            "{yaml}: {}",
            stderr(&out)
        );
    }
    let out = run(
        &["certs", "gen", "--cluster", "a", "--cluster", "a", "--out", "ca"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("clusters[1].name: `a` is used by another cluster")
            && !stderr(&out).contains("context"),
        "certs gen has no contexts: {}",
        stderr(&out)
    );
}
