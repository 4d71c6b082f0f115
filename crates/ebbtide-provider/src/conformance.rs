//! The conformance suite every provider must pass.
//!
//! Why one suite: the scheduler and the reconciler rely on the same few
//! promises from every infrastructure — `list` finds what was launched,
//! also from a fresh provider object after a restart; `terminate` is
//! idempotent; failures come back with the kind that decides what happens
//! next; a launch that starts only some workers says which; offerings are
//! well formed; and nothing Ebbtide did not launch is ever listed or
//! touched. A
//! provider's tests implement [`Harness`] over a real backend (a Docker
//! engine, an EC2 emulator, processes) and call [`run`].

use std::sync::Arc;
use std::time::Duration;

use ebbtide_core::InstanceId;

use crate::{LaunchRequest, LaunchedInstance, Provider};

/// A launch that must fail, and how.
pub struct FailingLaunch {
    /// The provider (its backend set up to fail).
    pub provider: Arc<dyn Provider>,
    /// What to launch.
    pub request: LaunchRequest,
    /// The kind the error must have ([`crate::ProviderError::kind`]):
    /// `capacity`, `throttled`, `quota`, `transient` or `permanent`.
    pub kind: &'static str,
}

/// A launch that can start only some of its workers.
pub struct PartialLaunch {
    /// The provider (its backend set up to run short).
    pub provider: Arc<dyn Provider>,
    /// What to launch.
    pub request: LaunchRequest,
    /// How many of the request's workers it starts.
    pub starts: usize,
}

/// What the suite needs from a provider's test.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// A new provider object over the same backend (as after a scheduler
    /// restart): it must find what an earlier object launched.
    async fn provider(&self) -> Arc<dyn Provider>;

    /// A launch request for `workers` on one of the harness's pools.
    fn request(&self, workers: &[u64]) -> LaunchRequest;

    /// Launches that must fail, one per error kind the harness can make
    /// its backend produce (a real backend rarely produces them all: the
    /// EC2 harness injects capacity, quota and throttling errors in front
    /// of the emulator; a process provider only has permanent ones).
    async fn failing_launches(&self) -> Vec<FailingLaunch>;

    /// A launch that starts only some of its workers, where the backend
    /// can be made to run short; `None` where a launch is all or nothing.
    async fn partial_launch(&self) -> Option<PartialLaunch> {
        None
    }

    /// Whether this provider has a price list: then `offerings` must list
    /// something; without one it may answer nothing.
    fn has_offerings(&self) -> bool {
        false
    }

    /// Creates, in the same backend, an instance Ebbtide's cluster did not
    /// launch (untagged, or another cluster's).
    async fn create_foreign(&self) -> InstanceId;

    /// Whether that foreign instance is still alive.
    async fn foreign_alive(&self, instance: &InstanceId) -> bool;

    /// Removes the foreign instance after the suite.
    async fn remove_foreign(&self, instance: &InstanceId);
}

/// How long an instance may take to show as running or gone.
const SETTLE: Duration = Duration::from_secs(20);

/// Runs every scenario; the error names the scenario that failed and why.
pub async fn run(h: &dyn Harness) -> Result<(), String> {
    let launched = launch_and_list(h).await?;
    let outcome = async {
        listed_after_restart(h, &launched).await?;
        terminate_twice_and_unknown(h, &launched).await?;
        failure_kinds(h).await?;
        partial(h).await?;
        offerings(h).await?;
        foreign_untouched(h).await
    }
    .await;
    // Whatever happened, leave nothing behind.
    let ids: Vec<InstanceId> = launched.iter().map(|l| l.instance.clone()).collect();
    let _ = h.provider().await.terminate(&ids).await;
    outcome
}

async fn launch_and_list(h: &dyn Harness) -> Result<Vec<LaunchedInstance>, String> {
    let p = h.provider().await;
    let request = h.request(&[9_001, 9_002, 9_003]);
    let pool = request.pool.clone();
    let launched = p
        .launch(request)
        .await
        .map_err(|e| format!("launch 3: {e}"))?;
    let mut workers: Vec<u64> = launched.iter().map(|l| l.worker.0).collect();
    workers.sort_unstable();
    if workers != [9_001, 9_002, 9_003] {
        return Err(format!("launch 3: got instances for workers {workers:?}"));
    }
    if !all_distinct(launched.iter().map(|l| &l.instance)) {
        return Err("launch 3: instance ids are not distinct".into());
    }
    settle("launched instances are listed as running", || async {
        let listed = p.list().await.map_err(|e| format!("list: {e}"))?;
        for l in &launched {
            match listed.iter().find(|i| i.instance == l.instance) {
                None => return Ok(Some(format!("{} not listed", l.instance.0))),
                Some(i) if i.worker != l.worker || i.pool != pool => {
                    return Ok(Some(format!(
                        "{} listed with wrong tags: {i:?}",
                        l.instance.0
                    )));
                }
                Some(i) if !i.running => return Ok(Some(format!("{} not running", l.instance.0))),
                Some(_) => {}
            }
        }
        Ok(None)
    })
    .await?;
    Ok(launched)
}

async fn listed_after_restart(
    h: &dyn Harness,
    launched: &[LaunchedInstance],
) -> Result<(), String> {
    let fresh = h.provider().await;
    let listed = fresh
        .list()
        .await
        .map_err(|e| format!("list after restart: {e}"))?;
    for l in launched {
        if !listed
            .iter()
            .any(|i| i.instance == l.instance && i.worker == l.worker)
        {
            return Err(format!(
                "list after restart: {} (worker {}) missing",
                l.instance.0, l.worker.0
            ));
        }
    }
    Ok(())
}

async fn terminate_twice_and_unknown(
    h: &dyn Harness,
    launched: &[LaunchedInstance],
) -> Result<(), String> {
    let p = h.provider().await;
    let ids: Vec<InstanceId> = launched.iter().map(|l| l.instance.clone()).collect();
    p.terminate(&ids)
        .await
        .map_err(|e| format!("terminate: {e}"))?;
    p.terminate(&ids)
        .await
        .map_err(|e| format!("terminate again (must be idempotent): {e}"))?;
    p.terminate(&[InstanceId("ebbtide-no-such-instance-42".into())])
        .await
        .map_err(|e| format!("terminate an unknown id (must be a no-op): {e}"))?;
    settle("terminated instances stop running", || async {
        let listed = p.list().await.map_err(|e| format!("list: {e}"))?;
        Ok(listed
            .iter()
            .find(|i| ids.contains(&i.instance) && i.running)
            .map(|i| format!("{} still running", i.instance.0)))
    })
    .await
}

async fn failure_kinds(h: &dyn Harness) -> Result<(), String> {
    for FailingLaunch {
        provider,
        request,
        kind,
    } in h.failing_launches().await
    {
        match provider.launch(request).await {
            Err(e) if e.kind() == kind => {}
            Err(e) => {
                return Err(format!(
                    "failing launch: expected a {kind} error, got {} ({e})",
                    e.kind()
                ));
            }
            Ok(l) => {
                let ids: Vec<InstanceId> = l.into_iter().map(|l| l.instance).collect();
                let _ = provider.terminate(&ids).await;
                return Err(format!(
                    "failing launch: expected a {kind} error, it succeeded"
                ));
            }
        }
    }
    Ok(())
}

async fn partial(h: &dyn Harness) -> Result<(), String> {
    let Some(PartialLaunch {
        provider,
        request,
        starts,
    }) = h.partial_launch().await
    else {
        return Ok(());
    };
    let asked: Vec<u64> = request.workers.iter().map(|w| w.worker.0).collect();
    let launched = provider
        .launch(request)
        .await
        .map_err(|e| format!("partial launch: {e}"))?;
    let ids: Vec<InstanceId> = launched.iter().map(|l| l.instance.clone()).collect();
    let outcome = async {
        if launched.len() != starts {
            return Err(format!(
                "partial launch: {starts} of {} workers start, it answered {}",
                asked.len(),
                launched.len()
            ));
        }
        if let Some(l) = launched.iter().find(|l| !asked.contains(&l.worker.0)) {
            return Err(format!(
                "partial launch: answered worker {}, which was not asked for",
                l.worker.0
            ));
        }
        if !all_distinct(launched.iter().map(|l| &l.instance)) {
            return Err("partial launch: instance ids are not distinct".into());
        }
        settle("partially launched instances are listed", || async {
            let listed = provider.list().await.map_err(|e| format!("list: {e}"))?;
            Ok(launched
                .iter()
                .find(|l| !listed.iter().any(|i| i.instance == l.instance && i.running))
                .map(|l| format!("{} not listed as running", l.instance.0)))
        })
        .await
    }
    .await;
    let _ = provider.terminate(&ids).await;
    outcome
}

async fn offerings(h: &dyn Harness) -> Result<(), String> {
    let offered = h
        .provider()
        .await
        .offerings()
        .await
        .map_err(|e| format!("offerings: {e}"))?;
    if h.has_offerings() && offered.is_empty() {
        return Err("offerings: a provider with a price list offered nothing".into());
    }
    for (i, o) in offered.iter().enumerate() {
        if o.shape.is_empty() {
            return Err(format!("offerings: {o:?} names no shape"));
        }
        if o.price.0.0 < 0 {
            return Err(format!("offerings: {o:?} has a negative price"));
        }
        if offered[..i]
            .iter()
            .any(|p| p.shape == o.shape && p.zone == o.zone && p.market == o.market)
        {
            return Err(format!("offerings: {o:?} is offered twice"));
        }
    }
    Ok(())
}

async fn foreign_untouched(h: &dyn Harness) -> Result<(), String> {
    let foreign = h.create_foreign().await;
    let outcome = async {
        let p = h.provider().await;
        let listed = p.list().await.map_err(|e| format!("list: {e}"))?;
        if listed.iter().any(|i| i.instance == foreign) {
            return Err(format!("a foreign instance {} was listed", foreign.0));
        }
        p.terminate(std::slice::from_ref(&foreign))
            .await
            .map_err(|e| format!("terminate a foreign id: {e}"))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !h.foreign_alive(&foreign).await {
            return Err(format!("a foreign instance {} was terminated", foreign.0));
        }
        Ok(())
    }
    .await;
    h.remove_foreign(&foreign).await;
    outcome
}

/// Polls `check` until it reports nothing wrong (`Ok(None)`), or fails with
/// its last complaint after [`SETTLE`].
async fn settle<F, Fut>(what: &str, check: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, String>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        match check().await? {
            None => return Ok(()),
            Some(problem) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{what}: {problem}"));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Launch entries for `workers`, each with the token `token-{id}`: what a
/// harness's request builder needs.
pub fn launches(workers: &[u64]) -> Vec<crate::WorkerLaunch> {
    workers
        .iter()
        .map(|w| crate::WorkerLaunch {
            worker: ebbtide_core::WorkerId(*w),
            bootstrap_token: crate::Secret::new(format!("token-{w}")),
        })
        .collect()
}

/// Whether no instance id repeats (wherever the repeats sit: `dedup` alone
/// only removes neighbours).
fn all_distinct<'a>(ids: impl Iterator<Item = &'a InstanceId>) -> bool {
    let mut ids: Vec<&InstanceId> = ids.collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    ids.len() == n
}

#[cfg(test)]
mod distinct_tests {
    use super::*;

    #[test]
    fn a_repeat_that_is_not_a_neighbour_is_found() {
        let ids = ["i-a", "i-b", "i-a"].map(|s| InstanceId(s.into()));
        assert!(!all_distinct(ids.iter()));
        let ids = ["i-a", "i-b", "i-c"].map(|s| InstanceId(s.into()));
        assert!(all_distinct(ids.iter()));
    }
}
