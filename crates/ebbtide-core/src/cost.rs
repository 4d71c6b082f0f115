//! The cost model: prices, accrual and attribution.
//!
//! Each worker accrues `rate × elapsed` at every event that changes what it
//! is doing. The accrued amount is split exactly between the jobs holding
//! its slots (and so their tenants) and the pool's idle waste, so tenants'
//! costs plus idle cost always equal the fleet's cost to the unit.

use crate::ids::{InstanceId, PoolId, WorkerId};
use crate::money::{CostAccum, Micros, PricePerHour};
use crate::requirements::DetHashMap;
use crate::time::Timestamp;
use crate::worker::Market;

/// Known prices by shape × market × zone.
///
/// Looked up on every accrual, so lookups borrow the caller's strings and
/// never allocate: a shape's few (market, zone) entries are scanned.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    by_shape: DetHashMap<String, Vec<(Market, Option<String>, PricePerHour)>>,
}

impl PriceTable {
    /// Records a price; `zone: None` is the price for zones without one.
    pub fn set(&mut self, shape: &str, market: Market, zone: Option<&str>, price: PricePerHour) {
        let entries = self.by_shape.entry(shape.to_string()).or_default();
        match entries
            .iter_mut()
            .find(|(m, z, _)| *m == market && z.as_deref() == zone)
        {
            Some(entry) => entry.2 = price,
            None => entries.push((market, zone.map(str::to_string), price)),
        }
    }

    /// The zones with a price for `shape` on `market`, cheapest first (ties
    /// by name, so the order is deterministic).
    pub fn zones(&self, shape: &str, market: Market) -> Vec<(&str, PricePerHour)> {
        let mut zones: Vec<(&str, PricePerHour)> = self
            .by_shape
            .get(shape)
            .into_iter()
            .flatten()
            .filter(|(m, _, _)| *m == market)
            .filter_map(|(_, z, p)| Some((z.as_deref()?, *p)))
            .collect();
        zones.sort_by_key(|(z, p)| (*p, *z));
        zones
    }

    /// The price for an instance: its zone's, else the shape's zone-less
    /// price, else `fallback` (the configured on-demand list price, which
    /// over- rather than under-states an unknown spot price).
    pub fn lookup(
        &self,
        shape: &str,
        market: Market,
        zone: Option<&str>,
        fallback: PricePerHour,
    ) -> PricePerHour {
        let Some(entries) = self.by_shape.get(shape) else {
            return fallback;
        };
        let find = |z: Option<&str>| {
            entries
                .iter()
                .find(|(m, ez, _)| *m == market && ez.as_deref() == z)
                .map(|e| e.2)
        };
        zone.and_then(|z| find(Some(z)))
            .or_else(|| find(None))
            .unwrap_or(fallback)
    }
}

/// One instance from launch request to termination, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLifetime {
    /// The engine's worker.
    pub worker: WorkerId,
    /// The provider's instance, if it was ever created.
    pub instance: Option<InstanceId>,
    /// The pool.
    pub pool: PoolId,
    /// Market it ran on.
    pub market: Market,
    /// Zone, where known.
    pub zone: Option<String>,
    /// When the provider created it.
    pub launched_at: Option<Timestamp>,
    /// When it was confirmed gone.
    pub ended_at: Timestamp,
    /// What it cost.
    pub cost: Micros,
    /// What it would have cost on-demand.
    pub on_demand_cost: Micros,
    /// The part of `cost` spent with free slots (waste).
    pub idle_cost: Micros,
    /// Jobs it ran.
    pub jobs_served: u32,
}

/// Running totals for reports and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostTotals {
    /// Everything spent.
    pub fleet: CostAccum,
    /// What the same instance-time would have cost on-demand.
    pub on_demand_equivalent: CostAccum,
    /// Spent on free slots.
    pub idle: CostAccum,
    /// Attributed to each tenant, by tenant index.
    pub by_tenant: Vec<CostAccum>,
    /// Spent per pool, by pool index.
    pub by_pool: Vec<CostAccum>,
    /// Spent on spot instances (the rest of `fleet` was on-demand).
    pub spot: CostAccum,
}

impl CostTotals {
    /// Savings versus running the same instance-time all on-demand.
    pub fn savings(&self) -> Micros {
        let od = self.on_demand_equivalent.to_micros();
        let fleet = self.fleet.to_micros();
        Micros(od.0 - fleet.0)
    }
}
