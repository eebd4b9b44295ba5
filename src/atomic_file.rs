//! Files written all at once or not at all, with the permissions they need from the first byte.
//!
//! Every file meshctl writes goes through here: a temporary file in the same directory, written,
//! flushed to disk, given its mode, then renamed over the target. A crash leaves either the old file or
//! the new one, never half of either. Private keys get 0600 and their directories 0700.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Mode for private keys and anything else secret.
pub const PRIVATE: u32 = 0o600;
/// Mode for certificates and manifests without secrets.
pub const PUBLIC: u32 = 0o644;
/// Mode for directories that hold private keys.
pub const PRIVATE_DIR: u32 = 0o700;

/// Writes `contents` to `path` atomically with `mode`, replacing any existing file.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = staged(path, contents, mode)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Like [`write`], but fails with `AlreadyExists` instead of replacing an existing file: the guard
/// that makes it impossible to overwrite a root key by accident.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = staged(path, contents, mode)?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}

fn staged(path: &Path, contents: &[u8], mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new().prefix(STAGING_PREFIX).tempfile_in(dir)?;
    // Set the mode before writing, so a key is never readable by others, not even for a moment.
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

/// Creates `path` and its missing parents; directories created here get `mode`.
pub fn create_dir_all(path: &Path, mode: u32) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent, mode)?;
    }
    // The mode from the first moment (the umask may only narrow it), then exactly `mode`.
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The prefix of every temporary file or folder meshctl stages a write in: what an interrupted
/// write leaves behind starts with it, and only that is ever cleaned up.
pub const STAGING_PREFIX: &str = ".meshctl-";

/// Removes what interrupted writes left in `dir` (entries named [`STAGING_PREFIX`]…): a process
/// killed mid-write (Ctrl-C, SIGKILL) runs no destructor, so its staged files and folders, keys
/// among them, stay until the next run removes them. Returns how many it removed.
pub fn remove_interrupted_writes(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            continue;
        }
        // Not followed if it is a link: the link itself goes.
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Why a file cannot be written at `path` (checked before any work, so a long run does not end
/// on it): `-` (meshctl writes files, not to stdout, there), a folder, a link to nothing, a
/// folder that does not exist, or one this process cannot create a file in. The reason names
/// `path` as given; `None` when it can be written.
pub fn unwritable(path: &Path) -> Option<String> {
    let shown = path.display();
    if path.as_os_str() == "-" {
        return Some("`-` names a file here, not stdout: name the file to write".into());
    }
    if path.is_dir() {
        return Some(format!("`{shown}` is a folder: name the file to write"));
    }
    if path.symlink_metadata().is_ok() && !path.exists() {
        return Some(format!("`{shown}` is a link to nothing"));
    }
    let parent = parent_of(path);
    if !parent.is_dir() {
        return Some(format!(
            "`{shown}`: the folder `{}` does not exist",
            parent.display()
        ));
    }
    // Whether a file can be made there, as the atomic write will make one; it goes at once.
    match tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempfile_in(parent)
    {
        Ok(_) => None,
        Err(e) => Some(format!(
            "`{shown}` cannot be written: the folder `{}`: {e}",
            parent.display()
        )),
    }
}

/// The directory `path` lives in (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_sets_the_mode_and_replaces_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write(&path, b"one", PRIVATE).unwrap();
        write(&path, b"two", PRIVATE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_new_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root-key.pem");
        write_new(&path, b"original", PRIVATE).unwrap();
        let err = write_new(&path, b"other", PRIVATE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"original");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_output_path_that_cannot_be_written_is_named_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for (path, said) in [
            (Path::new("-").to_path_buf(), "not stdout"),
            (dir.path().to_path_buf(), "is a folder"),
            (dangling, "a link to nothing"),
            (dir.path().join("missing/out.tar.gz"), "does not exist"),
        ] {
            let why = unwritable(&path).unwrap_or_default();
            assert!(why.contains(said), "{}: {why}", path.display());
        }
        assert_eq!(unwritable(&dir.path().join("out.tar.gz")), None);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the probe file is gone"
        );
    }

    #[test]
    fn created_directories_get_the_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_dir_all(&deep, PRIVATE_DIR).unwrap();
        for d in [dir.path().join("a"), deep] {
            assert_eq!(fs::metadata(d).unwrap().permissions().mode() & 0o777, 0o700);
        }
    }
}
