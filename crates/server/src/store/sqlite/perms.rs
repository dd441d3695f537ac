//! The store file holds argon2id hashes, token hashes and every message: only the
//! server's own user may read it. SQLite creates its `-wal` and `-shm` files with the
//! database file's permissions, so making the database file 0600 (before SQLite creates
//! it, and at every start for a file made by an older version) covers all three.

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `path` with mode 0600 if it does not exist; takes group and other access away
/// from it and its `-wal` and `-shm` files if they have any.
pub(super) fn restrict(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for file in [
        path.to_path_buf(),
        with_suffix(path, "-wal"),
        with_suffix(path, "-shm"),
    ] {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, Permissions::from_mode(mode & 0o700))?;
            tracing::warn!(file = %file.display(), "store: took group and other access away from the store file");
        }
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_file_and_an_old_one_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = dir.path().join("new.db");
        restrict(&new).expect("create");
        assert_eq!(
            std::fs::metadata(&new).expect("meta").permissions().mode() & 0o777,
            0o600
        );

        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").expect("write");
        std::fs::write(with_suffix(&old, "-wal"), b"").expect("write");
        std::fs::set_permissions(&old, Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(with_suffix(&old, "-wal"), Permissions::from_mode(0o664))
            .expect("chmod");
        restrict(&old).expect("restrict");
        for file in [old.clone(), with_suffix(&old, "-wal")] {
            let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{}", file.display());
        }
    }
}
