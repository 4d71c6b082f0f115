//! The shell scripts the provider runs on a host, one per operation.
//!
//! Why scripts and not a resident daemon: an owned host needs nothing
//! installed but the agent binary and an SSH login. Each worker lives in
//! `WORK/CLUSTER-wID/` (its token, its pool, its process id, the agent's
//! job directories), so `list` reads the state of the host itself — after a
//! scheduler restart too — and `terminate` removes everything a worker
//! left. Every value put into a script is single-quoted ([`quote`]); the
//! token never is: it arrives on stdin and goes straight to a file only the
//! login user can read.

use ebbtide_core::WorkerId;

/// `value` as one single-quoted shell word.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// The directory of `worker` under `work_root`.
pub fn worker_dir(work_root: &str, cluster: &str, worker: WorkerId) -> String {
    format!(
        "{}/{cluster}-w{}",
        work_root.trim_end_matches('/'),
        worker.0
    )
}

/// Starts the agent for `worker` (its token on stdin): as a transient
/// systemd unit where systemd runs, else as a process leading its own
/// session (so terminate can stop its whole group). Prints `systemd` or
/// `process`. Fails (and says why on stderr) when the agent binary is not
/// executable or the agent is gone a moment after it started, so a host
/// that cannot run workers is quarantined instead of taking more.
pub struct Start<'a> {
    /// Where workers' directories go on the host.
    pub work_root: &'a str,
    /// Cluster id.
    pub cluster: &'a str,
    /// The pool it is for.
    pub pool: &'a str,
    /// The worker.
    pub worker: WorkerId,
    /// The agent binary on the host.
    pub agent: &'a str,
    /// Run jobs as this user (`--job-user`; the agent runs as root).
    pub job_user: Option<&'a str>,
    /// The worker API the agent dials.
    pub scheduler: &'a str,
}

impl Start<'_> {
    /// The script.
    pub fn script(&self) -> String {
        let dir = quote(&worker_dir(self.work_root, self.cluster, self.worker));
        let unit = quote(&unit_name(self.cluster, self.worker));
        let agent = format!(
            "{agent} agent --scheduler {sched} --worker-id {id} --token-file \"$d/token\" --work-dir \"$d/jobs\"{job_user}",
            agent = quote(self.agent),
            sched = quote(self.scheduler),
            id = self.worker.0,
            job_user = self
                .job_user
                .map_or_else(String::new, |u| format!(" --job-user {}", quote(u))),
        );
        format!(
            "set -eu\n\
             umask 077\n\
             [ -x {agent_bin} ] || {{ echo \"agent {agent_bin} is not an executable file\" >&2; exit 127; }}\n\
             d={dir}\n\
             rm -rf \"$d\"\n\
             mkdir -p \"$d/jobs\"\n\
             cat > \"$d/token\"\n\
             printf '%s' {pool} > \"$d/pool\"\n\
             if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then\n\
             \x20 systemd-run --quiet --collect --unit={unit} --property=KillMode=control-group {agent}\n\
             \x20 echo systemd > \"$d/supervisor\"\n\
             \x20 sleep 0.2\n\
             \x20 systemctl is-active --quiet {unit} || {{ journalctl -u {unit} -n 20 --no-pager >&2 || true; exit 1; }}\n\
             else\n\
             \x20 setsid {agent} > \"$d/agent.log\" 2>&1 < /dev/null &\n\
             \x20 echo $! > \"$d/pid\"\n\
             \x20 echo process > \"$d/supervisor\"\n\
             \x20 sleep 0.2\n\
             \x20 kill -0 \"$(cat \"$d/pid\")\" 2>/dev/null || {{ tail -n 20 \"$d/agent.log\" >&2; exit 1; }}\n\
             fi\n\
             cat \"$d/supervisor\"\n",
            pool = quote(self.pool),
            agent_bin = quote(self.agent),
        )
    }
}

/// The transient unit of `worker`.
pub fn unit_name(cluster: &str, worker: WorkerId) -> String {
    format!("ebbtide-{cluster}-w{}", worker.0)
}

/// Lists this cluster's workers on the host, one line each:
/// `ID POOL running|stopped`.
pub fn list_script(work_root: &str, cluster: &str) -> String {
    let root = quote(work_root.trim_end_matches('/'));
    let prefix = quote(&format!("{cluster}-w"));
    format!(
        "root={root}; prefix={prefix}\n\
         mkdir -p \"$root\"\n\
         echo \"disk $(df -Pk \"$root\" | awk 'NR==2 {{print $4}}')\"\n\
         for d in \"$root\"/\"$prefix\"*; do\n\
         \x20 [ -d \"$d\" ] || continue\n\
         \x20 id=${{d##*/}}; id=${{id#\"$prefix\"}}\n\
         \x20 case $id in ''|*[!0-9]*) continue;; esac\n\
         \x20 pool=$(cat \"$d/pool\" 2>/dev/null || true)\n\
         \x20 state=stopped\n\
         \x20 if [ \"$(cat \"$d/supervisor\" 2>/dev/null)\" = systemd ]; then\n\
         \x20   systemctl is-active --quiet \"ebbtide-${{prefix}}$id\" 2>/dev/null && state=running\n\
         \x20 elif [ -f \"$d/pid\" ] && kill -0 \"$(cat \"$d/pid\")\" 2>/dev/null; then\n\
         \x20   state=running\n\
         \x20 fi\n\
         \x20 echo \"$id $pool $state\"\n\
         done\n"
    )
}

/// Stops `worker`'s agent (its whole process group, or its unit) and
/// removes its directory — making read-only trees a killed job left
/// writable first, where a plain removal fails; does nothing for a worker
/// that is not there.
pub fn stop_script(work_root: &str, cluster: &str, worker: WorkerId) -> String {
    let dir = quote(&worker_dir(work_root, cluster, worker));
    let unit = quote(&unit_name(cluster, worker));
    format!(
        "d={dir}\n\
         [ -d \"$d\" ] || exit 0\n\
         if [ \"$(cat \"$d/supervisor\" 2>/dev/null)\" = systemd ]; then\n\
         \x20 systemctl stop {unit} 2>/dev/null || true\n\
         elif [ -f \"$d/pid\" ]; then\n\
         \x20 p=$(cat \"$d/pid\")\n\
         \x20 kill -TERM -- -\"$p\" 2>/dev/null || true\n\
         \x20 for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 \"$p\" 2>/dev/null || break; sleep 0.5; done\n\
         \x20 kill -KILL -- -\"$p\" 2>/dev/null || true\n\
         fi\n\
         rm -rf \"$d\" 2>/dev/null || {{ chmod -R u+rwX \"$d\" 2>/dev/null; rm -rf \"$d\"; }}\n"
    )
}

/// One line of [`list_script`]'s output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The worker.
    pub worker: WorkerId,
    /// Its pool.
    pub pool: String,
    /// Whether its agent runs.
    pub running: bool,
}

/// The free space under the work root, KiB, from [`list_script`]'s
/// output (its `disk KIB` line).
pub fn parse_free_kib(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("disk ")?.trim().parse().ok())
}

/// Parses [`list_script`]'s output, skipping lines it does not recognise.
pub fn parse_list(output: &str) -> Vec<Listed> {
    output
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let worker = WorkerId(f.next()?.parse().ok()?);
            let (pool, state) = (f.next()?, f.next()?);
            Some(Listed {
                worker,
                pool: pool.to_string(),
                running: state == "running",
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_the_token_is_never_in_a_script() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        let s = Start {
            work_root: "/var/lib/ebbtide/",
            cluster: "ci",
            pool: "metal",
            worker: WorkerId(7),
            agent: "/usr/local/bin/ebbtide",
            job_user: Some("ci-job"),
            scheduler: "http://10.0.0.1:8081",
        }
        .script();
        assert!(s.contains("d='/var/lib/ebbtide/ci-w7'"), "{s}");
        assert!(
            s.contains("cat > \"$d/token\""),
            "the token comes from stdin: {s}"
        );
        assert!(s.contains("--worker-id 7 --token-file"), "{s}");
        assert!(s.contains("--job-user 'ci-job'"), "{s}");
    }

    #[test]
    fn list_output_parses_and_junk_is_skipped() {
        let got = parse_list("disk 1024\n7 metal running\n8 metal stopped\nnoise\n9\n");
        assert_eq!(parse_free_kib("disk 1024\n7 metal running\n"), Some(1024));
        assert_eq!(parse_free_kib("7 metal running\n"), None);
        assert_eq!(
            got,
            [
                Listed {
                    worker: WorkerId(7),
                    pool: "metal".into(),
                    running: true
                },
                Listed {
                    worker: WorkerId(8),
                    pool: "metal".into(),
                    running: false
                },
            ]
        );
    }
}
