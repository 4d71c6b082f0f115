//! The worker API (gRPC): registration with one-time bootstrap tokens and
//! the Session stream.

use std::sync::Arc;

use ebbtide_core::{Event, JobId, JobOutcome, Timestamp, WorkerId};
use ebbtide_proto::worker::v1::agent_message::Kind as Up;
use ebbtide_proto::worker::v1::worker_api_server::{WorkerApi, WorkerApiServer};
use ebbtide_proto::worker::v1::{
    AgentMessage, InstanceIdentity, JobOutput, JobResult, Outcome, RegisterRequest,
    RegisterResponse, SchedulerMessage,
};
use ebbtide_store::{Store, TokenCheck};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::control::{AgentHolds, LoopMsg, ReportedOutput, ReportedResult};
use crate::session::SessionKey;
use crate::{SESSION_TTL, now};
use ebbtide_provider::{Provider, RegistrationClaim, RegistrationEvidence, RegistrationRefused};

/// Orders queued for one worker's stream. A worker receives a handful of
/// messages per job, so a small queue is plenty; with a thousand workers
/// connected, every slot here is memory held per session.
const SESSION_QUEUE: usize = 32;

struct Service {
    tx: mpsc::Sender<LoopMsg>,
    store: Arc<dyn Store>,
    sessions: SessionKey,
    heartbeat_ms: u32,
    /// Each pool's provider, to vouch for its workers at registration.
    providers: std::collections::HashMap<String, Arc<dyn Provider>>,
    /// Ends every open session at shutdown: an agent's stream never ends
    /// by itself, and the server's graceful stop waits for all streams.
    stopping: watch::Receiver<bool>,
}

impl Service {
    /// Asks the provider of the worker's pool to vouch for it beyond the
    /// token (an EC2 identity document, for instance), before the token is
    /// redeemed: a neighbour holding this worker's token must not be able
    /// to burn it either.
    async fn vouch(
        &self,
        worker: WorkerId,
        identity: Option<&InstanceIdentity>,
    ) -> Result<(), Status> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(LoopMsg::Placement { worker, reply })
            .await
            .map_err(|_| Status::unavailable("scheduler stopping"))?;
        let placement = answer
            .await
            .map_err(|_| Status::unavailable("scheduler stopping"))?;
        let Some((provider, launched)) = placement else {
            // Not a worker the engine knows: the token check refuses it.
            return Ok(());
        };
        let Some(provider) = self.providers.get(&provider) else {
            return Ok(());
        };
        let evidence = identity.map(|i| RegistrationEvidence {
            document: i.document.clone(),
            signature: i.signature.clone(),
        });
        let launched = launched.map(ebbtide_core::InstanceId);
        let claim = RegistrationClaim {
            worker,
            launched: launched.as_ref(),
            evidence: evidence.as_ref(),
        };
        match provider.verify_registration(claim).await {
            Ok(()) => Ok(()),
            Err(RegistrationRefused::Refused(reason)) => {
                tracing::warn!(worker = worker.0, %reason, "registration refused");
                Err(Status::unauthenticated(reason))
            }
            Err(RegistrationRefused::NotYet(reason)) => Err(Status::unavailable(reason)),
        }
    }
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tx: mpsc::Sender<LoopMsg>,
    store: Arc<dyn Store>,
    sessions: SessionKey,
    heartbeat_timeout: std::time::Duration,
    providers: std::collections::HashMap<String, Arc<dyn Provider>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = Service {
        tx,
        store,
        sessions,
        heartbeat_ms: u32::try_from(
            ebbtide_config::heartbeat_interval(heartbeat_timeout).as_millis(),
        )
        .unwrap_or(u32::MAX),
        providers,
        stopping: shutdown.clone(),
    };
    let result = tonic::transport::Server::builder()
        .add_service(WorkerApiServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "worker API stopped");
    }
}

#[tonic::async_trait]
impl WorkerApi for Service {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = request.into_inner();
        if r.bootstrap_token.is_empty() || r.worker_id == 0 {
            return Err(Status::invalid_argument(
                "worker_id and bootstrap_token are required",
            ));
        }
        let worker = WorkerId(r.worker_id);
        self.vouch(worker, r.identity.as_ref()).await?;
        let check = self
            .store
            .redeem_token(&r.bootstrap_token, worker, now().as_millis())
            .await
            .map_err(|e| Status::unavailable(format!("store: {e}")))?;
        let refusal = match check {
            TokenCheck::Valid { .. } => None,
            TokenCheck::Unknown => Some("unknown bootstrap token"),
            TokenCheck::Reused => Some("bootstrap token already used"),
            TokenCheck::Expired => Some("bootstrap token expired"),
            TokenCheck::WrongWorker => Some("bootstrap token was issued for another worker"),
        };
        if let Some(reason) = refusal {
            tracing::warn!(worker = r.worker_id, reason, "registration refused");
            return Err(Status::unauthenticated(reason));
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(LoopMsg::Register { worker, reply })
            .await
            .map_err(|_| Status::unavailable("scheduler stopping"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("scheduler stopping"))?
            .map_err(|refused| Status::failed_precondition(refused.to_string()))?;
        let expires = now() + SESSION_TTL;
        let token = self.sessions.issue(worker, expires);
        tracing::info!(worker = r.worker_id, agent = %r.agent_version, "worker registered");
        Ok(Response::new(RegisterResponse {
            session_token: token,
            expires_at_ms: expires.as_millis(),
            heartbeat_interval_ms: self.heartbeat_ms,
        }))
    }

    /// Orders as a stream; the channel carries bare messages (a `Status`
    /// would make every queued slot several times larger, per worker).
    type SessionStream = tokio_stream::adapters::Map<
        ReceiverStream<Box<SchedulerMessage>>,
        fn(Box<SchedulerMessage>) -> Result<SchedulerMessage, Status>,
    >;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty session"))?;
        let Some(Up::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message of a session must be Hello",
            ));
        };
        let worker = WorkerId(hello.worker_id);
        if let Err(reason) = self.sessions.verify(&hello.session_token, worker, now()) {
            tracing::warn!(worker = hello.worker_id, reason, "session refused");
            return Err(Status::unauthenticated(reason));
        }
        let (out, out_rx) = mpsc::channel(SESSION_QUEUE);
        let (reply, answer) = oneshot::channel();
        if hello.unconfirmed_results.len() > MAX_HELLO_RESULTS
            || hello.running_jobs.len() > MAX_HELLO_RESULTS
            || hello.unacknowledged_output.len() > MAX_HELLO_RESULTS
        {
            return Err(Status::invalid_argument(format!(
                "Hello lists more than {MAX_HELLO_RESULTS} running jobs, unconfirmed results or pieces of unacknowledged output"
            )));
        }
        let holds = AgentHolds {
            running: hello.running_jobs.into_iter().map(JobId).collect(),
            output: hello
                .unacknowledged_output
                .into_iter()
                .map(reported_output)
                .collect(),
            results: hello.unconfirmed_results.iter().map(reported).collect(),
        };
        self.tx
            .send(LoopMsg::Connected {
                worker,
                sender: out,
                holds,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("scheduler stopping"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("scheduler stopping"))?
            .map_err(|reason| {
                tracing::warn!(worker = hello.worker_id, %reason, "session refused");
                Status::unauthenticated(reason.to_string())
            })?;
        let tx = self.tx.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(m)) => m,
                        _ => break,
                    },
                    _ = stopping.changed() => break,
                };
                let forward = match msg.kind {
                    Some(Up::Heartbeat(_)) => Some(LoopMsg::Event(Event::Heartbeat { worker })),
                    Some(Up::Started(s)) => Some(LoopMsg::Event(Event::JobStarted {
                        job: JobId(s.job_id),
                        worker,
                    })),
                    // Through the loop, which knows which jobs this worker
                    // holds: a session reports only on its own jobs.
                    Some(Up::Output(o)) => Some(LoopMsg::Output {
                        worker,
                        output: reported_output(o),
                    }),
                    Some(Up::Result(r)) => Some(LoopMsg::JobResult {
                        worker,
                        result: reported(&r),
                    }),
                    Some(Up::DrainAck(_)) => {
                        Some(LoopMsg::Event(Event::DrainAcknowledged { worker }))
                    }
                    Some(Up::Reclamation(n)) => Some(LoopMsg::Event(Event::ReclamationNotice {
                        worker,
                        deadline: Timestamp::from_millis(n.deadline_ms),
                    })),
                    Some(Up::Hello(_)) | None => None,
                };
                if let Some(m) = forward
                    && tx.send(m).await.is_err()
                {
                    return;
                }
            }
            let _ = tx.send(LoopMsg::Disconnected { worker }).await;
        });
        Ok(Response::new(tokio_stream::StreamExt::map(
            ReceiverStream::new(out_rx),
            unbox as fn(Box<SchedulerMessage>) -> Result<SchedulerMessage, Status>,
        )))
    }
}

/// Most running jobs or unconfirmed results one Hello may list: far above
/// any worker's slots, low enough that a hostile agent cannot make the
/// loop walk millions of ids.
const MAX_HELLO_RESULTS: usize = 4096;

/// An agent's output chunk as the loop takes it.
fn reported_output(o: JobOutput) -> ReportedOutput {
    ReportedOutput {
        job: JobId(o.job_id),
        attempt: o.attempt,
        offset: o.offset,
        chunk: o.chunk,
    }
}

/// An agent's result report as the loop takes it.
fn reported(r: &JobResult) -> ReportedResult {
    let outcome = match Outcome::try_from(r.outcome).unwrap_or(Outcome::Unspecified) {
        Outcome::Succeeded => JobOutcome::Succeeded,
        Outcome::Cancelled => JobOutcome::Cancelled,
        Outcome::Failed | Outcome::TimedOut => JobOutcome::Failed,
        Outcome::Unspecified => JobOutcome::Lost,
    };
    ReportedResult {
        job: JobId(r.job_id),
        attempt: r.attempt,
        outcome,
        exit_code: r.exit_code,
    }
}

/// The session channel carries boxes (small slots); the stream yields the
/// message itself.
#[expect(
    clippy::boxed_local,
    reason = "the box is what the session channel carries"
)]
fn unbox(m: Box<SchedulerMessage>) -> Result<SchedulerMessage, Status> {
    Ok(*m)
}
