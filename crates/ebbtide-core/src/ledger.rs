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

use crate::ids::{InstanceId, PoolId, TenantId, WorkerId};
use crate::money::CostAccum;
use crate::requirements::DetHashMap;
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

/// What the instance was, for the lines booked for it: only `Copy` facts,
/// so booking never allocates (the instance id and zone are looked up once
/// per line when the lines are taken).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstanceFacts {
    pub worker: WorkerId,
    pub pool: PoolId,
    pub market: Market,
    pub capacity: u32,
}

impl InstanceFacts {
    /// The facts of `worker` as it stands, in a pool of `capacity` slots.
    pub fn of(worker: &Worker, capacity: u32) -> Self {
        InstanceFacts {
            worker: worker.id,
            pool: worker.pool,
            market: worker.market,
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

/// A line as kept between takes: the facts and the sums.
#[derive(Debug, Clone, Copy)]
struct Entry {
    facts: InstanceFacts,
    sums: Booking,
}

/// Lines booked since the adapter last took them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    /// Hashed, not ordered: booking is on the engine's hot path (every
    /// accrual and assignment); order is only needed when lines are taken.
    entries: DetHashMap<LedgerKey, Entry>,
    /// Instance id and zone of workers forgotten since the last take (their
    /// lines still need them).
    retired: DetHashMap<WorkerId, (Option<InstanceId>, Option<String>)>,
}

impl Ledger {
    /// Adds `booking` to the line for (`day`, instance, `tenant`).
    pub fn book(
        &mut self,
        day: u64,
        facts: InstanceFacts,
        tenant: Option<TenantId>,
        booking: Booking,
    ) {
        let key = LedgerKey {
            day,
            worker: facts.worker,
            tenant,
        };
        let sums = &mut self
            .entries
            .entry(key)
            .or_insert(Entry {
                facts,
                sums: Booking::default(),
            })
            .sums;
        sums.cost += booking.cost;
        sums.on_demand_cost += booking.on_demand_cost;
        sums.slot_millis = sums.slot_millis.saturating_add(booking.slot_millis);
        sums.idle_millis = sums.idle_millis.saturating_add(booking.idle_millis);
        sums.jobs_started = sums.jobs_started.saturating_add(booking.jobs_started);
    }

    /// Keeps a forgotten worker's instance id and zone for its lines.
    pub fn retire(&mut self, worker: WorkerId, instance: Option<InstanceId>, zone: Option<String>) {
        self.retired.insert(worker, (instance, zone));
    }

    /// Hands over every line booked so far, in key order; `live(worker)`
    /// gives the instance id and zone of a worker still known.
    pub fn take(
        &mut self,
        live: impl Fn(WorkerId) -> Option<(Option<InstanceId>, Option<String>)>,
    ) -> Vec<LedgerLine> {
        let retired = std::mem::take(&mut self.retired);
        let mut lines: Vec<LedgerLine> = self
            .entries
            .drain()
            .map(|(key, e)| {
                let (instance, zone) = live(key.worker)
                    .or_else(|| retired.get(&key.worker).cloned())
                    .unwrap_or_default();
                LedgerLine {
                    key,
                    instance,
                    pool: e.facts.pool,
                    market: e.facts.market,
                    zone,
                    capacity: e.facts.capacity,
                    cost: e.sums.cost,
                    on_demand_cost: e.sums.on_demand_cost,
                    slot_millis: e.sums.slot_millis,
                    idle_millis: e.sums.idle_millis,
                    jobs_started: e.sums.jobs_started,
                }
            })
            .collect();
        lines.sort_unstable_by_key(|l| l.key);
        lines
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
    fn bookings_of_one_key_add_up_into_one_line_named_at_take() {
        let mut ledger = Ledger::default();
        let facts = InstanceFacts {
            worker: WorkerId(7),
            pool: PoolId(0),
            market: Market::Spot,
            capacity: 2,
        };
        let b = Booking {
            cost: CostAccum(10),
            on_demand_cost: CostAccum(30),
            slot_millis: 100,
            idle_millis: 0,
            jobs_started: 1,
        };
        ledger.book(3, facts, Some(TenantId(1)), b);
        ledger.book(3, facts, Some(TenantId(1)), b);
        ledger.book(3, facts, None, b);
        ledger.book(
            3,
            InstanceFacts {
                worker: WorkerId(8),
                ..facts
            },
            None,
            b,
        );
        ledger.retire(WorkerId(8), Some(InstanceId("i-8".into())), None);
        let live = |w: WorkerId| {
            (w == WorkerId(7)).then(|| (Some(InstanceId("i-7".into())), Some("z1".to_string())))
        };
        let lines = ledger.take(live);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].key.tenant, None, "idle line sorts first");
        assert_eq!(lines[1].cost, CostAccum(20));
        assert_eq!(lines[1].on_demand_cost, CostAccum(60));
        assert_eq!(lines[1].slot_millis, 200);
        assert_eq!(lines[1].jobs_started, 2);
        assert_eq!(lines[1].zone.as_deref(), Some("z1"));
        assert_eq!(
            lines[2].instance,
            Some(InstanceId("i-8".into())),
            "a retired worker keeps its name"
        );
        assert!(ledger.take(live).is_empty(), "taking empties the ledger");
    }
}
