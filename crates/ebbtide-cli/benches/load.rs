//! Release-mode load benchmark of the scheduler service, with the real
//! `ebbtide serve` and `ebbtide agent` processes on loopback.
//!
//! `cargo bench -p ebbtide-cli --bench load`
//!
//! Reports:
//! * sustained durable job submissions per second over HTTP (64 concurrent
//!   clients, jobs queue behind a pool that cannot grow);
//! * submit → running latency on warm workers: each job prints the
//!   nanosecond clock as its first act, compared with the instant before
//!   the POST was sent (same machine, same clock);
//! * scheduler resident memory while those workers are connected.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::Scheduler;
use support::stats::percentile;

const KEY: &str = "bench-key-0123456789abcdef";

fn config(dir: &Path, warm: u32, burst_max: u32) -> String {
    format!(
        r#"
[server]
cluster = "bench"
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
data_dir = "{data}"
tick = "200ms"
agent_program = "{bin}"

[engine]
heartbeat_timeout = "30s"

[[classes]]
name = "high"
sla_target = "60s"

[[tenants]]
name = "bench"
api_key = "{KEY}"

[[pools]]
name = "warm"
provider = "local"
kind = "static"
warm = {warm}
max = {warm}
boot_estimate = "1s"
[pools.shape]
name = "process"
cpu_millis = 1000
memory_mib = 256

[[pools]]
name = "none"
provider = "local"
kind = "dynamic"
max = {burst_max}
labels = ["queue-only"]
[pools.shape]
name = "process"
cpu_millis = 1000
memory_mib = 256
{operators}"#,
        operators = support::OPERATORS,
        data = dir.join("data").display(),
        bin = env!("CARGO_BIN_EXE_ebbtide"),
    )
}

async fn submissions(http: &str) {
    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 250;
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url) = (client.clone(), format!("{http}/v1/jobs"));
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_CLIENT {
                let r = client
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({ "class": "high", "command": "true", "labels": ["queue-only"] }))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status(), 201);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let n = CLIENTS * PER_CLIENT;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "HTTP submissions: {n} durable in {secs:.2} s = {:.0}/s ({CLIENTS} concurrent clients)",
        n as f64 / secs
    );
}

async fn latency(server: &Scheduler, warm: u32) {
    let client = reqwest::Client::new();
    // Wait for the warm workers.
    let start = Instant::now();
    loop {
        let s = support::status(&server.http, support::OPERATOR_KEY).await;
        if s["pools"][0]["idle"].as_u64() == Some(u64::from(warm)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "warm workers never registered: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{warm} warm agents registered {:.2} s after start",
        start.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    for _ in 0..300 {
        let body = json!({ "class": "high", "command": "date +%s%N" });
        samples.push(
            support::submit_to_start_ms(&client, &server.http, KEY, body, Duration::from_secs(10))
                .await,
        );
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "submit -> running on a warm worker ({} jobs): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or(0.0)
    );
    println!(
        "scheduler resident memory with {warm} connected workers: {:.1} MiB",
        server.rss_kib() as f64 / 1024.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Scheduler::start_logging(dir.path(), &config(dir.path(), 0, 0), "warn");
        submissions(&server.http).await;
        println!(
            "scheduler resident memory with 16,000 queued jobs: {:.1} MiB",
            server.rss_kib() as f64 / 1024.0
        );
        drop(server);
        let dir = tempfile::tempdir().expect("tempdir");
        let warm = std::env::var("BENCH_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let server = Scheduler::start_logging(dir.path(), &config(dir.path(), warm, 0), "warn");
        latency(&server, warm).await;
    });
}
