//! Crashes under load, counted from the jobs' own side effects.
//!
//! 16 clients submit 1,500 short jobs to a real `ebbtide serve` with local
//! agents; each job appends `start-ID-ATTEMPT` and `end-ID-ATTEMPT` to a
//! file. The scheduler is SIGKILLed twice mid-burst — while submissions,
//! assignments and results are all in flight — and restarted on the same
//! ports. The agents survive, so every acknowledged job must run exactly
//! once, end succeeded, and say `attempts = 1`; nothing is lost.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "crash-key-0123456789abcdef";
const JOBS: usize = 1500;
const CLIENTS: usize = 16;

fn config(data: &Path, http: u16, grpc: u16) -> String {
    format!(
        r#"
[server]
cluster = "crash"
http_listen = "127.0.0.1:{http}"
grpc_listen = "127.0.0.1:{grpc}"
data_dir = "{data}"
tick = "200ms"
agent_program = "{bin}"

[engine]
heartbeat_timeout = "20s"
default_job_duration = "1s"

[[classes]]
name = "high"
sla_target = "60s"

[[tenants]]
name = "crash"
api_key = "{KEY}"

[[pools]]
name = "warm"
provider = "local"
kind = "static"
warm = 8
max = 8
capacity_per_instance = 4
boot_estimate = "1s"
[pools.shape]
name = "process"
cpu_millis = 4000
memory_mib = 1024
"#,
        data = data.display(),
        bin = env!("CARGO_BIN_EXE_ebbtide"),
    )
}

/// Lines of the side-effect file: (job, attempt) → (starts, ends).
fn effects(path: &Path) -> BTreeMap<u64, (u32, u32)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split('-');
        let (Some(kind), Some(job)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(job) = job.parse::<u64>() else {
            continue;
        };
        let e = out.entry(job).or_default();
        match kind {
            "start" => e.0 += 1,
            "end" => e.1 += 1,
            _ => {}
        }
    }
    out
}

async fn submit_until_done(
    base: String,
    share: usize,
    acknowledged: Arc<std::sync::Mutex<Vec<u64>>>,
    command: String,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut done = 0;
    while done < share {
        let answer = client
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(KEY)
            .json(&json!({ "class": "high", "command": command }))
            .send()
            .await;
        match answer {
            Ok(r) if r.status() == 201 => {
                let id = r.json::<Value>().await.expect("json")["id"]
                    .as_u64()
                    .expect("id");
                acknowledged.lock().expect("lock").push(id);
                done += 1;
            }
            // The scheduler is down (or refusing while it starts): the
            // submission was not acknowledged, so it is not counted; try
            // again shortly, as a CI system would.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a burst with crashes left behind.
struct Outcome {
    /// Acknowledged jobs' final records.
    records: BTreeMap<u64, Value>,
    /// (job) → (starts, ends) from the side-effect file.
    runs: BTreeMap<u64, (u32, u32)>,
    /// (jobs started, jobs acknowledged) at each crash.
    crashes: Vec<(usize, usize)>,
    /// The scheduler's log, all runs.
    log: String,
}

/// Submits [`JOBS`] from [`CLIENTS`] clients and SIGKILLs the scheduler
/// when each fraction of them has started — its agents too when
/// `kill_agents` — restarting it on the same ports each time; returns once
/// every acknowledged job is final.
async fn burst_with_crashes(fractions: &[f64], kill_agents: bool) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    // Jobs run as an unprivileged user when the tests run as root: their
    // side-effect file lives where that user may write.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let effects_dir = dir.path().join("effects");
    std::fs::create_dir(&effects_dir).expect("effects dir");
    std::fs::set_permissions(&effects_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let file = effects_dir.join("runs");
    let data = dir.path().join("data");
    // Fixed ports: clients and agents must find the restarted scheduler.
    let (http, grpc) = (support::free_port(), support::free_port());
    let mut scheduler = support::Scheduler::start(dir.path(), &config(&data, http, grpc));
    let base = format!("http://127.0.0.1:{http}");
    let command = format!(
        "echo start-$EBBTIDE_JOB_ID-$EBBTIDE_ATTEMPT >> {f}; sleep 0.05; echo end-$EBBTIDE_JOB_ID-$EBBTIDE_ATTEMPT >> {f}",
        f = file.display()
    );
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let share = JOBS / CLIENTS + usize::from(i < JOBS % CLIENTS);
            tokio::spawn(submit_until_done(
                base.clone(),
                share,
                acknowledged.clone(),
                command.clone(),
            ))
        })
        .collect();

    let started = || effects(&file).values().filter(|(s, _)| *s > 0).count();
    let mut crashes = Vec::new();
    for fraction in fractions {
        let target = (JOBS as f64 * fraction) as usize;
        wait_until(
            &format!("{target} jobs started"),
            Duration::from_secs(180),
            || started() >= target,
        )
        .await;
        let at_kill = (started(), acknowledged.lock().expect("lock").len());
        scheduler.kill_hard();
        if kill_agents {
            for pid in support::agent_pids(&data) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        crashes.push(at_kill);
        // A moment with no scheduler: agents finish jobs and hold their
        // results, sessions break, clients fail.
        tokio::time::sleep(Duration::from_millis(500)).await;
        scheduler.restart();
    }
    for c in clients {
        c.await.expect("client");
    }
    let ids: Vec<u64> = acknowledged.lock().expect("lock").clone();
    assert_eq!(ids.len(), JOBS);

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut records = BTreeMap::new();
    for id in &ids {
        loop {
            let j = support::job(&base, KEY, *id).await;
            if !["queued", "assigned", "running"].contains(&j["status"].as_str().unwrap_or("")) {
                records.insert(*id, j);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never finished: {j}\n{}",
                scheduler.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Outcome {
        records,
        runs: effects(&file),
        crashes,
        log: scheduler.log(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_run_exactly_once_through_three_scheduler_crashes_mid_burst() {
    let out = burst_with_crashes(&[0.2, 0.45, 0.7], false).await;
    let twice: Vec<(&u64, &(u32, u32))> = out.runs.iter().filter(|(_, (s, _))| *s > 1).collect();
    let never: Vec<&u64> = out
        .records
        .keys()
        .filter(|id| out.runs.get(id).is_none_or(|(s, _)| *s == 0))
        .collect();
    let not_succeeded: Vec<&Value> = out
        .records
        .values()
        .filter(|j| j["status"] != "succeeded")
        .collect();
    let wrong_attempts: Vec<&Value> = out
        .records
        .values()
        .filter(|j| j["attempts"] != 1)
        .collect();
    println!(
        "crash test (agents survive): {} acknowledged; crashes at (started, acknowledged) = {:?}; ran twice {}, never ran {}, not succeeded {}, attempts != 1 {}",
        out.records.len(),
        out.crashes,
        twice.len(),
        never.len(),
        not_succeeded.len(),
        wrong_attempts.len()
    );
    assert!(twice.is_empty(), "jobs that ran twice: {twice:?}");
    assert!(
        never.is_empty(),
        "acknowledged jobs that never ran: {never:?}"
    );
    assert!(
        not_succeeded.is_empty(),
        "jobs not succeeded: {not_succeeded:?}"
    );
    assert!(
        wrong_attempts.is_empty(),
        "the agents survived, so no job needed a second attempt: {wrong_attempts:?}"
    );
    let unfinished: Vec<&u64> = out
        .runs
        .iter()
        .filter(|(_, (_, e))| *e != 1)
        .map(|(j, _)| j)
        .collect();
    assert!(
        unfinished.is_empty(),
        "jobs whose run did not end exactly once: {unfinished:?}"
    );
    assert!(
        out.log.contains("its jobs continue"),
        "the restarted scheduler adopted the surviving workers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn when_workers_die_with_the_scheduler_reruns_are_visible_in_attempts_and_nothing_is_lost() {
    let out = burst_with_crashes(&[0.3, 0.6], true).await;
    // A run that started shows up as a start line; each attempt at most
    // once, and the stored attempt count covers every run that happened.
    let mut understated = Vec::new();
    let mut lost = Vec::new();
    let mut reruns = 0;
    for (id, j) in &out.records {
        let starts = out.runs.get(id).map_or(0, |(s, _)| *s);
        let attempts = j["attempts"].as_u64().unwrap_or(0) as u32;
        if starts > attempts {
            understated.push((*id, starts, attempts));
        }
        if j["status"] != "succeeded" {
            lost.push(j.clone());
        }
        reruns += starts.saturating_sub(1);
    }
    println!(
        "crash test (agents killed too): {} acknowledged; crashes at (started, acknowledged) = {:?}; re-runs {reruns}, attempts understated {}, not succeeded {}",
        out.records.len(),
        out.crashes,
        understated.len(),
        lost.len()
    );
    assert!(
        understated.is_empty(),
        "(job, runs, attempts) where a re-run did not show: {understated:?}"
    );
    assert!(lost.is_empty(), "jobs not succeeded: {lost:?}");
    assert!(
        out.log.contains("worker lost") || out.log.contains("dead or unknown-pool instances"),
        "the dead workers were noticed"
    );
}
