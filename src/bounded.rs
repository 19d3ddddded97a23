//! Bounded reads: every file devstack reads on someone else's say-so (a
//! ticket in a docs checkout, an environment file, a saved plan, a state
//! document, a Terraform state) has a size limit and must be a regular
//! file, so `/dev/zero`, a FIFO or a huge file fails fast with one line
//! instead of filling memory or blocking forever.
//!
//! The limits (documented in docs/troubleshooting.md):
//!
//! | what              | limit   | why                                              |
//! |-------------------|---------|--------------------------------------------------|
//! | ticket            | 1 MiB   | a ticket is a page of Markdown; the YAML budget caps its frontmatter further |
//! | environment file  | 64 KiB  | the compiled-in ones are about 1 KiB             |
//! | saved plan        | 16 MiB  | a whole-platform plan is well under 1 MiB        |
//! | state document    | 400 KB  | DynamoDB's item limit: state must fit either store |
//! | Terraform state   | 64 MiB  | read once, by `import`                           |
//!
//! A ticket read with a `root` (dispatch `--docs-dir`, the worker's clone)
//! is resolved first, symlinks included, and must stay inside that root.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Largest ticket file.
pub const MAX_TICKET_BYTES: u64 = 1 << 20;
/// Largest environment file.
pub const MAX_ENV_FILE_BYTES: u64 = 64 << 10;
/// Largest saved plan (`plan --out`).
pub const MAX_PLAN_BYTES: u64 = 16 << 20;
/// Largest state document: DynamoDB's 400 KB item limit, for both stores.
pub const MAX_STATE_BYTES: u64 = 400 * 1024;
/// Largest Terraform state `import` reads.
pub const MAX_TFSTATE_BYTES: u64 = 64 << 20;

/// Why a bounded read failed. `Display` is a clause about the file ("it is
/// a FIFO, not a regular file"); callers put the file's name before it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is {size} bytes; {what} may be at most {}", human(*.limit))]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("it resolves to {}, outside {}", .target.display(), .root.display())]
    Escapes { target: PathBuf, root: PathBuf },
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads a regular file of at most `limit` bytes (`what` names it in the
/// error: "a ticket", "saved plan"). With `root`, the path is resolved
/// (symlinks too) and must stay inside `root`.
pub fn read(
    path: &Path,
    what: &'static str,
    limit: u64,
    root: Option<&Path>,
) -> Result<Vec<u8>, ReadError> {
    if let Some(root) = root {
        let root = root.canonicalize().map_err(ReadError::Io)?;
        let target = path.canonicalize().map_err(ReadError::Io)?;
        if !target.starts_with(&root) {
            return Err(ReadError::Escapes { target, root });
        }
    }
    // Checked before opening: opening a FIFO blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(meta.file_type())));
    }
    let too_large = |size| ReadError::TooLarge { what, size, limit };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    // O_NONBLOCK: should the path become a FIFO between the check and the
    // open, the open does not hang; the type is checked again on the handle.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(meta.file_type())));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, what: &'static str, limit: u64) -> Result<String, ReadError> {
    let bytes = read(path, what, limit, None)?;
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_directories_and_large_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(Path::new("/dev/zero"), "a ticket", 10, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is a character device, not a regular file"
        );
        let err = read(dir.path(), "a ticket", 10, None).unwrap_err();
        assert_eq!(err.to_string(), "it is a directory, not a regular file");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read(&fifo, "a ticket", 10, None).unwrap_err();
        assert_eq!(err.to_string(), "it is a FIFO, not a regular file");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        let err = read(&big, "a ticket", 1024, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is 2048 bytes; a ticket may be at most 1 KiB"
        );
        assert_eq!(read(&big, "a ticket", 2048, None).unwrap().len(), 2048);
    }

    #[test]
    fn a_symlink_must_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        std::fs::create_dir_all(root.join("sows")).unwrap();
        std::fs::write(dir.path().join("outside.md"), "x").unwrap();
        std::fs::write(root.join("inside.md"), "y").unwrap();
        let out = root.join("sows/out.md");
        std::os::unix::fs::symlink(dir.path().join("outside.md"), &out).unwrap();
        let err = read(&out, "a ticket", 10, Some(&root)).unwrap_err();
        assert!(
            err.to_string().starts_with("it resolves to ") && err.to_string().contains("outside"),
            "{err}"
        );
        let inside = root.join("sows/in.md");
        std::os::unix::fs::symlink("../inside.md", &inside).unwrap();
        assert_eq!(read(&inside, "a ticket", 10, Some(&root)).unwrap(), b"y");
        let zero = root.join("sows/zero.md");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(
            read(&zero, "a ticket", 10, Some(&root)),
            Err(ReadError::Escapes { .. })
        ));
    }
}
