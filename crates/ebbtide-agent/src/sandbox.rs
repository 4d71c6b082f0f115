//! Where and as whom a job runs: its own empty directory, an environment
//! built from an allow-list (never the agent's, which holds the bootstrap
//! token, nor the scheduler's, which may hold cloud credentials), and an
//! unprivileged user when the agent runs as root.
//!
//! Without a separate user (an agent started by a non-root user) a job
//! runs as that user: it still gets a clean environment and directory,
//! and the agent makes itself non-dumpable so its `/proc` entries are not
//! readable by the job, but files that user can read stay readable. The
//! agent logs a warning saying so when it starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Variables a job inherits from the agent when they are set: locale and
/// time zone, which builds legitimately depend on. Nothing else passes.
const INHERITED: &[&str] = &["LANG", "LC_ALL", "LC_CTYPE", "TZ"];
/// The search path a job gets.
const JOB_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The unprivileged account jobs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    /// Login name (for `USER`, `LOGNAME`).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl JobUser {
    /// Looks up a user by name.
    pub fn lookup(name: &str) -> Result<JobUser, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(JobUser {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(format!("job user {name:?} does not exist")),
            Err(e) => Err(format!("job user {name:?}: {e}")),
        }
    }
}

/// How jobs are isolated on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Under which each job gets a fresh directory.
    pub work_root: PathBuf,
    /// Run jobs as this user (requires the agent to run as root).
    pub user: Option<JobUser>,
}

impl Sandbox {
    /// A fresh, empty directory for one attempt of a job, owned by the job
    /// user; whatever an earlier attempt left there is removed first.
    pub(crate) fn prepare(&self, job: u64, attempt: u32) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.work_root.join(format!("job-{job}-{attempt}"));
        remove_dir(&dir)?;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some(u) = &self.user {
            nix::unistd::chown(
                &dir,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(u.gid)),
            )
            .map_err(std::io::Error::from)?;
        }
        Ok(dir)
    }

    /// The whole environment of a job: the allow-list, its directory as
    /// home, who it runs as, and what the scheduler sent with it.
    pub(crate) fn environment(
        &self,
        dir: &Path,
        job: u64,
        attempt: u32,
        extra: &HashMap<String, String>,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = INHERITED
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_string(), v)))
            .collect();
        let home = dir.display().to_string();
        let user = self.user.as_ref().map_or_else(
            || {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map_or_else(|| "ebbtide".to_string(), |u| u.name)
            },
            |u| u.name.clone(),
        );
        env.extend([
            ("PATH".to_string(), JOB_PATH.to_string()),
            ("HOME".to_string(), home.clone()),
            ("TMPDIR".to_string(), home),
            ("USER".to_string(), user.clone()),
            ("LOGNAME".to_string(), user),
            ("SHELL".to_string(), "/bin/sh".to_string()),
            ("EBBTIDE_JOB_ID".to_string(), job.to_string()),
            ("EBBTIDE_ATTEMPT".to_string(), attempt.to_string()),
        ]);
        for (k, v) in extra {
            if !env.iter().any(|(e, _)| e == k) {
                env.push((k.clone(), v.clone()));
            }
        }
        env
    }

    /// Removes an attempt's directory after it ended.
    pub(crate) fn clean(&self, job: u64, attempt: u32) {
        let dir = self.work_root.join(format!("job-{job}-{attempt}"));
        if let Err(e) = remove_dir(&dir) {
            tracing::warn!(job, dir = %dir.display(), error = %e, "cannot remove the job's directory");
        }
    }
}

/// Removes a job's directory whatever the job did to it. Builds leave
/// read-only trees (Go's module cache is the classic), which a plain
/// recursive removal cannot empty unless it runs as root; so a failed
/// removal makes every directory it owns writable again and tries once
/// more. Files of another owner (a job that used `sudo`) still stop it:
/// for those the agent must run as root with a job user.
fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_writable(dir);
            std::fs::remove_dir_all(dir)
        }
        other => other,
    }
}

/// `chmod u+rwx` on `dir` and every directory under it that this process
/// may change (never following a symlink out of the tree).
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

/// Makes this process's `/proc` entries (environment, memory, fds)
/// readable only by root, so a job running as the same user cannot read
/// the agent's or the scheduler's secrets from there.
pub fn hide_from_same_user() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the process non-dumpable; jobs of the same user could read its /proc entries");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_environment_holds_only_the_allow_list_and_its_own_values() {
        let sandbox = Sandbox {
            work_root: PathBuf::from("/tmp/w"),
            user: None,
        };
        let extra = HashMap::from([("CI".to_string(), "true".to_string())]);
        let env = sandbox.environment(Path::new("/tmp/w/job-1-1"), 1, 1, &extra);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        for k in &keys {
            assert!(
                INHERITED.contains(k)
                    || [
                        "PATH",
                        "HOME",
                        "TMPDIR",
                        "USER",
                        "LOGNAME",
                        "SHELL",
                        "EBBTIDE_JOB_ID",
                        "EBBTIDE_ATTEMPT",
                        "CI"
                    ]
                    .contains(k),
                "unexpected {k}"
            );
        }
        assert!(env.contains(&("HOME".into(), "/tmp/w/job-1-1".into())));
        assert!(env.contains(&("CI".into(), "true".into())));
    }

    #[test]
    fn scheduler_values_cannot_replace_the_sandboxs_own() {
        let sandbox = Sandbox {
            work_root: PathBuf::from("/tmp/w"),
            user: None,
        };
        let extra = HashMap::from([("HOME".to_string(), "/root".to_string())]);
        let env = sandbox.environment(Path::new("/tmp/w/job-1-1"), 1, 1, &extra);
        assert_eq!(
            env.iter().filter(|(k, _)| k == "HOME").count(),
            1,
            "{env:?}"
        );
        assert!(env.contains(&("HOME".into(), "/tmp/w/job-1-1".into())));
    }

    /// Builds a read-only tree (as a Go module cache leaves it) under
    /// `dir` and removes it with [`remove_dir`]; exits 0 when it is gone.
    fn build_and_remove_a_read_only_tree(dir: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let tree = dir.join("job-1-1");
        let deep = tree.join("pkg/mod/example.com/lib@v1.0.0");
        std::fs::create_dir_all(&deep).expect("tree");
        std::fs::write(deep.join("lib.go"), "package lib").expect("file");
        for d in [deep.clone(), deep.parent().expect("parent").to_path_buf()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        }
        std::fs::set_permissions(deep.join("lib.go"), std::fs::Permissions::from_mode(0o444))
            .expect("chmod");
        assert!(
            std::fs::remove_dir_all(&tree).is_err(),
            "a plain removal cannot empty a read-only tree"
        );
        remove_dir(&tree).is_ok() && !tree.exists()
    }

    #[test]
    fn a_read_only_tree_a_job_left_is_removed_without_root() {
        // Root ignores permission bits, so as root the removal runs in a
        // child process of this test binary that has become `nobody`.
        if let Ok(dir) = std::env::var("EBBTIDE_SANDBOX_CHILD_DIR") {
            std::process::exit(if build_and_remove_a_read_only_tree(Path::new(&dir)) {
                0
            } else {
                1
            });
        }
        let dir = tempfile::tempdir().expect("tempdir");
        if !nix::unistd::geteuid().is_root() {
            assert!(build_and_remove_a_read_only_tree(dir.path()));
            return;
        }
        use std::os::unix::process::CommandExt;
        let nobody = nix::unistd::User::from_name("nobody")
            .expect("passwd")
            .expect("user nobody");
        nix::unistd::chown(dir.path(), Some(nobody.uid), Some(nobody.gid)).expect("chown");
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "sandbox::tests::a_read_only_tree_a_job_left_is_removed_without_root",
                "--nocapture",
            ])
            .env("EBBTIDE_SANDBOX_CHILD_DIR", dir.path())
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .status()
            .expect("child");
        assert!(status.success(), "the child as nobody: {status}");
    }
}
