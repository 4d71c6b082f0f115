//! # ebbtide-agent
//!
//! The program on every worker. It registers once with its one-time
//! bootstrap token, keeps one Session stream to the scheduler, runs each
//! assigned job as `/bin/sh -c COMMAND` with its timeout, streams the
//! output, reports the result and waits for the next job. On a drain order
//! it acknowledges, finishes what runs, and exits.
//!
//! Reports never get lost in a network blip: jobs write into an internal
//! queue that survives reconnects; each Session drains it. The agent
//! reconnects with jittered exponential back-off (backon) without touching
//! the jobs it is running. It must never depend on the scheduler's crates:
//! the protocol is the contract.

pub mod imds;
#[cfg(any(test, feature = "testkit"))]
pub mod imds_stand_in;
mod job;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use ebbtide_proto::worker::v1::agent_message::Kind as Up;
use ebbtide_proto::worker::v1::scheduler_message::Kind as Down;
use ebbtide_proto::worker::v1::worker_api_client::WorkerApiClient;
use ebbtide_proto::worker::v1::{
    AgentMessage, DrainAck, Heartbeat, Hello, ReclamationNotice, RegisterRequest,
};
use tokio::sync::{Mutex, mpsc};
use tonic::Code;

/// How the agent finds and proves itself to the scheduler.
#[derive(Clone)]
pub struct AgentConfig {
    /// Worker API address, e.g. `http://127.0.0.1:8081`.
    pub scheduler: String,
    /// The worker id the instance was launched for.
    pub worker_id: u64,
    /// The one-time bootstrap token (never logged).
    pub bootstrap_token: String,
    /// On a cloud instance: where to watch for a spot interruption notice,
    /// reported to the scheduler so it drains this worker in time.
    pub interruptions: Option<imds::Imds>,
    /// On EC2: the instance identity document and its signature, sent at
    /// registration so the scheduler knows which instance registers.
    pub identity: Option<(Vec<u8>, String)>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("scheduler", &self.scheduler)
            .field("worker_id", &self.worker_id)
            .field("bootstrap_token", &"<redacted>")
            .field("interruptions", &self.interruptions)
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "<instance identity>"),
            )
            .finish()
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The scheduler refused the credentials; retrying cannot help.
    #[error("registration refused: {0}")]
    Refused(String),
    /// The scheduler could not be reached for too long.
    #[error("scheduler unreachable: {0}")]
    Unreachable(String),
}

/// Jobs running now: id → cancel switch.
type Running = Arc<Mutex<BTreeMap<u64, tokio::sync::oneshot::Sender<()>>>>;

/// Runs the agent until it is drained (Ok) or refused (Err).
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    // One HTTP/2 connection for registration and every session: it
    // reconnects by itself after a blip, and the scheduler holds one
    // connection per worker instead of one per call.
    let channel = tonic::transport::Endpoint::from_shared(config.scheduler.clone())
        .map_err(|e| AgentError::Refused(format!("scheduler address: {e}")))?
        .connect_lazy();
    let session = register(&config, &channel).await?;
    let (reports, mut queue) = mpsc::unbounded_channel::<AgentMessage>();
    if let Some(imds) = config.interruptions.clone() {
        tokio::spawn(watch_interruptions(imds, reports.clone()));
    }
    let running: Running = Arc::default();
    let mut recent = RecentResults::default();
    let mut draining = false;
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match session_once(
            &config,
            &session,
            &reports,
            &mut queue,
            &running,
            &mut draining,
            &mut recent,
        )
        .await
        {
            Ok(SessionEnd::Drained) => return Ok(()),
            Ok(SessionEnd::Disconnected) => {}
            Err(e) if e.code() == Code::Unauthenticated => {
                return Err(AgentError::Refused(e.message().to_string()));
            }
            Err(e) => tracing::warn!(error = %e.message(), "session failed; reconnecting"),
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::time::sleep(delay).await;
    }
}

/// Polls IMDS every 5 s (EC2 gives two minutes' notice) and reports the
/// first interruption notice; the report queue survives reconnects.
async fn watch_interruptions(imds: imds::Imds, reports: mpsc::UnboundedSender<AgentMessage>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        match imds.interruption().await {
            Ok(Some(deadline_ms)) => {
                tracing::warn!(
                    deadline_ms,
                    "spot interruption notice; telling the scheduler"
                );
                let _ = reports.send(AgentMessage {
                    kind: Some(Up::Reclamation(ReclamationNotice { deadline_ms })),
                });
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the interruption notice"),
        }
    }
}

struct Session {
    /// The connection registration used, kept for every session.
    channel: tonic::transport::Channel,
    token: String,
    heartbeat: Duration,
}

async fn register(
    config: &AgentConfig,
    channel: &tonic::transport::Channel,
) -> Result<Session, AgentError> {
    let mut attempt = ExponentialBuilder::default()
        .with_max_times(20)
        .with_jitter()
        .build();
    loop {
        let outcome = WorkerApiClient::new(channel.clone())
            .register(RegisterRequest {
                worker_id: config.worker_id,
                bootstrap_token: config.bootstrap_token.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                identity: config.identity.as_ref().map(|(document, signature)| {
                    ebbtide_proto::worker::v1::InstanceIdentity {
                        document: document.clone(),
                        signature: signature.clone(),
                    }
                }),
            })
            .await;
        match outcome {
            Ok(r) => {
                let r = r.into_inner();
                return Ok(Session {
                    channel: channel.clone(),
                    token: r.session_token,
                    heartbeat: Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(100))),
                });
            }
            Err(e) if e.code() == Code::Unauthenticated => {
                return Err(AgentError::Refused(e.message().to_string()));
            }
            Err(e) => match attempt.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(AgentError::Unreachable(e.message().to_string())),
            },
        }
    }
}

enum SessionEnd {
    Drained,
    Disconnected,
}

/// The last job results sent. A result written into a stream that then
/// broke may never have reached the scheduler, and nothing acknowledges it,
/// so every new session repeats these; the scheduler ignores the ones it
/// already applied. Delivery of results is therefore at least once.
#[derive(Default)]
struct RecentResults(std::collections::VecDeque<AgentMessage>);

impl RecentResults {
    const KEEP: usize = 64;

    fn remember(&mut self, m: &AgentMessage) {
        if matches!(m.kind, Some(Up::Result(_))) {
            if self.0.len() == Self::KEEP {
                self.0.pop_front();
            }
            self.0.push_back(m.clone());
        }
    }
}

async fn session_once(
    config: &AgentConfig,
    session: &Session,
    reports: &mpsc::UnboundedSender<AgentMessage>,
    queue: &mut mpsc::UnboundedReceiver<AgentMessage>,
    running: &Running,
    draining: &mut bool,
    recent: &mut RecentResults,
) -> Result<SessionEnd, tonic::Status> {
    let mut client = WorkerApiClient::new(session.channel.clone());
    let (up, up_rx) = mpsc::channel::<AgentMessage>(256);
    let running_jobs: Vec<u64> = running.lock().await.keys().copied().collect();
    let hello = Hello {
        worker_id: config.worker_id,
        session_token: session.token.clone(),
        running_jobs,
    };
    up.send(AgentMessage {
        kind: Some(Up::Hello(hello)),
    })
    .await
    .map_err(|_| tonic::Status::unavailable("closed"))?;
    for again in &recent.0 {
        up.send(again.clone())
            .await
            .map_err(|_| tonic::Status::unavailable("closed"))?;
    }
    let mut down = client
        .session(tokio_stream::wrappers::ReceiverStream::new(up_rx))
        .await?
        .into_inner();
    let mut heartbeat = tokio::time::interval(session.heartbeat);
    loop {
        tokio::select! {
            msg = down.message() => {
                let Some(msg) = msg? else { return Ok(SessionEnd::Disconnected) };
                match msg.kind {
                    Some(Down::Assignment(a)) if !*draining => job::start(a, reports.clone(), running.clone()).await,
                    Some(Down::Assignment(_)) => {}
                    Some(Down::Cancel(c)) => {
                        if let Some(kill) = running.lock().await.remove(&c.job_id) {
                            let _ = kill.send(());
                        }
                    }
                    Some(Down::Drain(_)) => {
                        *draining = true;
                        let _ = reports.send(AgentMessage { kind: Some(Up::DrainAck(DrainAck {})) });
                    }
                    None => {}
                }
            }
            Some(report) = queue.recv() => {
                recent.remember(&report);
                if up.send(report.clone()).await.is_err() {
                    // Keep it for the next session.
                    let _ = reports.send(report);
                    return Ok(SessionEnd::Disconnected);
                }
            }
            _ = heartbeat.tick() => {
                if up.send(AgentMessage { kind: Some(Up::Heartbeat(Heartbeat {})) }).await.is_err() {
                    return Ok(SessionEnd::Disconnected);
                }
                if *draining && running.lock().await.is_empty() && queue.is_empty() {
                    return Ok(SessionEnd::Drained);
                }
            }
        }
    }
}
