//! Release-mode benchmark of worker start times on the real Docker engine.
//!
//! `cargo bench -p ebbtide-cli --bench docker_start`
//!
//! The real `ebbtide serve` runs two Docker pools: `warm` (one pre-warmed
//! container) and `cold` (none until a job asks). Each job prints the
//! nanosecond clock as its first act inside the container; the figure is
//! that clock minus the instant before the POST (same machine, same clock).
//!
//! * warm start: submit → running on the pre-warmed container;
//! * cold start: submit → running when no container exists, which contains
//!   the launch call, the container start, the agent's registration and
//!   the assignment — an upper bound of "launch call → agent registered".
//!
//! 50 runs each (`BENCH_RUNS` to change); median, p99 and max are printed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::Scheduler;
use support::stats::print_ms as report;

const KEY: &str = "bench-key-0123456789abcdef";

fn config(dir: &Path, cluster: &str) -> String {
    format!(
        r#"
[server]
cluster = "{cluster}"
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
data_dir = "{data}"
tick = "50ms"
reconcile_interval = "5s"

[engine]
heartbeat_timeout = "10s"

[[classes]]
name = "now"
sla_target = "1s"

[[tenants]]
name = "bench"
api_key = "{KEY}"

[[pools]]
name = "warm"
provider = "docker"
kind = "static"
warm = 1
boot_estimate = "1s"
labels = ["warm"]
[pools.shape]
name = "small"
cpu_millis = 1000
memory_mib = 256

[[pools]]
name = "cold"
provider = "docker"
kind = "dynamic"
min = 0
max = 1
idle_timeout = "200ms"
boot_estimate = "1s"
labels = ["cold"]
[pools.shape]
name = "small"
cpu_millis = 1000
memory_mib = 256
[pools.scaling]
scale_up_cooldown = "0s"
scale_down_cooldown = "0s"
down_stabilization = "0s"

[providers.docker]
network = "host"
stop_grace_secs = 1
[providers.docker.prices]
small = 0.01
[providers.docker.api]
calls_per_second = 100
burst = 100
{operators}"#,
        operators = support::OPERATORS,
        data = dir.join("data").display()
    )
}

/// Submits `date +%s%N` for `label` and returns submit → running in ms.
async fn one_job(client: &reqwest::Client, s: &Scheduler, label: &str) -> f64 {
    let body = json!({ "class": "now", "command": "date +%s%N", "labels": [label] });
    support::submit_to_start_ms(client, &s.http, KEY, body, Duration::from_secs(30)).await
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = format!("bench-docker-{}", std::process::id());
        let _cleanup = support::docker::Cleanup(cluster.clone());
        let server = Scheduler::start_logging(dir.path(), &config(dir.path(), &cluster), "warn");
        let client = reqwest::Client::new();
        let start = Instant::now();
        while support::status(&server.http, support::OPERATOR_KEY).await["pools"][0]["idle"] != 1 {
            assert!(start.elapsed() < Duration::from_secs(60), "warm container never registered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut warm = Vec::with_capacity(runs);
        for _ in 0..runs {
            warm.push(one_job(&client, &server, "warm").await);
        }
        report("warm start: submit -> running on a pre-warmed container", warm);
        let mut cold = Vec::with_capacity(runs);
        for _ in 0..runs {
            // Wait until the cold pool has retired its container.
            let start = Instant::now();
            loop {
                let s = support::status(&server.http, support::OPERATOR_KEY).await;
                let p = &s["pools"][1];
                let total: u64 = ["requested", "booting", "idle", "busy", "retiring"]
                    .iter()
                    .map(|k| p[*k].as_u64().unwrap_or(0))
                    .sum();
                if total == 0 {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(60), "cold pool never emptied: {s}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            cold.push(one_job(&client, &server, "cold").await);
        }
        report(
            "cold start: submit -> running with no container (launch, container start, registration, assignment)",
            cold,
        );
    });
}
