//! End to end on the real Docker engine: `ebbtide serve` with
//! `examples/docker.toml` (made quick and isolated), worker containers that
//! self-register and run jobs, retirement after the idle timeout, and a
//! scheduler SIGKILLed while containers run: after the restart every
//! container is adopted or removed, and none is left at the end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

use support::Scheduler;
use support::docker::{Cleanup, containers};

const KEY: &str = "demo-key-0123456789abcdef";

/// `examples/docker.toml` with a unique cluster, a private data directory,
/// fast timers, and one dynamic pool so everything retires when idle.
fn config(dir: &Path, cluster: &str, grpc: &str) -> String {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/docker.toml"
    ))
    .expect("examples/docker.toml");
    let mut text = example;
    for (from, to) in [
        ("cluster = \"docker-demo\"", format!("cluster = \"{cluster}\"")),
        ("http_listen = \"127.0.0.1:8080\"", "http_listen = \"127.0.0.1:0\"".into()),
        ("grpc_listen = \"127.0.0.1:8081\"", format!("grpc_listen = \"{grpc}\"")),
        (
            "data_dir = \".ebbtide-docker\"",
            format!("data_dir = \"{}\"", dir.join("data").display()),
        ),
        ("tick = \"1s\"", "tick = \"200ms\"".into()),
        ("reconcile_interval = \"15s\"", "reconcile_interval = \"1s\"".into()),
        ("orphan_grace = \"1m\"", "orphan_grace = \"2s\"".into()),
        ("heartbeat_timeout = \"15s\"", "heartbeat_timeout = \"5s\"".into()),
        (
            "kind = \"static\"\nwarm = 2",
            "kind = \"dynamic\"\nmin = 0\nmax = 4\nidle_timeout = \"2s\"".into(),
        ),
        ("idle_timeout = \"30s\"", "idle_timeout = \"2s\"".into()),
        (
            "memory_mib = 256\n",
            "memory_mib = 256\n[pools.scaling]\nscale_down_cooldown = \"1s\"\ndown_stabilization = \"1s\"\n".into(),
        ),
        ("scale_down_cooldown = \"15s\"", "scale_down_cooldown = \"1s\"".into()),
        ("down_stabilization = \"15s\"", "down_stabilization = \"1s\"".into()),
        ("stop_grace_secs = 5", "stop_grace_secs = 1".into()),
    ] {
        assert!(text.contains(from), "examples/docker.toml no longer has {from}");
        text = text.replacen(from, &to, 1);
    }
    text
}

async fn submit(s: &Scheduler, command: &str) -> u64 {
    let body = json!({ "class": "high", "command": command, "labels": ["container"] });
    support::submit(&s.http, KEY, body).await
}

async fn job(s: &Scheduler, id: u64) -> Value {
    support::job(&s.http, KEY, id).await
}

/// Waits for every job to end; returns them and the most containers seen.
async fn wait_all(s: &Scheduler, ids: &[u64], cluster: &str, dir: &Path) -> (Vec<Value>, usize) {
    let start = Instant::now();
    let mut most = 0;
    loop {
        most = most.max(containers(cluster).len());
        let mut jobs = Vec::new();
        for id in ids {
            jobs.push(job(s, *id).await);
        }
        let open = jobs
            .iter()
            .filter(|j| {
                ["queued", "assigned", "running"].contains(&j["status"].as_str().unwrap_or(""))
            })
            .count();
        if open == 0 {
            return (jobs, most);
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{open} jobs unfinished: {jobs:?}\n{}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_scale_with_a_burst_survive_a_scheduler_crash_and_none_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = format!("e2e-docker-{}", std::process::id());
    let _cleanup = Cleanup(cluster.clone());
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let grpc = free.local_addr().expect("addr").to_string();
    drop(free);
    let text = config(dir.path(), &cluster, &grpc);

    // A burst: containers launch, agents register, jobs run.
    let mut server = Scheduler::start(dir.path(), &text);
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(submit(&server, &format!("sleep 1; echo burst-{i}")).await);
    }
    let (jobs, most) = wait_all(&server, &ids, &cluster, dir.path()).await;
    for j in &jobs {
        assert_eq!(j["status"], "succeeded", "{j}");
    }
    assert!(
        most >= 2,
        "the pool grew to several containers (saw {most})"
    );

    // Long jobs running in containers when the scheduler is SIGKILLed.
    let mut long = Vec::new();
    for i in 0..3 {
        long.push(submit(&server, &format!("sleep 4; echo survived-{i}")).await);
    }
    let start = Instant::now();
    while job(&server, long[0]).await["status"] != "running" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "long job never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill_hard();
    let survivors = containers(&cluster);
    assert!(!survivors.is_empty(), "containers outlive the scheduler");

    // An orphan: a container of our cluster that no worker record owns, as
    // a crash between launch and record would leave.
    let image = String::from_utf8_lossy(
        &Command::new("docker")
            .args(["inspect", "-f", "{{.Config.Image}}", &survivors[0]])
            .output()
            .expect("inspect")
            .stdout,
    )
    .trim()
    .to_string();
    let orphan = Command::new("docker")
        .args(["run", "-d", "--network", "none", "--label"])
        .arg(format!("ebbtide.cluster={cluster}"))
        .args([
            "--label",
            "ebbtide.pool=burst",
            "--label",
            "ebbtide.worker=999999",
            &image,
            "/bin/sleep",
            "300",
        ])
        .output()
        .expect("docker run");
    assert!(
        orphan.status.success(),
        "{}",
        String::from_utf8_lossy(&orphan.stderr)
    );

    server.restart();
    let (jobs, _) = wait_all(&server, &long, &cluster, dir.path()).await;
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    for j in &jobs {
        assert_eq!(j["status"], "succeeded", "{j}\n{log}");
    }
    assert!(
        jobs.iter().any(|j| j["attempts"] == 1),
        "a job running at the crash finished in its adopted container: {jobs:?}\n{log}"
    );
    assert!(log.contains("adopted"), "survivors were adopted:\n{log}");

    // Idle containers retire, the orphan is removed: nothing is left.
    let start = Instant::now();
    loop {
        let left = containers(&cluster);
        if left.is_empty() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let exited = server.exited();
            let status = reqwest::Client::new()
                .get(format!("{}/v1/status", server.http))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("status")
                .text()
                .await;
            panic!(
                "containers left behind: {left:?}; scheduler exited: {exited:?}; status: {status:?}\n{}",
                std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        log.contains("terminating instances no worker owns"),
        "the reconciler removed the orphan:\n{log}"
    );
}
