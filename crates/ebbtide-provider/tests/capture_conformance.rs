//! The test kit's fake provider keeps the promises every real one does,
//! failures and partial launches included, so tests built on it rely on
//! the same behaviour; and the suite itself catches a provider that
//! breaks them.

use std::sync::Arc;

use ebbtide_core::{InstanceId, Market, Micros, PricePerHour};
use ebbtide_provider::capture::Capture;
use ebbtide_provider::conformance::{self, FailingLaunch, PartialLaunch};
use ebbtide_provider::{LaunchRequest, Offering, Provider, ProviderError};

/// A conformance harness over [`Capture`], with the failures it scripts.
struct Scripted {
    capture: Arc<Capture>,
    /// Each launch error to inject, with the kind the suite is told to
    /// expect of it.
    failing: Vec<(ProviderError, &'static str)>,
    /// (workers the fake really starts, workers asked for, how many the
    /// suite is told start).
    partial: Option<(usize, Vec<u64>, usize)>,
}

fn request(workers: &[u64]) -> LaunchRequest {
    LaunchRequest {
        cluster: "c1".into(),
        pool: "p".into(),
        shape: "small".into(),
        cpu_millis: 1000,
        memory_mib: 512,
        market: Market::Spot,
        zones: Vec::new(),
        scheduler_url: "http://127.0.0.1:1".into(),
        workers: conformance::launches(workers),
    }
}

#[async_trait::async_trait]
impl conformance::Harness for Scripted {
    async fn provider(&self) -> Arc<dyn Provider> {
        self.capture.clone()
    }

    fn request(&self, workers: &[u64]) -> LaunchRequest {
        request(workers)
    }

    async fn failing_launches(&self) -> Vec<FailingLaunch> {
        self.failing
            .iter()
            .map(|(error, kind)| {
                let capture = Arc::new(Capture::default());
                capture.fail_next_launch(error.clone());
                FailingLaunch {
                    provider: capture,
                    request: request(&[1]),
                    kind,
                }
            })
            .collect()
    }

    async fn partial_launch(&self) -> Option<PartialLaunch> {
        let (really, asked, claimed) = self.partial.clone()?;
        let capture = Arc::new(Capture::default());
        capture.launch_at_most(Some(really));
        Some(PartialLaunch {
            provider: capture,
            request: request(&asked),
            starts: claimed,
        })
    }

    fn has_offerings(&self) -> bool {
        true
    }

    async fn create_foreign(&self) -> InstanceId {
        // The fake shares no backend with anything else: what it never
        // launched it cannot list or touch.
        InstanceId("someone-elses-vm".into())
    }

    async fn foreign_alive(&self, _: &InstanceId) -> bool {
        true
    }

    async fn remove_foreign(&self, _: &InstanceId) {}
}

fn offering_fake() -> Arc<Capture> {
    let capture = Arc::new(Capture::default());
    capture.set_offerings(vec![Offering {
        shape: "small".into(),
        zone: Some("z1".into()),
        market: Market::Spot,
        price: PricePerHour(Micros(12_000)),
        available: true,
    }]);
    capture
}

#[tokio::test]
async fn the_fake_provider_passes_the_conformance_suite() {
    let every_kind = [
        ProviderError::Capacity("no small in any zone".into()),
        ProviderError::Throttled("slow down".into()),
        ProviderError::Quota("vCPU limit".into()),
        ProviderError::Transient("503".into()),
        ProviderError::Permanent("bad image".into()),
    ]
    .map(|e| {
        let kind = e.kind();
        (e, kind)
    });
    let harness = Scripted {
        capture: offering_fake(),
        failing: every_kind.to_vec(),
        partial: Some((2, vec![31, 32, 33, 34], 2)),
    };
    conformance::run(&harness).await.expect("conformance");
}

#[tokio::test]
async fn the_suite_catches_a_wrong_error_kind_a_short_launch_and_no_offerings() {
    let wrong_kind = Scripted {
        capture: offering_fake(),
        failing: vec![(ProviderError::Permanent("x".into()), "capacity")],
        partial: None,
    };
    let err = conformance::run(&wrong_kind)
        .await
        .expect_err("permanent is not capacity");
    assert!(
        err.contains("expected a capacity error, got permanent"),
        "{err}"
    );

    let short = Scripted {
        capture: offering_fake(),
        failing: Vec::new(),
        partial: Some((1, vec![41, 42, 43], 2)),
    };
    let err = conformance::run(&short)
        .await
        .expect_err("it starts 1, not 2");
    assert!(err.contains("2 of 3 workers start, it answered 1"), "{err}");

    let unpriced = Scripted {
        capture: Arc::new(Capture::default()),
        failing: Vec::new(),
        partial: None,
    };
    let err = conformance::run(&unpriced)
        .await
        .expect_err("nothing offered");
    assert!(err.contains("offered nothing"), "{err}");
}
