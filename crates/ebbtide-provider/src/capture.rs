//! The fake provider of the test kit: it starts nothing, keeps its
//! "instances" in memory, and hands the credentials of the workers it
//! launched to the test or benchmark holding it, which then plays their
//! agents over the real worker API. Lets a test drive the scheduler
//! in-process with agents it scripts (a hostile one included), and a
//! benchmark measure the scheduler without process start-up.
//!
//! Failures are injected as a provider would meet them: a launch error of
//! any kind ([`Capture::fail_next_launch`]) and a launch that starts only
//! some of its workers ([`Capture::launch_at_most`]). It passes the
//! conformance suite like every real provider (`tests/capture_conformance.rs`), so a
//! test built on it relies on the same promises.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use ebbtide_core::{InstanceId, WorkerId};

use crate::{InstanceInfo, LaunchRequest, LaunchedInstance, Offering, Provider, ProviderError};

/// Launches succeed at once unless told otherwise; the tokens wait in
/// [`Capture::take`].
#[derive(Debug, Default)]
pub struct Capture {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tokens: Vec<(WorkerId, String)>,
    instances: BTreeMap<InstanceId, InstanceInfo>,
    failures: VecDeque<ProviderError>,
    at_most: Option<usize>,
    offerings: Vec<Offering>,
}

impl Capture {
    /// The (worker, bootstrap token) pairs launched since the last call.
    pub fn take(&self) -> Vec<(WorkerId, String)> {
        self.state
            .lock()
            .map(|mut s| std::mem::take(&mut s.tokens))
            .unwrap_or_default()
    }

    /// How many launched workers wait to be taken.
    pub fn waiting(&self) -> usize {
        self.state.lock().map_or(0, |s| s.tokens.len())
    }

    /// The next launch fails with `error` (queued: several calls fail in
    /// order); nothing of it starts.
    pub fn fail_next_launch(&self, error: ProviderError) {
        if let Ok(mut s) = self.state.lock() {
            s.failures.push_back(error);
        }
    }

    /// Every launch from now on starts at most `n` of its workers and
    /// answers with those (`None`: all of them again).
    pub fn launch_at_most(&self, n: Option<usize>) {
        if let Ok(mut s) = self.state.lock() {
            s.at_most = n;
        }
    }

    /// What `offerings` answers.
    pub fn set_offerings(&self, offerings: Vec<Offering>) {
        if let Ok(mut s) = self.state.lock() {
            s.offerings = offerings;
        }
    }

    /// Its instance for `worker`, as `list` reports it.
    fn instance_id(worker: WorkerId) -> InstanceId {
        InstanceId(format!("capture-{}", worker.0))
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, ProviderError> {
        self.state
            .lock()
            .map_err(|_| ProviderError::Permanent("capture provider poisoned".into()))
    }
}

#[async_trait::async_trait]
impl Provider for Capture {
    fn name(&self) -> &str {
        "capture"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let mut s = self.state()?;
        if let Some(error) = s.failures.pop_front() {
            return Err(error);
        }
        let take = s.at_most.unwrap_or(usize::MAX);
        let mut launched = Vec::new();
        for w in request.workers.iter().take(take) {
            s.tokens
                .push((w.worker, w.bootstrap_token.expose().to_string()));
            let instance = Capture::instance_id(w.worker);
            s.instances.insert(
                instance.clone(),
                InstanceInfo {
                    instance: instance.clone(),
                    worker: w.worker,
                    pool: request.pool.clone(),
                    market: request.market,
                    zone: None,
                    running: true,
                },
            );
            launched.push(LaunchedInstance {
                worker: w.worker,
                instance,
                zone: None,
            });
        }
        Ok(launched)
    }

    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError> {
        let mut s = self.state()?;
        for id in instances {
            if let Some(info) = s.instances.get_mut(id) {
                info.running = false;
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        Ok(self.state()?.instances.values().cloned().collect())
    }

    async fn offerings(&self) -> Result<Vec<Offering>, ProviderError> {
        Ok(self.state()?.offerings.clone())
    }
}

/// The configuration side of [`Capture`]: pools name it as `capture`; it
/// reads no table.
pub struct CaptureSchema;

impl ebbtide_config::ProviderSchema for CaptureSchema {
    fn name(&self) -> &'static str {
        "capture"
    }

    fn check(
        &self,
        _: &ebbtide_config::ProviderSection<'_>,
        _: &mut Vec<ebbtide_config::Issue>,
    ) -> Option<ebbtide_config::ProviderSettings> {
        Some(ebbtide_config::ProviderSettings::new(()))
    }
}
