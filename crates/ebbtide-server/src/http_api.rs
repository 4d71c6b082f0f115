//! The job API (HTTP, JSON).
//!
//! Every request but `/healthz` and `/readyz` carries `Authorization:
//! Bearer KEY`; the key names the tenant, and a tenant sees and touches
//! only its own jobs (another tenant's job id is a 404, not a 403, so ids
//! leak nothing). Every field is validated; a bad request gets a 400 whose
//! body names the field and the rule.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ebbtide_core::ClassConfig;
use ebbtide_store::{JobFilter, JobId, JobRecord, JobStatus, NewJob, RequirementsRecord, Store};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::{ApiKeys, Caller};
use crate::control::{LoopMsg, TenantStatus};
use crate::now;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) tx: mpsc::Sender<LoopMsg>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) auth: ApiKeys,
    pub(crate) classes: Arc<std::sync::RwLock<Vec<ClassConfig>>>,
    /// Set when the scheduler stops: submissions are refused (503) before
    /// anything is stored.
    pub(crate) stopping: Arc<std::sync::atomic::AtomicBool>,
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/explain", get(explain))
        .route("/v1/status", get(status))
        .route("/v1/workers/{id}/drain", post(drain))
        .with_state(state)
        // Unauthenticated, as Prometheus scrapes it; it carries no job data
        // beyond tenant and class names.
        .route(
            "/metrics",
            get(move || {
                let handle = metrics.clone();
                async move {
                    match handle {
                        Some(h) => (
                            axum::http::StatusCode::OK,
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            h.render(),
                        ),
                        None => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            "# metrics recorder unavailable\n".to_string(),
                        ),
                    }
                }
            }),
        );
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "job API stopped");
    }
}

/// An API error: status, the offending field (if any) and the rule.
struct ApiError {
    status: StatusCode,
    field: Option<&'static str>,
    message: String,
}

impl ApiError {
    fn bad(field: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            field: Some(field),
            message: message.into(),
        }
    }
    fn status(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            field: None,
            message: message.into(),
        }
    }
}

/// The store failing is the service being unavailable, never the caller's
/// fault.
impl From<ebbtide_store::StoreError> for ApiError {
    fn from(e: ebbtide_store::StoreError) -> Self {
        ApiError::status(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "error": { "field": self.field, "message": self.message } })),
        )
            .into_response()
    }
}

/// Who calls, from `Authorization: Bearer KEY`; 401 for no or an unknown key.
fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.auth.caller(value).ok_or_else(|| {
        ApiError::status(
            StatusCode::UNAUTHORIZED,
            "missing or unknown API key (Authorization: Bearer KEY)",
        )
    })
}

/// The calling tenant, for what only a tenant does (submitting: a job
/// belongs to a tenant); an operator's key gets a 403 saying so.
fn tenant(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    match caller(state, headers)? {
        Caller::Tenant(t) => Ok(t),
        Caller::Operator(_) => Err(ApiError::status(
            StatusCode::FORBIDDEN,
            "an operator key cannot submit: a job belongs to a tenant, so submit with that tenant's key",
        )),
    }
}

/// Alive means the control loop runs: without it nothing is scheduled,
/// however well the HTTP server answers.
async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.tx.is_closed() {
        return Err(ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "scheduler loop stopped",
        ));
    }
    Ok("ok")
}

/// Ready means the control loop answers: a round trip through it, which
/// builds nothing (a probe every few seconds must not cost a fleet view).
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    ask_loop(&state, |reply| LoopMsg::Ping { reply }).await?;
    Ok("ready")
}

/// Asks the control loop and waits for its answer; a 503 if the loop is
/// not running.
async fn ask_loop<T>(
    state: &AppState,
    message: impl FnOnce(oneshot::Sender<T>) -> LoopMsg,
) -> Result<T, ApiError> {
    let unavailable = || {
        ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "scheduler loop not running",
        )
    };
    let (reply, answer) = oneshot::channel();
    state
        .tx
        .send(message(reply))
        .await
        .map_err(|_| unavailable())?;
    answer.await.map_err(|_| unavailable())
}

/// The control loop's status.
async fn loop_status(state: &AppState) -> Result<crate::control::StatusReport, ApiError> {
    ask_loop(state, |reply| LoopMsg::Status { reply }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    class: String,
    command: String,
    #[serde(default)]
    timeout_s: Option<u64>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    cpu_millis: Option<u32>,
    #[serde(default)]
    memory_mib: Option<u32>,
    #[serde(default)]
    max_attempts: Option<u32>,
}

fn validate(body: &SubmitBody, classes: &[ClassConfig]) -> Result<(), ApiError> {
    if !classes.iter().any(|c| c.name == body.class) {
        let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
        return Err(ApiError::bad(
            "class",
            format!("must be one of {names:?}, got {:?}", body.class),
        ));
    }
    if body.command.trim().is_empty() || body.command.len() > 65_536 {
        return Err(ApiError::bad(
            "command",
            "must be a non-empty shell command of at most 65536 bytes",
        ));
    }
    if let Some(at) = body.command.find('\0') {
        // A shell command cannot carry a NUL: it would fail at run time.
        return Err(ApiError::bad(
            "command",
            format!("must not contain a NUL byte (found at byte {at})"),
        ));
    }
    if let Some(t) = body.timeout_s
        && !(1..=86_400).contains(&t)
    {
        return Err(ApiError::bad(
            "timeout_s",
            format!("must be between 1 and 86400 seconds, got {t}"),
        ));
    }
    if body.labels.len() > 32 {
        return Err(ApiError::bad("labels", "at most 32 labels"));
    }
    for l in &body.labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !ok {
            return Err(ApiError::bad(
                "labels",
                format!("{l:?}: labels are 1-63 characters of a-z, 0-9, '.', '_' or '-'"),
            ));
        }
    }
    if body.cpu_millis.is_some_and(|c| c > 1_000_000) {
        return Err(ApiError::bad("cpu_millis", "at most 1000000 (1000 cores)"));
    }
    if body.memory_mib.is_some_and(|m| m > 4_194_304) {
        return Err(ApiError::bad("memory_mib", "at most 4194304 (4 TiB)"));
    }
    if body.max_attempts.is_some_and(|a| !(1..=10).contains(&a)) {
        return Err(ApiError::bad("max_attempts", "must be between 1 and 10"));
    }
    Ok(())
}

fn view(j: &JobRecord) -> serde_json::Value {
    json!({
        "id": j.id.0,
        "tenant": j.tenant,
        "class": j.class,
        "status": j.status,
        "command": j.command,
        "timeout_s": j.timeout_ms / 1000,
        "labels": j.requirements.labels,
        "attempts": j.attempts,
        "exit_code": j.exit_code,
        "reason": j.reason,
        "cost_micros": j.cost_micros,
        "submitted_at_ms": j.submitted_at_ms,
        "finished_at_ms": j.finished_at_ms,
    })
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers)?;
    if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler is stopping; submit again once it is back",
        ));
    }
    let body: SubmitBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("body", format!("invalid JSON job: {e}")))?;
    let classes = state.classes.read().map(|c| c.clone()).unwrap_or_default();
    validate(&body, &classes)?;
    let record = state
        .store
        .submit(NewJob {
            tenant,
            class: body.class,
            requirements: RequirementsRecord {
                labels: body.labels,
                cpu_millis: body.cpu_millis.unwrap_or(0),
                memory_mib: body.memory_mib.unwrap_or(0),
                os: None,
                arch: None,
            },
            command: body.command,
            timeout: Duration::from_secs(body.timeout_s.unwrap_or(3600)),
            max_attempts: body.max_attempts.unwrap_or(3),
            submitted_at_ms: now().as_millis(),
        })
        .await?;
    let (reply, answer) = oneshot::channel();
    let unavailable = || {
        ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "scheduler loop not running; the job is stored and will run after a restart",
        )
    };
    state
        .tx
        .send(LoopMsg::Submit {
            record: record.clone(),
            reply,
        })
        .await
        .map_err(|_| unavailable())?;
    match answer.await.map_err(|_| unavailable())? {
        Ok(()) => Ok((StatusCode::CREATED, axum::Json(view(&record))).into_response()),
        Err(reason) => Err(ApiError::status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("job {} rejected: {reason}", record.id.0),
        )),
    }
}

/// A job the caller may see: a tenant's own, or any for an operator. A
/// tenant asking for another's job gets the same 404 as for none, so ids
/// reveal nothing.
async fn visible(state: &AppState, caller: &Caller, id: u64) -> Result<JobRecord, ApiError> {
    let not_found = || ApiError::status(StatusCode::NOT_FOUND, format!("no job {id}"));
    let job = state.store.get(JobId(id)).await?;
    match (job, caller) {
        (Some(j), Caller::Operator(_)) => Ok(j),
        (Some(j), Caller::Tenant(t)) if &j.tenant == t => Ok(j),
        _ => Err(not_found()),
    }
}

fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad("id", format!("job ids are positive integers, got {raw:?}")))
}

async fn get_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let job = visible(&state, &caller, parse_id(&id)?).await?;
    Ok(axum::Json(view(&job)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    after: Option<u64>,
    limit: Option<u32>,
    /// Only this tenant's jobs: an operator's filter (a tenant always sees
    /// only its own, and naming another is refused).
    tenant: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let tenant = match (caller(&state, &headers)?, q.tenant) {
        (Caller::Tenant(own), None) => Some(own),
        (Caller::Tenant(own), Some(asked)) if asked == own => Some(own),
        (Caller::Tenant(_), Some(_)) => {
            return Err(ApiError::bad(
                "tenant",
                "a tenant key lists only its own jobs; leave `tenant` out",
            ));
        }
        (Caller::Operator(_), asked) => asked,
    };
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            JobStatus::parse(s)
                .ok_or_else(|| ApiError::bad("status", format!("unknown status {s:?}")))?,
        ),
    };
    if q.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::bad("limit", "must be between 1 and 1000"));
    }
    let filter = JobFilter {
        tenant,
        status,
        after: q.after.map(JobId),
        limit: q.limit.unwrap_or(100),
    };
    let jobs = state.store.list(&filter).await?;
    Ok(axum::Json(json!({ "jobs": jobs.iter().map(view).collect::<Vec<_>>() })).into_response())
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let job = visible(&state, &caller, parse_id(&id)?).await?;
    if job.status.is_final() {
        return Err(ApiError::status(
            StatusCode::CONFLICT,
            format!("job {} already {}", job.id.0, job.status.as_str()),
        ));
    }
    state
        .tx
        .send(LoopMsg::Cancel { job: job.id })
        .await
        .map_err(|_| {
            ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "scheduler loop not running",
            )
        })?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "id": job.id.0, "cancel": "requested" })),
    )
        .into_response())
}

/// Bytes of log read from the store at a time; a log is never held whole.
const LOG_PAGE: u64 = 256 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// Byte offset to start from.
    offset: Option<u64>,
    /// At most this many bytes (whole chunks); the response says where the
    /// next page starts in `X-Ebbtide-Next-Offset`.
    limit: Option<u64>,
}

/// `OFFSET:ATTEMPT,…` for each chunk of a page whose attempt differs from
/// the chunk before it (the first always): where each attempt's output
/// starts, so a reader can label them (attempt 0 is the scheduler's own
/// note about the log).
fn attempt_starts(chunks: &[ebbtide_store::LogChunk]) -> String {
    let mut out = Vec::new();
    let mut last = None;
    for c in chunks {
        if last != Some(c.attempt) {
            out.push(format!("{}:{}", c.offset, c.attempt));
            last = Some(c.attempt);
        }
    }
    out.join(",")
}

/// A job's log: one page with `limit` (the `X-Ebbtide-Attempts` header
/// says where each attempt's output starts), else the whole log from `offset`,
/// streamed a page at a time so a large log never sits in memory.
async fn logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let job = visible(&state, &caller, parse_id(&id)?).await?;
    let offset = q.offset.unwrap_or(0);
    let text = (header::CONTENT_TYPE, "text/plain; charset=utf-8");
    if let Some(limit) = q.limit {
        if !(1..=16 << 20).contains(&limit) {
            return Err(ApiError::bad(
                "limit",
                "must be between 1 and 16777216 bytes",
            ));
        }
        let page = state.store.log_page(job.id, offset, limit).await?;
        let attempts = attempt_starts(&page.chunks);
        let body: Vec<u8> = page.chunks.into_iter().flat_map(|c| c.bytes).collect();
        let mut response = ([text], body).into_response();
        if let Ok(v) = header::HeaderValue::from_str(&attempts) {
            response.headers_mut().insert("x-ebbtide-attempts", v);
        }
        if let Some(next) = page.next
            && let Ok(v) = header::HeaderValue::from_str(&next.to_string())
        {
            response.headers_mut().insert("x-ebbtide-next-offset", v);
        }
        return Ok(response);
    }
    // Two pages in flight at most: the reader waits for the client.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(2);
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut at = offset;
        loop {
            match store.log_page(job.id, at, LOG_PAGE).await {
                Ok(page) => {
                    let bytes: Vec<u8> = page.chunks.into_iter().flat_map(|c| c.bytes).collect();
                    if !bytes.is_empty() && tx.send(Ok(bytes.into())).await.is_err() {
                        return;
                    }
                    match page.next {
                        Some(n) => at = n,
                        None => return,
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([text], body).into_response())
}

/// An operator retires a worker: it takes no new job, finishes what it runs
/// and is terminated. Tenants cannot (403): workers are shared.
async fn drain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Caller::Tenant(_) = caller(&state, &headers)? {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            "draining a worker needs an operator key: workers are shared by tenants",
        ));
    }
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad(
            "id",
            format!("worker ids are positive integers, got {id:?}"),
        )
    })?;
    let worker = ebbtide_core::WorkerId(id);
    match ask_loop(&state, |reply| LoopMsg::Drain { worker, reply }).await? {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({ "worker": id, "drain": "requested" })),
        )
            .into_response()),
        Err(ebbtide_core::EngineError::UnknownWorker(_)) => Err(ApiError::status(
            StatusCode::NOT_FOUND,
            format!("no worker {id}"),
        )),
        Err(e) => Err(ApiError::status(StatusCode::CONFLICT, e.to_string())),
    }
}

/// Why a job is where it is: its place in its class's queue, what it
/// needs, the pools that can run it and what holds it. A finished job gets
/// its final status instead (409, there is nothing left to explain).
async fn explain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let job = visible(&state, &caller, parse_id(&id)?).await?;
    let finished = || {
        ApiError::status(
            StatusCode::CONFLICT,
            format!(
                "job {} is {}: it waits for nothing",
                job.id.0,
                job.status.as_str()
            ),
        )
    };
    if job.status.is_final() {
        return Err(finished());
    }
    let report = ask_loop(&state, |reply| LoopMsg::Explain { job: job.id, reply })
        .await?
        .ok_or_else(finished)?;
    Ok(match caller {
        Caller::Operator(_) => axum::Json(report),
        Caller::Tenant(_) => axum::Json(report.for_tenant()),
    }
    .into_response())
}

/// The fleet for an operator's key (pools, workers, running jobs, the
/// queue, recent decisions, cost); for a tenant's key only its own queue
/// and jobs: a tenant never learns what other tenants run.
async fn status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let mut fleet = loop_status(&state).await?;
    match caller {
        Caller::Tenant(t) => Ok(axum::Json(TenantStatus::of(&fleet, &t)).into_response()),
        Caller::Operator(_) => {
            let today = fleet.at_ms / 86_400_000;
            let booked: u128 = state
                .store
                .cost_lines(today, today)
                .await?
                .iter()
                .map(|l| l.cost)
                .sum();
            fleet.cost.today_usd = Some(ebbtide_core::CostAccum(booked).to_micros().as_dollars());
            Ok(axum::Json(fleet).into_response())
        }
    }
}
