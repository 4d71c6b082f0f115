//! Ebbtide end to end on one machine: the real `ebbtide serve` process,
//! real `ebbtide agent` processes launched by the local provider, real
//! HTTP and gRPC on loopback.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ebbtide_proto::worker::v1::RegisterRequest;
use ebbtide_proto::worker::v1::worker_api_client::WorkerApiClient;
use serde_json::{Value, json};
use support::{Scheduler, alive};

const KEYS: [(&str, &str); 3] = [
    ("alpha", "alpha-key-0123456789abcdef"),
    ("beta", "beta-key-0123456789abcdef"),
    ("gamma", "gamma-key-0123456789abcdef"),
];

fn config(dir: &Path) -> String {
    config_with(dir, "127.0.0.1:0", None)
}

fn config_with(dir: &Path, grpc_listen: &str, public_grpc_url: Option<&str>) -> String {
    let public = public_grpc_url
        .map(|u| format!("public_grpc_url = \"{u}\"\n"))
        .unwrap_or_default();
    let tenants: String = KEYS
        .iter()
        .map(|(t, k)| format!("[[tenants]]\nname = \"{t}\"\napi_key = \"{k}\"\n\n"))
        .collect();
    format!(
        r#"
[server]
cluster = "e2e"
http_listen = "127.0.0.1:0"
grpc_listen = "{grpc_listen}"
{public}data_dir = "{data}"
tick = "200ms"
agent_program = "{bin}"

[engine]
heartbeat_timeout = "5s"
default_job_duration = "1s"

[[classes]]
name = "high"
sla_target = "20s"

{tenants}{operators}
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

[[pools]]
name = "burst"
provider = "local"
kind = "dynamic"
max = 6
capacity_per_instance = 2
idle_timeout = "2s"
boot_estimate = "1s"
[pools.shape]
name = "process"
cpu_millis = 2000
memory_mib = 512
[pools.scaling]
scale_up_cooldown = "0s"
scale_down_cooldown = "1s"
down_stabilization = "1s"
"#,
        data = dir.join("data").display(),
        bin = env!("CARGO_BIN_EXE_ebbtide"),
        operators = support::OPERATORS,
    )
}

/// A running `ebbtide serve`; killed (with its agents) when dropped.
fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn submit(s: &Scheduler, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/jobs", s.http))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn job(s: &Scheduler, key: &str, id: u64) -> reqwest::Response {
    client()
        .get(format!("{}/v1/jobs/{id}", s.http))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
}

async fn wait_final(s: &Scheduler, key: &str, id: u64, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let j: Value = job(s, key, id).await.json().await.expect("json");
        let st = j["status"].as_str().unwrap_or("");
        if !["queued", "assigned", "running"].contains(&st) || start.elapsed() > limit {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_warm_agent(server: &Scheduler) {
    let start = Instant::now();
    while status(server).await["pools"][0]["idle"] != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "warm agent never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(s: &Scheduler) -> Value {
    support::status(&s.http, support::OPERATOR_KEY).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_200_jobs_over_three_tenants_runs_to_completion_and_the_pool_scales_back_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    let mut ids = Vec::new();
    for i in 0..200 {
        let (_, key) = KEYS[i % 3];
        let r = submit(
            &server,
            key,
            json!({ "class": "high", "command": format!("sleep 0.3; echo job-{i}") }),
        )
        .await;
        assert_eq!(r.status(), 201);
        let j: Value = r.json().await.expect("json");
        ids.push((key, j["id"].as_u64().expect("id"), i));
    }
    for (key, id, i) in &ids {
        let j = wait_final(&server, key, *id, Duration::from_secs(60)).await;
        assert_eq!(j["status"], "succeeded", "job {id}: {j}");
        let log = support::job_log(&server.http, key, *id).await;
        assert_eq!(log.trim(), format!("job-{i}"));
    }
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(
        log.contains("pool=burst from=0"),
        "the burst pool scaled up from zero with a logged decision"
    );
    let start = Instant::now();
    loop {
        let st = status(&server).await;
        let burst = &st["pools"][1];
        let left: u64 = ["requested", "booting", "idle", "busy", "retiring"]
            .iter()
            .map(|k| burst[k].as_u64().unwrap_or(0))
            .sum();
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "burst pool did not scale back down: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status(&server).await["pools"][0]["idle"],
        1,
        "the warm pool stays warm"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_see_only_their_own_jobs_and_bad_requests_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    let r = submit(
        &server,
        KEYS[0].1,
        json!({ "class": "high", "command": "true" }),
    )
    .await;
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_u64()
        .expect("id");
    assert_eq!(
        job(&server, KEYS[1].1, id).await.status(),
        404,
        "another tenant's job does not exist for you"
    );
    assert_eq!(job(&server, "not-a-key", id).await.status(), 401);
    let cancel = client()
        .post(format!("{}/v1/jobs/{id}/cancel", server.http))
        .bearer_auth(KEYS[1].1)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status(), 404);

    let bad = submit(
        &server,
        KEYS[0].1,
        json!({ "class": "urgent", "command": "true" }),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let e: Value = bad.json().await.expect("json");
    assert_eq!(e["error"]["field"], "class", "{e}");
    let bad = submit(
        &server,
        KEYS[0].1,
        json!({ "class": "high", "command": "true", "timeout_s": 0 }),
    )
    .await;
    assert_eq!(
        bad.json::<Value>().await.expect("json")["error"]["field"],
        "timeout_s"
    );
    let bad = submit(
        &server,
        KEYS[0].1,
        json!({ "class": "high", "command": "echo a\u{0}b" }),
    )
    .await;
    assert_eq!(bad.status(), 400, "a NUL byte is refused at the door");
    let e = bad.json::<Value>().await.expect("json");
    assert_eq!(e["error"]["field"], "command", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap_or("").contains("NUL"),
        "{e}"
    );
    let bad = submit(
        &server,
        KEYS[0].1,
        json!({ "class": "high", "command": "true", "colour": "red" }),
    )
    .await;
    let e: Value = bad.json().await.expect("json");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field `colour`"),
        "{e}"
    );
    let bad = submit(
        &server,
        KEYS[0].1,
        json!({ "class": "high", "command": "true", "labels": ["gpu"] }),
    )
    .await;
    assert_eq!(
        bad.status(),
        422,
        "no pool offers gpu: refused with the reason"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_reused_bootstrap_tokens_are_refused_and_never_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    wait_for_warm_agent(&server).await;
    let pid = server.agent_pids()[0];
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    let token = environ
        .split('\0')
        .find_map(|kv| kv.strip_prefix("EBBTIDE_BOOTSTRAP_TOKEN="))
        .expect("token")
        .to_string();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let worker: u64 = cmdline
        .split('\0')
        .skip_while(|a| *a != "--worker-id")
        .nth(1)
        .expect("worker id")
        .parse()
        .expect("number");

    let mut grpc = WorkerApiClient::connect(server.grpc.clone())
        .await
        .expect("connect");
    let e = grpc
        .register(RegisterRequest {
            worker_id: worker,
            bootstrap_token: token.clone(),
            agent_version: "t".into(),
            identity: None,
        })
        .await
        .expect_err("reused");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Unauthenticated, "bootstrap token already used")
    );
    let e = grpc
        .register(RegisterRequest {
            worker_id: worker,
            bootstrap_token: "f".repeat(64),
            agent_version: "t".into(),
            identity: None,
        })
        .await
        .expect_err("forged");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Unauthenticated, "unknown bootstrap token")
    );
    let e = grpc
        .register(RegisterRequest {
            worker_id: worker,
            bootstrap_token: String::new(),
            agent_version: "t".into(),
            identity: None,
        })
        .await
        .expect_err("empty");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(
        !log.contains(&token),
        "a bootstrap token never appears in the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_registers_after_its_bootstrap_token_expired_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // A slow-booting instance: the agent starts 1.5 s after launch, its
    // token lives 500 ms.
    let slow = dir.path().join("slow-agent.sh");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\nsleep 1.5\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_ebbtide")
        ),
    )
    .expect("script");
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let text = config(dir.path())
        .replace(env!("CARGO_BIN_EXE_ebbtide"), &slow.display().to_string())
        .replace(
            "tick = \"200ms\"",
            "tick = \"200ms\"\nbootstrap_token_ttl = \"500ms\"",
        );
    let server = Scheduler::start(dir.path(), &text);
    let agent_log = dir.path().join("data/local-instances/worker-1.log");
    let start = Instant::now();
    let refused = loop {
        let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
        if log.contains("registration refused") || start.elapsed() > Duration::from_secs(20) {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refused.contains("bootstrap token expired"),
        "agent log: {refused}"
    );
    assert_eq!(
        status(&server).await["pools"][0]["idle"],
        0,
        "the expired worker never joined the pool"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduler_killed_mid_burst_loses_no_job_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Scheduler::start(dir.path(), &config(dir.path()));
    let mut ids = Vec::new();
    for i in 0..30 {
        let r = submit(
            &server,
            KEYS[i % 3].1,
            json!({ "class": "high", "command": "sleep 0.5" }),
        )
        .await;
        assert_eq!(r.status(), 201);
        ids.push((
            KEYS[i % 3].1,
            r.json::<Value>().await.expect("json")["id"]
                .as_u64()
                .expect("id"),
        ));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill_hard(); // SIGKILL: nothing graceful happens
    let orphans = server.agent_pids();
    assert!(!orphans.is_empty(), "agents outlive the crashed scheduler");
    // Restarted on another worker-API port: the surviving agents cannot
    // reconnect, so after the heartbeat timeout they are lost, terminated,
    // and their jobs requeued.
    server.restart();
    for (key, id) in &ids {
        let j = wait_final(&server, key, *id, Duration::from_secs(60)).await;
        assert_eq!(j["status"], "succeeded", "job {id} after restart: {j}");
    }
    for pid in orphans {
        assert!(!alive(pid), "agent {pid} from before the crash is gone");
    }
}

async fn wait_running(server: &Scheduler, id: u64) {
    let start = Instant::now();
    while job(server, KEYS[0].1, id)
        .await
        .json::<Value>()
        .await
        .expect("json")["status"]
        != "running"
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "job never started: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn job_log(server: &Scheduler, id: u64) -> String {
    support::job_log(&server.http, KEYS[0].1, id).await
}

/// Jobs printing numbered lines without pause for four seconds (a chunk on
/// the wire from every job every few milliseconds), the scheduler
/// SIGKILLed twice while they print (the second time while the
/// agents are repeating what the first crash left unacknowledged): every
/// log holds every line exactly once, in order, and no job ran again.
#[tokio::test(flavor = "multi_thread")]
async fn every_line_of_output_is_stored_once_across_two_scheduler_crashes_mid_output() {
    const LINES: usize = 40_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let grpc = format!("127.0.0.1:{}", support::free_port());
    let mut server = Scheduler::start(dir.path(), &config_with(dir.path(), &grpc, None));
    let command = format!(
        "awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) {{ print \"line \" i; fflush(); if (i % 100 == 0) system(\"sleep 0.01\") }} }}'"
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = submit(
            &server,
            KEYS[0].1,
            json!({ "class": "high", "command": command, "max_attempts": 1 }),
        )
        .await;
        ids.push(
            r.json::<Value>().await.expect("json")["id"]
                .as_u64()
                .expect("id"),
        );
    }
    let start = Instant::now();
    loop {
        let mut printing = 0;
        for id in &ids {
            if !job_log(&server, *id).await.is_empty() {
                printing += 1;
            }
        }
        if printing == ids.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "jobs never all printed: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.restart();
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.restart();
    let expected: String = (1..=LINES).map(|i| format!("line {i}\n")).collect();
    for id in &ids {
        let j = wait_final(&server, KEYS[0].1, *id, Duration::from_secs(60)).await;
        assert_eq!(j["status"], "succeeded", "job {id}: {j}\n{}", server.log());
        assert_eq!(j["attempts"], 1, "job {id} ran once: {j}");
        let log = job_log(&server, *id).await;
        if log != expected {
            let got: Vec<&str> = log.lines().collect();
            let missing = (1..=LINES)
                .filter(|i| !got.contains(&format!("line {i}").as_str()))
                .count();
            panic!(
                "job {id}: {} lines stored for {LINES}, {missing} missing; first difference at line {}",
                got.len(),
                got.iter()
                    .zip(expected.lines())
                    .position(|(a, b)| *a != b)
                    .map_or(got.len().min(LINES), |p| p + 1)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_continues_when_its_agent_reconnects_to_the_restarted_scheduler() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let grpc = free.local_addr().expect("addr").to_string();
    drop(free);
    let text = config_with(dir.path(), &grpc, None);
    let mut server = Scheduler::start(dir.path(), &text);
    let r = submit(
        &server,
        KEYS[0].1,
        json!({ "class": "high", "command": "echo before; sleep 3; echo after", "max_attempts": 1 }),
    )
    .await;
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_u64()
        .expect("id");
    wait_running(&server, id).await;
    let agents_before = server.agent_pids();
    server.restart();
    let j = wait_final(&server, KEYS[0].1, id, Duration::from_secs(30)).await;
    let serve_log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert_eq!(j["status"], "succeeded", "{j}\n{serve_log}");
    assert_eq!(
        j["attempts"], 1,
        "the attempt from before the crash finished; it was not re-run\n{serve_log}"
    );
    assert_eq!(job_log(&server, id).await, "before\nafter\n");
    assert!(
        serve_log.contains("its jobs continue"),
        "the worker was adopted:\n{serve_log}"
    );
    let adopted: Vec<i32> = server
        .agent_pids()
        .into_iter()
        .filter(|p| agents_before.contains(p))
        .collect();
    assert!(
        !adopted.is_empty(),
        "agents from before the crash live on as adopted workers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_with_a_forged_session_token_is_refused() {
    use ebbtide_proto::worker::v1::agent_message::Kind as Up;
    use ebbtide_proto::worker::v1::worker_api_client::WorkerApiClient;
    use ebbtide_proto::worker::v1::{AgentMessage, Hello};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    wait_for_warm_agent(&server).await;
    let mut client = WorkerApiClient::connect(server.grpc.clone())
        .await
        .expect("connect");
    for token in ["1.99999999999999.00ff", "not-a-token"] {
        let hello = AgentMessage {
            kind: Some(Up::Hello(Hello {
                worker_id: 1,
                session_token: token.into(),
                ..Hello::default()
            })),
        };
        let err = client
            .session(tokio_stream::iter(vec![hello]))
            .await
            .expect_err("forged session refused");
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agents_job_is_requeued_and_finished_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    wait_for_warm_agent(&server).await;
    let warm = server.agent_pids();
    // A job that would run for a minute lands on the warm agent.
    let r = submit(&server, KEYS[0].1, json!({ "class": "high", "command": "sleep 60 && echo first || echo never", "max_attempts": 3 })).await;
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_u64()
        .expect("id");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let j: Value = job(&server, KEYS[0].1, id)
        .await
        .json()
        .await
        .expect("json");
    assert!(j["status"] == "running" || j["status"] == "assigned", "{j}");
    for pid in warm {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill agent");
    }
    // Lost after the heartbeat timeout, requeued, and run on a new worker;
    // this time let it finish quickly by cancelling and resubmitting is not
    // needed: the attempt counter shows the requeue.
    let start = Instant::now();
    loop {
        let j: Value = job(&server, KEYS[0].1, id)
            .await
            .json()
            .await
            .expect("json");
        if j["attempts"].as_u64().unwrap_or(0) >= 2 {
            assert!(j["status"] == "assigned" || j["status"] == "running", "{j}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "job was not requeued: {j}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cancel = client()
        .post(format!("{}/v1/jobs/{id}/cancel", server.http))
        .bearer_auth(KEYS[0].1)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status(), 202);
    let j = wait_final(&server, KEYS[0].1, id, Duration::from_secs(20)).await;
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert_eq!(j["status"], "cancelled", "{j}\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_adds_a_tenant_and_an_invalid_one_is_refused_without_dropping_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Scheduler::start(dir.path(), &config(dir.path()));
    let path = dir.path().join("cluster.toml");
    let r = submit(
        &server,
        KEYS[0].1,
        json!({ "class": "high", "command": "sleep 1; echo survived" }),
    )
    .await;
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_u64()
        .expect("id");

    // Add a tenant and grow the burst pool, then ask for a reload.
    let text = std::fs::read_to_string(&path).expect("config");
    let grown = text.replace("max = 6", "max = 7")
        + "\n[[tenants]]\nname = \"delta\"\napi_key = \"delta-key-0123456789abcdef\"\n";
    std::fs::write(&path, grown.clone()).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["config", "reload"])
        .arg(&path)
        .output()
        .expect("reload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    loop {
        let r = submit(
            &server,
            "delta-key-0123456789abcdef",
            json!({ "class": "high", "command": "true" }),
        )
        .await;
        if r.status() == 201 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new tenant never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An invalid file is refused by `config reload` itself, and an
    // incompatible one (a pool removed) by the server; both leave the
    // running configuration in place.
    std::fs::write(&path, grown.replace("max = 7", "max = -1")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["config", "reload"])
        .arg(&path)
        .output()
        .expect("reload");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line"),
        "the error names the line"
    );
    let without_burst = grown
        .split("[[pools]]\nname = \"burst\"")
        .next()
        .expect("prefix")
        .to_string()
        + "\n[[tenants]]\nname = \"omega\"\napi_key = \"omega-key-0123456789abcdef\"\n";
    std::fs::write(&path, without_burst).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["config", "reload"])
        .arg(&path)
        .output()
        .expect("reload");
    assert!(out.status.success(), "the file itself is valid");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = submit(
        &server,
        "omega-key-0123456789abcdef",
        json!({ "class": "high", "command": "true" }),
    )
    .await;
    assert_eq!(r.status(), 401, "the refused reload did not add omega");
    assert_eq!(
        status(&server).await["pools"].as_array().map(Vec::len),
        Some(2),
        "the burst pool is still there"
    );
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(log.contains("reload refused"), "the refusal is logged");
    let j = wait_final(&server, KEYS[0].1, id, Duration::from_secs(20)).await;
    assert_eq!(
        j["status"], "succeeded",
        "the job running across reloads finished: {j}"
    );
}

/// A TCP proxy between agents and the worker API whose connections the
/// test can cut, like a network blip.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(backend: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut cuts = cuts.clone();
                // Only cuts after this connection opened apply to it.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_reconnects_after_a_network_blip_without_dropping_its_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let grpc = free.local_addr().expect("addr");
    drop(free);
    let proxy = Proxy::start(grpc).await;
    let text = config_with(
        dir.path(),
        &grpc.to_string(),
        Some(&format!("http://{}", proxy.addr)),
    );
    let server = Scheduler::start(dir.path(), &text);
    let r = submit(&server, KEYS[0].1, json!({ "class": "high", "command": "echo before; sleep 2; echo after", "max_attempts": 1 })).await;
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_u64()
        .expect("id");
    wait_running(&server, id).await;
    proxy.cut_all();
    let j = wait_final(&server, KEYS[0].1, id, Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    let agent = std::fs::read_to_string(dir.path().join("data/local-instances/worker-1.log"))
        .unwrap_or_default();
    assert_eq!(j["status"], "succeeded", "{j}\n{log}\nagent:\n{agent}");
    assert_eq!(
        j["attempts"], 1,
        "the same attempt finished: nothing was re-run"
    );
    assert_eq!(
        job_log(&server, id).await,
        "before\nafter\n",
        "output from before and after the blip"
    );
}
