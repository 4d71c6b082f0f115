//! A job tries to read what the scheduler keeps from it — the session key,
//! the store, the configuration with every tenant's API key, the
//! scheduler's and its agent's environments — and finds none of it. Real
//! `ebbtide serve`, real local agents.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "alpha-key-0123456789abcdef";
/// Stands in for a cloud credential in the scheduler's environment.
const SECRET: &str = "AKIA-scheduler-only-secret-7f3a";

fn config(data: &std::path::Path) -> String {
    format!(
        r#"
[server]
cluster = "isolation"
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
data_dir = "{data}"
tick = "200ms"
agent_program = "{bin}"

[[classes]]
name = "high"
sla_target = "60s"

[[tenants]]
name = "alpha"
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

#[tokio::test(flavor = "multi_thread")]
async fn a_job_cannot_read_the_schedulers_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Traversable, so what protects the secrets is their own modes.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = dir.path().join("data");
    let config_path = dir.path().join("cluster.toml");
    std::fs::write(&config_path, config(&data)).expect("config");
    // As an operator keeps a file with API keys in it.
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut reaper = support::Reaper::new(&data);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ebbtide"));
    cmd.args(["serve", "--config"])
        .arg(&config_path)
        .env("AWS_SECRET_ACCESS_KEY", SECRET);
    let (child, http) = support::serve_command(cmd, &dir.path().join("serve.log"));
    let scheduler_pid = child.id();
    reaper.children.push(child);

    let targets = [
        data.join("session.key"),
        data.join("ebbtide.db"),
        config_path.clone(),
        format!("/proc/{scheduler_pid}/environ").into(),
    ];
    let mut probe = String::new();
    for t in &targets {
        probe.push_str(&format!(
            "if cat {p} >/dev/null 2>&1; then echo READ {p}; else echo DENIED {p}; fi; ",
            p = t.display()
        ));
    }
    // The agent is the job shell's parent: its environment held the
    // bootstrap token.
    probe.push_str("if cat /proc/$PPID/environ >/dev/null 2>&1; then echo READ agent-environ; else echo DENIED agent-environ; fi; ");
    probe.push_str("echo CWD $(pwd); env");
    let r: Value = reqwest::Client::new()
        .post(format!("{http}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&json!({ "class": "high", "command": probe }))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let id = r["id"].as_u64().unwrap_or_else(|| panic!("no id: {r}"));
    let start = Instant::now();
    let j = loop {
        let j = support::job(&http, KEY, id).await;
        if j["status"] == "succeeded" || j["status"] == "failed" {
            break j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "job never ended: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = support::job_log(&http, KEY, id).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{log}");
    let root = nix::unistd::geteuid().is_root();
    println!("jobs run as an unprivileged user: {root}\n{log}");
    for t in &targets {
        let path = t.display().to_string();
        // Without root the job runs as the scheduler's user, which can read
        // the scheduler's own files; /proc is closed either way.
        if root || path.starts_with("/proc/") {
            assert!(
                log.contains(&format!("DENIED {path}")),
                "the job read {path}:\n{log}"
            );
        }
    }
    assert!(log.contains("DENIED agent-environ"), "{log}");
    for leaked in [SECRET, "EBBTIDE_BOOTSTRAP_TOKEN", KEY] {
        assert!(!log.contains(leaked), "{leaked} reached the job:\n{log}");
    }
    let cwd = log
        .lines()
        .find_map(|l| l.strip_prefix("CWD "))
        .expect("cwd line");
    assert!(
        cwd.contains(&format!("job-{id}-1")),
        "the job runs in its own directory, not the scheduler's: {cwd}"
    );
    assert!(
        log.lines().any(|l| l == format!("EBBTIDE_JOB_ID={id}")),
        "{log}"
    );
    // Files of the data directory are the scheduler's alone.
    for entry in std::fs::read_dir(&data).expect("data dir") {
        let path = entry.expect("entry").path();
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is open to others: {mode:o}",
            path.display()
        );
    }
    let mode = std::fs::metadata(&data).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "data dir mode {mode:o}");
}
