//! Release-mode benchmark of workers on owned hosts: three real OpenSSH
//! hosts in network namespaces (needs root, `ip` and `sshd`, which the
//! test command installs), the real `ebbtide serve` and real agents.
//!
//! `cargo bench -p ebbtide-cli --bench baremetal`
//!
//! * cold start: submit → running when the pool has no worker, which
//!   contains the launch (SSH connect, host key check, the start script
//!   with the token on stdin), the agent's start and registration, and the
//!   assignment — the time to launch a worker on a host, plus at most one
//!   scheduler tick (50 ms). `BENCH_RUNS` of them (default 40), one after
//!   the other; median, p99 and max.
//! * throughput: `BENCH_JOBS` (default 600) trivial jobs submitted at once
//!   to six warm workers (two slots on each host); jobs per minute from
//!   the first submission to the last success.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use ebbtide_provider_baremetal::testhosts::TestHosts;
use serde_json::json;
use support::Scheduler;
use support::stats::print_ms;

const KEY: &str = "bench-key-0123456789abcdef";

/// A scheduler over the hosts with one pool, `pool` (its TOML).
fn config(hosts: &TestHosts, dir: &Path, pool: &str) -> String {
    let inventory = hosts.inventory_toml(dir);
    format!(
        r#"
[server]
cluster = "bench-metal-{pid}"
http_listen = "127.0.0.1:0"
grpc_listen = "{grpc}:0"
data_dir = "{data}"
tick = "50ms"
reconcile_interval = "5s"
on_stop = "terminate"

[engine]
heartbeat_timeout = "10s"

[[classes]]
name = "now"
sla_target = "1s"

[[tenants]]
name = "bench"
api_key = "{KEY}"
{operators}
[[pools]]
name = "metal"
provider = "baremetal"
boot_estimate = "1s"
on_demand_price = 0.05
{pool}
[pools.shape]
name = "slot"
cpu_millis = 1000
memory_mib = 1024

[providers.baremetal]
user = "root"
private_key = "{key}"
agent_path = "{agent}"
min_free_disk_gb = 0

{inventory}
[providers.baremetal.pools.metal]
"#,
        pid = std::process::id(),
        grpc = hosts.scheduler_address(),
        data = dir.join("data").display(),
        operators = support::OPERATORS,
        key = hosts.client_key.display(),
        agent = env!("CARGO_BIN_EXE_ebbtide"),
    )
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn pool_size(http: &str) -> u64 {
    let s = support::status(http, support::OPERATOR_KEY).await;
    ["requested", "booting", "idle", "busy", "retiring"]
        .iter()
        .map(|k| s["pools"][0][*k].as_u64().unwrap_or(0))
        .sum()
}

fn main() {
    let runs = env_or("BENCH_RUNS", 40);
    let jobs = env_or("BENCH_JOBS", 600);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let hosts = TestHosts::start(3);
        let client = reqwest::Client::new();

        // Cold starts: one worker at most, retired 100 ms after its job, no
        // headroom kept (it would keep that worker for the 1 s target).
        let dir = tempfile::tempdir().expect("tempdir");
        let cold_pool = "kind = \"dynamic\"\nmin = 0\nmax = 1\nidle_timeout = \"100ms\"\n[pools.scaling]\nscale_up_cooldown = \"0s\"\nscale_down_cooldown = \"0s\"\ndown_stabilization = \"0s\"\n[pools.headroom]\nmode = \"off\"\n";
        let server = Scheduler::start_logging(dir.path(), &config(&hosts, dir.path(), cold_pool), "warn");
        let mut cold = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            while pool_size(&server.http).await != 0 {
                assert!(start.elapsed() < Duration::from_secs(60), "the pool never emptied");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let body = json!({ "class": "now", "command": "date +%s%N" });
            cold.push(
                support::submit_to_start_ms(&client, &server.http, KEY, body, Duration::from_secs(60)).await,
            );
        }
        print_ms(
            "cold start on an owned host: submit -> running with no worker (SSH launch, agent start, registration, assignment)",
            cold,
        );
        drop(server);

        // Throughput: six warm workers, every job submitted at once.
        let dir = tempfile::tempdir().expect("tempdir");
        let warm_pool = "kind = \"static\"\nwarm = 6\nmax = 6\n";
        let server = Scheduler::start_logging(dir.path(), &config(&hosts, dir.path(), warm_pool), "warn");
        let start = Instant::now();
        loop {
            let s = support::status(&server.http, support::OPERATOR_KEY).await;
            if s["pools"][0]["idle"] == 6 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "six warm workers never registered: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let began = Instant::now();
        let mut ids = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            ids.push(support::submit(&server.http, KEY, json!({ "class": "now", "command": "true" })).await);
        }
        for id in &ids {
            loop {
                let j = support::job(&server.http, KEY, *id).await;
                if j["status"] == "succeeded" {
                    break;
                }
                assert!(j["status"] != "failed", "job {id} failed: {j}");
                assert!(began.elapsed() < Duration::from_secs(600), "job {id} never finished");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let took = began.elapsed();
        println!(
            "throughput across 3 hosts (6 slots): {jobs} jobs in {:.1} s = {:.0} jobs/min",
            took.as_secs_f64(),
            jobs as f64 * 60.0 / took.as_secs_f64()
        );
    });
}
