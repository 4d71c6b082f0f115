//! Which workers hold which host's slots: those running (as the last
//! `list` or a finished start saw them) and those being started now.
//!
//! A slot is reserved when a launch places a worker, before the SSH round
//! trip that starts it, so launches running side by side (the scheduler
//! sends one per batch) never count the same free slot; and a `list`,
//! which replaces a host's running set with what the host reports, cannot
//! drop a reservation whose agent has not written its directory yet.

use std::collections::{BTreeSet, HashMap};

use ebbtide_core::WorkerId;

/// Slots in use per host.
#[derive(Debug, Default)]
pub(crate) struct SlotBook {
    running: HashMap<String, BTreeSet<WorkerId>>,
    starting: HashMap<String, BTreeSet<WorkerId>>,
}

impl SlotBook {
    /// Slots taken on `host`, running or being started.
    pub(crate) fn used(&self, host: &str) -> u32 {
        let n = self.running.get(host).map_or(0, BTreeSet::len)
            + self.starting.get(host).map_or(0, BTreeSet::len);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Places `workers` in the free slots of `hosts` (name, slots),
    /// least-loaded first, and reserves them. What does not fit is left
    /// out.
    pub(crate) fn reserve(
        &mut self,
        hosts: &[(String, u32)],
        workers: &[WorkerId],
    ) -> Vec<(String, Vec<WorkerId>)> {
        let mut load: Vec<(String, u32, u32)> = hosts
            .iter()
            .map(|(name, slots)| (name.clone(), self.used(name), *slots))
            .collect();
        let mut plan: HashMap<String, Vec<WorkerId>> = HashMap::new();
        for w in workers {
            load.sort_by_key(|(name, used, slots)| (*used * 1000 / (*slots).max(1), name.clone()));
            let Some(slot) = load.iter_mut().find(|(_, used, slots)| used < slots) else {
                break;
            };
            slot.1 += 1;
            plan.entry(slot.0.clone()).or_default().push(*w);
            self.starting.entry(slot.0.clone()).or_default().insert(*w);
        }
        let mut plan: Vec<(String, Vec<WorkerId>)> = plan.into_iter().collect();
        plan.sort();
        plan
    }

    /// The worker's agent runs: its reservation becomes a running slot.
    pub(crate) fn started(&mut self, host: &str, worker: WorkerId) {
        if let Some(s) = self.starting.get_mut(host) {
            s.remove(&worker);
        }
        self.running
            .entry(host.to_string())
            .or_default()
            .insert(worker);
    }

    /// The start failed or was abandoned: the slot is free again.
    pub(crate) fn release(&mut self, host: &str, worker: WorkerId) {
        if let Some(s) = self.starting.get_mut(host) {
            s.remove(&worker);
        }
    }

    /// The worker was stopped.
    pub(crate) fn stopped(&mut self, host: &str, worker: WorkerId) {
        if let Some(s) = self.running.get_mut(host) {
            s.remove(&worker);
        }
    }

    /// What the host itself reports running (reservations stand).
    pub(crate) fn listed(&mut self, host: &str, workers: BTreeSet<WorkerId>) {
        self.running.insert(host.to_string(), workers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_keep_concurrent_launches_and_lists_from_overfilling_a_host() {
        let mut book = SlotBook::default();
        let hosts = vec![("a".to_string(), 2), ("b".to_string(), 2)];
        let first = book.reserve(&hosts, &[WorkerId(1), WorkerId(2)]);
        assert_eq!(
            first,
            [
                ("a".into(), vec![WorkerId(1)]),
                ("b".into(), vec![WorkerId(2)])
            ]
        );
        // A second launch before the first one's agents run.
        let second = book.reserve(&hosts, &[WorkerId(3), WorkerId(4), WorkerId(5)]);
        let placed: usize = second.iter().map(|(_, w)| w.len()).sum();
        assert_eq!(placed, 2, "only two slots were left: {second:?}");
        // A list that does not see the starting agents yet drops nothing.
        book.listed("a", BTreeSet::new());
        assert_eq!(book.used("a"), 2);
        book.started("a", WorkerId(1));
        assert_eq!(book.used("a"), 2);
        book.release("b", WorkerId(2));
        assert_eq!(book.used("b"), 1);
        book.stopped("a", WorkerId(1));
        assert_eq!(book.used("a"), 1);
    }
}
