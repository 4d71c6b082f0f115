//! A provider that launches nothing and hands the credentials of the
//! workers it "launched" to the test or benchmark holding it, which then
//! plays their agents over the real worker API. Lets a test drive the
//! scheduler in-process with agents it scripts (a hostile one included),
//! and a benchmark measure the scheduler without process start-up.

use std::sync::Mutex;

use ebbtide_core::{InstanceId, WorkerId};

use crate::{InstanceInfo, LaunchRequest, LaunchedInstance, Provider, ProviderError};

/// Launches succeed at once; the tokens wait in [`Capture::take`].
#[derive(Debug, Default)]
pub struct Capture {
    tokens: Mutex<Vec<(WorkerId, String)>>,
}

impl Capture {
    /// The (worker, bootstrap token) pairs launched since the last call.
    pub fn take(&self) -> Vec<(WorkerId, String)> {
        self.tokens
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// How many launched workers wait to be taken.
    pub fn waiting(&self) -> usize {
        self.tokens.lock().map_or(0, |t| t.len())
    }
}

#[async_trait::async_trait]
impl Provider for Capture {
    fn name(&self) -> &str {
        "capture"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let mut tokens = self
            .tokens
            .lock()
            .map_err(|_| ProviderError::Permanent("capture provider poisoned".into()))?;
        Ok(request
            .workers
            .iter()
            .map(|w| {
                tokens.push((w.worker, w.bootstrap_token.expose().to_string()));
                LaunchedInstance {
                    worker: w.worker,
                    instance: InstanceId(format!("capture-{}", w.worker.0)),
                    zone: None,
                }
            })
            .collect())
    }

    async fn terminate(&self, _instances: &[InstanceId]) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        Ok(Vec::new())
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
