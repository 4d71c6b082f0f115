//! Stopping is a decision: SIGTERM drains the scheduler (with its workers
//! left for the next one, or terminated), and an agent no scheduler
//! answers stops its job and exits. Real `ebbtide serve`, real agents.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "stop-key-0123456789abcdef";

fn config(data: &Path, server_extra: &str) -> String {
    format!(
        r#"
[server]
cluster = "stopping"
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
data_dir = "{data}"
tick = "200ms"
agent_program = "{bin}"
{server_extra}

[[classes]]
name = "high"
sla_target = "60s"

[[tenants]]
name = "stop"
api_key = "{KEY}"

[[pools]]
name = "warm"
provider = "local"
kind = "static"
warm = 1
boot_estimate = "1s"
[pools.shape]
name = "process"
cpu_millis = 1000
memory_mib = 256
"#,
        data = data.display(),
        bin = env!("CARGO_BIN_EXE_ebbtide"),
    )
}

/// A scratch directory jobs (an unprivileged user under root) can write.
fn shared_dir(root: &Path) -> std::path::PathBuf {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let d = root.join("shared");
    std::fs::create_dir(&d).expect("dir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    d
}

async fn submit(http: &str, command: &str) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(format!("{http}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&json!({ "class": "high", "command": command }))
        .send()
        .await
}

async fn submitted(http: &str, command: &str) -> u64 {
    let r: Value = submit(http, command)
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    r["id"].as_u64().unwrap_or_else(|| panic!("no id: {r}"))
}

async fn wait_status(http: &str, id: u64, want: &str) {
    let start = Instant::now();
    loop {
        let j = support::job(http, KEY, id).await;
        if j["status"] == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never {want}: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

use support::alive;

/// Submits a minute-long job that writes its pid into `shared`, waits until
/// it runs, and returns that pid (the shell execs into the sleep).
async fn long_job(http: &str, shared: &Path) -> i32 {
    let pid_file = shared.join("job.pid");
    let id = submitted(
        http,
        &format!("echo $$ > {}; exec sleep 60", pid_file.display()),
    )
    .await;
    wait_status(http, id, "running").await;
    let start = Instant::now();
    loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "job never wrote its pid"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_gone(pid: i32, limit: Duration, what: &str) {
    let start = Instant::now();
    while alive(pid) {
        assert!(start.elapsed() < limit, "{what} (pid {pid}) still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
}

/// Waits for the process to exit and returns whether it succeeded.
async fn exit_status(child: &mut std::process::Child, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s.success();
        }
        assert!(start.elapsed() < limit, "serve did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_refuses_new_work_lets_the_running_job_finish_and_leaves_the_worker_for_adoption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config(&data, "stop_grace = \"20s\"")).expect("config");
    let log = dir.path().join("serve.log");
    let mut reaper = support::Reaper::new(&data);
    let (mut child, http) = support::serve(&path, &log);
    let id = submitted(&http, "sleep 2; echo finished").await;
    wait_status(&http, id, "running").await;
    let agents = support::agent_pids(&data);
    sigterm(&child);
    let stopped_at = Instant::now();
    // The signal lands asynchronously: once the scheduler says it is
    // stopping, and while it drains, the API answers but takes no work.
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("stopping: no new submissions")
    {
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "never began to stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = submit(&http, "echo too-late")
        .await
        .expect("the draining API answers");
    assert_eq!(r.status(), 503, "a stopping scheduler stores nothing new");
    assert!(
        exit_status(&mut child, Duration::from_secs(30)).await,
        "clean exit"
    );
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(15),
        "it waited for the job, not for the whole grace: {took:?}"
    );
    for pid in &agents {
        assert!(alive(*pid), "the worker is left for the next scheduler");
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("left running for the next scheduler"),
        "{text}"
    );
    // The next scheduler finds the job done once, and nothing else stored.
    let (next, http) = support::serve(&path, &log);
    reaper.children.push(next);
    let j = support::job(&http, KEY, id).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 1);
    let listed: Value = reqwest::Client::new()
        .get(format!("{http}/v1/jobs"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_on_stop_terminate_ends_the_workers_and_their_jobs_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = shared_dir(dir.path());
    let data = dir.path().join("data");
    let path = dir.path().join("cluster.toml");
    std::fs::write(
        &path,
        config(&data, "stop_grace = \"1s\"\non_stop = \"terminate\""),
    )
    .expect("config");
    let _reaper = support::Reaper::new(&data);
    let (mut child, http) = support::serve(&path, &dir.path().join("serve.log"));
    let job_pid = long_job(&http, &shared).await;
    let agents = support::agent_pids(&data);
    sigterm(&child);
    assert!(
        exit_status(&mut child, Duration::from_secs(30)).await,
        "clean exit"
    );
    for pid in agents {
        wait_gone(pid, Duration::from_secs(10), "a terminated agent").await;
    }
    wait_gone(
        job_pid,
        Duration::from_secs(10),
        "the terminated worker's job",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_reaches_no_scheduler_stops_its_job_and_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = shared_dir(dir.path());
    let data = dir.path().join("data");
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config(&data, "agent_orphan_timeout = \"2s\"")).expect("config");
    let mut reaper = support::Reaper::new(&data);
    let (child, http) = support::serve(&path, &dir.path().join("serve.log"));
    reaper.children.push(child);
    let job_pid = long_job(&http, &shared).await;
    let agents = support::agent_pids(&data);
    // The scheduler dies and never comes back.
    for c in &mut reaper.children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let killed = Instant::now();
    for pid in agents {
        wait_gone(pid, Duration::from_secs(20), "an orphaned agent").await;
    }
    wait_gone(job_pid, Duration::from_secs(5), "the orphaned agent's job").await;
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "it waited its orphan timeout first"
    );
}
