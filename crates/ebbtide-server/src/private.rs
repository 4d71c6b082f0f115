//! What the scheduler keeps from the jobs it runs: its data directory
//! (session key, store, spool) is 0700 and every file in it 0600, whatever
//! an earlier version or the operator's umask left; the process's own
//! `/proc` entries (environment with cloud credentials, memory) are made
//! readable by root only, so even a job running as the scheduler's user
//! cannot read them there.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Creates the data directory if needed and closes it and its contents
/// to everyone but the scheduler's user; files created later inherit a
/// 0077 umask.
pub(crate) fn lock_down(data: &Path) -> std::io::Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the scheduler non-dumpable; jobs of its user could read its /proc entries");
    }
    std::fs::create_dir_all(data)?;
    close(data)
}

fn close(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(path)? {
            close(&entry?.path())?;
        }
    } else if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
