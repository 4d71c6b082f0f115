//! # ebbtide-provider-local
//!
//! The embedded default provider: each worker is an agent process on this
//! machine, started in its own process group so it outlives a crashed
//! scheduler. What it launched is recorded in a state directory (one small
//! JSON file per instance, with the process's start time so a recycled pid
//! is never mistaken for ours); `list` reads it back after a restart.
//!
//! The bootstrap token reaches the agent through its environment, never its
//! command line, which any local user could read from `ps`. The agent gets
//! an environment of its own (an allow-list, not the scheduler's, which may
//! hold cloud credentials), starts in its worker's work directory rather
//! than the scheduler's, and leads a session of its own: terminating the
//! instance kills every process of that session, so the jobs of an agent
//! that died are stopped with it. Where the scheduler runs as root the
//! agent runs jobs as `job_user` (default `nobody`), who cannot read the
//! scheduler's data directory; otherwise jobs run as the scheduler's user,
//! and a warning says what that leaves readable.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ebbtide_core::{InstanceId, Market, WorkerId};
use ebbtide_provider::{InstanceInfo, LaunchRequest, LaunchedInstance, Provider, ProviderError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

mod plugin;
mod session;

pub use plugin::{LocalPlugin, LocalSection, work_root_for};

/// How long a terminated agent gets to exit before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// Settings of the local provider.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Cluster id; instances of other clusters in the same state directory
    /// are never listed or touched.
    pub cluster: String,
    /// The agent program (normally the `ebbtide` binary itself).
    pub program: PathBuf,
    /// Arguments before the scheduler address and worker id (normally
    /// `["agent"]`).
    pub args: Vec<String>,
    /// Where launched instances are recorded.
    pub state_dir: PathBuf,
    /// Under which each worker's jobs get their directories; must be
    /// outside the scheduler's data directory (which the job user cannot
    /// enter).
    pub work_root: PathBuf,
    /// The user jobs run as when the scheduler runs as root.
    pub job_user: Option<String>,
    /// How long an agent that reaches no scheduler keeps going.
    pub orphan_timeout: Duration,
}

/// Variables the agent takes from the scheduler's environment; nothing
/// else (credentials included) reaches it.
const AGENT_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "RUST_LOG",
    "EBBTIDE_LOG_FORMAT",
];

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    cluster: String,
    pool: String,
    worker: u64,
    pid: i32,
    start_time: u64,
    /// The market the engine asked for (local processes have no spot
    /// market, but the engine's books must match what it asked for).
    #[serde(default)]
    spot: bool,
}

/// Workers as local processes.
#[derive(Debug)]
pub struct LocalProvider {
    config: LocalConfig,
}

impl LocalProvider {
    /// A provider recording its instances under `config.state_dir`.
    pub fn new(config: LocalConfig) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&config.state_dir)?;
        std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::create_dir_all(&config.work_root)?;
        // Traversable, not listable: each worker's jobs find their own
        // directory but not their neighbours'.
        std::fs::set_permissions(&config.work_root, std::fs::Permissions::from_mode(0o711))?;
        Ok(LocalProvider { config })
    }

    fn record_path(&self, instance: &InstanceId) -> PathBuf {
        self.config.state_dir.join(format!("{}.json", instance.0))
    }

    fn read_records(&self) -> Result<Vec<(InstanceId, Record)>, ProviderError> {
        let dir = std::fs::read_dir(&self.config.state_dir).map_err(io_err)?;
        let mut out = Vec::new();
        for entry in dir {
            let path = entry.map_err(io_err)?.path();
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Ok(record) = serde_json::from_str::<Record>(&text)
                && record.cluster == self.config.cluster
            {
                out.push((InstanceId(name), record));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn io_err(e: std::io::Error) -> ProviderError {
    ProviderError::Permanent(format!("local state: {e}"))
}

/// The kernel's start time of a process (clock ticks since boot), which
/// together with the pid identifies it uniquely.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    // Fields after the name start at field 3 (state); start time is field 22.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn alive(record: &Record) -> bool {
    start_time(record.pid) == Some(record.start_time) && !is_zombie(record.pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn stop(record: &Record) {
    if alive(record) {
        let pid = Pid::from_raw(record.pid);
        // The agent gets a chance to stop its jobs and exit, then is killed.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + GRACE;
        while alive(record) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if alive(record) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    // Whatever the agent's jobs left behind, even if the agent died first.
    session::kill_jobs_left(record.pid, record.start_time);
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let mut launched = Vec::new();
        for w in &request.workers {
            let work_dir = self.config.work_root.join(format!("worker-{}", w.worker.0));
            std::fs::create_dir_all(&work_dir).map_err(io_err)?;
            {
                use std::os::unix::fs::PermissionsExt;
                // The job user passes through to its own job directory.
                std::fs::set_permissions(&work_dir, std::fs::Permissions::from_mode(0o711))
                    .map_err(io_err)?;
            }
            let mut command = tokio::process::Command::new(&self.config.program);
            command
                .args(&self.config.args)
                .arg("--scheduler")
                .arg(&request.scheduler_url)
                .arg("--worker-id")
                .arg(w.worker.0.to_string())
                .arg("--work-dir")
                .arg(&work_dir)
                .arg("--orphan-timeout")
                .arg(format!("{}ms", self.config.orphan_timeout.as_millis()))
                .env_clear()
                .envs(
                    AGENT_ENV
                        .iter()
                        .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
                )
                .env("EBBTIDE_BOOTSTRAP_TOKEN", w.bootstrap_token.expose())
                .env("EBBTIDE_CLUSTER", &self.config.cluster)
                .env("EBBTIDE_POOL", &request.pool)
                .current_dir(&work_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(agent_log(&self.config.state_dir, w.worker))
                .kill_on_drop(false);
            if let Some(user) = self.job_user() {
                command.arg("--job-user").arg(user);
            }
            session::lead_own_session(&mut command);
            let mut child = command.spawn().map_err(|e| {
                ProviderError::Permanent(format!(
                    "cannot start {}: {e}",
                    self.config.program.display()
                ))
            })?;
            let pid = child
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| ProviderError::Transient("agent exited at once".into()))?;
            let start_time = start_time(pid)
                .ok_or_else(|| ProviderError::Transient("agent exited at once".into()))?;
            // Reap it when it exits so it never lingers as a zombie.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            let instance = InstanceId(format!("local-{}-{pid}", w.worker.0));
            let record = Record {
                cluster: self.config.cluster.clone(),
                pool: request.pool.clone(),
                worker: w.worker.0,
                pid,
                start_time,
                spot: request.market == Market::Spot,
            };
            write_atomically(&self.record_path(&instance), &record)?;
            launched.push(LaunchedInstance {
                worker: w.worker,
                instance,
                zone: None,
            });
        }
        Ok(launched)
    }

    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError> {
        for instance in instances {
            let path = self.record_path(instance);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(record) = serde_json::from_str::<Record>(&text) else {
                continue;
            };
            if record.cluster != self.config.cluster {
                continue;
            }
            stop(&record).await;
            // Its jobs' directories go with it (the agent cleans each
            // after its job; this catches an agent that died mid-job).
            let work = self
                .config
                .work_root
                .join(format!("worker-{}", record.worker));
            if let Err(e) = std::fs::remove_dir_all(&work)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %work.display(), error = %e, "cannot remove a terminated worker's directory");
            }
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        Ok(self
            .read_records()?
            .into_iter()
            .map(|(instance, r)| InstanceInfo {
                running: alive(&r),
                instance,
                worker: WorkerId(r.worker),
                market: if r.spot {
                    Market::Spot
                } else {
                    Market::OnDemand
                },
                zone: None,
                pool: r.pool,
            })
            .collect())
    }
}

impl LocalProvider {
    /// Who jobs run as: the configured user, else `nobody` when the
    /// scheduler (and so the agent) runs as root; nobody else can switch.
    fn job_user(&self) -> Option<&str> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        Some(self.config.job_user.as_deref().unwrap_or("nobody"))
    }
}

/// The agent's log file (`worker-N.log` in the state directory), or no
/// output if it cannot be created.
fn agent_log(dir: &Path, worker: WorkerId) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("worker-{}.log", worker.0)))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

fn write_atomically(path: &Path, record: &Record) -> Result<(), ProviderError> {
    let tmp = path.with_extension("tmp");
    let text =
        serde_json::to_string(record).map_err(|e| ProviderError::Permanent(e.to_string()))?;
    std::fs::write(&tmp, text).map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)
}
