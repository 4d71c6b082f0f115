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

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

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
"#,
        data = dir.join("data").display(),
        bin = env!("CARGO_BIN_EXE_ebbtide"),
    )
}

struct Server {
    child: Child,
    http: String,
    dir: std::path::PathBuf,
}

impl Server {
    fn start(dir: &Path, warm: u32) -> Server {
        let path = dir.join("cluster.toml");
        std::fs::write(&path, config(dir, warm, 0)).expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("line");
        let http = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .expect("http")
            .to_string();
        Server {
            child,
            http: format!("http://{http}"),
            dir: dir.to_path_buf(),
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("data/local-instances")) {
            for e in entries.flatten() {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok()?.get("pid")?.as_i64())
                {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                }
            }
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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

async fn latency(server: &Server, warm: u32) {
    let client = reqwest::Client::new();
    // Wait for the warm workers.
    let start = Instant::now();
    loop {
        let s: Value = client
            .get(format!("{}/v1/status", server.http))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
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
        let sent = now_ns();
        let r: Value = client
            .post(format!("{}/v1/jobs", server.http))
            .bearer_auth(KEY)
            .json(&json!({ "class": "high", "command": "date +%s%N" }))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        let id = r["id"].as_u64().expect("id");
        let begin = Instant::now();
        let out = loop {
            let text = client
                .get(format!("{}/v1/jobs/{id}/logs", server.http))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("logs")
                .text()
                .await
                .expect("text");
            if !text.trim().is_empty() {
                break text;
            }
            assert!(
                begin.elapsed() < Duration::from_secs(10),
                "job {id} never ran"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let started: u128 = out.trim().parse().expect("nanoseconds");
        samples.push((started.saturating_sub(sent)) as f64 / 1e6);
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
        let server = Server::start(dir.path(), 0);
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
        let server = Server::start(dir.path(), warm);
        latency(&server, warm).await;
    });
}
