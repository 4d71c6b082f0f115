//! Rate limiting and retries around any provider.
//!
//! Why a wrapper rather than code in each provider: every cloud API limits
//! its callers and fails transiently now and then, and the answer is the
//! same everywhere — stay under a configured call rate (governor), and
//! retry what is retryable with jittered exponential back-off (backon).
//! Capacity, quota and permanent errors are returned at once: they need a
//! different decision (another market, zone or shape), not the same call
//! again.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use ebbtide_core::InstanceId;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::{
    InstanceInfo, LaunchRequest, LaunchedInstance, Offering, Provider, ProviderError,
    RegistrationClaim, RegistrationRefused,
};

/// Limits and retry policy of one provider's API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GovernorConfig {
    /// Sustained calls per second.
    pub calls_per_second: NonZeroU32,
    /// Calls allowed at once above the sustained rate.
    pub burst: NonZeroU32,
    /// Retries of a throttled or transient failure.
    pub max_retries: usize,
    /// First back-off delay.
    pub min_delay: Duration,
    /// Longest back-off delay.
    pub max_delay: Duration,
}

impl Default for GovernorConfig {
    /// Conservative defaults in the range cloud APIs publish for mutating
    /// calls (EC2's RunInstances bucket refills at 2/s with a burst of 5
    /// per account and region; list calls are more generous).
    fn default() -> Self {
        GovernorConfig {
            calls_per_second: NonZeroU32::MIN.saturating_add(4),
            burst: NonZeroU32::MIN.saturating_add(9),
            max_retries: 5,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// A provider whose calls are rate-limited and retried.
pub struct Governed {
    inner: Arc<dyn Provider>,
    limiter: DefaultDirectRateLimiter,
    config: GovernorConfig,
    metrics: Option<Arc<dyn CallObserver>>,
}

/// Told about every API call attempt, for metrics (the provider crate
/// must not depend on a metrics backend).
pub trait CallObserver: Send + Sync {
    /// One attempt of `operation` by `provider` took `elapsed` and ended
    /// with `error` (its kind) or success.
    fn observe(
        &self,
        provider: &str,
        operation: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    );
}

impl Governed {
    /// Wraps `inner` with `config`.
    pub fn new(inner: Arc<dyn Provider>, config: GovernorConfig) -> Governed {
        let quota = Quota::per_second(config.calls_per_second).allow_burst(config.burst);
        Governed {
            inner,
            limiter: RateLimiter::direct(quota),
            config,
            metrics: None,
        }
    }

    /// Reports every call attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Governed {
        self.metrics = Some(observer);
        self
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.config.min_delay)
            .with_max_delay(self.config.max_delay)
            .with_max_times(self.config.max_retries)
            .with_jitter()
    }

    async fn call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let attempt = || async {
            self.limiter.until_ready().await;
            let started = std::time::Instant::now();
            let result = f().await;
            if let Some(m) = &self.metrics {
                m.observe(
                    self.inner.name(),
                    operation,
                    started.elapsed(),
                    result.as_ref().err().map(ProviderError::kind),
                );
            }
            result
        };
        attempt
            .retry(self.backoff())
            .when(ProviderError::is_retryable)
            .notify(|e, delay| {
                tracing::warn!(provider = self.inner.name(), operation, error = %e, ?delay, "provider call failed; retrying");
            })
            .await
    }
}

#[async_trait::async_trait]
impl Provider for Governed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Retried as a whole: providers make launches idempotent per request
    /// (EC2 client tokens, Docker container names from worker ids), so a
    /// retry after a lost answer never doubles the fleet.
    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        self.call("launch", || self.inner.launch(request.clone()))
            .await
    }

    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError> {
        self.call("terminate", || self.inner.terminate(instances))
            .await
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        self.call("list", || self.inner.list()).await
    }

    async fn offerings(&self) -> Result<Vec<Offering>, ProviderError> {
        self.call("offerings", || self.inner.offerings()).await
    }

    async fn reclaimed(&self) -> Result<Vec<InstanceId>, ProviderError> {
        self.call("reclaimed", || self.inner.reclaimed()).await
    }

    /// Not rate-limited: the provider's own memory, no API call.
    async fn hosts(&self) -> Vec<crate::HostReport> {
        self.inner.hosts().await
    }

    /// Not rate-limited: a provider's check is its own work (a signature),
    /// and a registration must not queue behind launches.
    async fn verify_registration(
        &self,
        claim: RegistrationClaim<'_>,
    ) -> Result<(), RegistrationRefused> {
        self.inner.verify_registration(claim).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Fails `failures` times with `error`, then lists nothing.
    struct Flaky {
        failures: AtomicUsize,
        error: ProviderError,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Provider for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        async fn launch(&self, _: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
            Ok(Vec::new())
        }
        async fn terminate(&self, _: &[InstanceId]) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(self.error.clone());
            }
            Ok(Vec::new())
        }
    }

    fn fast(max_retries: usize, per_second: u32) -> GovernorConfig {
        GovernorConfig {
            calls_per_second: NonZeroU32::new(per_second).expect("nonzero"),
            burst: NonZeroU32::MIN,
            max_retries,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    fn flaky(failures: usize, error: ProviderError) -> Arc<Flaky> {
        Arc::new(Flaky {
            failures: AtomicUsize::new(failures),
            error,
            calls: AtomicUsize::new(0),
        })
    }

    #[derive(Default)]
    struct Record(Mutex<Vec<Option<&'static str>>>);

    impl CallObserver for Record {
        fn observe(&self, _: &str, _: &'static str, _: Duration, error: Option<&'static str>) {
            self.0.lock().expect("lock").push(error);
        }
    }

    #[tokio::test]
    async fn throttling_is_retried_until_it_passes_and_every_attempt_is_observed() {
        let inner = flaky(3, ProviderError::Throttled("slow down".into()));
        let record = Arc::new(Record::default());
        let g = Governed::new(inner.clone(), fast(5, 1000)).with_observer(record.clone());
        assert_eq!(g.list().await, Ok(Vec::new()));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
        assert_eq!(
            *record.0.lock().expect("lock"),
            vec![
                Some("throttled"),
                Some("throttled"),
                Some("throttled"),
                None
            ]
        );
    }

    #[tokio::test]
    async fn capacity_errors_are_returned_at_once() {
        let inner = flaky(1, ProviderError::Capacity("none left".into()));
        let g = Governed::new(inner.clone(), fast(5, 1000));
        assert!(matches!(g.list().await, Err(ProviderError::Capacity(_))));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_stop_after_the_configured_number() {
        let inner = flaky(100, ProviderError::Transient("503".into()));
        let g = Governed::new(inner.clone(), fast(2, 1000));
        assert!(matches!(g.list().await, Err(ProviderError::Transient(_))));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn calls_are_held_to_the_configured_rate() {
        let inner = flaky(0, ProviderError::Transient("unused".into()));
        let g = Governed::new(inner.clone(), fast(0, 20));
        let started = std::time::Instant::now();
        for _ in 0..5 {
            g.list().await.expect("list");
        }
        // Burst 1 at 20/s: the 4 calls after the first wait 50 ms each.
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
    }
}
