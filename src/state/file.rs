//! A state store in a local JSON file, for local work and demos. The lock
//! is a sidecar file created exclusively (`PATH.lock`).

use std::path::PathBuf;

use async_trait::async_trait;

use super::{LockInfo, StateError, StateKey, StateStore};
use crate::engine::snapshot::Snapshot;

pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: PathBuf) -> FileStore {
        FileStore { path }
    }

    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        p.into()
    }

    fn backend(e: std::io::Error, what: &str) -> StateError {
        StateError::Backend(format!("{what}: {e}"))
    }

    /// The state file's directory must exist (`devstack init` creates it):
    /// say so with the path rather than a bare "No such file or directory".
    fn check_dir(&self) -> Result<(), StateError> {
        match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) if !dir.is_dir() => Err(StateError::Backend(format!(
                "the directory {} of the state file {} is missing; create it, or run `devstack init` with the same --state",
                dir.display(),
                self.path.display()
            ))),
            _ => Ok(()),
        }
    }

    fn read_lock(&self) -> Result<Option<LockInfo>, StateError> {
        let read = crate::bounded::read_text(
            &self.lock_path(),
            "a lock file",
            crate::bounded::MAX_STATE_BYTES,
        );
        match read {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    location: self.lock_path().display().to_string(),
                    message: e.to_string(),
                }),
            Err(crate::bounded::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(StateError::Backend(format!(
                "reading the lock file {}: {e}",
                self.lock_path().display()
            ))),
        }
    }

    fn write_atomic(&self, path: &std::path::Path, text: &str) -> Result<(), StateError> {
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| Self::backend(e, "writing state"))?;
        std::fs::rename(&tmp, path).map_err(|e| Self::backend(e, "writing state"))
    }
}

#[async_trait]
impl StateStore for FileStore {
    fn location(&self) -> String {
        format!("file:{}", self.path.display())
    }

    async fn init(&self) -> Result<bool, StateError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Self::backend(e, "creating the state directory"))?;
        }
        Ok(false)
    }

    async fn load(&self, key: &StateKey) -> Result<Option<Snapshot>, StateError> {
        let read = crate::bounded::read_text(
            &self.path,
            "a state document",
            crate::bounded::MAX_STATE_BYTES,
        );
        let text = match read {
            Ok(t) => t,
            Err(crate::bounded::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => {
                return Err(StateError::Corrupt {
                    location: self.location(),
                    message: e.to_string(),
                })
            }
        };
        let snap = super::parse_document(&text, &self.location())?;
        if snap.stack != key.stack || snap.env != key.env {
            return Err(StateError::Corrupt {
                location: self.location(),
                message: format!(
                    "it holds {}/{}, not {key}; use one file per environment",
                    snap.stack, snap.env
                ),
            });
        }
        Ok(Some(snap))
    }

    async fn save(
        &self,
        key: &StateKey,
        snapshot: &Snapshot,
        expected: u64,
    ) -> Result<(), StateError> {
        let current = self.load(key).await?.map(|s| s.serial).unwrap_or(0);
        if current != expected {
            return Err(StateError::Conflict { expected });
        }
        let text = serde_json::to_string_pretty(snapshot)
            .map_err(|e| StateError::Backend(e.to_string()))?;
        super::check_document_size(&text)?;
        self.check_dir()?;
        self.write_atomic(&self.path, &text)
    }

    async fn lock(&self, _key: &StateKey, info: &LockInfo, now: i64) -> Result<(), StateError> {
        use std::io::Write;
        let text = serde_json::to_string(info).map_err(|e| StateError::Backend(e.to_string()))?;
        self.check_dir()?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.lock_path())
            {
                Ok(mut f) => {
                    f.write_all(text.as_bytes())
                        .map_err(|e| Self::backend(e, "writing the lock"))?;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match self.read_lock()? {
                        Some(held) if held.lease_expires_at > now => {
                            return Err(StateError::Locked(held))
                        }
                        _ => {
                            let _ = std::fs::remove_file(self.lock_path());
                        }
                    }
                }
                Err(e) => {
                    return Err(StateError::Backend(format!(
                        "creating the lock file {}: {e}",
                        self.lock_path().display()
                    )))
                }
            }
        }
        match self.read_lock()? {
            Some(held) => Err(StateError::Locked(held)),
            None => Err(StateError::Backend("could not take the lock".into())),
        }
    }

    async fn renew(
        &self,
        _key: &StateKey,
        id: &str,
        lease_expires_at: i64,
    ) -> Result<(), StateError> {
        match self.read_lock()? {
            Some(mut held) if held.id == id => {
                held.lease_expires_at = lease_expires_at;
                let text =
                    serde_json::to_string(&held).map_err(|e| StateError::Backend(e.to_string()))?;
                self.write_atomic(&self.lock_path(), &text)
            }
            _ => Err(StateError::LockLost),
        }
    }

    async fn unlock(
        &self,
        _key: &StateKey,
        id: Option<&str>,
    ) -> Result<Option<LockInfo>, StateError> {
        let Some(held) = self.read_lock()? else {
            return match id {
                Some(id) => Err(StateError::NoSuchLock(id.to_string())),
                None => Ok(None),
            };
        };
        if let Some(id) = id {
            if held.id != id {
                return Err(StateError::NoSuchLock(id.to_string()));
            }
        }
        std::fs::remove_file(self.lock_path())
            .map_err(|e| Self::backend(e, "removing the lock"))?;
        Ok(Some(held))
    }

    async fn current_lock(&self, _key: &StateKey) -> Result<Option<LockInfo>, StateError> {
        self.read_lock()
    }
}
