//! Secret files Airlock generates for itself in the data directory (the dev issuer key, the
//! masking pseudonym key).
//!
//! Invariants: a new file is created with mode 0600 and `create_new` (two processes racing
//! cannot both write one), fsynced before use; an existing file readable by group or others
//! is refused rather than used.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads `path`, or creates it with the bytes `make` returns.
pub fn load_or_create(
    path: &Path,
    what: &str,
    make: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(bytes) => checked(path, what, bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let bytes = make()?;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            let mut f = match created {
                Ok(f) => f,
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let bytes = std::fs::read(path)
                        .map_err(|e| format!("cannot read {} ({what}): {e}", path.display()))?;
                    return checked(path, what, bytes);
                }
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            };
            f.write_all(&bytes)
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(bytes)
        }
        Err(e) => Err(format!("cannot read {} ({what}): {e}", path.display())),
    }
}

/// Reads `path` if it exists (`None` when it does not); never creates it. For commands that
/// must use the key a server already has rather than make one of their own.
pub fn load_existing(path: &Path, what: &str) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => checked(path, what, bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {} ({what}): {e}", path.display())),
    }
}

/// Refuses a key file others can read.
fn checked(path: &Path, what: &str, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} ({what}) is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(bytes)
}

/// `n` random bytes from the system generator.
pub fn random(n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(buf)
}
