//! What an operator sees: `/v1/status` and `ebbtide status` against a
//! running scheduler with a known workload, and what a tenant's key is
//! refused or shown instead.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{OPERATOR_KEY, Scheduler};

const ALPHA: &str = "alpha-key-0123456789abcdef";
const BETA: &str = "beta-key-0123456789abcdef";

/// Two tenants (beta may run one job at a time), a warm worker, a burst
/// pool of two; workers cost $0.36 an hour.
fn config(dir: &Path) -> String {
    format!(
        r#"
[server]
cluster = "ops"
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
data_dir = "{data}"
tick = "200ms"
agent_program = "{bin}"

[engine]
heartbeat_timeout = "5s"
default_job_duration = "1s"

[[classes]]
name = "high"
sla_target = "30s"

[[tenants]]
name = "alpha"
api_key = "{ALPHA}"

[[tenants]]
name = "beta"
api_key = "{BETA}"
[tenants.quota]
max_running_jobs = 1

[[pools]]
name = "warm"
provider = "local"
kind = "static"
warm = 1
boot_estimate = "1s"
on_demand_price = 0.36
[pools.shape]
name = "process"
cpu_millis = 1000
memory_mib = 256

[[pools]]
name = "burst"
provider = "local"
kind = "dynamic"
max = 2
idle_timeout = "30s"
boot_estimate = "1s"
on_demand_price = 0.36
[pools.shape]
name = "process"
cpu_millis = 1000
memory_mib = 256
[pools.scaling]
scale_up_cooldown = "0s"
{operators}"#,
        data = dir.join("data").display(),
        bin = env!("CARGO_BIN_EXE_ebbtide"),
        operators = support::OPERATORS,
    )
}

fn ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn wait_running(server: &Scheduler, key: &str, id: u64) {
    let start = Instant::now();
    while support::job(&server.http, key, id).await["status"] != "running" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "job {id} never ran:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["id"].as_u64())
        .collect()
}

/// `ebbtide status ARGS` with `key`; its stdout.
fn cli_status(server: &Scheduler, key: &str, args: &[&str]) -> String {
    cli(server, key, &[&["status"], args].concat())
}

/// `ebbtide ARGS` with `key`; its stdout (it must succeed).
fn cli(server: &Scheduler, key: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(args)
        .env("EBBTIDE_URL", &server.http)
        .env("EBBTIDE_API_KEY", key)
        .output()
        .expect("run ebbtide status");
    assert!(
        out.status.success(),
        "ebbtide {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_view_lists_exactly_what_runs_and_waits_and_a_tenant_sees_only_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    let long = |_: ()| json!({ "class": "high", "command": "sleep 120" });
    let a = support::submit(&server.http, ALPHA, long(())).await;
    let b1 = support::submit(&server.http, BETA, long(())).await;
    wait_running(&server, ALPHA, a).await;
    wait_running(&server, BETA, b1).await;
    let before_b2 = ms_now();
    let b2 = support::submit(&server.http, BETA, long(())).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let fleet = support::status(&server.http, OPERATOR_KEY).await;
    let asked_at = ms_now();
    // Jobs on workers: exactly a and b1, each on a worker listed with it.
    let running = &fleet["running"];
    assert_eq!(ids(running), vec![a, b1], "{fleet:#}");
    assert_eq!(running[0]["tenant"], "alpha");
    assert_eq!(running[1]["tenant"], "beta");
    let workers = fleet["workers"].as_array().expect("workers");
    for r in running.as_array().expect("running") {
        assert_eq!(r["state"], "running");
        let holder = workers
            .iter()
            .find(|w| w["id"] == r["worker"])
            .unwrap_or_else(|| panic!("worker of {r} listed: {fleet:#}"));
        assert_eq!(holder["state"], "busy");
        assert_eq!(holder["jobs"], json!([r["id"]]));
        assert_eq!(holder["jobs_served"], 1);
        assert!(holder["up_s"].as_u64().is_some(), "{holder}");
        assert!(
            holder["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
            "{holder}"
        );
    }
    // The workers are those the pools count, no more.
    let pooled: u64 = fleet["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| {
            ["requested", "booting", "idle", "busy", "retiring"]
                .iter()
                .map(|k| p[*k].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
        .sum();
    assert_eq!(workers.len() as u64, pooled, "{fleet:#}");
    // The queue: b2 alone, its wait right to the second.
    let queue = fleet["queue"].as_array().expect("queue");
    assert_eq!(queue.len(), 1, "{fleet:#}");
    assert_eq!(
        (&queue[0]["class"], &queue[0]["tenant"]),
        (&json!("high"), &json!("beta"))
    );
    assert_eq!(queue[0]["queued"], 1);
    let waited = queue[0]["oldest_wait_ms"].as_u64().expect("wait");
    let true_wait = asked_at - before_b2;
    assert!(
        waited <= true_wait + 50 && waited + 1000 >= true_wait,
        "oldest wait {waited} ms, true wait about {true_wait} ms"
    );
    assert_eq!(queue[0]["sla_target_s"], 30.0);
    assert_eq!(queue[0]["over_target"], false);
    // The decision that brought up the burst worker, with its reason.
    let decisions = fleet["decisions"].as_array().expect("decisions");
    let scale = decisions
        .iter()
        .find(|d| d["kind"] == "scale" && d["pool"] == "burst")
        .unwrap_or_else(|| panic!("a burst scale decision: {fleet:#}"));
    assert!(
        scale["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("desired 0 -> 1") && s.contains(": ")),
        "{scale}"
    );
    // Two workers at $0.36/h.
    let rate = fleet["cost"]["rate_per_hour_usd"].as_f64().expect("rate");
    assert!((rate - 0.72).abs() < 1e-9, "{rate}");

    // A tenant's key: its own queue and jobs, nothing of the fleet.
    let beta = support::status(&server.http, BETA).await;
    assert_eq!(beta["tenant"], "beta");
    assert_eq!(ids(&beta["running"]), vec![b1]);
    assert_eq!(beta["queued"], 1);
    for fleet_only in ["pools", "workers", "decisions", "cost"] {
        assert!(
            beta.get(fleet_only).is_none(),
            "{fleet_only} shown to a tenant: {beta}"
        );
    }
    let alpha = support::status(&server.http, ALPHA).await;
    assert_eq!(ids(&alpha["running"]), vec![a]);
    assert_eq!(alpha["queue"], json!([]));

    // Operators read any tenant's job and list everyone's; they submit
    // nothing; tenants cannot list another's.
    assert_eq!(
        support::job(&server.http, OPERATOR_KEY, b2).await["tenant"],
        "beta"
    );
    let client = reqwest::Client::new();
    let all: Value = client
        .get(format!("{}/v1/jobs", server.http))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&all["jobs"]), vec![a, b1, b2]);
    let refused = client
        .post(format!("{}/v1/jobs", server.http))
        .bearer_auth(OPERATOR_KEY)
        .json(&long(()))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 403);
    let snooping = client
        .get(format!("{}/v1/jobs?tenant=beta", server.http))
        .bearer_auth(ALPHA)
        .send()
        .await
        .expect("list");
    assert_eq!(snooping.status(), 400);
    assert_eq!(
        support::job(&server.http, ALPHA, b1).await["error"]["message"],
        format!("no job {b1}")
    );

    // The CLI shows the same, as tables and as JSON.
    let screen = cli_status(&server, OPERATOR_KEY, &[]);
    assert!(screen.starts_with("ebbtide fleet at "), "{screen}");
    for expected in [
        "WORKER",
        "burst",
        "warm",
        "JOB",
        "beta",
        "OLDEST WAIT",
        "RECENT DECISIONS",
        "desired 0 -> 1",
        "$0.72/h now",
    ] {
        assert!(screen.contains(expected), "{expected:?} missing:\n{screen}");
    }
    let jobs_table = screen
        .split("\n\n")
        .find(|t| t.starts_with("JOB "))
        .unwrap_or_else(|| panic!("a table of jobs:\n{screen}"));
    let job_line = jobs_table
        .lines()
        .find(|l| l.starts_with(&format!("{b1} ")))
        .unwrap_or_else(|| panic!("a line for job {b1}:\n{screen}"));
    assert!(
        job_line.contains("beta") && job_line.contains("running"),
        "{job_line}"
    );
    let mine = cli_status(&server, BETA, &[]);
    assert!(mine.starts_with("tenant beta at "), "{mine}");
    for fleet_only in ["POOL", "MARKET", "DECISIONS", "alpha"] {
        assert!(
            !mine.contains(fleet_only),
            "{fleet_only:?} shown to a tenant:\n{mine}"
        );
    }
    let json: Value =
        serde_json::from_str(&cli_status(&server, OPERATOR_KEY, &["--json"])).expect("json");
    assert_eq!(ids(&json["running"]), vec![a, b1]);

    // Why b2 waits: its tenant's quota, said in the words of the setting.
    let why = cli(&server, OPERATOR_KEY, &["explain", &b2.to_string()]);
    assert!(
        why.starts_with(&format!("job {b2} (beta, class high): queued")),
        "{why}"
    );
    assert!(
        why.contains("held by:\n  - its tenant's quota: 1 of max_running_jobs = 1 running"),
        "{why}"
    );
    assert!(
        why.contains("POOL") && why.contains("warm") && why.contains("burst"),
        "{why}"
    );
    assert!(
        why.contains("burst: last decision at "),
        "the planner's word on the pool: {why}"
    );
    let running = cli(&server, BETA, &["explain", &b1.to_string()]);
    assert!(
        running.contains("nothing holds it: it is on a worker"),
        "{running}"
    );
    // The tenant's explanation leaves out the fleet's decisions; another
    // tenant's job is not there for it.
    let own: Value = client
        .get(format!("{}/v1/jobs/{b2}/explain", server.http))
        .bearer_auth(BETA)
        .send()
        .await
        .expect("explain")
        .json()
        .await
        .expect("json");
    let pools = own["pools"].as_array().expect("pools");
    assert_eq!(pools.len(), 2, "{own}");
    assert!(pools.iter().all(|p| p["last_decision"].is_null()), "{own}");
    let other = client
        .get(format!("{}/v1/jobs/{b2}/explain", server.http))
        .bearer_auth(ALPHA)
        .send()
        .await
        .expect("explain");
    assert_eq!(other.status(), 404);
    // Cancelled from the CLI, b2 is done, and there is nothing to explain.
    assert_eq!(
        cli(&server, OPERATOR_KEY, &["cancel", &b2.to_string()]).trim(),
        format!("cancel of job {b2} requested")
    );
    let start = Instant::now();
    while support::job(&server.http, BETA, b2).await["status"] != "cancelled" {
        assert!(start.elapsed() < Duration::from_secs(10), "never cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = client
        .get(format!("{}/v1/jobs/{b2}/explain", server.http))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .expect("explain");
    assert_eq!(done.status(), 409);
    // Paging through every tenant's jobs from the CLI.
    let page = cli(&server, OPERATOR_KEY, &["jobs", "--limit", "2"]);
    assert_eq!(page.lines().count(), 3, "a header and two jobs:\n{page}");
    let rest = cli(&server, OPERATOR_KEY, &["jobs", "--after", &b1.to_string()]);
    assert!(
        rest.lines()
            .nth(1)
            .is_some_and(|l| l.trim_start().starts_with(&format!("{b2} "))),
        "{rest}"
    );
    // An operator drains the worker running a: it takes no new job, a
    // keeps running; tenants may not drain; an unknown worker is a 404.
    let a_worker = fleet["running"][0]["worker"].as_u64().expect("a's worker");
    let drained = cli(&server, OPERATOR_KEY, &["drain", &a_worker.to_string()]);
    assert!(
        drained.starts_with(&format!("drain of worker {a_worker} requested")),
        "{drained}"
    );
    let after = support::status(&server.http, OPERATOR_KEY).await;
    let w = after["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == json!(a_worker)))
        .cloned()
        .expect("still listed while its job runs");
    assert_eq!(
        (&w["state"], &w["draining_because"]),
        (&json!("draining"), &json!("operator")),
        "{w}"
    );
    assert_eq!(
        support::job(&server.http, ALPHA, a).await["status"],
        "running"
    );
    assert!(
        after["decisions"][0]["summary"]
            .as_str()
            .is_some_and(|s| s == format!("draining worker {a_worker}: operator")),
        "{after:#}"
    );
    for (key, status) in [(ALPHA, 403), (OPERATOR_KEY, 404)] {
        let worker = if key == ALPHA { a_worker } else { 999 };
        let r = client
            .post(format!("{}/v1/workers/{worker}/drain", server.http))
            .bearer_auth(key)
            .send()
            .await
            .expect("drain");
        assert_eq!(r.status(), status);
    }
    // Probes need no key and build no fleet view.
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = client
            .get(format!("{}{path}", server.http))
            .send()
            .await
            .expect("probe");
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.expect("text"), body);
    }
    // The scheduler's log goes to a file here: plain text, no colour codes.
    assert!(!server.log().contains('\u{1b}'), "{}", server.log());
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "watch"])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

/// Waits until the pane shows `wanted`; returns the screen.
async fn screen_showing(tmux: &Tmux, wanted: &str) -> String {
    let start = Instant::now();
    loop {
        let screen = tmux.screen();
        if screen.contains(wanted) {
            return screen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{wanted:?} never shown:\n{screen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_watch_redraws_in_place_in_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    let tmux = Tmux(format!("ebbtide-test-{}", std::process::id()));
    let command = format!(
        "EBBTIDE_URL={} EBBTIDE_API_KEY={OPERATOR_KEY} {} status --watch --interval 300ms",
        server.http,
        env!("CARGO_BIN_EXE_ebbtide")
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "160",
        "-y",
        "50",
        &command,
    ]);
    let first = screen_showing(&tmux, "warm").await;
    assert!(first.starts_with("ebbtide fleet at "), "{first}");
    // A job appears on the next redraw, in place: one header, at the top.
    let id = support::submit(
        &server.http,
        ALPHA,
        json!({ "class": "high", "command": "sleep 30" }),
    )
    .await;
    let later = screen_showing(&tmux, "alpha").await;
    assert!(later.starts_with("ebbtide fleet at "), "{later}");
    assert_eq!(later.matches("ebbtide fleet at").count(), 1, "{later}");
    let jobs = later
        .split("\n\n")
        .find(|t| t.starts_with("JOB "))
        .unwrap_or_else(|| panic!("a table of jobs:\n{later}"));
    assert!(
        jobs.lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("alpha")),
        "{later}"
    );
    // Cancelled, the job leaves the screen: a redraw leaves nothing of
    // the longer screen before it.
    let cancelled = reqwest::Client::new()
        .post(format!("{}/v1/jobs/{id}/cancel", server.http))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), 202);
    let after = screen_showing(&tmux, "no jobs on workers").await;
    assert!(!after.contains("alpha"), "{after}");
    assert_eq!(after.matches("ebbtide fleet at").count(), 1, "{after}");
}

/// The pid of the local agent of `worker`.
fn agent_of(server: &Scheduler, worker: u64) -> i32 {
    server
        .agent_pids()
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"--worker-id" && w[1] == worker.to_string().as_bytes())
            })
        })
        .unwrap_or_else(|| panic!("no agent for worker {worker}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_label_each_attempt_and_follow_a_job_to_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    let command = "echo \"attempt $EBBTIDE_ATTEMPT began\"; if [ \"$EBBTIDE_ATTEMPT\" = 1 ]; then sleep 60; fi; echo done";
    let id = support::submit(
        &server.http,
        ALPHA,
        json!({ "class": "high", "command": command, "max_attempts": 2 }),
    )
    .await;
    wait_running(&server, ALPHA, id).await;
    let start = Instant::now();
    while support::job_log(&server.http, ALPHA, id).await.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no output");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let follow = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["logs", "--follow", &id.to_string()])
        .env("EBBTIDE_URL", &server.http)
        .env("EBBTIDE_API_KEY", ALPHA)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs --follow");
    // Its worker dies: the job is lost there and run again elsewhere.
    let worker = support::status(&server.http, OPERATOR_KEY).await["running"][0]["worker"]
        .as_u64()
        .expect("the job's worker");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_of(&server, worker)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the agent");
    // `--follow` ends by itself once the job is finished.
    let out = tokio::task::spawn_blocking(move || follow.wait_with_output())
        .await
        .expect("join")
        .expect("logs --follow exits");
    assert!(out.status.success());
    let job = support::job(&server.http, ALPHA, id).await;
    assert_eq!(
        (&job["status"], &job["attempts"]),
        (&json!("succeeded"), &json!(2)),
        "{job}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "attempt 1 began\n── attempt 2 ──\nattempt 2 began\ndone\n",
        "followed from attempt 1, labelled from the second"
    );
    // Read afterwards, every attempt is labelled.
    assert_eq!(
        cli(&server, ALPHA, &["logs", &id.to_string()]),
        "── attempt 1 ──\nattempt 1 began\n── attempt 2 ──\nattempt 2 began\ndone\n"
    );
}
