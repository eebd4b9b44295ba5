//! Pinned upstream manifests: downloaded once into the user's cache, checked against their sha256,
//! or read from a file the user names.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::atomic_file::{self, PUBLIC};
use crate::tools::{RunOptions, ToolError, ToolRunner};

/// Why a manifest could not be had.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Reading or writing failed.
    #[error("`{}`: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot download {url}: {source}")]
    Download { url: String, source: ToolError },
    /// The content is not the pinned one.
    #[error("{url}: sha256 is {found}, expected {expected}; the download was discarded")]
    Checksum {
        url: String,
        found: String,
        expected: String,
    },
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `$XDG_CACHE_HOME/meshctl`, else `~/.cache/meshctl`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("meshctl"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/meshctl"),
    }
}

/// The manifest at `url`: from `file` when given, else from the cache, else downloaded with curl
/// and checked against `sha256` before it is cached.
pub async fn fetch(
    runner: &dyn ToolRunner,
    url: &str,
    sha256: &str,
    file: Option<&Path>,
    cache: &Path,
) -> Result<String, UpstreamError> {
    if let Some(path) = file {
        return std::fs::read_to_string(path).map_err(|source| UpstreamError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    let name = url.rsplit('/').next().unwrap_or("manifest.yaml");
    let cached = cache.join(format!("{}-{name}", &sha256[..12]));
    if let Ok(bytes) = std::fs::read(&cached)
        && sha256_hex(&bytes) == sha256
    {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    atomic_file::create_dir_all(cache, 0o755).map_err(|source| UpstreamError::Io {
        path: cache.to_path_buf(),
        source,
    })?;
    let tmp = cache.join(format!(".download-{}", std::process::id()));
    let args = ["-fsSL", "--retry", "3", "-o", &tmp.to_string_lossy(), url].map(String::from);
    let downloaded = runner.run("curl", &args, &RunOptions::default()).await;
    let bytes = downloaded
        .map_err(|source| UpstreamError::Download {
            url: url.into(),
            source,
        })
        .and_then(|_| {
            std::fs::read(&tmp).map_err(|source| UpstreamError::Io {
                path: tmp.clone(),
                source,
            })
        });
    let _ = std::fs::remove_file(&tmp);
    let bytes = bytes?;
    let found = sha256_hex(&bytes);
    if found != sha256 {
        return Err(UpstreamError::Checksum {
            url: url.into(),
            found,
            expected: sha256.into(),
        });
    }
    atomic_file::write(&cached, &bytes, PUBLIC).map_err(|source| UpstreamError::Io {
        path: cached.clone(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
