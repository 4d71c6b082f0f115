//! Shared by the integration tests: start `ebbtide serve` and find its
//! address.

#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::Path;
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
pub fn serve_command(mut cmd: Command, log: &Path) -> (Child, String) {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = cmd
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("start ebbtide serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| {
            panic!(
                "no address in {line:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    (child, format!("http://{http}"))
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

/// `GET /v1/jobs/ID` as `key`, as JSON.
pub async fn job(base: &str, key: &str, id: u64) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}/v1/jobs/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
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
