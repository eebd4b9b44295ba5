//! `meshctl certs gen`: Istio's tools/certs layout and every certificate property of reference
//! section 4, checked in Rust (x509-parser) and with the real `openssl`.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::{meshctl, ok, stderr};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

fn pem_der(path: &Path) -> Vec<u8> {
    let text = fs::read(path).unwrap();
    let (_, pem) = parse_x509_pem(&text).unwrap();
    pem.contents
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (see .ci/run)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Checks the properties shared by root and intermediates.
fn check_common(cert: &X509Certificate<'_>, rsa: bool, days: i64) {
    let sig = cert.signature_algorithm.algorithm.to_id_string();
    if rsa {
        assert_eq!(sig, "1.2.840.113549.1.1.11", "sha256WithRSAEncryption");
        match cert.public_key().parsed().unwrap() {
            x509_parser::public_key::PublicKey::RSA(k) => assert_eq!(k.key_size(), 4096),
            other => panic!("expected RSA, got {other:?}"),
        }
    } else {
        assert_eq!(sig, "1.2.840.10045.4.3.2", "ecdsa-with-SHA256");
    }
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical, "keyUsage is critical");
    assert!(
        ku.value.digital_signature()
            && ku.value.non_repudiation()
            && ku.value.key_encipherment()
            && ku.value.key_cert_sign()
    );
    assert!(!ku.value.crl_sign() && !ku.value.data_encipherment());
    assert!(
        cert.extensions()
            .iter()
            .any(|e| matches!(e.parsed_extension(), ParsedExtension::SubjectKeyIdentifier(_)))
    );
    let serial = cert.raw_serial();
    assert!(serial[0] & 0x80 == 0, "serial is positive");
    let validity = cert.validity();
    let span = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert_eq!(span, days * 86_400, "validity of {days} days");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (validity.not_before.timestamp() - now).abs() < 600,
        "valid from now, not from 1975"
    );
}

#[test]
fn rsa_layout_matches_istio_makefile_property_by_property() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--intermediate-days",
        "730",
    ]));

    // Layout and modes: keys 0600, folders 0700.
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("root-key.pem")), 0o600);
    let mut top: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["cluster1", "cluster2", "root-cert.pem", "root-key.pem"],
        "nothing else, no temporary files"
    );

    let root_der = pem_der(&out.join("root-cert.pem"));
    let (_, root) = parse_x509_certificate(&root_der).unwrap();
    assert_eq!(root.subject().to_string(), "O=Istio, CN=Root CA");
    assert_eq!(root.issuer(), root.subject());
    let bc = root.basic_constraints().unwrap().unwrap();
    assert!(
        bc.critical && bc.value.ca && bc.value.path_len_constraint.is_none(),
        "root: CA:true, no pathlen"
    );
    check_common(&root, true, 3650);

    let root_text = fs::read_to_string(out.join("root-cert.pem")).unwrap();
    let mut serials = vec![root.raw_serial().to_vec()];
    for name in ["cluster1", "cluster2"] {
        let folder = out.join(name);
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&folder.join("ca-cert.pem")), 0o644);
        let der = pem_der(&folder.join("ca-cert.pem"));
        let (_, ca) = parse_x509_certificate(&der).unwrap();
        assert_eq!(
            ca.subject().to_string(),
            format!("O=Istio, CN=Intermediate CA, L={name}")
        );
        assert_eq!(ca.issuer().to_string(), "O=Istio, CN=Root CA");
        let bc = ca.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let san = ca.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            [GeneralName::DNSName("istiod.istio-system.svc")]
        );
        check_common(&ca, true, 730);
        ca.verify_signature(Some(root.public_key())).unwrap();
        let (verified, text) = openssl(&[
            "verify",
            "-CAfile",
            out.join("root-cert.pem").to_str().unwrap(),
            "-untrusted",
            folder.join("cert-chain.pem").to_str().unwrap(),
            folder.join("ca-cert.pem").to_str().unwrap(),
        ]);
        assert!(verified, "openssl rejects the RSA chain of {name}: {text}");
        serials.push(ca.raw_serial().to_vec());

        // cert-chain.pem is the intermediate followed by the root; root-cert.pem is a copy.
        let chain = fs::read_to_string(folder.join("cert-chain.pem")).unwrap();
        let ca_text = fs::read_to_string(folder.join("ca-cert.pem")).unwrap();
        assert_eq!(chain, format!("{ca_text}{root_text}"));
        assert_eq!(
            fs::read_to_string(folder.join("root-cert.pem")).unwrap(),
            root_text
        );
        for file in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"] {
            let text = fs::read_to_string(folder.join(file)).unwrap();
            assert!(
                !text.contains('\r') && text.ends_with("-----\n"),
                "{file}: LF line endings"
            );
        }
    }
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 3, "every serial is distinct");
}

#[test]
fn openssl_verifies_every_chain_and_every_key_matches_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let o = out.to_str().unwrap();
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "3",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ]));
    let pubkey_of_cert = |p: &Path| openssl(&["x509", "-in", p.to_str().unwrap(), "-noout", "-pubkey"]).1;
    let pubkey_of_key = |p: &Path| openssl(&["pkey", "-in", p.to_str().unwrap(), "-pubout"]).1;
    assert_eq!(
        pubkey_of_cert(&out.join("root-cert.pem")),
        pubkey_of_key(&out.join("root-key.pem"))
    );
    for c in ["cluster1", "cluster2", "cluster3"] {
        let f = out.join(c);
        let (verified, text) = openssl(&[
            "verify",
            "-CAfile",
            &format!("{o}/root-cert.pem"),
            "-untrusted",
            f.join("cert-chain.pem").to_str().unwrap(),
            f.join("ca-cert.pem").to_str().unwrap(),
        ]);
        assert!(verified && text.contains(": OK"), "{c}: {text}");
        let cert_key = pubkey_of_cert(&f.join("ca-cert.pem"));
        assert!(cert_key.contains("BEGIN PUBLIC KEY"));
        assert_eq!(
            cert_key,
            pubkey_of_key(&f.join("ca-key.pem")),
            "{c}: key matches certificate"
        );
        let (_, text) = openssl(&[
            "x509",
            "-in",
            f.join("ca-cert.pem").to_str().unwrap(),
            "-noout",
            "-text",
        ]);
        assert!(
            text.contains("CA:TRUE, pathlen:0") && text.contains("DNS:istiod.istio-system.svc"),
            "{text}"
        );
    }
}

#[test]
fn rerun_keeps_the_root_byte_for_byte_and_signs_new_clusters_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("c");
    let o = o.to_str().unwrap();
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "2",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ]));
    let read = |p: &str| fs::read(format!("{o}/{p}")).unwrap();
    let (root, key, c1) = (
        read("root-cert.pem"),
        read("root-key.pem"),
        read("cluster1/ca-key.pem"),
    );

    let out = meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "3",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("root CA") && text.contains("kept"), "{text}");
    assert_eq!(read("root-cert.pem"), root);
    assert_eq!(read("root-key.pem"), key);
    assert_eq!(read("cluster1/ca-key.pem"), c1, "existing intermediates are kept");
    let (ok3, t) = openssl(&[
        "verify",
        "-CAfile",
        &format!("{o}/root-cert.pem"),
        &format!("{o}/cluster3/ca-cert.pem"),
    ]);
    assert!(ok3, "cluster3 is signed by the same root: {t}");

    // --force re-issues the named intermediate under the same root: the root files do not change
    // by a byte, the others' intermediates neither, and every chain still verifies.
    let c2 = read("cluster2/ca-key.pem");
    ok(meshctl(&[
        "certs",
        "gen",
        "--cluster",
        "cluster1",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
        "--force",
    ]));
    assert_eq!(read("root-cert.pem"), root);
    assert_eq!(read("root-key.pem"), key, "--force never replaces the root");
    assert_ne!(read("cluster1/ca-key.pem"), c1, "cluster1 re-issued");
    assert_eq!(read("cluster2/ca-key.pem"), c2, "cluster2 untouched");
    for cluster in ["cluster1", "cluster2", "cluster3"] {
        let (ok, t) = openssl(&[
            "verify",
            "-CAfile",
            &format!("{o}/root-cert.pem"),
            &format!("{o}/{cluster}/ca-cert.pem"),
        ]);
        assert!(ok, "{cluster} still chains to the root: {t}");
    }

    // Replacing the root while other clusters' intermediates hang off it is refused, naming them.
    let out = meshctl(&[
        "certs",
        "gen",
        "--cluster",
        "cluster1",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
        "--replace-root",
    ]);
    assert_eq!(out.status.code(), Some(2), "a command that cannot fit the folder");
    assert!(
        stderr(&out).contains("`cluster2`, `cluster3`") && stderr(&out).contains("certs rotate"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read("root-key.pem"), key, "nothing changed");
    // Naming them all replaces the root and re-issues every intermediate under it.
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "3",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
        "--replace-root",
    ]));
    assert_ne!(read("root-key.pem"), key);
    let (ok3, t) = openssl(&[
        "verify",
        "-CAfile",
        &format!("{o}/root-cert.pem"),
        &format!("{o}/cluster2/ca-cert.pem"),
    ]);
    assert!(ok3, "{t}");
}

#[test]
fn a_half_present_root_is_an_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().to_str().unwrap();
    fs::write(dir.path().join("root-key.pem"), "precious").unwrap();
    let out = meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ]);
    assert_eq!(out.status.code(), Some(2), "a folder that holds half a CA");
    let text = stderr(&out);
    assert!(
        text.contains("root-cert.pem missing") && text.contains("--force"),
        "{text}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("root-key.pem")).unwrap(),
        "precious"
    );
    assert!(!dir.path().join("cluster1").exists());

    // `up --certs-dir` with the same folder: refused before anything, dry run or not.
    let work = tempfile::tempdir().unwrap();
    let plan = work.path().join("plan");
    let out = meshctl(&[
        "up",
        "--clusters",
        "1",
        "--dry-run",
        "--out",
        plan.to_str().unwrap(),
        "--certs-dir",
        o,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--certs-dir: ") && stderr(&out).contains("root-cert.pem missing"),
        "{}",
        stderr(&out)
    );
    assert!(!plan.exists(), "nothing written");
}

#[test]
fn an_intermediate_from_another_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        a.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]));
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        b.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]));
    fs::remove_dir_all(a.join("cluster1")).unwrap();
    fs::rename(b.join("cluster1"), a.join("cluster1")).unwrap();
    let out = meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        a.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not the mesh's root CA"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    let t = target.to_str().unwrap();

    let out = meshctl(&["certs", "gen", "--clusters", "0", "--out", t]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("clusters: `0` is not a valid number of clusters (1 to 16)"),
        "{}",
        stderr(&out)
    );

    let out = meshctl(&[
        "certs",
        "gen",
        "--cluster",
        "ok",
        "--cluster",
        "Bad_Name",
        "--out",
        t,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("clusters[1].name: `Bad_Name` is not a DNS-1123 label"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists(), "invalid input writes nothing");

    // A regular file where a directory must go: unwritable for root as well as for anyone else.
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let inside = file.join("certs");
    let out = meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        inside.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.starts_with("error: certs: cannot generate"), "{text}");
    assert!(text.contains("Caused by"), "{text}");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing else was written"
    );
}

#[test]
fn json_output_lists_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().to_str().unwrap();
    let text = ok(meshctl(&[
        "certs",
        "gen",
        "--cluster",
        "east",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
        "-o",
        "json",
    ]));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["root"], "created");
    assert_eq!(doc["clusters"][0]["name"], "east");
    assert_eq!(doc["clusters"][0]["intermediate"], "created");
}

/// A root CA in Istio's layout under `dir`, valid from `from` to `to` days from now (negative:
/// in the past), as an operator might bring from an older install.
fn write_root(dir: &Path, from: i64, to: i64) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Istio");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Root CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = ::time::OffsetDateTime::now_utc();
    params.not_before = now + ::time::Duration::days(from);
    params.not_after = now + ::time::Duration::days(to);
    let cert = params.self_signed(&key).unwrap();
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("root-cert.pem"), cert.pem()).unwrap();
    fs::write(dir.join("root-key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn an_expired_root_is_refused_and_nothing_is_issued_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    write_root(&certs, -400, -1);
    let root = fs::read(certs.join("root-key.pem")).unwrap();
    let out = meshctl(&[
        "certs",
        "gen",
        "--cluster",
        "cluster1",
        "--out",
        certs.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("root-cert.pem") && stderr(&out).contains("expired on"),
        "{}",
        stderr(&out)
    );
    assert!(
        !certs.join("cluster1").exists(),
        "no intermediate under an expired root"
    );
    assert_eq!(
        fs::read(certs.join("root-key.pem")).unwrap(),
        root,
        "the root is left alone"
    );
}

#[test]
fn a_root_that_ends_first_cuts_the_intermediate_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    write_root(&certs, -10, 20);
    let out = meshctl(&[
        "certs",
        "gen",
        "--cluster",
        "cluster1",
        "--out",
        certs.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
        "--intermediate-days",
        "365",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("root CA expires on")
            && stderr(&out).contains("new intermediates end with the root"),
        "{}",
        stderr(&out)
    );
    let root_der = pem_der(&certs.join("root-cert.pem"));
    let (_, root) = X509Certificate::from_der(&root_der).unwrap();
    let ca_der = pem_der(&certs.join("cluster1/ca-cert.pem"));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(
        ca.validity().not_after.timestamp(),
        root.validity().not_after.timestamp(),
        "the intermediate never outlives its root"
    );
    // openssl agrees the chain verifies today.
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        certs.join("root-cert.pem").to_str().unwrap(),
        certs.join("cluster1/ca-cert.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
}

/// A plain rotation in the middle of a root rotation (step 1 done: every cluster trusts the mesh
/// root and the next root) keeps both roots in the new intermediate's root-cert.pem: with the mesh
/// root alone, the cluster's workloads would stop trusting the next root and step 1 would be undone.
#[test]
fn a_new_intermediate_during_a_root_rotation_keeps_trusting_both_roots() {
    use meshctl::pki::layout::{self, CertsRequest};
    use meshctl::pki::{KeyType, Validity};
    let dir = tempfile::tempdir().unwrap();
    let request = |force: bool| CertsRequest {
        dir: dir.path().join("c"),
        clusters: vec!["cluster1".into(), "cluster2".into()],
        key_type: KeyType::EcdsaP256,
        validity: Validity::default(),
        force,
        replace_root: false,
    };
    layout::ensure(&request(false)).unwrap();
    let (next, _) =
        layout::start_root_transition(&dir.path().join("c"), KeyType::EcdsaP256, Validity::default())
            .unwrap();
    let rotated = layout::ensure(&CertsRequest {
        clusters: vec!["cluster1".into()],
        ..request(true)
    })
    .unwrap();
    let (ca, _) = &rotated.clusters[0];
    let on_disk = fs::read_to_string(dir.path().join("c/cluster1/root-cert.pem")).unwrap();
    assert_eq!(
        on_disk, ca.root_cert_pem,
        "what cacerts gets is what the folder holds"
    );
    assert!(
        meshctl::pki::bundle_contains(&on_disk, &rotated.root_cert_pem),
        "the mesh root"
    );
    assert!(
        meshctl::pki::bundle_contains(&on_disk, &next.cert_pem),
        "and the next root"
    );
    // The new intermediate still chains to the mesh root, checked by openssl against the bundle.
    let (verified, out) = openssl(&[
        "verify",
        "-CAfile",
        dir.path().join("c/cluster1/root-cert.pem").to_str().unwrap(),
        dir.path().join("c/cluster1/ca-cert.pem").to_str().unwrap(),
    ]);
    assert!(verified, "{out}");
}

/// What a `certs gen` killed mid-write leaves (a staging folder with a key, a staged file) is
/// removed by the next run; new staging folders are 0700 from the start.
#[test]
fn leftovers_of_an_interrupted_write_are_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("c");
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        o.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]));
    let staging = o.join(".meshctl-cluster2-Ab12Cd");
    fs::create_dir(&staging).unwrap();
    fs::write(staging.join("ca-key.pem"), "a key half written").unwrap();
    fs::write(o.join(".meshctl-x7Yz9q"), "a staged file").unwrap();
    fs::write(o.join(".keep-me"), "not meshctl's").unwrap();
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "2",
        "--out",
        o.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]));
    let mut names: Vec<String> = fs::read_dir(&o)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, [".keep-me"]);
    assert_eq!(mode(&o.join("cluster2")), 0o700);
}

/// Runs on one CA folder at once (two terminals, a CI job started twice) wait for each other: all
/// succeed, with one root between them (without the folder lock, the loser of the race to write
/// the root failed with "File exists").
#[test]
fn concurrent_runs_on_one_folder_share_one_root() {
    use meshctl::pki::layout::{self, CertsRequest};
    use meshctl::pki::{KeyType, Validity};
    let dir = tempfile::tempdir().unwrap();
    let request = CertsRequest {
        dir: dir.path().join("c"),
        clusters: vec!["cluster1".into(), "cluster2".into()],
        key_type: KeyType::EcdsaP256,
        validity: Validity::default(),
        force: false,
        replace_root: false,
    };
    let roots: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4).map(|_| s.spawn(|| layout::ensure(&request))).collect();
        runs.into_iter()
            .map(|r| r.join().unwrap().expect("every run succeeds").root_cert_pem)
            .collect()
    });
    assert!(roots.iter().all(|r| *r == roots[0]), "one root for all");
    assert_eq!(
        fs::read_to_string(dir.path().join("c/root-cert.pem")).unwrap(),
        roots[0]
    );
}

/// A root that is not valid yet is refused like an expired one: nothing issued under it.
#[test]
fn a_root_not_valid_yet_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    write_root(&certs, 5, 400);
    let out = meshctl(&[
        "certs",
        "gen",
        "--cluster",
        "cluster1",
        "--out",
        certs.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("root-cert.pem") && stderr(&out).contains("is not valid before"),
        "{}",
        stderr(&out)
    );
    assert!(!certs.join("cluster1").exists());
}

/// An intermediate already in the folder that has expired (or is not valid yet) is never kept
/// with a ✓: it is refused, with the command that re-issues it.
#[test]
fn an_intermediate_outside_its_validity_is_refused_with_the_fix() {
    for (from, to, said) in [(-400, -1, "expired on"), (3, 400, "is not valid before")] {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        ok(meshctl(&[
            "certs",
            "gen",
            "--clusters",
            "1",
            "--out",
            certs.to_str().unwrap(),
            "--key-type",
            "ecdsa-p256",
        ]));
        // Re-sign cluster1's intermediate with the same root and key, outside its validity.
        let root = meshctl::pki::RootCa::load(
            &fs::read_to_string(certs.join("root-cert.pem")).unwrap(),
            &fs::read_to_string(certs.join("root-key.pem")).unwrap(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Intermediate CA");
        let now = ::time::OffsetDateTime::now_utc();
        params.not_before = now + ::time::Duration::days(from);
        params.not_after = now + ::time::Duration::days(to);
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            &fs::read_to_string(certs.join("root-cert.pem")).unwrap(),
            rcgen::KeyPair::from_pem(&fs::read_to_string(certs.join("root-key.pem")).unwrap()).unwrap(),
        )
        .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let c1 = certs.join("cluster1");
        fs::write(c1.join("ca-cert.pem"), cert.pem()).unwrap();
        fs::write(c1.join("ca-key.pem"), key.serialize_pem()).unwrap();
        fs::write(
            c1.join("cert-chain.pem"),
            format!("{}{}", cert.pem(), root.cert_pem),
        )
        .unwrap();
        let out = meshctl(&[
            "certs",
            "gen",
            "--clusters",
            "1",
            "--out",
            certs.to_str().unwrap(),
            "--key-type",
            "ecdsa-p256",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(said) && stderr(&out).contains("meshctl certs rotate --cluster cluster1"),
            "{}",
            stderr(&out)
        );
    }
}

/// A private key readable by others is made private again, and the user is told.
#[test]
fn a_key_readable_by_others_is_made_private_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        certs.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]));
    for key in ["root-key.pem", "cluster1/ca-key.pem"] {
        fs::set_permissions(certs.join(key), fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        certs.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = format!("{}{}", support::stdout(&out), stderr(&out));
    for key in ["root-key.pem", "cluster1/ca-key.pem"] {
        assert_eq!(mode(&certs.join(key)), 0o600, "{key}");
        assert!(
            said.contains(key) && said.contains("readable by others"),
            "{said}"
        );
    }
}

/// Key and certificate material meshctl cannot use is named for what it is, not "not a PEM
/// private key" or a DER parser's dump; each cause is printed once.
#[test]
fn unusable_keys_and_certificates_are_named_for_what_they_are() {
    let gen_key = |args: &[&str], path: &Path| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-out", path.to_str().unwrap()]);
        assert!(
            Command::new("openssl")
                .args(&all)
                .output()
                .unwrap()
                .status
                .success(),
            "{all:?}"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.pem");
    gen_key(
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        &short,
    );
    let encrypted = dir.path().join("encrypted.pem");
    gen_key(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:x",
        ],
        &encrypted,
    );
    let certificate = dir.path().join("not-a-key.pem");
    write_root(&dir.path().join("other"), -1, 30);
    fs::copy(dir.path().join("other/root-cert.pem"), &certificate).unwrap();
    for (key, said) in [
        (
            &short,
            "is an RSA key of 1024 bits; RSA keys must have 2048 bits or more",
        ),
        (&encrypted, "is encrypted with a passphrase"),
        (&certificate, "holds a CERTIFICATE, not a private key"),
    ] {
        let certs = dir
            .path()
            .join(format!("certs-{}", key.file_stem().unwrap().to_string_lossy()));
        write_root(&certs, -1, 30);
        fs::copy(key, certs.join("root-key.pem")).unwrap();
        let out = meshctl(&[
            "certs",
            "gen",
            "--clusters",
            "1",
            "--out",
            certs.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(said), "{err}");
        assert_eq!(err.matches(said).count(), 1, "said once: {err}");
    }
    let damaged = dir.path().join("damaged");
    write_root(&damaged, -1, 30);
    fs::write(
        damaged.join("root-cert.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIBAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        damaged.to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("is not a readable X.509 certificate") && !stderr(&out).contains("NomError"),
        "{}",
        stderr(&out)
    );
}

/// The root pair appears whole or not at all: a run stopped between writing the root's key and
/// putting its certificate in place (as Ctrl-C can) left the certificate staged, and the next run
/// finishes the pair instead of refusing a key without its certificate; a staged certificate
/// whose key was never written is dropped and the root made anew.
#[test]
fn a_root_pair_cut_short_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("c");
    let certs_gen = |n: &str| {
        ok(meshctl(&[
            "certs",
            "gen",
            "--clusters",
            n,
            "--out",
            o.to_str().unwrap(),
            "--key-type",
            "ecdsa-p256",
        ]))
    };
    certs_gen("1");
    let cert = o.join("root-cert.pem");
    let root = fs::read(&cert).unwrap();
    let staged = o.join(".meshctl-pending-root-cert.pem");
    fs::rename(&cert, &staged).unwrap();
    certs_gen("2");
    assert_eq!(fs::read(&cert).unwrap(), root, "the same root, finished");
    assert!(!staged.exists());
    let chain = o.join("cluster2/cert-chain.pem");
    let (verified, said) = openssl(&[
        "verify",
        "-CAfile",
        cert.to_str().unwrap(),
        "-partial_chain",
        chain.to_str().unwrap(),
    ]);
    assert!(verified, "{said}");

    // Stopped before the key was written: only the staged certificate is there.
    let other = dir.path().join("d");
    fs::create_dir(&other).unwrap();
    fs::write(other.join(".meshctl-pending-root-cert.pem"), &root).unwrap();
    ok(meshctl(&[
        "certs",
        "gen",
        "--clusters",
        "1",
        "--out",
        other.to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]));
    assert_ne!(fs::read(other.join("root-cert.pem")).unwrap(), root, "a new root");
    assert!(!other.join(".meshctl-pending-root-cert.pem").exists());
    let pubkey_of = |args: &[&str]| {
        let (done, text) = openssl(args);
        assert!(done, "{text}");
        text
    };
    let (new_cert, new_key) = (other.join("root-cert.pem"), other.join("root-key.pem"));
    assert_eq!(
        pubkey_of(&["x509", "-noout", "-pubkey", "-in", new_cert.to_str().unwrap()]),
        pubkey_of(&["pkey", "-pubout", "-in", new_key.to_str().unwrap()]),
        "the new key and certificate are one pair"
    );
}
