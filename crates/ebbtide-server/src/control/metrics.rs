//! Exporting the engine's state as metrics, about once a second.
//!
//! [`fleet_metrics`] is a pure function of the engine's state (what the
//! tests check); [`Control::refresh_metrics`] hands its samples to the
//! recorder.

use super::*;
use crate::telemetry as t;

/// A metric series' labels.
pub(super) type Labels = Vec<(&'static str, String)>;

/// One value of a metric series.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub(super) name: &'static str,
    pub(super) labels: Labels,
    pub(super) value: f64,
}

/// Everything one refresh exports.
#[derive(Debug, Default)]
pub(super) struct FleetMetrics {
    pub(super) gauges: Vec<Sample>,
    /// Cumulative totals (micro-dollars), exported as absolute counters.
    pub(super) counters: Vec<(&'static str, Labels, u64)>,
    /// The (class, tenant) queue series exported, to zero them once they
    /// empty.
    pub(super) queues: Vec<(String, String)>,
}

impl FleetMetrics {
    fn gauge(&mut self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        self.gauges.push(Sample {
            name,
            labels: labels.to_vec(),
            value,
        });
    }

    fn counter(&mut self, name: &'static str, labels: &[(&'static str, String)], value: u64) {
        self.counters.push((name, labels.to_vec(), value));
    }
}

impl Control {
    /// Exports the engine's state as gauges and its cost books as
    /// counters (at most once a second; called from the tick).
    pub(super) fn refresh_metrics(&mut self) {
        let at = self.now;
        self.last_refresh = at;
        self.launch_requested.retain(|w, _| {
            matches!(
                self.engine.worker_state(*w),
                Some(ebbtide_core::WorkerState::Requested | ebbtide_core::WorkerState::Booting)
            )
        });
        self.engine.accrue_all(at);
        let previous = std::mem::take(&mut self.queue_series);
        let mut metrics = fleet_metrics(&self.engine, at, previous);
        metrics.gauges.extend(host_metrics(&self.hosts));
        for s in &metrics.gauges {
            t::set_gauge(s.name, &s.labels, s.value);
        }
        for (name, labels, value) in &metrics.counters {
            t::set_counter(name, labels, *value);
        }
        self.queue_series = metrics.queues;
    }
}

/// Owned hosts as samples: a one-hot state per host (so an alert can
/// count quarantined hosts and a graph can stack them) and its last boot.
pub(super) fn host_metrics(
    hosts: &BTreeMap<String, Vec<ebbtide_provider::HostReport>>,
) -> Vec<Sample> {
    let mut out = Vec::new();
    for (provider, hosts) in hosts {
        for h in hosts {
            let labels = || vec![("provider", provider.clone()), ("host", h.name.clone())];
            for state in ebbtide_provider::HostState::ALL {
                let mut l = labels();
                l.push(("state", state.name().to_string()));
                out.push(Sample {
                    name: t::HOST_STATE,
                    labels: l,
                    value: if h.state == state { 1.0 } else { 0.0 },
                });
            }
            if let Some(boot) = h.last_boot {
                out.push(Sample {
                    name: t::HOST_BOOT,
                    labels: labels(),
                    value: boot.as_secs_f64(),
                });
            }
        }
    }
    out
}

/// The engine's state at `at` as metric samples: workers by pool and
/// state, pool sizes, cost rates and totals, queues by class and tenant
/// (series in `previous_queues` that emptied are exported as zero),
/// SLA targets, quota use and the budget.
pub(super) fn fleet_metrics(
    engine: &Engine,
    at: Timestamp,
    previous_queues: Vec<(String, String)>,
) -> FleetMetrics {
    let mut out = FleetMetrics::default();
    let config = engine.config();
    let rates = engine.cost_rates();
    for (i, p) in config.pools.iter().enumerate() {
        let Some(s) = engine.pool_status(PoolId(i as u32)) else {
            continue;
        };
        let pool = || ("pool", p.name.clone());
        for (state, n) in [
            ("requested", s.requested),
            ("booting", s.booting),
            ("idle", s.idle),
            ("busy", s.busy),
            ("draining", s.draining),
            ("terminating", s.terminating),
            ("lost", s.lost),
        ] {
            out.gauge(t::WORKERS, &[pool(), ("state", state.into())], f64::from(n));
        }
        out.gauge(t::POOL_DESIRED, &[pool()], f64::from(s.desired));
        let actual = s.requested + s.booting + s.idle + s.busy + s.draining;
        out.gauge(t::POOL_ACTUAL, &[pool()], f64::from(actual));
        out.gauge(t::POOL_MAX, &[pool()], f64::from(p.max));
        let warm = match p.kind {
            ebbtide_core::PoolKind::Static { warm } => warm,
            ebbtide_core::PoolKind::Dynamic { .. } => 0,
        };
        out.gauge(t::POOL_WARM, &[pool()], f64::from(warm));
        for market in [ebbtide_core::Market::OnDemand, ebbtide_core::Market::Spot] {
            let rate = rates
                .iter()
                .filter(|(pid, m, _)| pid.0 as usize == i && *m == market)
                .map(|(_, _, r)| r.0.0)
                .sum::<i64>();
            out.gauge(
                t::COST_RATE,
                &[pool(), ("market", market.name().into())],
                rate as f64,
            );
        }
        let spent = engine.costs().by_pool.get(i).map_or(0, |c| c.to_micros().0);
        out.counter(t::COST_POOL, &[pool()], u64::try_from(spent).unwrap_or(0));
    }
    let mut series = Vec::new();
    for q in engine.queue_stats() {
        let (Some(class), Some(tenant)) = (
            config.classes.get(usize::from(q.class.0)),
            config.tenants.get(q.tenant.0 as usize),
        ) else {
            continue;
        };
        let labels = [
            ("class", class.name.clone()),
            ("tenant", tenant.name.clone()),
        ];
        out.gauge(t::QUEUE_DEPTH, &labels, q.depth as f64);
        let oldest = q
            .oldest
            .map_or(0.0, |o| at.saturating_since(o).as_secs_f64());
        out.gauge(t::QUEUE_OLDEST, &labels, oldest);
        series.push((class.name.clone(), tenant.name.clone()));
    }
    for (class, tenant) in previous_queues {
        if !series.contains(&(class.clone(), tenant.clone())) {
            let labels = [("class", class), ("tenant", tenant)];
            out.gauge(t::QUEUE_DEPTH, &labels, 0.0);
            out.gauge(t::QUEUE_OLDEST, &labels, 0.0);
        }
    }
    out.queues = series;
    for c in &config.classes {
        out.gauge(
            t::SLA_TARGET,
            &[("class", c.name.clone())],
            c.sla_target.as_secs_f64(),
        );
    }
    let costs = engine.costs();
    for (i, tenant) in config.tenants.iter().enumerate() {
        let spent = costs.by_tenant.get(i).map_or(0, |c| c.to_micros().0);
        out.counter(
            t::COST_TENANT,
            &[("tenant", tenant.name.clone())],
            u64::try_from(spent).unwrap_or(0),
        );
        if let (Some(limit), Some(usage)) = (
            tenant.quota.max_running_jobs,
            engine.tenant_usage(ebbtide_core::TenantId(i as u32)),
        ) && limit > 0
        {
            out.gauge(
                t::QUOTA_USED,
                &[("tenant", tenant.name.clone())],
                f64::from(usage.running_jobs) / f64::from(limit),
            );
        }
    }
    let fleet = costs.fleet.to_micros().0;
    let spot = costs.spot.to_micros().0;
    out.counter(
        t::COST_MARKET,
        &[("market", ebbtide_core::Market::Spot.name().into())],
        u64::try_from(spot).unwrap_or(0),
    );
    out.counter(
        t::COST_MARKET,
        &[("market", ebbtide_core::Market::OnDemand.name().into())],
        u64::try_from(fleet - spot).unwrap_or(0),
    );
    out.counter(
        t::SAVINGS,
        &[],
        u64::try_from(costs.savings().0).unwrap_or(0),
    );
    if let Some(budget) = config.max_cost_per_hour {
        out.gauge(t::BUDGET, &[], budget.0.0 as f64);
    }
    out
}

#[cfg(test)]
mod tests {
    use ebbtide_core::testkit;

    use super::*;

    fn gauge(m: &FleetMetrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        m.gauges
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    #[test]
    fn the_queue_and_the_fleet_are_exported_and_an_emptied_queue_reads_zero() {
        let start = Timestamp::from_secs(1_000_000);
        let mut engine = Engine::new(testkit::config(), start).expect("config");
        engine
            .handle(Event::JobSubmitted(testkit::job(1, 0, 0)), start)
            .expect("admitted");
        engine
            .handle(Event::JobSubmitted(testkit::job(2, 0, 0)), start)
            .expect("admitted");
        engine.handle(Event::Tick, start).expect("tick");
        let at = start + std::time::Duration::from_secs(7);
        let gone = ("low".to_string(), "nobody".to_string());
        let m = fleet_metrics(&engine, at, vec![gone.clone()]);

        let class = engine.config().classes[0].name.clone();
        let queue = [("class", class.as_str()), ("tenant", "acme")];
        assert_eq!(gauge(&m, t::QUEUE_DEPTH, &queue), Some(2.0));
        assert_eq!(gauge(&m, t::QUEUE_OLDEST, &queue), Some(7.0));
        assert_eq!(m.queues, vec![(class.clone(), "acme".to_string())]);
        let emptied = [("class", "low"), ("tenant", "nobody")];
        assert_eq!(gauge(&m, t::QUEUE_DEPTH, &emptied), Some(0.0));
        assert_eq!(gauge(&m, t::QUEUE_OLDEST, &emptied), Some(0.0));

        let max = f64::from(engine.config().pools[0].max);
        assert_eq!(gauge(&m, t::POOL_MAX, &[("pool", "cloud")]), Some(max));
        let requested = gauge(&m, t::WORKERS, &[("pool", "cloud"), ("state", "requested")]);
        let desired = gauge(&m, t::POOL_DESIRED, &[("pool", "cloud")]);
        assert!(
            requested.is_some_and(|r| r >= 1.0) && desired == requested,
            "the planner asked for workers for the queued jobs: requested {requested:?}, desired {desired:?}"
        );
    }

    #[test]
    fn each_host_reads_one_for_its_state_and_zero_for_the_others() {
        let report = |name: &str, state, boot| ebbtide_provider::HostReport {
            name: name.to_string(),
            state,
            reason: None,
            workers: 0,
            slots: 2,
            last_boot: boot,
        };
        let hosts = BTreeMap::from([(
            "baremetal".to_string(),
            vec![
                report("rack-a", ebbtide_provider::HostState::Ready, None),
                report(
                    "rack-b",
                    ebbtide_provider::HostState::Quarantined,
                    Some(std::time::Duration::from_millis(41_500)),
                ),
            ],
        )]);
        let m = FleetMetrics {
            gauges: host_metrics(&hosts),
            ..FleetMetrics::default()
        };
        let of = |host: &str, state: &str| {
            gauge(
                &m,
                t::HOST_STATE,
                &[("provider", "baremetal"), ("host", host), ("state", state)],
            )
        };
        assert_eq!(of("rack-a", "ready"), Some(1.0));
        assert_eq!(of("rack-a", "quarantined"), Some(0.0));
        assert_eq!(of("rack-b", "quarantined"), Some(1.0));
        assert_eq!(of("rack-b", "ready"), Some(0.0));
        assert_eq!(of("rack-b", "powered_off"), Some(0.0));
        assert_eq!(gauge(&m, t::HOST_BOOT, &[("host", "rack-b")]), Some(41.5));
        assert_eq!(gauge(&m, t::HOST_BOOT, &[("host", "rack-a")]), None);
    }
}
