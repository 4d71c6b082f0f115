//! The worker API (gRPC): registration with one-time bootstrap tokens and
//! the Session stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ebbtide_config::ServerConfig;
use ebbtide_core::{Event, JobId, JobOutcome, Timestamp, WorkerId};
use ebbtide_proto::worker::v1::agent_message::Kind as Up;
use ebbtide_proto::worker::v1::worker_api_server::{WorkerApi, WorkerApiServer};
use ebbtide_proto::worker::v1::{
    AgentMessage, Outcome, RegisterRequest, RegisterResponse, SchedulerMessage,
};
use ebbtide_store::{Store, TokenCheck};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::control::LoopMsg;
use crate::tokens::random_token;
use crate::{SESSION_TTL, now};

/// Session tokens handed out at registration: token → (worker, expiry).
#[derive(Clone, Default)]
pub(crate) struct Sessions(Arc<Mutex<HashMap<String, (WorkerId, Timestamp)>>>);

impl Sessions {
    fn insert(&self, token: String, worker: WorkerId, expires: Timestamp) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(token, (worker, expires));
        }
    }

    fn check(&self, token: &str, worker: WorkerId, now: Timestamp) -> Result<(), &'static str> {
        let m = self.0.lock().map_err(|_| "session table unavailable")?;
        match m.get(token) {
            None => Err("unknown session token"),
            Some((w, _)) if *w != worker => Err("session token belongs to another worker"),
            Some((_, exp)) if *exp <= now => Err("session token expired"),
            Some(_) => Ok(()),
        }
    }
}

struct Service {
    tx: mpsc::Sender<LoopMsg>,
    store: Arc<dyn Store>,
    sessions: Sessions,
    heartbeat_ms: u32,
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tx: mpsc::Sender<LoopMsg>,
    store: Arc<dyn Store>,
    sessions: Sessions,
    _server: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = Service {
        tx,
        store,
        sessions,
        heartbeat_ms: 2_000,
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
        let check = self
            .store
            .redeem_token(
                &r.bootstrap_token,
                ebbtide_store::WorkerId(r.worker_id),
                now().as_millis(),
            )
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
            .map_err(Status::failed_precondition)?;
        let token = random_token();
        let expires = now() + SESSION_TTL;
        self.sessions.insert(token.clone(), worker, expires);
        tracing::info!(worker = r.worker_id, agent = %r.agent_version, "worker registered");
        Ok(Response::new(RegisterResponse {
            session_token: token,
            expires_at_ms: expires.as_millis(),
            heartbeat_interval_ms: self.heartbeat_ms,
        }))
    }

    type SessionStream = ReceiverStream<Result<SchedulerMessage, Status>>;

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
        self.sessions
            .check(&hello.session_token, worker, now())
            .map_err(Status::unauthenticated)?;
        let (out, out_rx) = mpsc::channel(256);
        self.tx
            .send(LoopMsg::Connected {
                worker,
                sender: out,
                running: hello.running_jobs,
            })
            .await
            .map_err(|_| Status::unavailable("scheduler stopping"))?;
        let (tx, store) = (self.tx.clone(), self.store.clone());
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let forward = match msg.kind {
                    Some(Up::Heartbeat(_)) => Some(LoopMsg::Event(Event::Heartbeat { worker })),
                    Some(Up::Started(s)) => Some(LoopMsg::Event(Event::JobStarted {
                        job: JobId(s.job_id),
                        worker,
                    })),
                    Some(Up::Output(o)) => {
                        if let Err(e) = store
                            .append_log(ebbtide_store::JobId(o.job_id), o.chunk)
                            .await
                        {
                            tracing::warn!(job = o.job_id, error = %e, "log chunk dropped");
                        }
                        None
                    }
                    Some(Up::Result(r)) => {
                        let outcome =
                            match Outcome::try_from(r.outcome).unwrap_or(Outcome::Unspecified) {
                                Outcome::Succeeded => JobOutcome::Succeeded,
                                Outcome::Cancelled => JobOutcome::Cancelled,
                                Outcome::Failed | Outcome::TimedOut => JobOutcome::Failed,
                                Outcome::Unspecified => JobOutcome::Lost,
                            };
                        Some(LoopMsg::JobResult {
                            worker,
                            job: r.job_id,
                            outcome,
                            exit_code: r.exit_code,
                        })
                    }
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
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}
