//! The cost ledger: what each instance cost, per UTC day and per tenant.
//!
//! [`crate::cost::CostTotals`] answers "how much so far"; a cost report must
//! answer "how much on day D, for which instance, for which tenant", and its
//! lines must add up to the fleet's books exactly. So every accrual the
//! engine books is also booked here, cut at UTC midnights, into one line per
//! (day, worker, tenant) plus one line per (day, worker) for the idle share.
//! Amounts stay in [`CostAccum`] units, so lines lose nothing to rounding;
//! only a report rounds, once.
//!
//! The engine keeps the lines booked since the adapter last took them
//! ([`crate::Engine::take_ledger`]); the adapter adds them to its durable
//! ledger. Memory is bounded by the distinct keys between two takes.

use std::collections::BTreeMap;

use crate::ids::{InstanceId, PoolId, TenantId, WorkerId};
use crate::money::CostAccum;
use crate::worker::{Market, Worker};

/// Milliseconds in a UTC day.
pub const DAY_MILLIS: u64 = 86_400_000;

/// Which slice of the books a ledger line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerKey {
    /// UTC day number (days since the Unix epoch): the charge period.
    pub day: u64,
    /// The worker (one instance).
    pub worker: WorkerId,
    /// The tenant whose jobs used the instance, or `None` for the share
    /// spent on free slots (idle waste, charged to no tenant).
    pub tenant: Option<TenantId>,
}

/// One line of the ledger: one instance's cost for one tenant (or idle) on
/// one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    /// Day, worker and tenant.
    pub key: LedgerKey,
    /// The provider's instance id, when it was known at booking time.
    pub instance: Option<InstanceId>,
    /// The pool the instance belongs to.
    pub pool: PoolId,
    /// Spot or on-demand: a report's pricing category.
    pub market: Market,
    /// Zone, where known.
    pub zone: Option<String>,
    /// Slots per instance, so `slot_millis / capacity` is instance time.
    pub capacity: u32,
    /// What was spent (exact).
    pub cost: CostAccum,
    /// What the same time would have cost at the on-demand list price.
    pub on_demand_cost: CostAccum,
    /// Slot-milliseconds this line covers: a job's slot while it ran, or
    /// the free slots for the idle line.
    pub slot_millis: u64,
    /// Milliseconds the instance had no job at all (idle line only).
    pub idle_millis: u64,
    /// Jobs of this tenant the instance started on this day.
    pub jobs_started: u32,
}

impl LedgerLine {
    /// Adds another booking of the same key.
    pub fn merge(&mut self, other: &LedgerLine) {
        self.cost += other.cost;
        self.on_demand_cost += other.on_demand_cost;
        self.slot_millis = self.slot_millis.saturating_add(other.slot_millis);
        self.idle_millis = self.idle_millis.saturating_add(other.idle_millis);
        self.jobs_started = self.jobs_started.saturating_add(other.jobs_started);
        if other.instance.is_some() {
            self.instance.clone_from(&other.instance);
        }
        if other.zone.is_some() {
            self.zone.clone_from(&other.zone);
        }
    }
}

/// What the instance was, for the lines booked for it.
#[derive(Debug, Clone)]
pub(crate) struct InstanceFacts<'a> {
    pub worker: WorkerId,
    pub instance: Option<&'a InstanceId>,
    pub pool: PoolId,
    pub market: Market,
    pub zone: Option<&'a str>,
    pub capacity: u32,
}

impl<'a> InstanceFacts<'a> {
    /// The facts of `worker` as it stands, in a pool of `capacity` slots.
    pub fn of(worker: &'a Worker, capacity: u32) -> Self {
        InstanceFacts {
            worker: worker.id,
            instance: worker.instance.as_ref(),
            pool: worker.pool,
            market: worker.market,
            zone: worker.zone.as_deref(),
            capacity,
        }
    }
}

/// One booking: an amount for one key.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Booking {
    pub cost: CostAccum,
    pub on_demand_cost: CostAccum,
    pub slot_millis: u64,
    pub idle_millis: u64,
    pub jobs_started: u32,
}

/// Lines booked since the adapter last took them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    lines: BTreeMap<LedgerKey, LedgerLine>,
}

impl Ledger {
    /// Adds `booking` to the line for (`day`, instance, `tenant`).
    pub fn book(
        &mut self,
        day: u64,
        facts: &InstanceFacts<'_>,
        tenant: Option<TenantId>,
        booking: Booking,
    ) {
        let key = LedgerKey {
            day,
            worker: facts.worker,
            tenant,
        };
        let line = self.lines.entry(key).or_insert_with(|| LedgerLine {
            key,
            instance: facts.instance.cloned(),
            pool: facts.pool,
            market: facts.market,
            zone: facts.zone.map(str::to_string),
            capacity: facts.capacity,
            cost: CostAccum::ZERO,
            on_demand_cost: CostAccum::ZERO,
            slot_millis: 0,
            idle_millis: 0,
            jobs_started: 0,
        });
        if line.instance.is_none() {
            line.instance = facts.instance.cloned();
        }
        line.cost += booking.cost;
        line.on_demand_cost += booking.on_demand_cost;
        line.slot_millis = line.slot_millis.saturating_add(booking.slot_millis);
        line.idle_millis = line.idle_millis.saturating_add(booking.idle_millis);
        line.jobs_started = line.jobs_started.saturating_add(booking.jobs_started);
    }

    /// Hands over every line booked so far, in key order.
    pub fn take(&mut self) -> Vec<LedgerLine> {
        std::mem::take(&mut self.lines).into_values().collect()
    }
}

/// Cuts `[from, to)` (milliseconds) at UTC midnights: `(day, start, end)`.
pub(crate) fn day_spans(from: u64, to: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    let mut at = from;
    std::iter::from_fn(move || {
        if at >= to {
            return None;
        }
        let day = at / DAY_MILLIS;
        let end = to.min((day + 1) * DAY_MILLIS);
        let span = (day, at, end);
        at = end;
        Some(span)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_across_two_midnights_is_cut_into_three_days() {
        let from = DAY_MILLIS - 1_000;
        let to = 3 * DAY_MILLIS + 500;
        let spans: Vec<_> = day_spans(from, to).collect();
        assert_eq!(
            spans,
            vec![
                (0, DAY_MILLIS - 1_000, DAY_MILLIS),
                (1, DAY_MILLIS, 2 * DAY_MILLIS),
                (2, 2 * DAY_MILLIS, 3 * DAY_MILLIS),
                (3, 3 * DAY_MILLIS, 3 * DAY_MILLIS + 500),
            ]
        );
    }

    #[test]
    fn an_empty_span_has_no_days() {
        assert_eq!(day_spans(5, 5).count(), 0);
        assert_eq!(day_spans(6, 5).count(), 0);
    }

    #[test]
    fn bookings_of_one_key_add_up_into_one_line() {
        let mut ledger = Ledger::default();
        let instance = InstanceId("i-1".into());
        let facts = InstanceFacts {
            worker: WorkerId(7),
            instance: Some(&instance),
            pool: PoolId(0),
            market: Market::Spot,
            zone: Some("z1"),
            capacity: 2,
        };
        let b = Booking {
            cost: CostAccum(10),
            on_demand_cost: CostAccum(30),
            slot_millis: 100,
            idle_millis: 0,
            jobs_started: 1,
        };
        ledger.book(3, &facts, Some(TenantId(1)), b);
        ledger.book(3, &facts, Some(TenantId(1)), b);
        ledger.book(3, &facts, None, b);
        let lines = ledger.take();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].key.tenant, None, "idle line sorts first");
        assert_eq!(lines[1].cost, CostAccum(20));
        assert_eq!(lines[1].on_demand_cost, CostAccum(60));
        assert_eq!(lines[1].slot_millis, 200);
        assert_eq!(lines[1].jobs_started, 2);
        assert_eq!(lines[1].zone.as_deref(), Some("z1"));
        assert!(ledger.take().is_empty(), "taking empties the ledger");
    }
}
