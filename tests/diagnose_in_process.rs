//! `meshctl diagnose` against an in-process API server on loopback: the archive never replaces a
//! file unless asked.

mod support;

use support::memory_apiserver::MemoryApiServer;
use support::{meshctl_in, stderr};

#[test]
fn an_existing_archive_is_never_replaced_unless_forced() {
    let server = MemoryApiServer::new();
    let loopback = server.serve_on_loopback();
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(&kubeconfig, loopback.kubeconfig("east")).unwrap();
    let out = work.path().join("report.tar.gz");
    std::fs::write(&out, "the user's own file").unwrap();
    let home = work.path().join("home");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "diagnose",
            "--contexts",
            "east",
            "--out",
            out.to_str().unwrap(),
            "--timeout",
            "10s",
        ];
        args.extend_from_slice(extra);
        meshctl_in(work.path(), &args, &[("MESHCTL_HOME", home.to_str().unwrap())])
    };
    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("already exists") && stderr(&refused).contains("--force"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "the user's own file");
    assert!(server.requests().is_empty(), "refused before asking any cluster");

    let forced = run(&["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip archive now");
}
