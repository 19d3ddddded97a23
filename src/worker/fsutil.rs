//! Small file-system helpers for a worker that runs as root on behalf of
//! another user: files the agent reads must end up owned by the agent, and
//! files that hold a secret must never be readable by anyone else, not
//! even for the instant between create and chmod.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{chown, OpenOptionsExt as _};
use std::path::Path;

use anyhow::Context as _;

/// Creates `dir` and its missing parents; the ones it creates are owned by
/// `owner` when given.
pub fn ensure_dir(dir: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent, owner)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    if let Some((uid, gid)) = owner {
        chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid}", dir.display()))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes`, mode 0600, owned by `owner` when given:
/// written to a temporary file beside it, then renamed over it, so a
/// reader sees the old content or the new, never half of one.
pub fn write_private(path: &Path, bytes: &[u8], owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    ensure_dir(dir, owner)?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Some((uid, gid)) = owner {
        chown(&tmp, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid}", tmp.display()))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Gives `root` and everything under it to `uid:gid` (symlinks themselves,
/// not their targets).
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(root, Some(uid), Some(gid))
        .with_context(|| format!("cannot give {} to uid {uid}", root.display()))?;
    let meta = fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for entry in
            fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?
        {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/creds");
        write_private(&path, b"one", None).unwrap();
        write_private(&path, b"two", None).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("creds")]);
    }
}
