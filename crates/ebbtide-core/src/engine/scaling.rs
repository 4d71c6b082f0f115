//! The tick's scaling pass: route demand to pools, plan each pool, damp the
//! plan, pick markets, launch and retire.

use std::time::Duration;

use super::pools::PoolStatus;
use super::{Engine, EngineError};
use crate::command::Command;
use crate::config::{Billing, EngineConfig, HeadroomPolicy, PoolKind, ScalingMode};
use crate::headroom::Exposure;
use crate::ids::{PoolId, WorkerId};
use crate::money::PricePerHour;
use crate::planner::{CHECKPOINTS, Checkpoints, Demand, SlotPlan, Supply, plan_slots};
use crate::reason::{MarketReason, ScaleDecision, ScaleReason};
use crate::requirements::SignatureId;
use crate::time::Timestamp;
use crate::worker::{DrainReason, Market, Worker, WorkerState};

/// What a replacement needs on top of its boot (measured from the launch
/// request to registration) before it can take a job: the wait for the
/// next plan, half a 5 s tick on average, and the assignment.
const HEADROOM_REACTION: Duration = Duration::from_secs(3);

/// Demand routed to one pool, per signature (so spill-over can follow each
/// signature's own chain).
type Routed = Vec<(SignatureId, Demand)>;

/// Where spot can be bought for a pool now.
enum SpotOffer {
    /// These zones, in order (empty: wherever the provider chooses).
    Open(Vec<String>),
    /// Nowhere until `until`: every offering is locked.
    Locked { until: Timestamp },
}

/// What one pool looks like right now.
struct Snapshot {
    supply: Supply,
    status: PoolStatus,
    busy_instances: u32,
    fully_idle: u32,
}

impl Engine {
    /// Plans every pool and carries the plan out.
    pub(super) fn plan_and_scale(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let cp = Checkpoints::new(now);
        let mut routed = self.route_demand(&cp);
        let mut fleet_rate = self.fleet_rate();
        for pid in self.pool_order.clone() {
            let demand = std::mem::take(&mut routed[pid.0 as usize]);
            let unmet = self.scale_pool(pid, &cp, &demand, &mut fleet_rate, out)?;
            if unmet > 0 {
                self.spill(pid, demand, unmet, &mut routed);
            }
        }
        Ok(())
    }

    /// Demand of every queued job its tenant's quota would let run, routed
    /// to the first pool of its chain. Classes are visited most urgent
    /// first so a tenant's headroom goes to its most urgent jobs.
    fn route_demand(&self, cp: &Checkpoints) -> Vec<Routed> {
        let mut routed: Vec<Routed> = vec![Vec::new(); self.pools.len()];
        let mut counted = vec![0u32; self.tenants.len()];
        let mut cells: Vec<_> = self.queue.nonempty_cells().collect();
        cells.sort_by_key(|c| (self.queue.cell(*c).class, *c));
        for id in cells {
            let cell = self.queue.cell(id);
            let sig = self.sigs.get(cell.sig);
            let Some(first) = sig.chain.first() else {
                continue;
            };
            let t = cell.tenant.0 as usize;
            let req = &sig.requirements;
            let room = self.tenants[t]
                .headroom_jobs(req.cpu_millis, req.memory_mib)
                .saturating_sub(counted[t]);
            let take = u32::try_from(cell.jobs.len()).unwrap_or(u32::MAX).min(room);
            if take == 0 {
                continue;
            }
            counted[t] += take;
            let target = self.class_target(cell.class);
            let mut d = Demand::default();
            for (slot, at) in d.due.iter_mut().zip(cp.at).take(CHECKPOINTS - 1) {
                *slot = u32::try_from(cell.due_by(at, target))
                    .unwrap_or(u32::MAX)
                    .min(take);
            }
            d.due[CHECKPOINTS - 1] = take;
            add_routed(&mut routed[first.0 as usize], cell.sig, &d);
        }
        routed
    }

    /// Passes what a pool cannot serve to the next pool of each signature's
    /// chain, latest deadlines first.
    fn spill(&self, from: PoolId, demand: Routed, mut unmet: u32, routed: &mut [Routed]) {
        for (sig, d) in demand.iter().rev() {
            if unmet == 0 {
                break;
            }
            let chain = &self.sigs.get(*sig).chain;
            let Some(next) = chain.iter().skip_while(|p| **p != from).nth(1) else {
                continue;
            };
            let take = unmet.min(d.total());
            unmet -= take;
            add_routed(&mut routed[next.0 as usize], *sig, &d.latest(take));
        }
    }

    /// Plans one pool; returns the job slots it wanted but cannot provide.
    fn scale_pool(
        &mut self,
        pid: PoolId,
        cp: &Checkpoints,
        demand: &Routed,
        fleet_rate: &mut i64,
        out: &mut Vec<Command>,
    ) -> Result<u32, EngineError> {
        let now = cp.now;
        let mut total = Demand::default();
        for (_, d) in demand {
            total.add(d);
        }
        let snap = self.snapshot(pid, now);
        let pool = &self.pools[pid.0 as usize];
        let cfg = &pool.config;
        let cap = pool.capacity();
        let plan = plan_slots(cp, &total, &snap.supply, pool.boot_estimate);
        let active =
            snap.status.requested + snap.status.booting + snap.status.idle + snap.status.busy;
        let (wanted, reason) = self.wanted_instances(pid, &plan, &snap, active, total.total(), now);
        let mut desired = wanted.min(cfg.max);
        let mut reason = if wanted > cfg.max {
            ScaleReason::AtMax { wanted }
        } else {
            reason
        };
        let price = self.launch_price(pid);
        if let (Some(budget), PoolKind::Dynamic { .. }) = (self.config.max_cost_per_hour, cfg.kind)
            && desired > active
            && price.0.0 > 0
        {
            let affordable = (budget.0.0 - *fleet_rate).max(0) / price.0.0;
            let allowed = active + u32::try_from(affordable).unwrap_or(u32::MAX);
            if desired > allowed {
                reason = ScaleReason::Budget { wanted: desired };
                desired = allowed.max(EngineConfig::pool_floor(cfg).min(desired));
            }
        }
        let desired = self.stabilize(pid, desired, plan.at_risk, reason, active, now, out);
        let launch = self.reconcile(pid, desired, &snap.status, plan.at_risk > 0, now, out)?;
        *fleet_rate += i64::from(launch) * price.0.0;
        let granted = if matches!(
            self.pools[pid.0 as usize].config.kind,
            PoolKind::Static { .. }
        ) {
            0
        } else {
            launch
        };
        Ok(plan.short.saturating_sub(granted * cap))
    }

    /// Launches or retires toward `desired`; returns how many were launched.
    fn reconcile(
        &mut self,
        pid: PoolId,
        desired: u32,
        status: &PoolStatus,
        urgent: bool,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<u32, EngineError> {
        let active = status.requested + status.booting + status.idle + status.busy;
        let pool = &self.pools[pid.0 as usize];
        let room = pool.config.max.saturating_sub(status.physical());
        let launch = if now < pool.launch_blocked_until {
            0
        } else {
            desired.saturating_sub(active).min(room)
        };
        if launch > 0 {
            self.launch(pid, launch, urgent, now, out);
        }
        if desired < active {
            self.retire(pid, active - desired, now, out)?;
        }
        Ok(launch)
    }

    /// External scaling: an outside policy (the simulator's baselines, or an
    /// operator) sets the desired size; the engine only carries it out.
    pub(super) fn on_set_desired(
        &mut self,
        pid: PoolId,
        desired: u32,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        if self.config.scaling_mode != ScalingMode::External {
            return Err(EngineError::ExternalScalingDisabled);
        }
        let pool = self
            .pools
            .get_mut(pid.0 as usize)
            .ok_or(EngineError::UnknownPool(pid))?;
        let desired = desired.min(pool.config.max);
        let from = pool.scaler.desired;
        pool.scaler.desired = desired;
        let status = self.snapshot(pid, now).status;
        if from != desired {
            let active = status.requested + status.booting + status.idle + status.busy;
            out.push(Command::Scale(ScaleDecision {
                pool: pid,
                at: now,
                from,
                to: desired,
                active,
                reason: ScaleReason::External,
            }));
        }
        self.reconcile(pid, desired, &status, false, now, out)
            .map(|_| ())
    }

    /// In external mode a tick only keeps each pool at the size it was told.
    pub(super) fn reconcile_external(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        for pid in self.pool_order.clone() {
            let status = self.snapshot(pid, now).status;
            let desired = self.pools[pid.0 as usize].scaler.desired;
            // An outside policy's size is wanted now: with spot locked it
            // is bought on-demand, as the baselines' own scalers would.
            self.reconcile(pid, desired, &status, true, now, out)?;
        }
        Ok(())
    }

    /// Instances the pool should have, and the dominant reason.
    fn wanted_instances(
        &self,
        pid: PoolId,
        plan: &SlotPlan,
        snap: &Snapshot,
        active: u32,
        waiting: u32,
        now: Timestamp,
    ) -> (u32, ScaleReason) {
        let pool = &self.pools[pid.0 as usize];
        let cap = pool.capacity();
        match pool.config.kind {
            PoolKind::Static { warm } => (warm, ScaleReason::WarmSize { warm }),
            PoolKind::Dynamic { min, idle_count } => {
                let new = plan.short.div_ceil(cap);
                let removable = (plan.surplus_idle / cap).min(snap.fully_idle);
                let for_demand = active + new - removable;
                let headroom = self.headroom_slots(pid, now);
                let take_back = self.spill_to_take_back(pid, now);
                let idle_slots = headroom.max(take_back);
                let floor = min.max(snap.busy_instances + idle_count + idle_slots.div_ceil(cap));
                let (prewarm, expected) = match pool.config.prewarm {
                    Some(p) => {
                        let expected = pool
                            .forecast
                            .expected_concurrent_milli(now, pool.mean_job_duration);
                        let slots = (expected * u64::from(p.factor_percent) / 100).div_ceil(1000);
                        let inst =
                            u32::try_from(slots.div_ceil(u64::from(cap))).unwrap_or(u32::MAX);
                        (inst.min(p.max_instances), expected)
                    }
                    None => (0, 0),
                };
                let wanted = for_demand.max(floor).max(prewarm);
                let reason = if plan.at_risk > 0 && new > 0 {
                    ScaleReason::SlaEmergency {
                        at_risk: plan.at_risk,
                    }
                } else if wanted == for_demand && new > 0 {
                    ScaleReason::QueueDemand {
                        waiting,
                        slots_short: plan.short,
                        boot_estimate: pool.boot_estimate,
                    }
                } else if wanted == prewarm && prewarm > floor {
                    ScaleReason::Prewarm {
                        expected_concurrent_milli: expected,
                    }
                } else if wanted == floor && floor > for_demand && take_back > headroom {
                    ScaleReason::TakeBack {
                        idle_slots: take_back,
                    }
                } else if wanted == floor && floor > for_demand && headroom > 0 {
                    ScaleReason::Headroom {
                        idle_slots: headroom,
                        coverage_milli: match pool.config.headroom {
                            HeadroomPolicy::Auto { coverage_milli } => coverage_milli,
                            HeadroomPolicy::Off => 0,
                        },
                    }
                } else if wanted == floor && floor > for_demand {
                    ScaleReason::Floor { floor }
                } else {
                    ScaleReason::DemandFell {
                        surplus_slots: plan.surplus_idle,
                    }
                };
                (wanted, reason)
            }
        }
    }

    /// Damps the plan: scale-ups respect a cooldown unless jobs are at risk,
    /// scale-downs follow the highest recommendation of the stabilization
    /// window and wait out the scale-down cooldown after any scale-up.
    #[allow(clippy::too_many_arguments)]
    fn stabilize(
        &mut self,
        pid: PoolId,
        wanted: u32,
        at_risk: u32,
        reason: ScaleReason,
        active: u32,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> u32 {
        let pool = &mut self.pools[pid.0 as usize];
        let policy = pool.config.scaling;
        let s = &mut pool.scaler;
        s.recent.push_back((now, wanted));
        while s.recent.len() > 1
            && s.recent
                .front()
                .is_some_and(|(t, _)| now.saturating_since(*t) > policy.down_stabilization)
        {
            s.recent.pop_front();
        }
        let since =
            |t: Option<Timestamp>, d: Duration| t.is_none_or(|t| now.saturating_since(t) >= d);
        let from = s.desired;
        let (to, reason) = if !s.decided_once || wanted > from {
            let cooled = !s.decided_once || since(s.last_up, policy.scale_up_cooldown);
            if cooled {
                (wanted, reason)
            } else if at_risk > 0 {
                (wanted, ScaleReason::SlaEmergency { at_risk })
            } else {
                (from, reason)
            }
        } else if wanted < from {
            let stabilized = s.recent.iter().map(|(_, w)| *w).max().unwrap_or(wanted);
            if stabilized < from && since(s.last_up, policy.scale_down_cooldown) {
                (stabilized, reason)
            } else {
                (from, reason)
            }
        } else {
            (from, reason)
        };
        s.decided_once = true;
        if to != from {
            if to > from {
                s.last_up = Some(now);
            }
            s.desired = to;
            out.push(Command::Scale(ScaleDecision {
                pool: pid,
                at: now,
                from,
                to,
                active,
                reason,
            }));
        }
        to
    }

    /// Asks for `count` instances, choosing a market for each: on-demand up
    /// to the base, then the policy's spot share on spot, offered the open
    /// spot zones cheapest first. With every spot offering locked after
    /// capacity errors, an urgent launch (jobs would miss their targets
    /// waiting) buys on-demand and says why; one that can wait is held back
    /// until an offering opens (`Command::SpotAwaited`), and the planner
    /// launches it as soon as it turns urgent.
    fn launch(
        &mut self,
        pid: PoolId,
        count: u32,
        urgent: bool,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let offer = self.spot_offer(pid, now);
        let pool = &self.pools[pid.0 as usize];
        let policy = pool.config.market;
        let (mut on_demand, mut spot) = (0u32, 0u32);
        for w in pool
            .workers
            .iter()
            .filter_map(|w| self.workers.get(w))
            .filter(|w| w.state.is_active())
        {
            match w.market {
                Market::OnDemand => on_demand += 1,
                Market::Spot => spot += 1,
            }
        }
        let (mut by_policy, mut for_sla, mut on_spot, mut awaited) = (0u32, 0u32, 0u32, 0u32);
        for _ in 0..count {
            let above_base = (on_demand + spot + 1).saturating_sub(policy.on_demand_base);
            let want_spot = (above_base * u32::from(policy.spot_percent)).div_ceil(100);
            if on_demand < policy.on_demand_base || spot >= want_spot {
                by_policy += 1;
                on_demand += 1;
                continue;
            }
            match offer {
                SpotOffer::Open(_) => {
                    on_spot += 1;
                    spot += 1;
                }
                SpotOffer::Locked { .. } if urgent => {
                    for_sla += 1;
                    on_demand += 1;
                }
                SpotOffer::Locked { .. } => awaited += 1,
            }
        }
        let mut batches = vec![(
            Market::OnDemand,
            MarketReason::Policy,
            Vec::new(),
            by_policy,
        )];
        match offer {
            SpotOffer::Open(zones) => {
                batches.push((Market::Spot, MarketReason::Policy, zones, on_spot));
            }
            SpotOffer::Locked { until } => {
                let why = MarketReason::SpotLocked { until };
                batches.push((Market::OnDemand, why, Vec::new(), for_sla));
                if awaited > 0 {
                    out.push(Command::SpotAwaited {
                        pool: pid,
                        count: awaited,
                        until,
                    });
                }
            }
        }
        // Ids are consecutive within each batch, so a provider that launches
        // a batch in one call can tag the first id and derive each
        // instance's worker from its launch index.
        for (market, why, zones, n) in batches {
            if n == 0 {
                continue;
            }
            let mut workers = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let id = WorkerId(self.next_worker);
                self.next_worker += 1;
                let mut worker = Worker::requested(id, pid, market, now);
                worker.zones_asked = zones.clone();
                self.workers.insert(id, worker);
                self.pools[pid.0 as usize].workers.insert(id);
                workers.push(id);
                self.stats.launched += 1;
            }
            out.push(Command::Launch {
                pool: pid,
                market,
                workers,
                zones,
                why,
            });
        }
    }

    /// Where spot can be bought for a pool now: the zones with a spot price
    /// for its shape that no capacity error has locked, cheapest first
    /// (empty: the provider publishes no zonal prices and picks itself), or
    /// locked until the first lock ends.
    fn spot_offer(&self, pid: PoolId, now: Timestamp) -> SpotOffer {
        let pool = &self.pools[pid.0 as usize];
        let zones = self.prices.zones(&pool.config.shape.name, Market::Spot);
        if zones.is_empty() {
            return if now >= pool.spot_blocked_until {
                SpotOffer::Open(Vec::new())
            } else {
                SpotOffer::Locked {
                    until: pool.spot_blocked_until,
                }
            };
        }
        let lock = |z: &str| pool.zone_locked_until.get(z).copied().filter(|t| now < *t);
        let open: Vec<String> = zones
            .iter()
            .filter(|(z, _)| lock(z).is_none())
            .map(|(z, _)| (*z).to_string())
            .collect();
        match zones.iter().filter_map(|(z, _)| lock(z)).min() {
            Some(until) if open.is_empty() => SpotOffer::Locked { until },
            _ => SpotOffer::Open(open),
        }
    }

    /// Drains up to `count` idle workers, longest idle first. Busy workers
    /// are never chosen. Idle workers beyond what recent arrivals will use
    /// within one boot time go at once (keeping them costs more than booting
    /// a fresh one when needed) — unless a pool later in a chain this pool
    /// heads still has workers: then the preferred capacity waits for its
    /// idle timeout, new jobs land on it, and a burst ebbs from the end of
    /// the chain (rented workers retire before owned ones). The rest only
    /// after the pool's idle timeout. Where billing is by period, only near
    /// the end of a paid period; with a minimum charge, not before it is
    /// used up. In external mode the outside policy's own rule holds: an
    /// idle worker goes only after the idle timeout it set (GitLab's
    /// `idle_time`), never early because arrivals fell.
    fn retire(
        &mut self,
        pid: PoolId,
        count: u32,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let pool = &self.pools[pid.0 as usize];
        let cfg = &pool.config;
        // On-demand workers above the on-demand base go first (they cost
        // several times a spot worker), then the longest idle.
        let on_demand = pool
            .workers
            .iter()
            .filter_map(|w| self.workers.get(w))
            .filter(|w| w.state.is_active() && w.market == Market::OnDemand)
            .count() as u32;
        let expensive = on_demand.saturating_sub(cfg.market.on_demand_base) as usize;
        let mut idle: Vec<(Timestamp, WorkerId, bool, Market)> = pool
            .workers
            .iter()
            .filter_map(|w| self.workers.get(w))
            .filter(|w| w.state == WorkerState::Idle && w.drain.is_none())
            .map(|w| {
                (
                    w.idle_since,
                    w.id,
                    bill_allows_retiring(cfg.billing, w.launched_at, now),
                    w.market,
                )
            })
            .collect();
        idle.sort();
        let (mut first, rest): (Vec<_>, Vec<_>) =
            idle.into_iter().partition(|(.., m)| *m == Market::OnDemand);
        let mut tail = first.split_off(expensive.min(first.len()));
        tail.extend(rest);
        tail.sort();
        first.extend(tail);
        let idle: Vec<(Timestamp, WorkerId, bool)> =
            first.into_iter().map(|(s, w, b, _)| (s, w, b)).collect();
        let keep = self.idle_worth_keeping(pid, now) as usize;
        let surplus =
            if self.config.scaling_mode == ScalingMode::External || self.later_pool_in_use(pid) {
                0
            } else {
                idle.len().saturating_sub(keep)
            };
        let chosen: Vec<WorkerId> = idle
            .iter()
            .enumerate()
            .filter(|(i, (since, _, billing_ok))| {
                *billing_ok && (*i < surplus || now.saturating_since(*since) >= cfg.idle_timeout)
            })
            .map(|(_, (_, w, _))| *w)
            .take(count as usize)
            .collect();
        for wid in chosen {
            self.start_drain(wid, DrainReason::ScaleIn, out)?;
        }
        Ok(())
    }

    /// Idle job slots kept for jobs that cannot wait for a boot: with
    /// `HeadroomPolicy::Auto`, only while some class's target is shorter
    /// than the pool's lead time (otherwise a launch at arrival is in time,
    /// and idle slots would only cost).
    fn headroom_slots(&self, pid: PoolId, now: Timestamp) -> u32 {
        let pool = &self.pools[pid.0 as usize];
        if pool.config.headroom == HeadroomPolicy::Off {
            return 0;
        }
        match self.headroom_exposure(pid) {
            Some(_) => pool.headroom.slots(now),
            None => 0,
        }
    }

    /// How exposed the pool's tightest target is to arrivals that find no
    /// idle worker: a replacement is up one boot estimate after it is
    /// launched, a job must start within `target − reaction`, and of the
    /// jobs left waiting for a boot the share whose boot (from the pool's
    /// last boots, or its estimate before any) is longer than that miss
    /// it. `None` when every class's target leaves time for a launch at
    /// arrival.
    pub(super) fn headroom_exposure(&self, pid: PoolId) -> Option<Exposure> {
        let pool = &self.pools[pid.0 as usize];
        let lead = crate::planner::lead_time(pool.boot_estimate);
        let tightest = self
            .config
            .classes
            .iter()
            .map(|c| c.sla_target)
            .filter(|t| *t < lead)
            .min()?;
        let in_time = tightest.saturating_sub(HEADROOM_REACTION);
        let late_milli = if pool.recent_boots.is_empty() {
            if pool.boot_estimate > in_time {
                1000
            } else {
                0
            }
        } else {
            let late = pool.recent_boots.iter().filter(|b| **b > in_time).count();
            u32::try_from(late * 1000 / pool.recent_boots.len()).unwrap_or(1000)
        };
        Some(Exposure {
            boot: pool.boot_estimate,
            in_time,
            late_milli,
        })
    }

    /// Whether a pool after `pid` in some signature's chain has workers
    /// (requested, booting, idle or busy): demand spilled past `pid`.
    fn later_pool_in_use(&self, pid: PoolId) -> bool {
        (0..self.sigs.len()).any(|i| {
            let chain = &self
                .sigs
                .get(crate::requirements::SignatureId(i as u32))
                .chain;
            chain.iter().skip_while(|p| **p != pid).skip(1).any(|q| {
                self.pools[q.0 as usize]
                    .workers
                    .iter()
                    .filter_map(|w| self.workers.get(w))
                    .any(|w| w.state.is_active())
            })
        })
    }

    /// Job slots busy, in pools later in a chain `pid` comes first in, with
    /// jobs `pid` could run at a lower price per slot: spill-over a burst
    /// left behind. As many idle slots as the jobs expected within `pid`'s
    /// idle timeout (at most that many) are kept in `pid`, so that the
    /// next arrivals land on the preferred, cheaper capacity instead of on
    /// the later pool's workers as they free up. Without this, a trickle
    /// after a burst keeps the rented workers busy for good while the owned
    /// ones time out idle: the burst would ebb from the wrong end.
    fn spill_to_take_back(&self, pid: PoolId, now: Timestamp) -> u32 {
        let pool = &self.pools[pid.0 as usize];
        let expected = pool
            .recent_arrivals
            .expected_within(now, pool.config.idle_timeout);
        if expected == 0 {
            return 0;
        }
        let own_price = self.price_per_slot(pid);
        let carried = self
            .workers
            .values()
            .filter(|w| w.pool != pid && w.state.is_active())
            .filter(|w| self.price_per_slot(w.pool) > own_price)
            .flat_map(|w| w.jobs.iter().map(move |j| (w.pool, j)))
            .filter(|(later, j)| {
                self.jobs.get(j).is_some_and(|job| {
                    let chain = &self.sigs.get(job.sig).chain;
                    let at = |p: PoolId| chain.iter().position(|c| *c == p);
                    matches!((at(pid), at(*later)), (Some(a), Some(b)) if a < b)
                })
            })
            .count();
        u32::try_from(carried).unwrap_or(u32::MAX).min(expected)
    }

    /// Idle workers the pool keeps ready: the jobs expected to arrive
    /// within the reuse horizon, from the last ten minutes of arrivals,
    /// plus `idle_count`. The k-th idle worker waits about k ÷ rate for
    /// its next job, so it is worth keeping while that is shorter than the
    /// horizon (the ski-rental break-even under Poisson arrivals).
    fn idle_worth_keeping(&self, pid: PoolId, now: Timestamp) -> u32 {
        let pool = &self.pools[pid.0 as usize];
        let idle_count = match pool.config.kind {
            PoolKind::Dynamic { idle_count, .. } => idle_count,
            PoolKind::Static { .. } => 0,
        };
        let expected_milli = pool
            .recent_arrivals
            .expected_milli_within(now, self.reuse_horizon(pid));
        let worth = u32::try_from(expected_milli / 1000).unwrap_or(u32::MAX);
        worth / pool.capacity() + idle_count
    }

    /// How long an idle worker is worth keeping for the next job: what
    /// reusing it saves (a boot), times the chance that the job could not
    /// simply wait for a busy slot to free up instead. A job of the pool's
    /// tightest class may wait `target − lead time` before a launch for it
    /// must start; busy slots free at about `busy ÷ mean job duration`, so
    /// none frees in that slack with probability `exp(−busy × slack ÷
    /// mean)`. With no slack (targets shorter than a boot) that is a whole
    /// boot; at a 60 s target on a busy pool, a few seconds: keeping idle
    /// workers there costs more than the boots it saves, since the next
    /// job takes the next slot to free at no cost.
    fn reuse_horizon(&self, pid: PoolId) -> Duration {
        let pool = &self.pools[pid.0 as usize];
        let boot = pool.boot_estimate;
        let Some(tightest) = self.config.classes.iter().map(|c| c.sla_target).min() else {
            return boot;
        };
        let slack = tightest.saturating_sub(crate::planner::lead_time(boot));
        let mean = pool.mean_job_duration.as_secs_f64();
        if slack.is_zero() || mean <= 0.0 {
            return boot;
        }
        let busy: usize = pool
            .workers
            .iter()
            .filter_map(|w| self.workers.get(w))
            .map(|w| w.jobs.len())
            .sum();
        let frees_in_slack = busy as f64 * slack.as_secs_f64() / mean;
        boot.mul_f64((-frees_in_slack).exp())
    }

    fn snapshot(&self, pid: PoolId, now: Timestamp) -> Snapshot {
        let pool = &self.pools[pid.0 as usize];
        let cap = pool.capacity();
        let mut snap = Snapshot {
            supply: Supply {
                mean_job_duration: pool.mean_job_duration,
                ..Default::default()
            },
            status: PoolStatus::default(),
            busy_instances: 0,
            fully_idle: 0,
        };
        for w in pool.workers.iter().filter_map(|w| self.workers.get(w)) {
            snap.status.count(w.state);
            let jobs = u32::try_from(w.jobs.len()).unwrap_or(u32::MAX);
            match w.state {
                WorkerState::Requested | WorkerState::Booting => {
                    let ready = (w.requested_at + pool.boot_estimate).max(now);
                    snap.supply.booting.push((ready, cap));
                }
                WorkerState::Idle | WorkerState::Busy => {
                    snap.supply.idle_slots += cap.saturating_sub(jobs);
                    snap.supply.busy_slots += jobs;
                    if jobs > 0 {
                        snap.busy_instances += 1;
                    } else {
                        snap.fully_idle += 1;
                    }
                }
                _ => {}
            }
        }
        snap
    }

    /// Current spend rate of every instance that exists or was asked for.
    fn fleet_rate(&self) -> i64 {
        self.workers
            .values()
            .filter(|w| w.state.is_physical())
            .map(|w| {
                if w.launched_at.is_some() {
                    w.rate.0.0
                } else {
                    self.pools[w.pool.0 as usize].config.on_demand_price.0.0
                }
            })
            .sum()
    }

    fn launch_price(&self, pid: PoolId) -> PricePerHour {
        self.pools[pid.0 as usize].config.on_demand_price
    }

    /// What one job slot of the pool costs an hour at its launch price, in
    /// micro-dollars per thousand slots (so pools of different capacities
    /// compare exactly).
    fn price_per_slot(&self, pid: PoolId) -> i64 {
        let cap = self.pools[pid.0 as usize].capacity().max(1);
        self.launch_price(pid).0.0 * 1000 / i64::from(cap)
    }

    /// A pool's state for status pages and metrics.
    pub fn pool_status(&self, pid: PoolId) -> Option<PoolStatus> {
        let pool = self.pools.get(pid.0 as usize)?;
        let mut s = self.snapshot(pid, Timestamp::EPOCH).status;
        s.desired = pool.scaler.desired;
        s.free_slots = pool.free_slots;
        s.boot_estimate = pool.boot_estimate;
        s.mean_job_duration = pool.mean_job_duration;
        Some(s)
    }
}

fn add_routed(routed: &mut Routed, sig: SignatureId, d: &Demand) {
    match routed.iter_mut().find(|(s, _)| *s == sig) {
        Some((_, acc)) => acc.add(d),
        None => routed.push((sig, *d)),
    }
}

/// Whether billing lets a worker retire now without wasting paid time.
fn bill_allows_retiring(billing: Billing, launched_at: Option<Timestamp>, now: Timestamp) -> bool {
    match billing {
        Billing::PerSecond { minimum } => {
            launched_at.is_none_or(|t| now.saturating_since(t) >= minimum)
        }
        Billing::Period {
            period,
            retire_within,
        } => {
            let age = launched_at.map_or(Duration::ZERO, |t| now.saturating_since(t));
            let into = Duration::from_millis(
                crate::time::duration_millis(age) % crate::time::duration_millis(period).max(1),
            );
            period - into <= retire_within
        }
    }
}
