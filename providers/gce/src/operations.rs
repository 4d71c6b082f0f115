//! Waiting for Compute Engine's long-running operations.
//!
//! Every mutating call answers with an operation that is `PENDING`, then
//! `RUNNING`, then `DONE` (with `error` set if it failed). `…/wait` blocks
//! until the operation is done or about two minutes pass, and may return
//! sooner still, so one wait is not enough: the loop waits again until the
//! operation is done or the launch's deadline passes. The loop is ours and
//! not the client library's poller so that every call is counted and the
//! deadline is the provider's.

use std::time::Duration;

use ebbtide_provider::ProviderError;
use google_cloud_compute_v1::model::{Operation, operation};
use tokio::time::Instant;

use crate::errors::OperationError;

/// Where an operation lives, for its wait call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// A regional operation (`regionInstances.bulkInsert`).
    Region(&'a str),
    /// A zonal operation (`instances.delete`).
    Zone(&'a str),
}

/// Whether the operation has finished.
pub fn is_done(op: &Operation) -> bool {
    op.status == Some(operation::Status::Done)
}

/// Its errors, if it finished with any.
pub fn errors_of(op: &Operation) -> Vec<OperationError> {
    op.error
        .as_ref()
        .map(|e| {
            e.errors
                .iter()
                .map(|e| OperationError {
                    code: e.code.clone().unwrap_or_default(),
                    location: e.location.clone(),
                    message: e.message.clone().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for `op` until it is done or `deadline` passes.
pub async fn wait(
    provider: &crate::GceProvider,
    scope: Scope<'_>,
    mut op: Operation,
    deadline: Instant,
) -> Result<Operation, ProviderError> {
    let name = op.name.clone().unwrap_or_default();
    while !is_done(&op) {
        if Instant::now() >= deadline {
            return Err(ProviderError::Transient(format!(
                "operation {name} is not done by the launch deadline"
            )));
        }
        provider.count_call();
        let project = provider.config.project.clone();
        let answer = match scope {
            Scope::Region(region) => {
                provider
                    .clients
                    .region_operations
                    .wait()
                    .set_project(project)
                    .set_region(region)
                    .set_operation(&name)
                    .send()
                    .await
            }
            Scope::Zone(zone) => {
                provider
                    .clients
                    .zone_operations
                    .wait()
                    .set_project(project)
                    .set_zone(zone)
                    .set_operation(&name)
                    .send()
                    .await
            }
        };
        match answer {
            Ok(next) => op = next,
            Err(e) => {
                let e = crate::errors::classify(&e);
                if !e.is_retryable() {
                    return Err(e);
                }
                // The operation goes on without us: wait and ask again.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(op)
}
