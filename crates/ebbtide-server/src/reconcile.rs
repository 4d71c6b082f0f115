//! The reconciler: compares what each provider says exists with what the
//! engine believes, and mends the difference.
//!
//! Why: a crash between a provider call and its outcome, a container that
//! died on its own, or an instance the cloud lost all leave the two views
//! apart. Instances nobody knows (orphans) cost money and are terminated
//! after a grace period that covers launches still in flight; workers the
//! engine counts on but the provider no longer runs are lost, so their jobs
//! requeue at once instead of waiting for the heartbeat timeout.

use std::collections::{HashMap, HashSet};

use ebbtide_core::{Engine, InstanceId, Timestamp, WorkerId, WorkerState};
use ebbtide_provider::InstanceInfo;

/// What one reconciliation pass decided for one provider.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Workers the provider no longer runs: to be declared lost.
    pub lost: Vec<WorkerId>,
    /// Workers whose instance the provider took back (spot preemption): to
    /// be booked as reclaimed, then lost.
    pub reclaimed: Vec<WorkerId>,
    /// Unknown instances past the grace period: to be terminated.
    pub orphans: Vec<InstanceId>,
}

/// Remembers since when each unknown instance has been seen.
#[derive(Debug, Default)]
pub(crate) struct Reconciler {
    first_seen: HashMap<InstanceId, Timestamp>,
}

/// One provider's view, taken at `listed_at`.
pub(crate) struct Listing<'a> {
    /// The provider's name, as pools name it.
    pub provider: &'a str,
    /// When the list call started: instances the engine learned of later
    /// may be missing from it without being lost.
    pub listed_at: Timestamp,
    /// What it returned.
    pub instances: &'a [InstanceInfo],
    /// Instances it says it took back.
    pub reclaimed: &'a [InstanceId],
}

impl Reconciler {
    /// Compares `listing` with the engine. `launched_at` says when the
    /// scheduler learned each worker's instance; `now` and `grace` decide
    /// when an unknown instance counts as an orphan.
    pub(crate) fn pass(
        &mut self,
        engine: &Engine,
        listing: &Listing<'_>,
        launched_at: &HashMap<WorkerId, Timestamp>,
        now: Timestamp,
        grace: std::time::Duration,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        let running: HashSet<&InstanceId> = listing
            .instances
            .iter()
            .filter(|i| i.running)
            .map(|i| &i.instance)
            .collect();
        let mut known: HashSet<&InstanceId> = HashSet::new();
        for w in engine.live_workers() {
            let Some((pool, Some(instance))) = engine.worker_placement(w) else {
                continue;
            };
            let ours = engine
                .config()
                .pools
                .get(pool.0 as usize)
                .is_some_and(|p| p.provider == listing.provider);
            if !ours {
                continue;
            }
            known.insert(instance);
            let settled = launched_at.get(&w).is_some_and(|t| *t <= listing.listed_at);
            let counted_on = matches!(
                engine.worker_state(w),
                Some(
                    WorkerState::Booting
                        | WorkerState::Idle
                        | WorkerState::Busy
                        | WorkerState::Draining
                )
            );
            if settled && counted_on && !running.contains(instance) {
                if listing.reclaimed.contains(instance) {
                    verdict.reclaimed.push(w);
                } else {
                    verdict.lost.push(w);
                }
            }
        }
        let mut still_unknown = HashSet::new();
        for info in listing.instances {
            if known.contains(&info.instance) {
                continue;
            }
            still_unknown.insert(info.instance.clone());
            let first = *self.first_seen.entry(info.instance.clone()).or_insert(now);
            // A dead unknown instance is garbage at once; a live one may be
            // a launch whose answer has not reached the loop yet.
            if !info.running || now.saturating_since(first) >= grace {
                verdict.orphans.push(info.instance.clone());
            }
        }
        self.first_seen.retain(|i, _| still_unknown.contains(i));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ebbtide_core::Market;
    use ebbtide_core::testkit::{self, Harness};

    use super::*;

    /// A harness with one static worker launched and registered.
    fn one_worker() -> (Harness, WorkerId, InstanceId) {
        let mut cfg = testkit::config();
        cfg.pools = vec![testkit::static_pool("metal", 1)];
        let mut h = Harness::new(cfg);
        h.run_for(Duration::from_secs(40), Duration::from_secs(1));
        let w = h.engine.live_workers().next().expect("a worker");
        let (_, instance) = h.engine.worker_placement(w).expect("placed");
        let instance = instance.expect("launched").clone();
        (h, w, instance)
    }

    fn info(instance: &InstanceId, worker: WorkerId, running: bool) -> InstanceInfo {
        InstanceInfo {
            instance: instance.clone(),
            worker,
            pool: "metal".into(),
            market: Market::OnDemand,
            zone: None,
            running,
        }
    }

    fn provider_of(h: &Harness) -> String {
        h.engine.config().pools[0].provider.clone()
    }

    #[test]
    fn a_worker_whose_instance_died_is_lost_and_a_healthy_one_is_not() {
        let (h, w, instance) = one_worker();
        let provider = provider_of(&h);
        let launched = HashMap::from([(w, Timestamp::from_millis(0))]);
        let mut r = Reconciler::default();
        for (running, expect_lost) in [(true, false), (false, true)] {
            let listed = [info(&instance, w, running)];
            let v = r.pass(
                &h.engine,
                &Listing {
                    provider: &provider,
                    listed_at: h.now,
                    instances: &listed,
                    reclaimed: &[],
                },
                &launched,
                h.now,
                Duration::from_secs(60),
            );
            assert_eq!(v.lost.contains(&w), expect_lost, "running={running}");
            assert!(v.orphans.is_empty());
        }
        // Missing altogether from the list: lost too.
        let v = r.pass(
            &h.engine,
            &Listing {
                provider: &provider,
                listed_at: h.now,
                instances: &[],
                reclaimed: &[],
            },
            &launched,
            h.now,
            Duration::from_secs(60),
        );
        assert_eq!(v.lost, vec![w]);
    }

    #[test]
    fn a_vanished_worker_the_provider_says_it_reclaimed_is_booked_as_reclaimed_not_lost() {
        let (h, w, instance) = one_worker();
        let provider = provider_of(&h);
        let launched = HashMap::from([(w, Timestamp::from_millis(0))]);
        let mut r = Reconciler::default();
        let its_own = [instance.clone()];
        // Another instance's reclamation does not explain this one.
        let another = [InstanceId("elsewhere".into())];
        for (reclaimed, booked_as_reclaimed) in [(&its_own[..], true), (&another[..], false)] {
            let v = r.pass(
                &h.engine,
                &Listing {
                    provider: &provider,
                    listed_at: h.now,
                    instances: &[],
                    reclaimed,
                },
                &launched,
                h.now,
                Duration::from_secs(60),
            );
            assert_eq!(v.reclaimed.contains(&w), booked_as_reclaimed, "{v:?}");
            assert_eq!(v.lost.contains(&w), !booked_as_reclaimed, "{v:?}");
        }
    }

    #[test]
    fn a_worker_launched_after_the_list_started_is_not_lost() {
        let (h, w, _) = one_worker();
        let provider = provider_of(&h);
        let launched = HashMap::from([(w, h.now)]);
        let v = Reconciler::default().pass(
            &h.engine,
            &Listing {
                provider: &provider,
                listed_at: Timestamp::from_millis(h.now.as_millis() - 1),
                instances: &[],
                reclaimed: &[],
            },
            &launched,
            h.now,
            Duration::from_secs(60),
        );
        assert!(v.lost.is_empty());
    }

    #[test]
    fn an_unknown_live_instance_is_an_orphan_only_after_the_grace() {
        let (h, _, _) = one_worker();
        let provider = provider_of(&h);
        let stranger = InstanceId("from-before-the-crash".into());
        let listed = [info(&stranger, WorkerId(999), true)];
        let mut r = Reconciler::default();
        let at = |ms: u64| Timestamp::from_millis(h.now.as_millis() + ms);
        let listing = Listing {
            provider: &provider,
            listed_at: h.now,
            instances: &listed,
            reclaimed: &[],
        };
        let grace = Duration::from_secs(60);
        let first = r.pass(&h.engine, &listing, &HashMap::new(), at(0), grace);
        assert!(first.orphans.is_empty(), "may be a launch in flight");
        let later = r.pass(&h.engine, &listing, &HashMap::new(), at(60_000), grace);
        assert_eq!(later.orphans, vec![stranger.clone()]);
        let dead = [info(&stranger, WorkerId(999), false)];
        let fresh = Reconciler::default().pass(
            &h.engine,
            &Listing {
                provider: &provider,
                listed_at: h.now,
                instances: &dead,
                reclaimed: &[],
            },
            &HashMap::new(),
            at(0),
            grace,
        );
        assert_eq!(fresh.orphans, vec![stranger], "dead and unknown: at once");
    }
}
