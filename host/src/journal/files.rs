//! Who may read the host's files: only the user it runs as.
//!
//! The data directory holds every tenant's events, step outputs and key
//! hashes, so it is 0700 and its files 0600. sled creates files of its own
//! while it runs (snapshots, blobs), so besides fixing what exists, the
//! process creates every new file private ([`restrict_new_files`]).

use anyhow::{Context, Result};
use std::path::Path;

/// Makes every file the process creates from now on private to its user
/// (umask 077): sled's files and the compiled-code cache included. On
/// other systems than Unix, a no-op.
pub fn restrict_new_files() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot
    // fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` if needed and makes it and everything under it private:
/// directories 0700, files 0600 (symbolic links are left alone, not
/// followed). Returns how many modes it had to narrow.
pub fn make_private(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    narrow(dir)
}

#[cfg(unix)]
fn narrow(path: &Path) -> Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?;
    let wanted = if meta.is_dir() {
        0o700
    } else if meta.is_file() {
        0o600
    } else {
        return Ok(0);
    };
    let mut narrowed = 0;
    if meta.permissions().mode() & 0o777 & !wanted != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted)).with_context(
            || {
                format!(
                    "making {} private (mode {wanted:o}); check that the host's user owns it",
                    path.display()
                )
            },
        )?;
        narrowed += 1;
    }
    if meta.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?
        {
            narrowed += narrow(&entry?.path())?;
        }
    }
    Ok(narrowed)
}

#[cfg(not(unix))]
fn narrow(_path: &Path) -> Result<usize> {
    Ok(0)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn narrows_open_directories_and_files_and_leaves_private_ones() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/f"), b"x").unwrap();
        std::fs::set_permissions(data.join("sub/f"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::set_permissions(data.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(make_private(&data).unwrap(), 3);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("sub")), 0o700);
        assert_eq!(mode(&data.join("sub/f")), 0o600);
        assert_eq!(make_private(&data).unwrap(), 0, "already private");
    }
}
