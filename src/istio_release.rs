//! Choosing an Istio release: the version a mesh runs (`istio.version` in meshctl.yaml, or
//! `--istio-version`), whether it supports the pinned Kubernetes, and its istioctl, downloaded
//! once per version from Istio's release page, checked against the sha256 published beside it and
//! cached by version.
//!
//! Asset names follow Istio's own installer (`release/downloadIstioCtl.sh`):
//! `<base>/<version>/istioctl-<version>-<os>-<arch>.tar.gz`, `os` one of `linux`, `osx`, `arch`
//! one of `amd64`, `arm64`; the release publishes `<asset>.sha256` ("<hex>  <asset>") beside it.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::atomic_file;
pub use crate::istio_version::IstioVersion;
use crate::tools::{RunOptions, ToolError, ToolRunner};
use crate::upstream::sha256_hex;

/// Where releases are downloaded from unless `MESHCTL_ISTIO_RELEASES` names a mirror.
pub const RELEASES_URL: &str = "https://github.com/istio/istio/releases/download";

/// The release asset of istioctl for this machine.
pub fn asset_name(version: &IstioVersion) -> Result<String, String> {
    let os = match std::env::consts::OS {
        "linux" => "linux",
        "macos" => "osx",
        other => return Err(format!("Istio publishes no istioctl for {other}")),
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => return Err(format!("Istio publishes no istioctl for {other}")),
    };
    Ok(format!("istioctl-{version}-{os}-{arch}.tar.gz"))
}

/// The release page: `MESHCTL_ISTIO_RELEASES` (a mirror, or a test's server), else Istio's.
pub fn releases_url() -> String {
    std::env::var("MESHCTL_ISTIO_RELEASES")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| RELEASES_URL.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Why an istioctl release could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot download {url}: {source}")]
    Download { url: String, source: ToolError },
    #[error("{url}: sha256 is {found}, but the release publishes {published}; the download was discarded")]
    Checksum {
        url: String,
        found: String,
        published: String,
    },
    #[error("{url}: {reason}")]
    Archive { url: String, reason: String },
    #[error("`{}`: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Platform(String),
}

/// The istioctl of `version`: from `cache/istioctl/<version>/istioctl` when an earlier run put it
/// there, else downloaded with curl from `base`, checked against the published sha256, and
/// cached (written whole, executable, only after the check).
pub async fn istioctl(
    runner: &dyn ToolRunner,
    version: &IstioVersion,
    base: &str,
    cache: &Path,
) -> Result<PathBuf, ReleaseError> {
    let folder = cache.join("istioctl").join(version.to_string());
    let binary = folder.join("istioctl");
    if binary.is_file() {
        return Ok(binary);
    }
    let asset = asset_name(version).map_err(ReleaseError::Platform)?;
    let url = format!("{base}/{version}/{asset}");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReleaseError::Io { path, source }
    };
    atomic_file::create_dir_all(&folder, 0o755).map_err(io(&folder))?;
    let archive = download(
        runner,
        &url,
        &folder.join(format!(".{asset}.{}", std::process::id())),
    )
    .await?;
    let sums = download(
        runner,
        &format!("{url}.sha256"),
        &folder.join(format!(".{asset}.sha256.{}", std::process::id())),
    )
    .await?;
    let published = String::from_utf8_lossy(&sums)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let found = sha256_hex(&archive);
    if found != published {
        return Err(ReleaseError::Checksum {
            url,
            found,
            published,
        });
    }
    let program = extract_istioctl(&archive).map_err(|reason| ReleaseError::Archive {
        url: url.clone(),
        reason,
    })?;
    atomic_file::write(&binary, &program, 0o755).map_err(io(&binary))?;
    Ok(binary)
}

async fn download(runner: &dyn ToolRunner, url: &str, to: &Path) -> Result<Vec<u8>, ReleaseError> {
    let args = ["-fsSL", "--retry", "3", "-o", &to.to_string_lossy(), url].map(String::from);
    let fetched = runner.run("curl", &args, &RunOptions::default()).await;
    let bytes = fetched
        .map_err(|source| ReleaseError::Download {
            url: url.into(),
            source,
        })
        .and_then(|_| {
            std::fs::read(to).map_err(|source| ReleaseError::Io {
                path: to.to_path_buf(),
                source,
            })
        });
    let _ = std::fs::remove_file(to);
    bytes
}

/// The `istioctl` file of a release archive (a gzipped tar holding it at its top).
fn extract_istioctl(archive: &[u8]) -> Result<Vec<u8>, String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let entries = tar.entries().map_err(|e| format!("not a .tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a .tar.gz: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path.file_name().is_some_and(|n| n == "istioctl") && entry.header().entry_type().is_file() {
            let mut program = Vec::new();
            entry.read_to_end(&mut program).map_err(|e| e.to_string())?;
            return Ok(program);
        }
    }
    Err("the archive holds no istioctl".into())
}
