//! `meshctl remote-secret`, alone and as a full mesh, against real kube-apiservers (envtest): the
//! token comes from the real token controller, and least privilege is checked by the real RBAC
//! authorizer through SubjectAccessReviews. The tests share three control planes, one test at a time
//! (each starts from a source without Istio's reader objects).

mod support;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use support::envtest::{ControlPlane, Envtest, block_on};
use support::{meshctl, ok, stderr};

const READER: &str = "istio-reader-service-account";
const ROLE: &str = "istio-reader-clusterrole-istio-system";
const TOKEN: &str = "istio-reader-service-account-istio-remote-secret-token";

fn parse(text: &str) -> Value {
    meshctl::render::parse_documents(text).unwrap().remove(0)
}

/// One test at a time on the shared control planes.
static SERIAL: Mutex<()> = Mutex::new(());

struct Setup {
    _serial: MutexGuard<'static, ()>,
    envtest: &'static Envtest,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Setup {
    fn kc(&self) -> &str {
        self.kubeconfig.to_str().unwrap()
    }
    fn plane(&self, i: usize) -> &'static ControlPlane {
        &self.envtest.planes[i]
    }
}

/// The shared control planes, each brought back to "no Istio here": no istio-system namespace and
/// no reader ClusterRole or binding (deleted, and the namespace awaited until really gone).
fn setup() -> Option<Setup> {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let envtest = Envtest::shared()?;
    block_on(async {
        for plane in &envtest.planes {
            reset(plane).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    envtest.write_kubeconfig(&kubeconfig);
    Some(Setup {
        _serial: serial,
        envtest,
        _dir: dir,
        kubeconfig,
    })
}

async fn reset(plane: &ControlPlane) {
    let client = plane.client().await;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let _ = roles.delete(ROLE, &DeleteParams::default()).await;
    let _ = bindings.delete(ROLE, &DeleteParams::default()).await;
    let namespaces: Api<Namespace> = Api::all(client);
    if namespaces.get_opt("istio-system").await.unwrap().is_some() {
        let _ = namespaces.delete("istio-system", &DeleteParams::default()).await;
        meshctl::kube::wait::until(
            &namespaces,
            meshctl::kube::wait::Condition::absent("istio-system", "istio-system deleted", |_| String::new()),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    }
}

/// Object `name` in `namespace` of `plane`, if it exists.
fn get<K>(plane: &ControlPlane, namespace: &str, name: &str) -> Option<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send,
{
    block_on(async {
        let api: Api<K> = Api::namespaced(plane.client().await, namespace);
        api.get_opt(name).await.unwrap()
    })
}

fn cluster_role(plane: &ControlPlane) -> Option<ClusterRole> {
    block_on(async {
        Api::<ClusterRole>::all(plane.client().await)
            .get_opt(ROLE)
            .await
            .unwrap()
    })
}

/// Istio is installed in `plane`: istio-system exists where remote secrets go.
fn istio_system(plane: &ControlPlane) {
    block_on(async {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}});
        Api::<Namespace>::all(plane.client().await)
            .patch(
                "istio-system",
                &kube::api::PatchParams::apply("test"),
                &kube::api::Patch::Apply(&ns),
            )
            .await
            .unwrap();
    });
}

/// What the real authorizer says the reader may do: `verb` on `resource` of `group`.
async fn reader_may(client: &kube::Client, verb: &str, group: &str, resource: &str) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": format!("system:serviceaccount:istio-system:{READER}"),
            "groups": ["system:serviceaccounts", "system:serviceaccounts:istio-system", "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource}}}))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    api.create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

#[test]
fn printed_secret_matches_istioctl_field_by_field_and_its_kubeconfig_reads_the_source() {
    let Some(t) = setup() else { return };
    let source = t.plane(0);
    let server = source.url();
    let out = ok(meshctl(&[
        "--kubeconfig",
        t.kc(),
        "remote-secret",
        "--context",
        &source.name,
        "--name",
        "cluster1",
        "--server",
        &server,
    ]));
    assert!(
        out.starts_with("# This file is autogenerated, do not edit.\n") && out.ends_with("---\n"),
        "{out}"
    );
    let secret = parse(&out);
    assert_eq!(secret["apiVersion"], "v1");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], "istio-remote-secret-cluster1");
    assert_eq!(secret["metadata"]["namespace"], "istio-system");
    assert_eq!(secret["metadata"]["labels"]["istio/multiCluster"], "true");
    assert_eq!(
        secret["metadata"]["annotations"]["networking.istio.io/cluster"],
        "cluster1"
    );
    assert!(
        secret.get("type").is_none() && secret.get("data").is_none(),
        "istioctl prints stringData only, no type"
    );
    let keys: Vec<_> = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["cluster1"], "one key: the cluster name");
    let inner_text = secret["stringData"]["cluster1"].as_str().unwrap().to_string();
    let inner = parse(&inner_text);
    assert_eq!(inner["current-context"], "cluster1");
    assert_eq!(inner["clusters"][0]["name"], "cluster1");
    assert_eq!(inner["clusters"][0]["cluster"]["server"], server.as_str());
    assert!(
        inner["clusters"][0]["cluster"]
            .get("insecure-skip-tls-verify")
            .is_none()
    );
    assert_eq!(
        inner["contexts"][0]["context"],
        json!({"cluster": "cluster1", "user": "cluster1"})
    );
    // The real token controller's token: a JWT.
    assert!(
        inner["users"][0]["user"]["token"]
            .as_str()
            .unwrap()
            .starts_with("eyJ")
    );

    // Least privilege, created because the source had none.
    assert!(get::<ServiceAccount>(source, "istio-system", READER).is_some());
    let role = cluster_role(source).expect("the reader ClusterRole");
    let verbs: Vec<String> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.verbs)
        .collect();
    assert!(
        !verbs.iter().any(|v| v == "*" || v == "update" || v == "patch"),
        "read-only role: {verbs:?}"
    );
    let token_secret = get::<Secret>(source, "istio-system", TOKEN).unwrap();
    assert_eq!(
        token_secret.type_.as_deref(),
        Some("kubernetes.io/service-account-token")
    );

    block_on(async {
        // The real authorizer: what istiod needs is allowed, every write is denied.
        let admin = source.client().await;
        for (verb, group, resource) in [
            ("list", "", "pods"),
            ("watch", "", "services"),
            ("list", "discovery.k8s.io", "endpointslices"),
            ("watch", "", "namespaces"),
            ("list", "", "nodes"),
            ("get", "", "secrets"),
            ("list", "networking.istio.io", "gateways"),
            ("create", "authorization.k8s.io", "subjectaccessreviews"),
        ] {
            assert!(
                reader_may(&admin, verb, group, resource).await,
                "{verb} {group}/{resource} allowed"
            );
        }
        for (verb, group, resource) in [
            ("create", "", "pods"),
            ("update", "", "services"),
            ("patch", "", "secrets"),
            ("delete", "", "namespaces"),
            ("create", "apps", "deployments"),
            ("update", "discovery.k8s.io", "endpointslices"),
            ("create", "networking.istio.io", "virtualservices"),
            ("escalate", "rbac.authorization.k8s.io", "clusterroles"),
        ] {
            assert!(
                !reader_may(&admin, verb, group, resource).await,
                "{verb} {group}/{resource} denied"
            );
        }
        // And the kubeconfig inside the secret really authenticates: reads work, writes are refused.
        let client = support::envtest::client_from(&inner_text, "cluster1").await;
        let namespaces: Api<Namespace> = Api::all(client);
        let list = namespaces.list(&Default::default()).await.unwrap();
        assert!(
            list.items
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some("istio-system"))
        );
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "evil"}})).unwrap();
        let denied = namespaces.create(&PostParams::default(), &ns).await.unwrap_err();
        assert!(matches!(denied, kube::Error::Api(s) if s.code == 403));
    });
}

#[test]
fn a_loopback_server_from_the_kubeconfig_is_refused_with_the_address_to_use() {
    let Some(t) = setup() else { return };
    // envtest's own kubeconfig points at a loopback address, as kind's does (127.0.0.1:<port>).
    let source = t.plane(0);
    let out = meshctl(&[
        "--kubeconfig",
        t.kc(),
        "remote-secret",
        "--context",
        &source.name,
        "--name",
        "cluster1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("loopback") && text.contains("--server") && text.contains("cluster1-control-plane"),
        "{text}"
    );
    assert!(
        get::<ServiceAccount>(source, "istio-system", READER).is_none(),
        "refused before touching the cluster"
    );
    let bad = meshctl(&[
        "--kubeconfig",
        t.kc(),
        "remote-secret",
        "--context",
        &source.name,
        "--name",
        "Cluster_1",
        "--server",
        "https://10.0.0.1:6443",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("--name: `Cluster_1` is not a DNS-1123 label"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn apply_to_installs_the_secret_in_the_other_cluster_and_converges() {
    let Some(t) = setup() else { return };
    let (a, b) = (t.plane(0), t.plane(1));
    istio_system(b);
    let server = a.url();
    let args = [
        "--kubeconfig",
        t.kc(),
        "remote-secret",
        "--context",
        &a.name,
        "--name",
        "cluster-a",
        "--server",
        &server,
        "--apply-to",
        &b.name,
    ];
    let first = meshctl(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("Secret istio-system/istio-remote-secret-cluster-a created"),
        "{}",
        stderr(&first)
    );
    let secret = get::<Secret>(b, "istio-system", "istio-remote-secret-cluster-a").unwrap();
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["istio/multiCluster"],
        "true"
    );
    assert!(
        secret.data.as_ref().unwrap().contains_key("cluster-a"),
        "stringData landed as data"
    );
    let rv = secret.metadata.resource_version.clone();

    let second = meshctl(&args);
    assert!(stderr(&second).contains("unchanged"), "{}", stderr(&second));
    let again = get::<Secret>(b, "istio-system", "istio-remote-secret-cluster-a").unwrap();
    assert_eq!(
        again.metadata.resource_version, rv,
        "the real server kept the resource version"
    );
    let tokens = block_on(async {
        let api: Api<Secret> = Api::namespaced(a.client().await, "istio-system");
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|s| s.type_.as_deref() == Some("kubernetes.io/service-account-token"))
            .count()
    });
    assert_eq!(tokens, 1, "the token Secret is reused, not created again");
}

#[test]
fn an_existing_token_secret_and_istio_rbac_are_reused_as_they_are() {
    let Some(t) = setup() else { return };
    let src = t.plane(0);
    // What an Istio install already made: its own role (labelled) and its own token Secret.
    block_on(async {
        let client = src.client().await;
        let made_by_istio = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: istio-system}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {READER}, namespace: istio-system}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {ROLE}, labels: {{owner: istio}}}}\nrules: []\n---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/service-account-token\nmetadata: {{name: istio-made-token, namespace: istio-system, annotations: {{kubernetes.io/service-account.name: {READER}}}}}\n"
        );
        meshctl::kube::apply::Applier::new(client.clone())
            .apply_yaml(&made_by_istio, "istio.yaml")
            .await
            .unwrap();
        let role_rv = Api::<ClusterRole>::all(client.clone())
            .get(ROLE)
            .await
            .unwrap()
            .metadata
            .resource_version;
        let creds =
            meshctl::remote_secret::create::reader_credentials(&client, &src.name, Duration::from_secs(30))
                .await
                .unwrap();
        let istio_token = Api::<Secret>::namespaced(client.clone(), "istio-system")
            .get("istio-made-token")
            .await
            .unwrap();
        assert_eq!(
            creds.token.as_bytes(),
            istio_token.data.unwrap()["token"].0.as_slice(),
            "Istio's token is the one used"
        );
        let role = Api::<ClusterRole>::all(client.clone()).get(ROLE).await.unwrap();
        assert_eq!(
            role.metadata.labels.unwrap()["owner"],
            "istio",
            "Istio's role is left alone"
        );
        assert_eq!(role.metadata.resource_version, role_rv, "not even rewritten");
        assert!(
            Api::<Secret>::namespaced(client, "istio-system")
                .get_opt(TOKEN)
                .await
                .unwrap()
                .is_none(),
            "no second token Secret"
        );
    });
}

#[test]
fn three_cluster_full_mesh_yields_exactly_six_secrets_with_the_right_keys() {
    let Some(t) = setup() else { return };
    let planes: Vec<&ControlPlane> = (0..3).map(|i| t.plane(i)).collect();
    for p in &planes {
        istio_system(p);
    }
    let kc = t.kc().to_string();
    // Every cluster's secret into the two others, the way a user wires existing clusters by hand.
    let exchange = || -> Vec<String> {
        let mut lines = Vec::new();
        for (i, c) in planes.iter().enumerate() {
            let others: Vec<&str> = planes
                .iter()
                .filter(|o| o.name != c.name)
                .map(|o| o.name.as_str())
                .collect();
            let (name, server) = (
                format!("cluster{}", i + 1),
                format!("https://172.18.0.{}:6443", i + 2),
            );
            let out = meshctl(&[
                "--kubeconfig",
                &kc,
                "remote-secret",
                "--context",
                &c.name,
                "--name",
                &name,
                "--server",
                &server,
                "--apply-to",
                &others.join(","),
            ]);
            assert!(out.status.success(), "{}", stderr(&out));
            lines.extend(
                stderr(&out)
                    .lines()
                    .filter(|l| l.contains("istio-remote-secret-"))
                    .map(String::from),
            );
        }
        lines
    };
    let done = exchange();
    assert_eq!(done.len(), 6, "{done:?}");
    assert!(done.iter().all(|l| l.ends_with(" created")), "{done:?}");
    let mut total = 0;
    for (i, c) in planes.iter().enumerate() {
        let own = format!("cluster{}", i + 1);
        let remote: Vec<Secret> = block_on(async {
            Api::<Secret>::namespaced(c.client().await, "istio-system")
                .list(&ListParams::default().labels("istio/multiCluster=true"))
                .await
                .unwrap()
                .items
        });
        assert_eq!(remote.len(), 2, "{own} holds the secrets of the two others");
        for s in &remote {
            let key = s.data.as_ref().unwrap().keys().next().unwrap().clone();
            assert_ne!(key, own, "no secret for itself");
            assert_eq!(
                s.metadata.name.as_deref(),
                Some(format!("istio-remote-secret-{key}").as_str())
            );
            assert_eq!(
                s.metadata.annotations.as_ref().unwrap()["networking.istio.io/cluster"],
                key
            );
        }
        total += remote.len();
    }
    assert_eq!(total, 6);
    let again = exchange();
    assert_eq!(again.len(), 6);
    assert!(again.iter().all(|l| l.ends_with(" unchanged")), "{again:?}");
}

#[test]
fn kubeconfig_env_with_several_files_is_merged() {
    let Some(t) = setup() else { return };
    let (a, b) = (t.plane(0), t.plane(1));
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(&fa, a.kubeconfig("first")).unwrap();
    std::fs::write(&fb, b.kubeconfig("second")).unwrap();
    let list = format!("{}:{}", fa.display(), fb.display());
    let server = b.url();
    let out = support::meshctl_in(
        dir.path(),
        &[
            "remote-secret",
            "--context",
            "second",
            "--name",
            "cluster2",
            "--server",
            &server,
        ],
        &[("KUBECONFIG", &list)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(support::stdout(&out).contains("istio-remote-secret-cluster2"));
    assert!(
        get::<ServiceAccount>(b, "istio-system", READER).is_some(),
        "the context of the second file was used"
    );
    assert!(get::<ServiceAccount>(a, "istio-system", READER).is_none());
}

#[test]
fn a_token_that_never_comes_fails_with_the_secret_named() {
    let Some(assets) = support::envtest::assets_or_skip() else {
        return;
    };
    // A cluster whose token controller is down: the reader token Secret is never filled.
    let (ip, range) = support::envtest::addresses(1).remove(0);
    let plane = ControlPlane::start_without(&assets, "src", ip, &range, &["serviceaccount-token-controller"]);
    let err = block_on(async {
        let client = plane.client().await;
        meshctl::remote_secret::create::reader_credentials(&client, "src", Duration::from_secs(3))
            .await
            .unwrap_err()
            .to_string()
    });
    assert!(
        err.contains("cluster `src`") && err.contains(TOKEN) && err.contains("token empty"),
        "{err}"
    );
}

/// A kubeconfig with one context, `name`, whose server is `server` (no credentials needed: the
/// connection never gets that far).
fn kubeconfig_to(dir: &std::path::Path, name: &str, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: {name}\nclusters:\n- name: {name}\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\nusers:\n- name: {name}\n  user: {{token: t}}\ncontexts:\n- name: {name}\n  context: {{cluster: {name}, user: {name}}}\n"),
    )
    .unwrap();
    path
}

/// `meshctl remote-secret` for context `name` of a kubeconfig whose server is `server`.
fn remote_secret_through(dir: &std::path::Path, name: &str, server: &str) -> std::process::Output {
    let kc = kubeconfig_to(dir, name, server);
    meshctl(&[
        "--kubeconfig",
        kc.to_str().unwrap(),
        "remote-secret",
        "--context",
        name,
        "--name",
        "cluster1",
        "--server",
        "https://172.18.0.2:6443",
    ])
}

#[test]
fn a_server_that_never_answers_or_refuses_is_named_with_its_address_and_context() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts TCP connections and never says a word (a hung apiserver or a black-holing proxy).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(4) {
            open.push(stream);
        }
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let started = std::time::Instant::now();
    let out = remote_secret_through(dir.path(), "stuck", &format!("https://{addr}"));
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "context `stuck`: cannot reach the API server at https://{addr}"
        )) && text.contains("no answer within 10s"),
        "{text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "bounded by the probe, not by minutes of silence"
    );
    drop(held);

    // Nothing listens: refused, said in words.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = remote_secret_through(dir.path(), "gone", &format!("https://127.0.0.1:{port}"));
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "cannot reach the API server at https://127.0.0.1:{port}"
        )) && text.contains("connection refused")
            && !text.contains("ServiceError"),
        "{text}"
    );
}
