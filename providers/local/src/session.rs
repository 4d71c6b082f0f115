//! Each agent leads a session of its own, so everything it starts — its
//! jobs run in process groups of their own inside that session — can be
//! found and stopped after the agent itself is gone.
//!
//! A job that calls `setsid` itself leaves the session; only a container
//! or a cgroup contains such a job (the Docker provider does).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Makes the command's process the leader of a new session.
#[expect(
    unsafe_code,
    reason = "pre_exec is the only way to call setsid between fork and exec"
)]
pub(crate) fn lead_own_session(command: &mut tokio::process::Command) {
    // SAFETY: runs in the forked child before exec; setsid is
    // async-signal-safe and the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// The session id of a process (field 6 of `/proc/PID/stat`).
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    // After the name: state, ppid, pgrp, session.
    after_name.split_whitespace().nth(3)?.parse().ok()
}

/// Processes of the session `sid` leads.
pub(crate) fn members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| session_of(*pid) == Some(sid))
        .collect()
}

/// SIGKILLs what is left of a dead agent's jobs: processes of the session
/// it led that started after it and carry a job's environment. (The pid,
/// so the session id, may have been recycled: a stranger's session has no
/// `EBBTIDE_JOB_ID`.)
pub(crate) fn kill_jobs_left(sid: i32, agent_started: u64) {
    if sid <= 1 {
        return;
    }
    for pid in members(sid) {
        let ours = crate::start_time(pid).is_some_and(|t| t >= agent_started)
            && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(b"EBBTIDE_JOB_ID="))
            });
        if ours {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
