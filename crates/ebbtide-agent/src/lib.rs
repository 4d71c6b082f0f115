//! # ebbtide-agent
//!
//! The program on every worker. It registers once with its one-time
//! bootstrap token, keeps one Session stream to the scheduler, runs each
//! assigned job as `/bin/sh -c COMMAND` with its timeout, streams the
//! output, reports the result and waits for the next job. On a drain order
//! it acknowledges, finishes what runs, and exits.
//!
//! Reports never get lost in a network blip: jobs write into a bounded
//! queue that survives reconnects; each Session drains it. A result is
//! kept until the scheduler confirms it stored it, and repeated in every
//! new Session's Hello until then; an assignment the agent already runs or
//! ran is never run twice. The agent reconnects with jittered exponential
//! back-off (backon) without touching the jobs it is running; if no
//! scheduler answers for `orphan_timeout` it stops its jobs and exits, so
//! an instance nobody manages does not run (and bill) forever. Jobs run in
//! a sandbox (`sandbox`): their own directory, an allow-listed
//! environment, an unprivileged user where the agent is root. It must
//! never depend on the scheduler's crates: the protocol is the contract.

pub mod gce_metadata;
#[cfg(any(test, feature = "testkit"))]
pub mod gce_metadata_stand_in;
pub mod imds;
#[cfg(any(test, feature = "testkit"))]
pub mod imds_stand_in;
mod job;
mod outbox;
pub mod sandbox;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

use outbox::{Known, Reports, SharedLedger};
pub use sandbox::{JobUser, Sandbox};

/// Where a cloud instance learns that it is about to be reclaimed.
#[derive(Debug, Clone)]
pub enum ReclaimWatch {
    /// EC2: IMDS's `spot/instance-action`, polled (two minutes' notice).
    Ec2(imds::Imds),
    /// GCE: the metadata server's `instance/preempted`, long-polled (about
    /// 30 s of notice, so no polling interval is spent).
    Gce(gce_metadata::GceMetadata),
}

/// How the agent finds and proves itself to the scheduler, and how it runs
/// jobs.
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
    pub interruptions: Option<ReclaimWatch>,
    /// On a cloud instance: its signed identity (EC2: the identity document
    /// and its signature; GCE: an identity token and no signature), sent at
    /// registration so the scheduler knows which instance registers.
    pub identity: Option<(Vec<u8>, String)>,
    /// Where and as whom jobs run.
    pub sandbox: Sandbox,
    /// How long the agent keeps trying when no scheduler answers before it
    /// stops its jobs and exits.
    pub orphan_timeout: Duration,
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
            .field("sandbox", &self.sandbox)
            .field("orphan_timeout", &self.orphan_timeout)
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

/// A job running now: how to cancel it and its process group (0 until
/// the process exists), so the agent can stop it when it stops itself.
pub(crate) struct RunningJob {
    /// Taken when a cancel is sent; the job stays listed until it ends.
    pub kill: Option<tokio::sync::oneshot::Sender<()>>,
    pub group: Arc<AtomicU64>,
}

/// Jobs running now, by id.
pub(crate) type Running = Arc<Mutex<BTreeMap<u64, RunningJob>>>;

/// Runs the agent until it is drained (Ok) or refused (Err).
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    run_until(config, std::future::pending()).await
}

/// Runs the agent until it is drained, refused, orphaned, or `stop`
/// completes (SIGTERM: the instance is being terminated). However it ends,
/// every job it still runs is killed with its whole process group first:
/// a worker that is gone never leaves a job running behind it.
pub async fn run_until(
    config: AgentConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    sandbox::hide_from_same_user();
    if config.sandbox.user.is_none() {
        tracing::warn!(
            "jobs run as the agent's own user: they get a clean environment and directory, but can read whatever files that user can"
        );
    }
    let running: Running = Arc::default();
    let outcome = tokio::select! {
        r = serve(&config, running.clone()) => r,
        () = stop => {
            tracing::info!("stopping: killing the jobs still running");
            Ok(())
        }
    };
    for (job, r) in std::mem::take(&mut *running.lock().await) {
        job::kill_group_of(r.group.load(Ordering::SeqCst));
        tracing::warn!(job, "job stopped with the agent");
    }
    outcome
}

async fn serve(config: &AgentConfig, running: Running) -> Result<(), AgentError> {
    // One HTTP/2 connection for registration and every session: it
    // reconnects by itself after a blip, and the scheduler holds one
    // connection per worker instead of one per call.
    let channel = tonic::transport::Endpoint::from_shared(config.scheduler.clone())
        .map_err(|e| AgentError::Refused(format!("scheduler address: {e}")))?
        .connect_lazy();
    let session = register(config, &channel).await?;
    let (reports, mut queue) = mpsc::channel::<AgentMessage>(outbox::REPORT_QUEUE);
    match config.interruptions.clone() {
        Some(ReclaimWatch::Ec2(imds)) => {
            tokio::spawn(watch_interruptions(imds, reports.clone()));
        }
        Some(ReclaimWatch::Gce(metadata)) => {
            tokio::spawn(watch_preemption(metadata, reports.clone()));
        }
        None => {}
    }
    let sandbox = Arc::new(config.sandbox.clone());
    let mut state = AgentState {
        ledger: SharedLedger::default(),
        draining: false,
        carry: None,
    };
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    let mut last_contact = tokio::time::Instant::now();
    loop {
        let mut ctx = SessionContext {
            config,
            session: &session,
            reports: &reports,
            queue: &mut queue,
            running: &running,
            sandbox: &sandbox,
            state: &mut state,
            opened: false,
        };
        let ended = session_once(&mut ctx).await;
        if ctx.opened {
            last_contact = tokio::time::Instant::now();
        }
        match ended {
            Ok(SessionEnd::Drained) => return Ok(()),
            Ok(SessionEnd::Disconnected) => {}
            Err(e) if e.code() == Code::Unauthenticated => {
                return Err(AgentError::Refused(e.message().to_string()));
            }
            Err(e) => tracing::warn!(error = %e.message(), "session failed; reconnecting"),
        }
        if last_contact.elapsed() >= config.orphan_timeout {
            tracing::error!(
                timeout_s = config.orphan_timeout.as_secs(),
                "no scheduler answered within the orphan timeout; stopping jobs and exiting"
            );
            return Err(AgentError::Unreachable(format!(
                "no scheduler for {} s",
                config.orphan_timeout.as_secs()
            )));
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::time::sleep(delay).await;
    }
}

/// Polls IMDS every 5 s (EC2 gives two minutes' notice) and reports the
/// first interruption notice; the report queue survives reconnects.
async fn watch_interruptions(imds: imds::Imds, reports: Reports) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        match imds.interruption().await {
            Ok(Some(deadline_ms)) => {
                tracing::warn!(
                    deadline_ms,
                    "spot interruption notice; telling the scheduler"
                );
                outbox::send(&reports, Up::Reclamation(ReclamationNotice { deadline_ms })).await;
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the interruption notice"),
        }
    }
}

/// How much notice Compute Engine gives a spot VM before it stops it.
const GCE_PREEMPTION_NOTICE: Duration = Duration::from_secs(30);

/// Long-polls the metadata server's preemption flag and reports it the
/// moment it turns `TRUE`, with the deadline Compute Engine's notice
/// implies; a failed poll is retried after a pause.
async fn watch_preemption(metadata: gce_metadata::GceMetadata, reports: Reports) {
    loop {
        match metadata.preempted().await {
            Ok(true) => {
                let deadline_ms = std::time::SystemTime::now()
                    .checked_add(GCE_PREEMPTION_NOTICE)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                tracing::warn!(deadline_ms, "spot preemption notice; telling the scheduler");
                outbox::send(&reports, Up::Reclamation(ReclamationNotice { deadline_ms })).await;
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the preemption flag");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
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

/// What outlives one session: results awaiting confirmation, whether a
/// drain was ordered, and a report a broken stream did not take.
struct AgentState {
    ledger: SharedLedger,
    draining: bool,
    carry: Option<AgentMessage>,
}

struct SessionContext<'a> {
    config: &'a AgentConfig,
    session: &'a Session,
    reports: &'a Reports,
    queue: &'a mut mpsc::Receiver<AgentMessage>,
    running: &'a Running,
    sandbox: &'a Arc<Sandbox>,
    state: &'a mut AgentState,
    /// Whether the scheduler accepted this session (counts as contact).
    opened: bool,
}

fn closed() -> tonic::Status {
    tonic::Status::unavailable("closed")
}

async fn session_once(ctx: &mut SessionContext<'_>) -> Result<SessionEnd, tonic::Status> {
    let mut client = WorkerApiClient::new(ctx.session.channel.clone());
    let (up, up_rx) = mpsc::channel::<AgentMessage>(256);
    // Running first, then the ledger: a job that ends in between is in
    // the ledger by the time it is read.
    let mut running_jobs: Vec<u64> = ctx.running.lock().await.keys().copied().collect();
    let (unconfirmed_results, unacknowledged_output) = match ctx.state.ledger.lock() {
        Ok(l) => {
            let reporting: Vec<u64> = l
                .still_reporting()
                .filter(|j| !running_jobs.contains(j))
                .collect();
            running_jobs.extend(reporting);
            (l.pending(), l.unacknowledged_output())
        }
        Err(_) => Default::default(),
    };
    let hello = Hello {
        worker_id: ctx.config.worker_id,
        session_token: ctx.session.token.clone(),
        running_jobs,
        unconfirmed_results,
        unacknowledged_output,
    };
    up.send(AgentMessage {
        kind: Some(Up::Hello(hello)),
    })
    .await
    .map_err(|_| closed())?;
    if let Some(m) = ctx.state.carry.take() {
        up.send(m).await.map_err(|_| closed())?;
    }
    let mut down = client
        .session(tokio_stream::wrappers::ReceiverStream::new(up_rx))
        .await?
        .into_inner();
    ctx.opened = true;
    let mut heartbeat = tokio::time::interval(ctx.session.heartbeat);
    loop {
        tokio::select! {
            msg = down.message() => {
                let Some(msg) = msg? else { return Ok(SessionEnd::Disconnected) };
                if let Some(kind) = msg.kind
                    && let Some(reply) = on_order(ctx, kind).await
                    && up.send(reply).await.is_err()
                {
                    return Ok(SessionEnd::Disconnected);
                }
            }
            Some(mut report) = ctx.queue.recv() => {
                if let Ok(mut l) = ctx.state.ledger.lock() {
                    l.stamp(&mut report);
                }
                if let Err(mpsc::error::SendError(report)) = up.send(report).await {
                    // A result or an output chunk is in the ledger and goes
                    // out with the next Hello; anything else is carried to
                    // the next session.
                    if !matches!(report.kind, Some(Up::Result(_) | Up::Output(_))) {
                        ctx.state.carry = Some(report);
                    }
                    return Ok(SessionEnd::Disconnected);
                }
            }
            _ = heartbeat.tick() => {
                if up.send(AgentMessage { kind: Some(Up::Heartbeat(Heartbeat {})) }).await.is_err() {
                    return Ok(SessionEnd::Disconnected);
                }
                if ctx.state.draining
                    && ctx.running.lock().await.is_empty()
                    && ctx.queue.is_empty()
                    && ctx.state.ledger.lock().is_ok_and(|l| l.is_empty())
                {
                    return Ok(SessionEnd::Drained);
                }
            }
        }
    }
}

/// Carries out one order; returns a message to send back, if any.
async fn on_order(ctx: &mut SessionContext<'_>, order: Down) -> Option<AgentMessage> {
    match order {
        Down::Assignment(a) => {
            if ctx.running.lock().await.contains_key(&a.job_id) {
                tracing::debug!(
                    job = a.job_id,
                    "assignment repeated while the job runs; ignored"
                );
                return None;
            }
            let known = ctx
                .state
                .ledger
                .lock()
                .map_or(Known::New, |l| l.known(a.job_id));
            match known {
                Known::Reporting => {
                    tracing::debug!(
                        job = a.job_id,
                        "assignment repeated for a job whose reports are still queued; they follow"
                    );
                    None
                }
                Known::Unconfirmed(result) => {
                    tracing::debug!(
                        job = a.job_id,
                        "assignment repeated for a finished job; repeating its result"
                    );
                    Some(AgentMessage {
                        kind: Some(Up::Result(*result)),
                    })
                }
                Known::Confirmed => {
                    tracing::warn!(
                        job = a.job_id,
                        "assignment repeated for a job already done; not run again"
                    );
                    None
                }
                Known::New if ctx.state.draining => None,
                Known::New => {
                    job::start(
                        a,
                        ctx.reports.clone(),
                        ctx.running.clone(),
                        ctx.state.ledger.clone(),
                        ctx.sandbox.clone(),
                    )
                    .await;
                    None
                }
            }
        }
        Down::Cancel(c) => {
            // The job stays listed as running until it has ended and its
            // result is in the ledger.
            let kill = ctx
                .running
                .lock()
                .await
                .get_mut(&c.job_id)
                .and_then(|j| j.kill.take());
            if let Some(kill) = kill {
                let _ = kill.send(());
            }
            None
        }
        Down::Drain(_) => {
            ctx.state.draining = true;
            Some(AgentMessage {
                kind: Some(Up::DrainAck(DrainAck {})),
            })
        }
        Down::ResultStored(r) => {
            if let Ok(mut l) = ctx.state.ledger.lock() {
                l.confirmed(r.job_id);
            }
            None
        }
        Down::OutputStored(o) => {
            if let Ok(mut l) = ctx.state.ledger.lock() {
                l.output_stored(o.job_id, o.attempt, o.through);
            }
            None
        }
    }
}
