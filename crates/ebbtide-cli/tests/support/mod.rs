//! The CLI's test kit, one copy for the integration tests and the
//! benchmarks (each bench includes this module by path): a scheduler
//! process and the cleanup of everything it started, the API calls most
//! tests make, Docker cleanup and percentiles.

#![allow(dead_code)] // each test binary uses a part

pub mod docker;
pub mod stats;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Starts `ebbtide serve --config PATH`, its log appended to `log`, and
/// returns the child and its job API base URL.
pub fn serve(config: &Path, log: &Path) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebbtide"));
    cmd.args(["serve", "--config"]).arg(config);
    serve_command(cmd, log)
}

/// Starts an `ebbtide serve` command the caller prepared (extra
/// environment, say), its log appended to `log`; returns the child and its
/// job API base URL.
pub fn serve_command(cmd: Command, log: &Path) -> (Child, String) {
    let (child, addresses) = spawn_serve(cmd, log, "info");
    (child, addresses.http)
}

/// Where a started scheduler listens.
struct Addresses {
    http: String,
    grpc: String,
}

/// Spawns `serve`, reads the one line it prints once it listens, and
/// returns both addresses as URLs.
fn spawn_serve(mut cmd: Command, log: &Path, log_level: &str) -> (Child, Addresses) {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = cmd
        .env("RUST_LOG", log_level)
        // No NO_COLOR: serve itself must know a file is not a terminal.
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("start ebbtide serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|a| format!("http://{a}"))
            .unwrap_or_else(|| {
                panic!(
                    "no {key} address in {line:?}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
    };
    let addresses = Addresses {
        http: field("http="),
        grpc: field("grpc="),
    };
    (child, addresses)
}

/// A scheduler process for one test, in a directory of its own: the config
/// is `DIR/cluster.toml`, the log `DIR/serve.log`, and the config's
/// `data_dir` must be `DIR/data` (where the local provider records the
/// agents it starts). Dropping it (a failed test included) kills the
/// scheduler and every local agent it started: agents outlive their
/// scheduler by design, because a restart adopts them.
pub struct Scheduler {
    /// The job API, `http://ADDR`.
    pub http: String,
    /// The worker API, `http://ADDR`.
    pub grpc: String,
    /// The test's directory.
    pub dir: PathBuf,
    child: Option<Child>,
    log_level: &'static str,
    env: Vec<(String, String)>,
    _reaper: Reaper,
}

impl Scheduler {
    /// Writes `config` and starts `serve` on it, logging at `info`.
    pub fn start(dir: &Path, config: &str) -> Scheduler {
        Scheduler::start_logging(dir, config, "info")
    }

    /// As `start`, at another log level (benchmarks log `warn`, so logging
    /// is not what they measure).
    pub fn start_logging(dir: &Path, config: &str, log_level: &'static str) -> Scheduler {
        Scheduler::start_with(dir, config, log_level, &[])
    }

    /// As `start`, with extra environment (a cloud's credentials, say).
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Scheduler {
        Scheduler::start_with(dir, config, "info", env)
    }

    fn start_with(
        dir: &Path,
        config: &str,
        log_level: &'static str,
        env: &[(&str, &str)],
    ) -> Scheduler {
        std::fs::write(dir.join("cluster.toml"), config).expect("write config");
        let mut scheduler = Scheduler {
            http: String::new(),
            grpc: String::new(),
            dir: dir.to_path_buf(),
            child: None,
            log_level,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _reaper: Reaper::new(&dir.join("data")),
        };
        scheduler.restart();
        scheduler
    }

    /// Starts the scheduler again on the same config and data (after
    /// `kill_hard`, or to replace a running one). Ports that the config
    /// leaves to the system (`:0`) change.
    pub fn restart(&mut self) {
        self.kill_hard();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebbtide"));
        cmd.args(["serve", "--config"])
            .arg(self.dir.join("cluster.toml"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (child, addresses) = spawn_serve(cmd, &self.log_path(), self.log_level);
        self.child = Some(child);
        self.http = addresses.http;
        self.grpc = addresses.grpc;
    }

    /// SIGKILL: nothing graceful happens; the agents stay.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the scheduler process has exited (or was never started).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("serve.log")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Local agents still alive.
    pub fn agent_pids(&self) -> Vec<i32> {
        agent_pids(&self.dir.join("data"))
    }

    /// The scheduler's resident memory, in KiB (0 if it is not running).
    pub fn rss_kib(&self) -> u64 {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // Before the reaper: a live scheduler could start new agents.
        self.kill_hard();
    }
}

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Kills, when dropped (a test that fails included), the scheduler
/// processes it holds and every local agent recorded under `data_dir`:
/// agents outlive their scheduler by design (a restart adopts them).
pub struct Reaper {
    /// Scheduler processes.
    pub children: Vec<Child>,
    data_dir: std::path::PathBuf,
}

impl Reaper {
    /// Watches the local agents recorded in `data_dir`.
    pub fn new(data_dir: &Path) -> Reaper {
        Reaper {
            children: Vec::new(),
            data_dir: data_dir.to_path_buf(),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The jobs' directories live outside the data directory.
        let _ = std::fs::remove_dir_all(ebbtide_provider_local::work_root_for(&self.data_dir));
        let Ok(entries) = std::fs::read_dir(self.data_dir.join("local-instances")) else {
            return;
        };
        for text in entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()) {
            let pid = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("pid")?.as_i64());
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Pids of the local agents recorded under `data_dir` that are alive.
pub fn agent_pids(data_dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("local-instances")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| {
            serde_json::from_str::<serde_json::Value>(&t)
                .ok()?
                .get("pid")?
                .as_i64()
        })
        .filter_map(|p| i32::try_from(p).ok())
        .filter(|p| alive(*p))
        .collect()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// A port free on loopback now, for a scheduler that must come back on the
/// same address after a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET base+path` as `key` (panics if the request cannot be made).
async fn get(client: &reqwest::Client, base: &str, path: &str, key: &str) -> reqwest::Response {
    client
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `GET /v1/jobs/ID` as `key`, as JSON.
pub async fn job(base: &str, key: &str, id: u64) -> serde_json::Value {
    let r = get(
        &reqwest::Client::new(),
        base,
        &format!("/v1/jobs/{id}"),
        key,
    )
    .await;
    r.json().await.expect("json")
}

/// `POST /v1/jobs` as `key`; returns the new job's id (panics, with the
/// answer, if there is none).
pub async fn submit(base: &str, key: &str, body: serde_json::Value) -> u64 {
    submit_with(&reqwest::Client::new(), base, key, &body).await
}

async fn submit_with(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &serde_json::Value,
) -> u64 {
    let r: serde_json::Value = client
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    r["id"].as_u64().unwrap_or_else(|| panic!("no id: {r}"))
}

/// `GET /v1/jobs/ID/logs` as `key`: the job's output so far.
pub async fn job_log(base: &str, key: &str, id: u64) -> String {
    job_log_with(&reqwest::Client::new(), base, key, id).await
}

async fn job_log_with(client: &reqwest::Client, base: &str, key: &str, id: u64) -> String {
    let r = get(client, base, &format!("/v1/jobs/{id}/logs"), key).await;
    r.text().await.expect("text")
}

/// The Prometheus exposition at `base/metrics`.
pub async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The operator key of [`OPERATORS`]: fleet-wide views.
pub const OPERATOR_KEY: &str = "oncall-key-0123456789abcdef";

/// An `[[operators]]` table to append to a test configuration.
pub const OPERATORS: &str =
    "\n[[operators]]\nname = \"oncall\"\napi_key = \"oncall-key-0123456789abcdef\"\n";

/// `GET /v1/status` as `key`, as JSON.
pub async fn status(base: &str, key: &str) -> serde_json::Value {
    let r = get(&reqwest::Client::new(), base, "/v1/status", key).await;
    r.json().await.expect("json")
}

/// Submits `body`, whose command must print `date +%s%N` as its first act,
/// and returns submit → running in milliseconds: the job's own clock
/// reading minus the instant before the POST (one machine, one clock), so
/// polling for the log adds nothing to the figure. `client` is reused so
/// the figure holds no connection set-up.
pub async fn submit_to_start_ms(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: serde_json::Value,
    limit: std::time::Duration,
) -> f64 {
    let sent = stats::now_ns();
    let id = submit_with(client, base, key, &body).await;
    let begin = std::time::Instant::now();
    loop {
        let text = job_log_with(client, base, key, id).await;
        if let Ok(started) = text.trim().parse::<u128>() {
            return started.saturating_sub(sent) as f64 / 1e6;
        }
        assert!(begin.elapsed() < limit, "job {id} never ran: {text:?}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
