//! Replacing the configuration of a running engine (SIGHUP in the server).
//!
//! Ids are indexes into the configuration, so a reload may change any
//! setting and append classes, tenants and pools, but not remove or reorder
//! them: live jobs and workers refer to them. A refused reload changes
//! nothing.

use super::pools::{PoolState, fill_order_key};
use super::{Engine, EngineError};
use crate::command::Command;
use crate::config::{ConfigError, EngineConfig};
use crate::ids::PoolId;
use crate::tenant::TenantState;
use crate::time::Timestamp;

/// Why a new configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    /// The new configuration breaks a rule.
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigError>),
    /// An existing entry was removed, renamed or moved.
    #[error(
        "{section}[{index}] was {old:?} and is now {new}: entries may be changed or appended, not removed or reordered"
    )]
    Moved {
        /// `classes`, `tenants` or `pools`.
        section: &'static str,
        /// Position.
        index: usize,
        /// The running name.
        old: String,
        /// What the new file has there.
        new: String,
    },
    /// Re-planning after the change failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn check_prefix<'a>(
    section: &'static str,
    old: impl Iterator<Item = &'a str>,
    new: &[&'a str],
) -> Result<(), ReconfigureError> {
    for (index, name) in old.enumerate() {
        match new.get(index) {
            Some(n) if *n == name => {}
            other => {
                return Err(ReconfigureError::Moved {
                    section,
                    index,
                    old: name.to_string(),
                    new: other.map_or("missing".to_string(), |n| format!("{n:?}")),
                });
            }
        }
    }
    Ok(())
}

impl Engine {
    /// Applies a new configuration without dropping jobs or workers, then
    /// dispatches and re-plans under it.
    pub fn reconfigure(
        &mut self,
        config: EngineConfig,
        now: Timestamp,
    ) -> Result<Vec<Command>, ReconfigureError> {
        config.validate().map_err(ReconfigureError::Invalid)?;
        let new_classes: Vec<&str> = config.classes.iter().map(|c| c.name.as_str()).collect();
        let new_tenants: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
        let new_pools: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        check_prefix(
            "classes",
            self.config.classes.iter().map(|c| c.name.as_str()),
            &new_classes,
        )?;
        check_prefix(
            "tenants",
            self.config.tenants.iter().map(|t| t.name.as_str()),
            &new_tenants,
        )?;
        check_prefix(
            "pools",
            self.config.pools.iter().map(|p| p.name.as_str()),
            &new_pools,
        )?;

        for (i, t) in config.tenants.iter().enumerate() {
            match self.tenants.get_mut(i) {
                Some(state) => state.reconfigure(t.clone(), now),
                None => self.tenants.push(TenantState::new(t.clone(), now)),
            }
        }
        for (i, p) in config.pools.iter().enumerate() {
            match self.pools.get_mut(i) {
                Some(state) => state.config = p.clone(),
                None => self
                    .pools
                    .push(PoolState::new(p.clone(), config.default_job_duration)),
            }
        }
        self.queue.ensure_classes(config.classes.len());
        self.costs
            .by_tenant
            .resize(config.tenants.len(), Default::default());
        self.costs
            .by_pool
            .resize(config.pools.len(), Default::default());
        self.sigs.rebuild_chains(&config.pools);
        let mut order: Vec<PoolId> = (0..config.pools.len()).map(|i| PoolId(i as u32)).collect();
        order.sort_by_key(|p| fill_order_key(&config.pools[p.0 as usize], p.0));
        self.pool_order = order;
        self.config = config;

        let mut out = Vec::new();
        self.dispatch_all(now, &mut out)?;
        self.rescale(now, &mut out)?;
        Ok(out)
    }
}
