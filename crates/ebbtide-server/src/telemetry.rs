//! Prometheus metrics: every name, its help text and unit, its buckets, and
//! the functions the loop calls when something happens.
//!
//! Why one module: the names are a contract with dashboards and alert
//! rules (`deploy/`), and `docs/metrics.md` lists them; keeping them in one
//! place keeps the three in step. Labels are bounded: tenant, class, pool,
//! provider, market, state, reason, outcome and operation come from the
//! configuration or from fixed sets — never a job or worker id.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Jobs accepted, by tenant and class.
pub const JOBS_SUBMITTED: &str = "ebbtide_jobs_submitted_total";
/// Job attempts started on a worker, by tenant and class.
pub const JOBS_STARTED: &str = "ebbtide_jobs_started_total";
/// Jobs that ended, by tenant, class and outcome.
pub const JOBS_FINISHED: &str = "ebbtide_jobs_finished_total";
/// Jobs waiting, by class and tenant.
pub const QUEUE_DEPTH: &str = "ebbtide_queue_depth_jobs";
/// Age of the job waiting longest, by class and tenant.
pub const QUEUE_OLDEST: &str = "ebbtide_queue_oldest_wait_seconds";
/// Time from submission to start, by class.
pub const QUEUE_WAIT: &str = "ebbtide_queue_wait_seconds";
/// Starts within the class's SLA target, by class.
pub const SLA_MET: &str = "ebbtide_sla_started_within_target_total";
/// The class's SLA wait target.
pub const SLA_TARGET: &str = "ebbtide_sla_target_seconds";
/// Workers by pool and state.
pub const WORKERS: &str = "ebbtide_workers";
/// Desired instances per pool.
pub const POOL_DESIRED: &str = "ebbtide_pool_desired_instances";
/// Instances that exist (requested to draining) per pool.
pub const POOL_ACTUAL: &str = "ebbtide_pool_actual_instances";
/// Configured maximum per pool.
pub const POOL_MAX: &str = "ebbtide_pool_max_instances";
/// Configured warm size per static pool (0 for dynamic pools).
pub const POOL_WARM: &str = "ebbtide_pool_warm_instances";
/// Scale decisions by pool, direction and reason.
pub const SCALE_DECISIONS: &str = "ebbtide_scale_decisions_total";
/// Instances asked of providers, by provider, pool and market.
pub const LAUNCHES: &str = "ebbtide_launches_total";
/// Instances a provider could not launch, by provider, pool, market and kind.
pub const LAUNCH_FAILURES: &str = "ebbtide_launch_failures_total";
/// Reclamation notices (spot interruptions), by pool.
pub const RECLAMATIONS: &str = "ebbtide_reclamations_total";
/// Workers declared lost, by pool.
pub const WORKERS_LOST: &str = "ebbtide_workers_lost_total";
/// Jobs a worker served before retiring, by pool.
pub const JOBS_PER_WORKER: &str = "ebbtide_worker_jobs_served";
/// Jobs that ran on an already-used worker, by pool.
pub const WORKER_REUSES: &str = "ebbtide_worker_reuses_total";
/// Launch request → agent registered, by pool.
pub const REGISTRATION: &str = "ebbtide_registration_seconds";
/// Provider API call attempts, by provider and operation.
pub const PROVIDER_CALLS: &str = "ebbtide_provider_calls_total";
/// Failed provider API calls, by provider, operation and kind.
pub const PROVIDER_ERRORS: &str = "ebbtide_provider_errors_total";
/// Throttled provider API calls, by provider and operation.
pub const PROVIDER_THROTTLES: &str = "ebbtide_provider_throttles_total";
/// Provider API call latency, by provider and operation.
pub const PROVIDER_LATENCY: &str = "ebbtide_provider_call_seconds";
/// What the fleet costs per hour now, by pool and market.
pub const COST_RATE: &str = "ebbtide_cost_rate_micro_dollars_per_hour";
/// Cumulative cost by pool.
pub const COST_POOL: &str = "ebbtide_cost_pool_micro_dollars_total";
/// Cumulative cost by market.
pub const COST_MARKET: &str = "ebbtide_cost_market_micro_dollars_total";
/// Cumulative cost attributed to each tenant's jobs.
pub const COST_TENANT: &str = "ebbtide_cost_tenant_micro_dollars_total";
/// Cumulative savings versus running the same time on-demand.
pub const SAVINGS: &str = "ebbtide_savings_micro_dollars_total";
/// Daily cost reports published.
pub const REPORTS_PUBLISHED: &str = "ebbtide_cost_reports_published_total";
/// Ledger writes and report uploads that failed (and are retried).
pub const REPORT_FAILURES: &str = "ebbtide_cost_report_failures_total";
/// Finished days whose report is not published yet.
pub const REPORTS_DUE: &str = "ebbtide_cost_reports_pending";
/// Configured fleet budget (`engine.max_cost_per_hour`), if any.
pub const BUDGET: &str = "ebbtide_budget_micro_dollars_per_hour";
/// Share of a tenant's running-jobs quota in use.
pub const QUOTA_USED: &str = "ebbtide_tenant_quota_used_ratio";
/// Reports a worker's session made on a job it does not hold, by what
/// (output, result): refused, never stored.
pub const REPORTS_REFUSED: &str = "ebbtide_worker_reports_refused_total";
/// An owned host's state: 1 for the state it is in, 0 for the others.
pub const HOST_STATE: &str = "ebbtide_host_state";
/// An owned host's last measured boot (power on until it answered).
pub const HOST_BOOT: &str = "ebbtide_host_boot_seconds";

/// Queue waits: from instant to past the longest SLA targets.
const WAIT_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0,
];
/// Boot and registration: containers in < 1 s, VMs in tens of seconds.
const BOOT_BUCKETS: &[f64] = &[
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
/// Cloud API calls.
const CALL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Jobs per worker lifetime.
const REUSE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// Installs the Prometheus recorder once per process and returns the handle
/// `/metrics` renders.
pub(crate) fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(QUEUE_WAIT.into()), WAIT_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(REGISTRATION.into()), BOOT_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(PROVIDER_LATENCY.into()), CALL_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(JOBS_PER_WORKER.into()), REUSE_BUCKETS)
                })
                .map_err(|e| e.to_string())?;
            let handle = builder.install_recorder().map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        JOBS_SUBMITTED,
        Unit::Count,
        "Jobs accepted by the job API, by tenant and class."
    );
    describe_counter!(
        JOBS_STARTED,
        Unit::Count,
        "Job attempts placed on a worker, by tenant and class."
    );
    describe_counter!(
        JOBS_FINISHED,
        Unit::Count,
        "Jobs that ended, by tenant, class and outcome (succeeded, failed, cancelled, lost, rejected)."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Jobs waiting in the queue, by class and tenant."
    );
    describe_gauge!(
        QUEUE_OLDEST,
        Unit::Seconds,
        "How long the job waiting longest has waited, by class and tenant."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time from submission to placement on a worker, by class."
    );
    describe_counter!(
        SLA_MET,
        Unit::Count,
        "Job starts within the class's SLA wait target, by class; divide by jobs started for attainment."
    );
    describe_gauge!(
        SLA_TARGET,
        Unit::Seconds,
        "The SLA wait target of each class."
    );
    describe_gauge!(
        WORKERS,
        Unit::Count,
        "Workers by pool and state (requested, booting, idle, busy, draining, terminating, lost)."
    );
    describe_gauge!(
        POOL_DESIRED,
        Unit::Count,
        "Instances the scaler wants in each pool."
    );
    describe_gauge!(
        POOL_ACTUAL,
        Unit::Count,
        "Instances that exist in each pool, from requested to draining."
    );
    describe_gauge!(
        POOL_MAX,
        Unit::Count,
        "Configured maximum size of each pool."
    );
    describe_gauge!(
        POOL_WARM,
        Unit::Count,
        "Configured warm size of each static pool (0 for dynamic pools)."
    );
    describe_counter!(
        SCALE_DECISIONS,
        Unit::Count,
        "Changes of desired capacity, by pool, direction and reason."
    );
    describe_counter!(
        LAUNCHES,
        Unit::Count,
        "Instances asked of a provider, by provider, pool and market."
    );
    describe_counter!(
        LAUNCH_FAILURES,
        Unit::Count,
        "Instances a provider failed to launch, by provider, pool, market and error kind."
    );
    describe_counter!(
        RECLAMATIONS,
        Unit::Count,
        "Reclamation (spot interruption) notices, by pool."
    );
    describe_counter!(
        WORKERS_LOST,
        Unit::Count,
        "Workers declared lost (missed heartbeats or gone from the provider), by pool."
    );
    describe_histogram!(
        JOBS_PER_WORKER,
        Unit::Count,
        "Jobs each worker served before it retired, by pool."
    );
    describe_counter!(
        WORKER_REUSES,
        Unit::Count,
        "Jobs that ran on a worker that had already run one, by pool."
    );
    describe_histogram!(
        REGISTRATION,
        Unit::Seconds,
        "From the launch request to the agent's registration, by pool."
    );
    describe_counter!(
        PROVIDER_CALLS,
        Unit::Count,
        "Provider API call attempts, by provider and operation."
    );
    describe_counter!(
        PROVIDER_ERRORS,
        Unit::Count,
        "Failed provider API call attempts, by provider, operation and error kind."
    );
    describe_counter!(
        PROVIDER_THROTTLES,
        Unit::Count,
        "Provider API call attempts the provider throttled, by provider and operation."
    );
    describe_histogram!(
        PROVIDER_LATENCY,
        Unit::Seconds,
        "Provider API call latency, by provider and operation."
    );
    describe_gauge!(
        COST_RATE,
        "What the fleet costs per hour right now in micro-dollars, by pool and market."
    );
    describe_counter!(
        COST_POOL,
        "Cumulative fleet cost in micro-dollars, by pool."
    );
    describe_counter!(
        COST_MARKET,
        "Cumulative fleet cost in micro-dollars, by market."
    );
    describe_counter!(
        COST_TENANT,
        "Cumulative cost in micro-dollars attributed to each tenant's jobs."
    );
    describe_counter!(
        SAVINGS,
        "Cumulative savings in micro-dollars versus running the same instance-time on-demand."
    );
    describe_counter!(
        REPORTS_PUBLISHED,
        "Daily cost reports built from the ledger and published (to S3 when configured, else to the local spool)."
    );
    describe_counter!(
        REPORT_FAILURES,
        "Cost bookkeeping failures: stage=ledger (ledger lines not yet durable, retried) or stage=upload (a day's report refused by S3 after retries, kept locally and due)."
    );
    describe_gauge!(
        REPORTS_DUE,
        Unit::Count,
        "Finished days whose cost report is not published yet (after the last publishing pass)."
    );
    describe_gauge!(
        BUDGET,
        "Configured fleet budget in micro-dollars per hour (engine.max_cost_per_hour); absent without one."
    );
    describe_gauge!(
        QUOTA_USED,
        Unit::Count,
        "Share (0-1) of each tenant's running-jobs quota in use; absent for tenants without one."
    );
    describe_gauge!(
        HOST_STATE,
        Unit::Count,
        "Each owned host's state (provider, host, state=ready|quarantined|powered_off|powering_on): 1 for the one it is in. A quarantined host takes no workers until it passes a check; `ebbtide status` says why."
    );
    describe_gauge!(
        HOST_BOOT,
        Unit::Seconds,
        "Each owned host's last measured boot, from power on until it answered over SSH; absent until it has been powered on by Ebbtide."
    );
    describe_counter!(
        REPORTS_REFUSED,
        "Reports a worker's session made on a job it does not hold, by what (output or result); refused and not stored. Any increase is a misbehaving or hostile agent."
    );
}

/// A job was accepted.
pub(crate) fn job_submitted(tenant: &str, class: &str) {
    counter!(JOBS_SUBMITTED, "tenant" => tenant.to_string(), "class" => class.to_string())
        .increment(1);
}

/// A job was placed on a worker after waiting `wait`.
pub(crate) fn job_started(tenant: &str, class: &str, wait: Duration, target: Option<Duration>) {
    counter!(JOBS_STARTED, "tenant" => tenant.to_string(), "class" => class.to_string())
        .increment(1);
    histogram!(QUEUE_WAIT, "class" => class.to_string()).record(wait.as_secs_f64());
    // Always touch the series so attainment is 0/n, not missing, at first.
    let met = counter!(SLA_MET, "class" => class.to_string());
    if target.is_none_or(|t| wait <= t) {
        met.increment(1);
    }
}

/// A job ended (`outcome`: succeeded, failed, cancelled, lost, rejected).
pub(crate) fn job_finished(tenant: &str, class: &str, outcome: &'static str) {
    counter!(JOBS_FINISHED, "tenant" => tenant.to_string(), "class" => class.to_string(), "outcome" => outcome).increment(1);
}

/// The engine changed a pool's desired size.
pub(crate) fn scale_decision(pool: &str, from: u32, to: u32, reason: &'static str) {
    let direction = match to.cmp(&from) {
        std::cmp::Ordering::Greater => "up",
        std::cmp::Ordering::Less => "down",
        std::cmp::Ordering::Equal => "hold",
    };
    counter!(SCALE_DECISIONS, "pool" => pool.to_string(), "direction" => direction, "reason" => reason).increment(1);
}

/// `count` instances were asked of `provider`; `why` says why on this
/// market (`policy`, or `spot_locked`: on-demand because every spot
/// offering was locked and an SLA could not wait).
pub(crate) fn launched(
    provider: &str,
    pool: &str,
    market: &'static str,
    why: &'static str,
    count: u64,
) {
    counter!(LAUNCHES, "provider" => provider.to_string(), "pool" => pool.to_string(), "market" => market, "why" => why).increment(count);
}

/// `count` instances could not be launched.
pub(crate) fn launch_failed(
    provider: &str,
    pool: &str,
    market: &'static str,
    kind: &'static str,
    count: u64,
) {
    counter!(LAUNCH_FAILURES, "provider" => provider.to_string(), "pool" => pool.to_string(), "market" => market, "kind" => kind).increment(count);
}

/// A worker's session reported `what` (output, result) on a job it does
/// not hold.
pub(crate) fn report_refused(what: &'static str) {
    counter!(REPORTS_REFUSED, "what" => what).increment(1);
}

/// A reclamation notice arrived for a worker of `pool`.
pub(crate) fn reclamation(pool: &str) {
    counter!(RECLAMATIONS, "pool" => pool.to_string()).increment(1);
}

/// A worker of `pool` was declared lost.
pub(crate) fn worker_lost(pool: &str) {
    counter!(WORKERS_LOST, "pool" => pool.to_string()).increment(1);
}

/// A worker of `pool` registered `after` its launch request.
pub(crate) fn registered(pool: &str, after: Duration) {
    histogram!(REGISTRATION, "pool" => pool.to_string()).record(after.as_secs_f64());
}

/// A worker of `pool` retired after serving `jobs`.
pub(crate) fn worker_retired(pool: &str, jobs: u32) {
    histogram!(JOBS_PER_WORKER, "pool" => pool.to_string()).record(f64::from(jobs));
    counter!(WORKER_REUSES, "pool" => pool.to_string())
        .increment(u64::from(jobs.saturating_sub(1)));
}

/// Feeds provider call attempts into the provider metrics.
pub(crate) struct ProviderCalls;

impl ebbtide_provider::CallObserver for ProviderCalls {
    fn observe(
        &self,
        provider: &str,
        operation: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        let p = provider.to_string();
        counter!(PROVIDER_CALLS, "provider" => p.clone(), "operation" => operation).increment(1);
        histogram!(PROVIDER_LATENCY, "provider" => p.clone(), "operation" => operation)
            .record(elapsed.as_secs_f64());
        if let Some(kind) = error {
            counter!(PROVIDER_ERRORS, "provider" => p.clone(), "operation" => operation, "kind" => kind).increment(1);
            if kind == "throttled" {
                counter!(PROVIDER_THROTTLES, "provider" => p, "operation" => operation)
                    .increment(1);
            }
        }
    }
}

/// Sets a gauge.
pub(crate) fn set_gauge(name: &'static str, labels: &[(&'static str, String)], value: f64) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    gauge!(name, labels).set(value);
}

/// Sets a counter to an absolute value the engine keeps (costs).
pub(crate) fn set_counter(name: &'static str, labels: &[(&'static str, String)], value: u64) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    counter!(name, labels).absolute(value);
}

/// A publishing pass ended: `published` days sent, `failed` uploads, and
/// `due` finished days still waiting.
pub(crate) fn cost_reports(published: u64, failed: u64, due: u64) {
    counter!(REPORTS_PUBLISHED).increment(published);
    if failed > 0 {
        counter!(REPORT_FAILURES, "stage" => "upload").increment(failed);
    }
    gauge!(REPORTS_DUE).set(due as f64);
}

/// Ledger lines could not be made durable (they are kept and retried).
pub(crate) fn ledger_write_failed() {
    counter!(REPORT_FAILURES, "stage" => "ledger").increment(1);
}
