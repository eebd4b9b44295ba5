//! `meshctl upgrade` and `up` as the binary runs them, without clusters: what is refused (exit 2,
//! nothing changed), what `--dry-run` writes, and `up` following a recorded upgrade.

mod support;

use std::path::Path;

use support::{meshctl_in, stderr, stdout};

fn run(home: &Path, args: &[&str]) -> std::process::Output {
    meshctl_in(home, args, &[("MESHCTL_HOME", home.to_str().unwrap())])
}

#[test]
fn nothing_to_finish_or_roll_back_and_releases_outside_the_window_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    // A mesh never built here: refused before istioctl is fetched or a cluster asked.
    let out = run(home.path(), &["upgrade", "--clusters", "2", "--to", "1.31.1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("upgrade: no mesh `mesh1` recorded"),
        "{}",
        stderr(&out)
    );
    // Built (recorded by `up`), without an upgrade under way.
    std::fs::create_dir_all(home.path().join("mesh1")).unwrap();
    std::fs::write(home.path().join("mesh1/state.json"), r#"{"meshID": "mesh1"}"#).unwrap();
    let out = run(home.path(), &["upgrade", "--clusters", "2", "--finish"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no upgrade is under way"),
        "{}",
        stderr(&out)
    );
    let out = run(home.path(), &["upgrade", "--clusters", "2", "--to", "1.29.4"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("1.29.4"), "{}", stderr(&out));
    let out = run(home.path(), &["upgrade", "--clusters", "2"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--to, --finish or --rollback: {}",
        stderr(&out)
    );
    let out = run(
        home.path(),
        &["upgrade", "--clusters", "2", "--to", "1.31.1", "--rollback"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The mesh already runs the pinned release (nothing recorded, no istio.version).
    let plan = home.path().join("plan");
    let out = run(
        home.path(),
        &[
            "upgrade",
            "--clusters",
            "2",
            "--to",
            "1.31.1",
            "--dry-run",
            "--out",
            plan.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already runs Istio 1.31.1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dry_run_writes_each_clusters_revisioned_operators_and_every_command_in_order() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("meshctl.yaml");
    std::fs::write(
        &config,
        "istio: {version: 1.30.3}\nclusters:\n  - {}\n  - {role: remote}\n",
    )
    .unwrap();
    let plan = home.path().join("plan");
    let out = run(
        home.path(),
        &[
            "upgrade",
            "--config",
            config.to_str().unwrap(),
            "--to",
            "1.31.1",
            "--dry-run",
            "--out",
            plan.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let steps = std::fs::read_to_string(plan.join("steps.txt")).unwrap();
    assert_eq!(steps, stdout(&out).split("\nupgrade written to").next().unwrap());
    // Nothing was recorded here, so the release it comes from is the one `up` would install, and
    // the preview says so rather than presenting it as the mesh's.
    assert!(
        stderr(&out).contains("from Istio 1.30.3 (no mesh recorded here: istio.version"),
        "{}",
        stderr(&out)
    );
    // The primary first, then its remote, each: install, tag, gateway; then the finish.
    let order: Vec<usize> = [
        "1. cluster1 (primary)",
        "istioctl tag set default --revision 1-31-1 --overwrite -y --context cluster1",
        "2. cluster2 (remote)",
        "istioctl tag set default --revision 1-31-1 --overwrite -y --context cluster2",
        "istioctl uninstall --revision default",
    ]
    .iter()
    .map(|needle| {
        steps
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in:\n{steps}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{steps}");
    let control_plane =
        std::fs::read_to_string(plan.join("1-cluster1/cluster1/05-istio/control-plane.yaml")).unwrap();
    assert!(control_plane.contains("revision: \"1-31-1\""), "{control_plane}");
    let remote =
        std::fs::read_to_string(plan.join("2-cluster2/cluster2/05-istio/control-plane.yaml")).unwrap();
    assert!(
        remote.contains("profile: remote") && remote.contains("revision: \"1-31-1\""),
        "{remote}"
    );
    let expose =
        std::fs::read_to_string(plan.join("1-cluster1/cluster1/07-expose/expose-istiod.yaml")).unwrap();
    assert!(
        expose.contains("host: istiod-1-31-1.istio-system.svc.cluster.local"),
        "{expose}"
    );
}

/// A state in which `meshctl upgrade` moved mesh1 to 1.31.1 (revision 1-31-1).
fn upgraded_state(home: &Path) {
    let dir = home.join("mesh1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("state.json"),
        r#"{"meshID": "mesh1", "createdKindClusters": [], "kubeconfigEntries": [], "clusters": {},
            "istio": {"version": "1.31.1", "revision": "1-31-1"}}"#,
    )
    .unwrap();
}

#[test]
fn up_after_an_upgrade_installs_the_recorded_revision_and_refuses_to_go_back() {
    let home = tempfile::tempdir().unwrap();
    upgraded_state(home.path());
    let plan = home.path().join("plan");
    let out = run(
        home.path(),
        &[
            "up",
            "--clusters",
            "2",
            "--dry-run",
            "--out",
            plan.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let control_plane = std::fs::read_to_string(plan.join("cluster1/05-istio/control-plane.yaml")).unwrap();
    assert!(control_plane.contains("revision: \"1-31-1\""), "{control_plane}");
    let gateway = std::fs::read_to_string(plan.join("cluster2/06-eastwest/eastwest-gateway.yaml")).unwrap();
    assert!(gateway.contains("revision: \"1-31-1\""), "{gateway}");

    let out = run(
        home.path(),
        &["up", "--clusters", "2", "--istio-version", "1.30.3"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("runs Istio 1.31.1 (revision 1-31-1) since `meshctl upgrade`"),
        "{}",
        stderr(&out)
    );
}

/// `upgrade --dry-run --out` writes again over its own earlier preview, and refuses any other
/// folder that is not empty without pointing at a flag `upgrade` does not have; an `--istioctl`
/// path that is not there is a mistake in what was typed.
#[test]
fn a_preview_replaces_its_own_earlier_one_and_nothing_else() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("meshctl.yaml");
    std::fs::write(&config, "istio: {version: 1.30.3}\nclusters:\n  - {}\n  - {}\n").unwrap();
    let plan = home.path().join("plan");
    let preview = |out: &Path| {
        run(
            home.path(),
            &[
                "upgrade",
                "--config",
                config.to_str().unwrap(),
                "--to",
                "1.31.1",
                "--dry-run",
                "--out",
                out.to_str().unwrap(),
            ],
        )
    };
    for _ in 0..2 {
        let out = preview(&plan);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert!(plan.join("steps.txt").is_file() && plan.join("1-cluster1/plan.json").is_file());
    let theirs = home.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let out = preview(&theirs);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`notes.txt`") && !stderr(&out).contains("--overwrite"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(theirs.join("notes.txt")).unwrap(), "mine");
    // A `steps.txt` of the user's own is no earlier preview either.
    std::fs::remove_file(theirs.join("notes.txt")).unwrap();
    std::fs::write(theirs.join("steps.txt"), "1. back up\n").unwrap();
    let out = preview(&theirs);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(theirs.join("steps.txt")).unwrap(),
        "1. back up\n"
    );

    std::fs::create_dir_all(home.path().join("mesh1")).unwrap();
    std::fs::write(home.path().join("mesh1/state.json"), r#"{"meshID": "mesh1"}"#).unwrap();
    let out = run(
        home.path(),
        &[
            "upgrade",
            "--clusters",
            "2",
            "--to",
            "1.31.1",
            "--istioctl",
            "/nonexistent/istioctl",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--istioctl `/nonexistent/istioctl` does not exist"),
        "{}",
        stderr(&out)
    );
}
