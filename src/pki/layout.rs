//! Istio's `tools/certs` layout on disk, and bringing a directory to the wanted state.
//!
//! ```text
//! DIR/root-cert.pem  DIR/root-key.pem
//! DIR/<cluster>/{ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem}
//! ```
//! An existing root is reused (adding a cluster later never changes it) and never overwritten
//! without `replace_root`, which also re-issues every intermediate so none is left orphaned; an
//! existing intermediate is kept, after checking it chains to that root, unless `force` re-issues
//! it under the same root. All
//! keys that are needed, the root's included, are generated concurrently; only signing waits for
//! the root. Everything is generated and checked in memory before the first file is written.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use std::os::unix::fs::PermissionsExt;

use super::{IntermediateCa, KeyType, PkiError, RootCa, Validity, generate_key, normalize_pem};
use crate::atomic_file::{self, PRIVATE, PRIVATE_DIR, PUBLIC};

/// File names of the layout.
pub const ROOT_CERT: &str = "root-cert.pem";
pub const ROOT_KEY: &str = "root-key.pem";
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
/// Per-cluster chain: intermediate then root.
pub const CERT_CHAIN: &str = "cert-chain.pem";

#[derive(Debug, Clone)]
pub struct CertsRequest {
    /// The directory of the layout.
    pub dir: PathBuf,
    /// Clusters that need an intermediate.
    pub clusters: Vec<String>,
    /// Key type for newly generated keys.
    pub key_type: KeyType,
    /// Validity of new certificates.
    pub validity: Validity,
    /// Re-issue the named intermediates even when they exist, under the existing root.
    pub force: bool,
    /// Replace the root as well (every intermediate in the directory must then be named, so none
    /// is left signed by a root that is gone).
    pub replace_root: bool,
}

/// What happened to one CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// Did not exist; generated.
    Created,
    /// Existed and was kept as it is.
    Reused,
    /// Existed and was replaced (`--force`).
    Replaced,
}

/// The result: the CA material for every requested cluster and what was done.
#[derive(Debug)]
pub struct CertsOutcome {
    pub dir: PathBuf,
    /// What happened to the root.
    pub root: Disposition,
    /// The root certificate PEM.
    pub root_cert_pem: String,
    /// Per cluster, in request order.
    pub clusters: Vec<(IntermediateCa, Disposition)>,
    /// What the user should know (e.g. a root that expires within the intermediates' validity).
    pub warnings: Vec<String>,
}

impl CertsOutcome {
    /// The intermediates in request order, and what is worth a word about them.
    pub fn into_cas(self) -> (Vec<IntermediateCa>, Vec<String>) {
        (
            self.clusters.into_iter().map(|(ca, _)| ca).collect(),
            self.warnings,
        )
    }
}

/// Why the directory could not be brought to the wanted state. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Reading or writing a file failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Existing material is inconsistent or does not match.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Replacing the root would leave these clusters' intermediates signed by a root that is gone.
    #[error("replacing the root would break the chain of {}: their intermediates are signed by the current root and were not named; name every cluster (or rotate only intermediates with `meshctl certs rotate`)", clusters.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))]
    WouldOrphan {
        /// Cluster folders in the directory that were not named.
        clusters: Vec<String>,
    },
    /// The directory holds part of a CA; meshctl will not guess.
    #[error("`{}` is incomplete: {missing} missing (remove it, or regenerate it: --force for a cluster's folder, --replace-root for the root)", path.display())]
    Partial {
        /// The file or directory.
        path: PathBuf,
        /// Which files are missing.
        missing: String,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CertsError {
    let path = path.to_path_buf();
    move |source| CertsError::Io { action, path, source }
}

fn read_opt(path: &Path) -> Result<Option<String>, CertsError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Reads the four files of `<dir>/<cluster>/`; `None` when the folder holds none of them.
fn read_intermediate(dir: &Path, cluster: &str) -> Result<Option<IntermediateCa>, CertsError> {
    let folder = dir.join(cluster);
    let names = [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT];
    let mut found: [Option<String>; 4] = Default::default();
    for (slot, name) in found.iter_mut().zip(names) {
        *slot = read_opt(&folder.join(name))?;
    }
    let missing: Vec<_> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if missing.len() == names.len() {
        return Ok(None);
    }
    if !missing.is_empty() {
        return Err(CertsError::Partial {
            path: folder,
            missing: missing.join(", "),
        });
    }
    let [ca_cert_pem, ca_key_pem, cert_chain_pem, root_cert_pem] = found.map(Option::unwrap_or_default);
    Ok(Some(IntermediateCa {
        cluster: cluster.to_string(),
        ca_cert_pem,
        ca_key_pem,
        cert_chain_pem,
        root_cert_pem,
    }))
}

/// Folder of the next root during a root rotation.
pub const NEXT_ROOT_DIR: &str = "next-root";

/// Step 1 of a root rotation (Istio's multi-root approach): a next root in `DIR/next-root/`
/// (generated once, never overwritten; a re-run reuses it) and, for every cluster of the layout, a
/// `root-cert.pem` that is the trust bundle of both roots. Intermediates, keys and chains do not
/// change: nothing is signed by the next root yet, so this step cannot break any chain. Returns
/// every cluster's CA with the bundle, ready for `cacerts`.
pub fn start_root_transition(
    dir: &Path,
    key_type: KeyType,
    validity: Validity,
) -> Result<(RootCa, Vec<IntermediateCa>), CertsError> {
    let root = load_root(dir)?.ok_or_else(|| CertsError::Partial {
        path: dir.to_path_buf(),
        missing: format!("the root CA ({ROOT_CERT}, {ROOT_KEY})"),
    })?;
    let _locked = lock(dir)?;
    let next_dir = dir.join(NEXT_ROOT_DIR);
    let next = match load_root(&next_dir)? {
        Some(next) => next,
        None => {
            let next = RootCa::generate(generate_key(key_type)?, validity)?;
            atomic_file::create_dir_all(&next_dir, PRIVATE_DIR)
                .map_err(io_err("create directory", &next_dir))?;
            let key_path = next_dir.join(ROOT_KEY);
            atomic_file::write_new(&key_path, next.key_pem.as_bytes(), PRIVATE)
                .map_err(io_err("write", &key_path))?;
            let cert_path = next_dir.join(ROOT_CERT);
            atomic_file::write_new(&cert_path, next.cert_pem.as_bytes(), PUBLIC)
                .map_err(io_err("write", &cert_path))?;
            next
        }
    };
    let bundle = format!(
        "{}{}",
        normalize_pem(&root.cert_pem),
        normalize_pem(&next.cert_pem)
    );
    let mut out = Vec::new();
    for cluster in clusters_in(dir) {
        let Some(mut ca) = read_intermediate(dir, &cluster)? else {
            continue;
        };
        ca.check_against(&root.cert_pem)?;
        ca.root_cert_pem = bundle.clone();
        let path = dir.join(&cluster).join(ROOT_CERT);
        atomic_file::write(&path, bundle.as_bytes(), PUBLIC).map_err(io_err("write", &path))?;
        out.push(ca);
    }
    Ok((next, out))
}

/// Names of the cluster folders in `dir` (those holding a `ca-cert.pem`).
pub fn clusters_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join(CA_CERT).exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Reads the root CA in `dir` without changing anything; `None` when there is none.
pub fn load_root(dir: &Path) -> Result<Option<RootCa>, CertsError> {
    let cert = read_opt(&dir.join(ROOT_CERT))?;
    let key = read_opt(&dir.join(ROOT_KEY))?;
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(RootCa::load(&cert, &key)?)),
        (cert, _) => Err(CertsError::Partial {
            path: dir.to_path_buf(),
            missing: if cert.is_none() { ROOT_CERT } else { ROOT_KEY }.to_string(),
        }),
    }
}

/// The intermediate CA of every cluster, read without changing anything; `None` when the root or
/// any cluster's folder is not there yet (so a read-only command never generates keys).
pub fn load_existing(dir: &Path, clusters: &[String]) -> Result<Option<Vec<IntermediateCa>>, CertsError> {
    if load_root(dir)?.is_none() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(clusters.len());
    for cluster in clusters {
        match read_intermediate(dir, cluster)? {
            Some(ca) => out.push(ca),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Removes the layout from `dir`: the root's two files, each cluster folder's four files, and the
/// folders that became empty. Files meshctl did not write stay where they are.
pub fn remove(dir: &Path) -> io::Result<()> {
    let gone = |r: io::Result<()>| match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // Half-written leftovers of interrupted runs (keys among them) go too.
    atomic_file::remove_interrupted_writes(dir)?;
    for entry in entries {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            // Cluster folders, and `next-root/` of a root rotation.
            atomic_file::remove_interrupted_writes(&path)?;
            for file in [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, ROOT_KEY] {
                gone(fs::remove_file(path.join(file)))?;
            }
            let _ = fs::remove_dir(&path);
        }
    }
    gone(fs::remove_file(dir.join(ROOT_CERT)))?;
    gone(fs::remove_file(dir.join(ROOT_KEY)))?;
    let _ = fs::remove_dir(dir);
    Ok(())
}

/// Brings `request.dir` to the wanted state and returns the CA material of every requested cluster.
pub fn ensure(request: &CertsRequest) -> Result<CertsOutcome, CertsError> {
    let dir = &request.dir;
    if dir.exists() && !dir.is_dir() {
        return Err(io_err("use as a certificate directory", dir)(io::Error::other(
            "it is not a directory",
        )));
    }
    let _locked = lock(dir)?;
    // A root pair an interrupted run left half-written is finished first, then what else it left
    // staged (keys among it) goes: under the lock, nothing staged here belongs to a run still going.
    finish_interrupted_root(dir)?;
    atomic_file::remove_interrupted_writes(dir).map_err(io_err("clean up interrupted writes in", dir))?;
    let existing_root = if request.replace_root {
        None
    } else {
        load_root(dir)?
    };
    let root_existed = dir.join(ROOT_CERT).exists() || dir.join(ROOT_KEY).exists();
    if request.replace_root && root_existed {
        refuse_orphans(request)?;
    }
    let kept = intermediates_to_keep(request, existing_root.as_ref())?;

    // Every key that is needed, generated at once; RSA-4096 generation dominates the run time.
    let need_root = existing_root.is_none();
    let wanted = usize::from(need_root) + kept.iter().filter(|k| k.is_none()).count();
    let mut keys = generate_keys(request.key_type, wanted)?.into_iter();
    let root = match existing_root {
        Some(root) => root,
        None => RootCa::generate(
            keys.next().expect("a key was generated for the root"),
            request.validity,
        )?,
    };
    let mut warnings: Vec<String> = root
        .expiry_warning(request.validity.intermediate_days)
        .into_iter()
        .collect();
    let key_files = std::iter::once(dir.join(ROOT_KEY))
        .chain(kept.iter().flatten().map(|ca| dir.join(&ca.cluster).join(CA_KEY)));
    warnings.extend(make_all_private(key_files)?);
    let clusters = sign_missing(request, &root, kept, keys)?;
    // Write: the root first (key before certificate, so a certificate never exists without its key),
    // then each cluster folder as a whole.
    atomic_file::create_dir_all(dir, PRIVATE_DIR).map_err(io_err("create directory", dir))?;
    let root_disposition = match (need_root, root_existed) {
        (false, _) => Disposition::Reused,
        (true, existed) => {
            write_root(dir, &root, request.replace_root)?;
            if existed {
                Disposition::Replaced
            } else {
                Disposition::Created
            }
        }
    };
    for (ca, disposition) in &clusters {
        if *disposition != Disposition::Reused {
            write_intermediate(dir, ca)?;
        }
    }
    Ok(CertsOutcome {
        dir: dir.clone(),
        root: root_disposition,
        root_cert_pem: root.cert_pem.clone(),
        clusters,
        warnings,
    })
}

/// The clusters' intermediates: each kept one as it is, the others signed by `root` with the
/// keys generated for them.
fn sign_missing(
    request: &CertsRequest,
    root: &RootCa,
    kept: Vec<Option<IntermediateCa>>,
    mut keys: impl Iterator<Item = rcgen::KeyPair>,
) -> Result<Vec<(IntermediateCa, Disposition)>, CertsError> {
    let trust_bundle = trust_bundle(request, root)?;
    let mut clusters = Vec::with_capacity(request.clusters.len());
    for (name, current) in request.clusters.iter().zip(kept) {
        let existed = (request.force || request.replace_root) && request.dir.join(name).exists();
        clusters.push(match current {
            Some(ca) => (ca, Disposition::Reused),
            None => {
                let key = keys
                    .next()
                    .expect("a key was generated for every new intermediate");
                let mut ca = root.sign_intermediate(name, key, request.validity)?;
                if let Some(bundle) = &trust_bundle {
                    ca.root_cert_pem = bundle.clone();
                }
                let made = if existed {
                    Disposition::Replaced
                } else {
                    Disposition::Created
                };
                (ca, made)
            }
        });
    }

    Ok(clusters)
}

/// A new root would leave an intermediate on disk that no cluster of the request replaces, signed
/// by a root that is gone.
fn refuse_orphans(request: &CertsRequest) -> Result<(), CertsError> {
    let orphans: Vec<String> = clusters_in(&request.dir)
        .into_iter()
        .filter(|c| !request.clusters.contains(c))
        .collect();
    if orphans.is_empty() {
        Ok(())
    } else {
        Err(CertsError::WouldOrphan { clusters: orphans })
    }
}

/// Per cluster: its intermediate, checked against the root, when it is kept; `None` when one is
/// to be generated (none yet, or `--force` / a root replacement).
fn intermediates_to_keep(
    request: &CertsRequest,
    existing_root: Option<&RootCa>,
) -> Result<Vec<Option<IntermediateCa>>, CertsError> {
    let dir = &request.dir;
    let mut kept = Vec::with_capacity(request.clusters.len());
    for cluster in &request.clusters {
        if request.force || request.replace_root {
            kept.push(None);
            continue;
        }
        let current = read_intermediate(dir, cluster)?;
        match (&current, existing_root) {
            (Some(ca), Some(root)) => ca.check_against(&root.cert_pem)?,
            (Some(_), None) => {
                return Err(CertsError::Partial {
                    path: dir.join(cluster),
                    missing: format!(
                        "the root CA that signed it ({ROOT_CERT}, {ROOT_KEY} in the parent directory)"
                    ),
                });
            }
            (None, _) => {}
        }
        kept.push(current);
    }
    Ok(kept)
}

/// `count` keys, generated in parallel.
fn generate_keys(key_type: KeyType, count: usize) -> Result<Vec<rcgen::KeyPair>, CertsError> {
    let keys = std::thread::scope(|s| {
        let handles: Vec<_> = (0..count).map(|_| s.spawn(|| generate_key(key_type))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("key generation does not panic"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(keys)
}

/// During a root rotation (step 1 done: `next-root/` exists), every cluster's root-cert.pem is
/// the bundle of both roots. A new intermediate keeps that bundle: with the mesh root alone its
/// workloads would stop trusting the next root, undoing step 1 without a word.
fn trust_bundle(request: &CertsRequest, root: &RootCa) -> Result<Option<String>, CertsError> {
    if request.replace_root {
        return Ok(None);
    }
    let next_root = load_root(&request.dir.join(NEXT_ROOT_DIR))?;
    Ok(next_root.map(|next| {
        format!(
            "{}{}",
            normalize_pem(&root.cert_pem),
            normalize_pem(&next.cert_pem)
        )
    }))
}

/// Writes the root, key first. A new root (`replace: false`) never overwrites one that appeared
/// since we looked.
/// The root certificate while its pair is being written: staged whole before the key goes into
/// place, renamed to `root-cert.pem` after. Two files cannot be renamed as one, so an interrupted
/// write can leave the key without its certificate; the certificate is then here, and the next run
/// finishes the pair ([`finish_interrupted_root`]).
const PENDING_ROOT_CERT: &str = ".meshctl-pending-root-cert.pem";

/// Writes the root pair so that it appears whole or not at all: the certificate staged, then the
/// key in place, then the certificate in place.
fn write_root(dir: &Path, root: &RootCa, replace: bool) -> Result<(), CertsError> {
    let key_path = dir.join(ROOT_KEY);
    let cert_path = dir.join(ROOT_CERT);
    let pending = dir.join(PENDING_ROOT_CERT);
    atomic_file::write(&pending, root.cert_pem.as_bytes(), PUBLIC).map_err(io_err("write", &pending))?;
    let write_key = if replace {
        atomic_file::write
    } else {
        atomic_file::write_new
    };
    write_key(&key_path, root.key_pem.as_bytes(), PRIVATE).map_err(io_err("write", &key_path))?;
    fs::rename(&pending, &cert_path).map_err(io_err("write", &cert_path))?;
    Ok(())
}

/// Finishes a root pair whose writing was interrupted: a staged certificate that matches the key
/// in place becomes `root-cert.pem`; one that does not (the key never got written) is dropped.
/// Says whether it finished one.
fn finish_interrupted_root(dir: &Path) -> Result<bool, CertsError> {
    let pending = dir.join(PENDING_ROOT_CERT);
    let Some(cert) = read_opt(&pending)? else {
        return Ok(false);
    };
    let matches = read_opt(&dir.join(ROOT_KEY))?.is_some_and(|key| RootCa::load(&cert, &key).is_ok());
    if matches {
        let cert_path = dir.join(ROOT_CERT);
        fs::rename(&pending, &cert_path).map_err(io_err("write", &cert_path))?;
    } else {
        fs::remove_file(&pending).map_err(io_err("remove", &pending))?;
    }
    Ok(matches)
}

/// Private keys readable by others (copied in with `cp`, unpacked from an archive) are made
/// private again, and said so.
fn make_all_private(paths: impl Iterator<Item = PathBuf>) -> Result<Vec<String>, CertsError> {
    let mut warnings = Vec::new();
    for path in paths {
        warnings.extend(make_private(&path)?);
    }
    Ok(warnings)
}

/// Gives the key file at `path` mode 0600 when others could read or write it; says what it did.
fn make_private(path: &Path) -> Result<Option<String>, CertsError> {
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read the permissions of", path)(e)),
    };
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(atomic_file::PRIVATE))
        .map_err(io_err("set permissions on", path))?;
    Ok(Some(format!(
        "`{}` was readable by others (mode {mode:04o}); it is a private key: set to 0600",
        path.display()
    )))
}

/// Holds `dir` for this process alone until dropped: two runs on one mesh (two terminals, a CI
/// job started twice) would each make a root, and one's cleanup would remove what the other is
/// still writing. The second run waits, then finds the first one's root and keeps it. The lock is
/// the kernel's `flock` on the folder itself (no lock file joins Istio's layout), released when a
/// process ends however it ends.
fn lock(dir: &Path) -> Result<fs::File, CertsError> {
    atomic_file::create_dir_all(dir, PRIVATE_DIR).map_err(io_err("create directory", dir))?;
    let folder = fs::File::open(dir).map_err(io_err("open", dir))?;
    folder.lock().map_err(io_err("lock", dir))?;
    Ok(folder)
}

/// Writes `<dir>/<cluster>/` as a unit: the four files go into a hidden staging folder that is then
/// renamed into place, so a cluster folder is either complete or absent.
fn write_intermediate(dir: &Path, ca: &IntermediateCa) -> Result<(), CertsError> {
    let target = dir.join(&ca.cluster);
    // 0700 from the first moment: it is about to hold a private key.
    let staging = tempfile::Builder::new()
        .prefix(&format!("{}{}-", atomic_file::STAGING_PREFIX, ca.cluster))
        .permissions(fs::Permissions::from_mode(PRIVATE_DIR))
        .tempdir_in(dir)
        .map_err(io_err("create a staging directory in", dir))?;
    for (name, text, mode) in [
        (CA_CERT, &ca.ca_cert_pem, PUBLIC),
        (CA_KEY, &ca.ca_key_pem, PRIVATE),
        (CERT_CHAIN, &ca.cert_chain_pem, PUBLIC),
        (ROOT_CERT, &ca.root_cert_pem, PUBLIC),
    ] {
        let path = staging.path().join(name);
        atomic_file::write(&path, text.as_bytes(), mode).map_err(io_err("write", &path))?;
    }

    // Move an old folder (only with --force) aside first; rename cannot replace a non-empty folder.
    let old = if target.exists() {
        let aside = dir.join(format!(
            "{}old-{}-{}",
            atomic_file::STAGING_PREFIX,
            ca.cluster,
            std::process::id()
        ));
        fs::rename(&target, &aside).map_err(io_err("move aside", &target))?;
        Some(aside)
    } else {
        None
    };
    let staged = staging.keep();
    fs::rename(&staged, &target).map_err(io_err("move into place", &target))?;
    if let Some(old) = old {
        fs::remove_dir_all(&old).map_err(io_err("remove", &old))?;
    }
    Ok(())
}
