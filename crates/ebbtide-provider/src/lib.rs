//! # ebbtide-provider
//!
//! The one interface every infrastructure plugin implements (today local
//! processes, Docker and EC2). The scheduler calls it from its
//! control loop; the engine only ever sees the outcomes as events.
//!
//! Providers must tag what they launch with the cluster id and pool, so
//! that `list` returns exactly Ebbtide's instances (also ones left from
//! before a scheduler crash) and never anything else. This crate must never
//! depend on a cloud SDK: those live in the provider crates.

#[cfg(feature = "testkit")]
pub mod capture;
#[cfg(feature = "testkit")]
pub mod conformance;
mod governed;
pub mod labels;
mod plugin;

use std::fmt;

use ebbtide_core::{InstanceId, LaunchFailure, Market, PricePerHour, WorkerId};

pub use governed::{CallObserver, Governed, GovernorConfig};
pub use plugin::{BuildContext, BuildError, Plugins, ProviderPlugin, build_providers, settings_of};

/// A credential that must never be printed: its `Debug` and `Display` are
/// redacted, so it cannot leak through a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must hand it on (user-data, the
    /// agent's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One worker to bring up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLaunch {
    /// The engine's id for it.
    pub worker: WorkerId,
    /// Its one-time registration credential.
    pub bootstrap_token: Secret,
}

/// A launch of several workers of one pool on one market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    /// Cluster id, tagged on every instance.
    pub cluster: String,
    /// Pool name, tagged on every instance.
    pub pool: String,
    /// Instance shape name (provider-specific meaning).
    pub shape: String,
    /// CPU the instance should have, millicores.
    pub cpu_millis: u32,
    /// Memory the instance should have, MiB.
    pub memory_mib: u32,
    /// Spot or on-demand.
    pub market: Market,
    /// Zones to try, in this order: the engine's cheapest open spot
    /// offerings (a zone it locked after a capacity error is left out).
    /// Empty: wherever the provider prefers. A provider without zones
    /// ignores it.
    pub zones: Vec<String>,
    /// Where agents reach the scheduler's worker API.
    pub scheduler_url: String,
    /// The workers.
    pub workers: Vec<WorkerLaunch>,
}

/// An instance the provider created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedInstance {
    /// The engine's worker.
    pub worker: WorkerId,
    /// The provider's id.
    pub instance: InstanceId,
    /// Zone, where the provider has zones.
    pub zone: Option<String>,
}

/// An instance the provider reports as ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The provider's id.
    pub instance: InstanceId,
    /// The worker it was launched for (from its tags).
    pub worker: WorkerId,
    /// The pool it was launched for (from its tags).
    pub pool: String,
    /// The market it was bought on, so a restarted scheduler that adopts it
    /// books its cost at the right rate.
    pub market: Market,
    /// Its zone, where the provider has zones.
    pub zone: Option<String>,
    /// Whether it is still alive.
    pub running: bool,
}

/// One thing a provider can sell: a shape in a zone on a market, at a
/// price. The scheduler feeds these to the engine as prices, which the
/// engine uses to pick where to launch and what to fall back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offering {
    /// Instance shape name (e.g. `m7i.large`, or a Docker shape name).
    pub shape: String,
    /// Zone, where the provider has zones.
    pub zone: Option<String>,
    /// Spot or on-demand.
    pub market: Market,
    /// What an instance-hour costs.
    pub price: PricePerHour,
    /// Whether the provider believes it can launch it now.
    pub available: bool,
}

/// Whether an owned machine takes workers, as its provider last judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Answering and healthy: it takes workers into its free slots.
    Ready,
    /// Failed a check (unreachable, disk full, an agent did not start):
    /// no new workers until it passes one.
    Quarantined,
    /// Powered off by its power control (idle long enough); woken when
    /// demand needs its slots.
    PoweredOff,
    /// Powered on, not answering yet.
    PoweringOn,
}

impl HostState {
    /// Its name in status, logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Quarantined => "quarantined",
            HostState::PoweredOff => "powered_off",
            HostState::PoweringOn => "powering_on",
        }
    }

    /// Every state, for exporting a zero for those a host is not in.
    pub const ALL: [HostState; 4] = [
        HostState::Ready,
        HostState::Quarantined,
        HostState::PoweredOff,
        HostState::PoweringOn,
    ];
}

/// One owned machine (a bare-metal host) as the operator should see it:
/// the engine plans in workers and never sees hosts, so this is what
/// tells an operator why a pool has fewer slots than its inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// Its inventory name.
    pub name: String,
    /// Whether it takes workers.
    pub state: HostState,
    /// Why it is quarantined or powered off.
    pub reason: Option<String>,
    /// Our workers on it now.
    pub workers: u32,
    /// Workers it runs at once.
    pub slots: u32,
    /// Its last measured boot (power on until it answered), the part of a
    /// cold start the pool's boot estimate learns from.
    pub last_boot: Option<std::time::Duration>,
}

/// What went wrong, in the terms that decide what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The API limited our rate: retry later with back-off.
    #[error("throttled: {0}")]
    Throttled(String),
    /// A transient fault (5xx, timeout): retry with back-off.
    #[error("transient: {0}")]
    Transient(String),
    /// No capacity for this shape/market/zone: try another one.
    #[error("insufficient capacity: {0}")]
    Capacity(String),
    /// An account quota was reached.
    #[error("quota: {0}")]
    Quota(String),
    /// Configuration or credentials are wrong: retrying will not help.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl ProviderError {
    /// Whether the same call may succeed if retried after a pause.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Throttled(_) | ProviderError::Transient(_)
        )
    }

    /// The error's kind as a stable, low-cardinality name for logs and
    /// metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Throttled(_) => "throttled",
            ProviderError::Transient(_) => "transient",
            ProviderError::Capacity(_) => "capacity",
            ProviderError::Quota(_) => "quota",
            ProviderError::Permanent(_) => "permanent",
        }
    }

    /// The engine's view of a failed launch.
    pub fn as_launch_failure(&self) -> LaunchFailure {
        match self {
            ProviderError::Throttled(_) | ProviderError::Transient(_) => LaunchFailure::Throttled,
            ProviderError::Capacity(_) => LaunchFailure::Capacity,
            ProviderError::Quota(_) => LaunchFailure::Quota,
            ProviderError::Permanent(_) => LaunchFailure::Permanent,
        }
    }
}

/// What a worker presents at registration besides its token: its
/// infrastructure's word for which instance it runs on (an EC2 instance
/// identity document and its signature; a GCE identity token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationEvidence {
    /// The signed document, byte for byte (the signature covers these).
    pub document: Vec<u8>,
    /// Its signature (empty where the document carries its own).
    pub signature: String,
}

/// A registration to vouch for: the worker, the instance the provider
/// launched for it (`None` while the launch is not confirmed) and what it
/// presented.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationClaim<'a> {
    /// The worker whose token was presented.
    pub worker: WorkerId,
    /// The instance launched for that worker, once the launch answered.
    pub launched: Option<&'a InstanceId>,
    /// The evidence, if the agent sent any.
    pub evidence: Option<&'a RegistrationEvidence>,
}

/// Why a provider would not vouch for a registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationRefused {
    /// The evidence is missing, forged or for another instance.
    #[error("{0}")]
    Refused(String),
    /// It cannot be judged yet (the launch has not answered): the agent
    /// should retry.
    #[error("{0}")]
    NotYet(String),
}

/// An infrastructure plugin.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// Name used in configs, logs and metrics.
    fn name(&self) -> &str;

    /// Launches the workers; may launch only some (the rest are returned as
    /// failed by their absence and the error of the whole call is `Err`).
    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError>;

    /// Terminates instances. Idempotent: unknown or already-gone ids are
    /// not errors, and nothing it did not launch is ever touched.
    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError>;

    /// Every instance of this cluster the provider knows, alive or not.
    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError>;

    /// What it can launch and at what price. A provider without a price
    /// list returns nothing and the pools' configured prices apply.
    async fn offerings(&self) -> Result<Vec<Offering>, ProviderError> {
        Ok(Vec::new())
    }

    /// Instances the infrastructure took back recently (spot preemptions
    /// it records), so the reconciler books a worker whose instance
    /// vanished as reclaimed — its jobs requeued without spending an
    /// attempt, a replacement launched — rather than as an unexplained
    /// loss. A provider whose instances vanish only when they die answers
    /// nothing.
    async fn reclaimed(&self) -> Result<Vec<InstanceId>, ProviderError> {
        Ok(Vec::new())
    }

    /// The machines it owns and their health, for `status` and metrics. A
    /// provider that rents instances owns none.
    async fn hosts(&self) -> Vec<HostReport> {
        Vec::new()
    }

    /// Vouches for a worker's registration beyond its token. The default
    /// takes the token alone, right for workers this host starts itself
    /// (processes, containers) where nothing else could vouch; a cloud
    /// provider checks that the instance presenting the token is the one
    /// launched for it.
    async fn verify_registration(
        &self,
        claim: RegistrationClaim<'_>,
    ) -> Result<(), RegistrationRefused> {
        let _ = claim;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("tok-123456");
        assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
        let w = WorkerLaunch {
            worker: WorkerId(1),
            bootstrap_token: s,
        };
        assert!(!format!("{w:?}").contains("tok-123456"));
    }

    #[test]
    fn only_throttling_and_transient_faults_are_retryable() {
        assert!(ProviderError::Throttled("x".into()).is_retryable());
        assert!(!ProviderError::Capacity("x".into()).is_retryable());
        assert_eq!(
            ProviderError::Quota("x".into()).as_launch_failure(),
            LaunchFailure::Quota
        );
    }
}
