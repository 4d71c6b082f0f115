//! Release-mode benchmark of the worker registration RPC in isolation.
//!
//! `cargo bench -p ebbtide-cli --bench register`
//!
//! The scheduler runs in-process with a provider that starts nothing and
//! only hands the bootstrap tokens of the instances it "launched" to the
//! benchmark. Once every token is issued, concurrent clients over a few
//! HTTP/2 connections call `Register` with them, as a fleet booting at once
//! would. Each call redeems its one-time token durably in SQLite and is
//! admitted by the control loop, exactly as for a real agent; process
//! start-up, which the load benchmark includes, is not part of it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebbtide_proto::worker::v1::RegisterRequest;
use ebbtide_proto::worker::v1::worker_api_client::WorkerApiClient;
use ebbtide_provider::Provider;
use ebbtide_provider::capture::Capture;
use support::stats::percentile;

const WORKERS: u32 = 4000;
const CONNECTIONS: usize = 8;
const IN_FLIGHT: usize = 256;

fn config(dir: &std::path::Path) -> String {
    format!(
        r#"
[server]
cluster = "bench"
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
data_dir = "{data}"
tick = "200ms"

[engine]
heartbeat_timeout = "300s"

[[classes]]
name = "high"
sla_target = "60s"

[[tenants]]
name = "bench"
api_key = "bench-key-0123456789abcdef"

[[pools]]
name = "fleet"
provider = "capture"
kind = "static"
warm = {WORKERS}
max = {WORKERS}
boot_timeout = "300s"
[pools.shape]
name = "none"
cpu_millis = 1000
memory_mib = 256
"#,
        data = dir.join("data").display()
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ebbtide_config::parse(&config(dir.path()), &[&ebbtide_provider::capture::CaptureSchema]).expect("config");
        let capture = Arc::new(Capture::default());
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert("capture".into(), capture.clone());
        let server = ebbtide_server::start(config, ebbtide_server::Infrastructure::providers(providers))
            .await
            .expect("server");
        let start = Instant::now();
        while capture.waiting() < WORKERS as usize {
            assert!(start.elapsed() < Duration::from_secs(60), "tokens never issued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the control loop take every InstanceLaunched in.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tokens = capture.take();
        let url = format!("http://{}", server.grpc_addr);
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(WorkerApiClient::connect(url.clone()).await.expect("connect"));
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let began = Instant::now();
        let mut tasks = Vec::with_capacity(tokens.len());
        for (i, (worker, token)) in tokens.into_iter().enumerate() {
            let mut client = clients[i % CONNECTIONS].clone();
            let permit = limit.clone().acquire_owned().await.expect("permit");
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let r = client
                    .register(RegisterRequest {
                        worker_id: worker.0,
                        bootstrap_token: token,
                        agent_version: "bench".into(),
                        identity: None,
                    })
                    .await;
                drop(permit);
                (r.is_ok(), sent.elapsed().as_secs_f64() * 1e3)
            }));
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        let mut refused = 0;
        for t in tasks {
            let (ok, ms) = t.await.expect("task");
            if !ok {
                refused += 1;
            }
            latencies.push(ms);
        }
        let elapsed = began.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        println!(
            "{} registrations ({refused} refused) in {elapsed:.2} s over {CONNECTIONS} connections, {IN_FLIGHT} in flight: {:.0} registrations/s",
            latencies.len(),
            latencies.len() as f64 / elapsed
        );
        println!(
            "Register latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0)
        );
        assert_eq!(refused, 0, "every fresh token registers");
        server.shutdown().await;
    });
}
