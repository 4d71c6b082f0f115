//! Tenants walled off on their workers, and bounded job output: the
//! scheduler in-process with scripted agents speaking the real worker API
//! (one of them hostile).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebbtide_proto::worker::v1::agent_message::Kind as Up;
use ebbtide_proto::worker::v1::scheduler_message::Kind as Down;
use ebbtide_proto::worker::v1::worker_api_client::WorkerApiClient;
use ebbtide_proto::worker::v1::{
    AgentMessage, Assignment, Hello, JobOutput, JobResult, JobStarted, Outcome, RegisterRequest,
    SchedulerMessage,
};
use ebbtide_provider::Provider;
use ebbtide_provider::capture::Capture;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const ALPHA: &str = "alpha-key-0123456789abcdef";
const BETA: &str = "beta-key-0123456789abcdef";

fn config(dir: &std::path::Path, max_output: u64) -> String {
    format!(
        r#"
[server]
cluster = "walls"
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
data_dir = "{data}"
tick = "100ms"
max_job_output_bytes = {max_output}

[engine]
heartbeat_timeout = "300s"

[[classes]]
name = "high"
sla_target = "60s"

[[tenants]]
name = "alpha"
api_key = "{ALPHA}"

[[tenants]]
name = "beta"
api_key = "{BETA}"

[[pools]]
name = "fleet"
provider = "capture"
kind = "static"
warm = 2
max = 2
boot_timeout = "300s"
[pools.shape]
name = "none"
cpu_millis = 1000
memory_mib = 256
"#,
        data = dir.join("data").display()
    )
}

/// An agent the test scripts.
struct FakeAgent {
    up: mpsc::Sender<AgentMessage>,
    down: tonic::Streaming<SchedulerMessage>,
}

impl FakeAgent {
    async fn connect(url: &str, worker: u64, token: String) -> FakeAgent {
        let mut client = WorkerApiClient::connect(url.to_string())
            .await
            .expect("connect");
        let session = client
            .register(RegisterRequest {
                worker_id: worker,
                bootstrap_token: token,
                agent_version: "test".into(),
                identity: None,
            })
            .await
            .expect("register")
            .into_inner();
        let (up, rx) = mpsc::channel(64);
        up.send(AgentMessage {
            kind: Some(Up::Hello(Hello {
                worker_id: worker,
                session_token: session.session_token,
                ..Hello::default()
            })),
        })
        .await
        .expect("hello");
        let down = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        FakeAgent { up, down }
    }

    async fn send(&self, kind: Up) {
        self.up
            .send(AgentMessage { kind: Some(kind) })
            .await
            .expect("send");
    }

    async fn next(&mut self) -> Down {
        tokio::time::timeout(Duration::from_secs(10), self.down.message())
            .await
            .expect("an order in time")
            .expect("stream")
            .expect("open")
            .kind
            .expect("kind")
    }

    async fn output(&self, job: u64, bytes: &[u8]) {
        // Unnumbered, as from an agent that does not number its output.
        self.send(Up::Output(JobOutput {
            job_id: job,
            chunk: bytes.to_vec(),
            ..JobOutput::default()
        }))
        .await;
    }

    /// Output numbered as the real agent numbers it.
    async fn numbered(&self, job: u64, attempt: u32, offset: u64, bytes: &[u8]) {
        self.send(Up::Output(JobOutput {
            job_id: job,
            chunk: bytes.to_vec(),
            offset: Some(offset),
            attempt,
        }))
        .await;
    }

    /// Waits for the acknowledgement that the output of `job` is stored
    /// through `through`, skipping acknowledgements short of it.
    async fn output_stored(&mut self, job: u64, through: u64) {
        loop {
            match self.next().await {
                Down::OutputStored(o) if o.job_id == job && o.through >= through => {
                    assert_eq!(o.through, through, "acknowledged exactly what was stored");
                    return;
                }
                Down::OutputStored(_) => {}
                other => panic!("expected OutputStored, got {other:?}"),
            }
        }
    }

    async fn result(&self, job: u64, attempt: u32) {
        self.send(Up::Result(JobResult {
            job_id: job,
            outcome: Outcome::Succeeded as i32,
            exit_code: Some(0),
            attempt,
        }))
        .await;
    }
}

struct Cluster {
    server: ebbtide_server::ServerHandle,
    http: String,
    agents: Vec<FakeAgent>,
    _dir: tempfile::TempDir,
}

async fn cluster(max_output: u64) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ebbtide_config::parse(
        &config(dir.path(), max_output),
        &[&ebbtide_provider::capture::CaptureSchema],
    )
    .expect("config");
    let capture = Arc::new(Capture::default());
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("capture".into(), capture.clone());
    let server =
        ebbtide_server::start(config, ebbtide_server::Infrastructure::providers(providers))
            .await
            .expect("server");
    let start = Instant::now();
    while capture.waiting() < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "never launched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("http://{}", server.grpc_addr);
    let mut agents = Vec::new();
    for (worker, token) in capture.take() {
        agents.push(FakeAgent::connect(&url, worker.0, token).await);
    }
    Cluster {
        http: format!("http://{}", server.http_addr),
        server,
        agents,
        _dir: dir,
    }
}

async fn submit(http: &str, key: &str) -> u64 {
    let r: Value = reqwest::Client::new()
        .post(format!("{http}/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({ "class": "high", "command": "make test" }))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    r["id"].as_u64().unwrap_or_else(|| panic!("no id: {r}"))
}

async fn log(http: &str, key: &str, id: u64, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{http}/v1/jobs/{id}/logs{query}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("logs")
}

/// Which agent got which assignment: waits on both.
async fn assigned(c: &mut Cluster) -> (usize, Assignment) {
    let (a, b) = c.agents.split_at_mut(1);
    let (who, order) = tokio::select! {
        o = a[0].next() => (0, o),
        o = b[0].next() => (1, o),
    };
    match order {
        Down::Assignment(a) => (who, a),
        other => panic!("expected an assignment, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cannot_report_output_or_results_for_a_job_it_does_not_hold() {
    let mut c = cluster(16 << 20).await;
    let alpha_job = submit(&c.http, ALPHA).await;
    let (holder, a) = assigned(&mut c).await;
    assert_eq!(a.job_id, alpha_job);
    assert_eq!(a.attempt, 1);
    let beta_job = submit(&c.http, BETA).await;
    let (intruder, b) = assigned(&mut c).await;
    assert_eq!(b.job_id, beta_job);
    assert_ne!(holder, intruder);
    c.agents[holder]
        .send(Up::Started(JobStarted {
            job_id: alpha_job,
            attempt: 1,
        }))
        .await;

    // The beta worker forges alpha's output and result.
    c.agents[intruder]
        .output(alpha_job, b"forged by another tenant's worker\n")
        .await;
    c.agents[intruder].result(alpha_job, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let j = support::job(&c.http, ALPHA, alpha_job).await;
    assert_eq!(j["status"], "running", "a forged result is refused: {j}");
    let text = log(&c.http, ALPHA, alpha_job, "")
        .await
        .text()
        .await
        .expect("text");
    assert!(!text.contains("forged"), "forged output stored: {text:?}");
    let scrape = support::metrics(&c.http).await;
    for what in ["output", "result"] {
        assert!(
            scrape.lines().any(|l| l.starts_with(&format!(
                "ebbtide_worker_reports_refused_total{{what=\"{what}\"}}"
            ))),
            "refused {what} counted:\n{scrape}"
        );
    }

    // The real holder reports; its result is stored, then confirmed.
    c.agents[holder].output(alpha_job, b"real output\n").await;
    c.agents[holder].result(alpha_job, 1).await;
    match c.agents[holder].next().await {
        Down::ResultStored(r) => assert_eq!(r.job_id, alpha_job),
        other => panic!("expected the result's confirmation, got {other:?}"),
    }
    let j = support::job(&c.http, ALPHA, alpha_job).await;
    assert_eq!(j["status"], "succeeded", "{j}");
    let text = log(&c.http, ALPHA, alpha_job, "")
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(text, "real output\n");
    // Beta's job is untouched by all of this.
    assert_eq!(
        support::job(&c.http, BETA, beta_job).await["status"],
        "assigned"
    );
    c.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn job_output_is_capped_with_a_marker_and_read_a_page_at_a_time() {
    let mut c = cluster(40_000).await;
    let id = submit(&c.http, ALPHA).await;
    let (holder, a) = assigned(&mut c).await;
    assert_eq!(a.max_output_bytes, 40_000, "the agent is told the cap");
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..5 {
        c.agents[holder].output(id, &chunk).await;
    }
    c.agents[holder].result(id, 1).await;
    let _ = c.agents[holder].next().await;
    let text = log(&c.http, ALPHA, id, "")
        .await
        .text()
        .await
        .expect("text");
    assert!(
        text.starts_with(&"x".repeat(40_000))
            && text[40_000..].starts_with("\n[ebbtide: output truncated"),
        "exactly the cap is kept, then the marker"
    );
    assert!(
        text[40_000..].contains("output truncated")
            && text[40_000..].contains("server.max_job_output_bytes"),
        "the marker says why: {:?}",
        &text[40_000..]
    );
    // Paged: a page ends on a chunk boundary and says where the next starts.
    let page = log(&c.http, ALPHA, id, "?offset=0&limit=1000").await;
    let next: u64 = page.headers()["x-ebbtide-next-offset"]
        .to_str()
        .expect("header")
        .parse()
        .expect("offset");
    let body = page.bytes().await.expect("body");
    assert_eq!(body.len() as u64, next);
    let rest = log(&c.http, ALPHA, id, &format!("?offset={next}"))
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(body.len() + rest.len(), text.len());
    let bad = log(&c.http, ALPHA, id, "?limit=0").await;
    assert_eq!(bad.status(), 400);
    c.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_output_is_stored_once_acknowledged_and_a_gap_is_marked() {
    let mut c = cluster(16 << 20).await;
    let id = submit(&c.http, ALPHA).await;
    let (holder, a) = assigned(&mut c).await;
    let agent = &mut c.agents[holder];
    agent
        .send(Up::Started(JobStarted {
            job_id: id,
            attempt: a.attempt,
        }))
        .await;
    agent.numbered(id, a.attempt, 0, b"one\n").await;
    agent.output_stored(id, 4).await;
    // Repeated after a broken session, with what followed: only the new
    // part is stored.
    agent.numbered(id, a.attempt, 0, b"one\ntwo\n").await;
    agent.output_stored(id, 8).await;
    // Bytes 8..20 never arrive (the agent forgot them past its cap).
    agent.numbered(id, a.attempt, 20, b"four\n").await;
    agent.output_stored(id, 25).await;
    // A late repeat of what is stored, and output of an attempt the job is
    // not on: neither is stored.
    agent.numbered(id, a.attempt, 8, b"three\n").await;
    agent
        .numbered(id, a.attempt + 1, 25, b"other attempt\n")
        .await;
    agent.result(id, a.attempt).await;
    let confirmed = loop {
        match agent.next().await {
            Down::OutputStored(o) => assert_eq!(o.through, 25, "{o:?}"),
            other => break other,
        }
    };
    assert!(
        matches!(confirmed, Down::ResultStored(ref r) if r.job_id == id),
        "{confirmed:?}"
    );
    let text = log(&c.http, ALPHA, id, "")
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(
        text,
        "one\ntwo\n\n[ebbtide: 12 bytes of this attempt's output were lost while the agent's session was broken]\nfour\n"
    );
    c.server.shutdown().await;
}

/// Resident and peak memory of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_a_large_log_four_times_at_once_does_not_load_it_into_memory() {
    const LOG: u64 = 16 << 20;
    let mut c = cluster(LOG).await;
    let id = submit(&c.http, ALPHA).await;
    let (holder, _) = assigned(&mut c).await;
    let chunk = vec![b'y'; 16 * 1024];
    for _ in 0..(LOG / chunk.len() as u64) {
        c.agents[holder].output(id, &chunk).await;
    }
    c.agents[holder].result(id, 1).await;
    let _ = c.agents[holder].next().await;
    // Peak memory from here on: the kernel resets VmHWM to the current RSS.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset peak");
    let (before, _) = memory_kib();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let http = c.http.clone();
            tokio::spawn(async move {
                let mut response = log(&http, ALPHA, id, "").await;
                let mut n = 0u64;
                while let Some(part) = response.chunk().await.expect("chunk") {
                    n += part.len() as u64;
                }
                n
            })
        })
        .collect();
    for r in readers {
        assert!(r.await.expect("reader") >= LOG);
    }
    let (_, peak) = memory_kib();
    let grew_mib = peak.saturating_sub(before) / 1024;
    println!("4 concurrent reads of a 16 MiB log: peak memory grew by {grew_mib} MiB");
    assert!(
        grew_mib < 32,
        "the log is streamed a page at a time, not held whole per read (four whole copies alone would be 64 MiB): grew {grew_mib} MiB"
    );
    c.server.shutdown().await;
}
