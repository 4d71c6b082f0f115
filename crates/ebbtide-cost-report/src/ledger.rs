//! The engine's ledger lines, named for the store and the report.
//!
//! The engine keys its lines by ids; a report (and the durable ledger,
//! which must outlive a reconfiguration that renames or reorders pools)
//! needs names. This is the one place the two meet.

use ebbtide_core::{EngineConfig, LedgerLine};
use ebbtide_store::CostLine;

/// Names `lines` with `config`'s pool, provider, shape and tenant names;
/// `region_of(provider)` gives a provider's region, where it has one.
/// Lines of a pool or tenant `config` does not know are kept, under
/// `pool-N` / `tenant-N`, so no money is ever dropped.
pub fn name_lines(
    lines: Vec<LedgerLine>,
    config: &EngineConfig,
    region_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<CostLine> {
    lines
        .into_iter()
        .map(|l| {
            let pool = config.pools.get(l.pool.0 as usize);
            let provider = pool.map_or_else(|| "unknown".to_string(), |p| p.provider.clone());
            CostLine {
                day: l.key.day,
                worker: l.key.worker,
                tenant: l.key.tenant.map(|t| {
                    config
                        .tenants
                        .get(t.0 as usize)
                        .map_or_else(|| format!("tenant-{}", t.0), |c| c.name.clone())
                }),
                instance: l.instance.map(|i| i.0),
                pool: pool.map_or_else(|| format!("pool-{}", l.pool.0), |p| p.name.clone()),
                region: region_of(&provider),
                provider,
                shape: pool.map_or_else(String::new, |p| p.shape.name.clone()),
                market: l.market.name().to_string(),
                zone: l.zone,
                capacity: l.capacity,
                cost: l.cost.0,
                on_demand_cost: l.on_demand_cost.0,
                slot_millis: l.slot_millis,
                idle_millis: l.idle_millis,
                jobs_started: l.jobs_started,
            }
        })
        .collect()
}
