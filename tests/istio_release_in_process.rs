//! An istioctl release fetched once per version: from a release page on loopback that serves what
//! Istio's release page serves (`<version>/istioctl-<version>-<os>-<arch>.tar.gz` and its
//! `.sha256`, "<hex>  <asset>"), downloaded with the real curl, checked, cached executable.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meshctl::istio_release::{self, IstioVersion, ReleaseError};
use meshctl::tools::ProcessRunner;

/// A release page: path → body, and every path asked for.
#[derive(Clone, Default)]
struct ReleasePage {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl ReleasePage {
    /// Serves on loopback until the test's runtime ends; returns the base URL.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let page = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let page = page.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let page = page.clone();
                        async move {
                            let path = request.uri().path().to_string();
                            page.asked.lock().unwrap().push(path.clone());
                            let found = page.files.lock().unwrap().get(&path).cloned();
                            Ok::<_, Infallible>(match found {
                                Some(body) => Response::new(Full::new(Bytes::from(body))),
                                // What GitHub answers for an asset a release does not have.
                                None => Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::from_static(b"Not Found")))
                                    .unwrap(),
                            })
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// Publishes `version`'s istioctl (a script standing in for the binary) with `sha256` as its
    /// published checksum (the archive's own unless given).
    fn publish(&self, version: &str, sha256: Option<&str>) -> Vec<u8> {
        let program = format!("#!/bin/sh\necho 'client version: {version}'\n").into_bytes();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(program.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(&mut header, "istioctl", program.as_slice())
            .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        let archive = gz.finish().unwrap();
        let v: IstioVersion = version.parse().unwrap();
        let asset = istio_release::asset_name(&v).unwrap();
        let sum = sha256
            .map(String::from)
            .unwrap_or_else(|| meshctl::upstream::sha256_hex(&archive));
        let mut files = self.files.lock().unwrap();
        files.insert(format!("/{version}/{asset}"), archive);
        files.insert(
            format!("/{version}/{asset}.sha256"),
            format!("{sum}  {asset}\n").into_bytes(),
        );
        program
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn istioctl_is_downloaded_once_per_version_checked_and_cached_executable() {
    let page = ReleasePage::default();
    let base = page.serve().await;
    let program = page.publish("1.31.1", None);
    let cache = tempfile::tempdir().unwrap();
    let version: IstioVersion = "1.31.1".parse().unwrap();

    let path = istio_release::istioctl(&ProcessRunner, &version, &base, cache.path())
        .await
        .unwrap();
    assert_eq!(path, cache.path().join("istioctl/1.31.1/istioctl"));
    assert_eq!(std::fs::read(&path).unwrap(), program);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        page.asked().len(),
        2,
        "the archive and its sha256: {:?}",
        page.asked()
    );
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["istioctl"], "no partial download left behind");

    // Cached by version: the second ask downloads nothing.
    istio_release::istioctl(&ProcessRunner, &version, &base, cache.path())
        .await
        .unwrap();
    assert_eq!(page.asked().len(), 2);
}

#[tokio::test]
async fn an_archive_that_does_not_match_its_published_sha256_is_discarded() {
    let page = ReleasePage::default();
    let base = page.serve().await;
    page.publish("1.31.1", Some(&"0".repeat(64)));
    let cache = tempfile::tempdir().unwrap();
    let version: IstioVersion = "1.31.1".parse().unwrap();
    let err = istio_release::istioctl(&ProcessRunner, &version, &base, cache.path())
        .await
        .unwrap_err();
    assert!(matches!(err, ReleaseError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("the download was discarded"), "{err}");
    assert!(!cache.path().join("istioctl/1.31.1/istioctl").exists());
}

#[tokio::test]
async fn a_version_the_release_page_does_not_have_is_named_with_its_url() {
    let page = ReleasePage::default();
    let base = page.serve().await;
    let cache = tempfile::tempdir().unwrap();
    let version: IstioVersion = "1.31.9".parse().unwrap();
    let err = istio_release::istioctl(&ProcessRunner, &version, &base, cache.path())
        .await
        .unwrap_err();
    assert!(matches!(err, ReleaseError::Download { .. }), "{err}");
    assert!(err.to_string().contains("/1.31.9/istioctl-1.31.9-"), "{err}");
}
