//! What the provider knows of each power-controlled host's power, and the
//! idle rule: a host that has run none of our workers for `off_after` is
//! switched off, and one that is off is woken when a launch needs its
//! slots. Its boot (power on until it answers over SSH) is measured here.
//!
//! The provider decides this itself rather than the engine because the
//! engine plans workers, not machines: a host is a pool of slots it never
//! sees. What the engine does see is the cost — a launch onto a sleeping
//! host takes a boot longer, and the pool's boot estimate learns it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One host's power as the provider last knew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Power {
    /// Not asked yet (after a start).
    Unknown,
    /// On; since when it has had none of our workers, if it has none.
    On { idle_since: Option<Instant> },
    /// Switched off (or found off), and why.
    Off { why: String },
    /// Switched on at `since`, not answering yet.
    Waking { since: Instant },
}

/// The power of every power-controlled host.
#[derive(Debug, Default)]
pub(crate) struct PowerBook {
    hosts: HashMap<String, Power>,
    last_boot: HashMap<String, Duration>,
}

impl PowerBook {
    pub(crate) fn state(&self, host: &str) -> &Power {
        self.hosts.get(host).unwrap_or(&Power::Unknown)
    }

    /// Off or on its way up: no SSH reaches it, and that is no fault.
    pub(crate) fn asleep(&self, host: &str) -> bool {
        matches!(self.state(host), Power::Off { .. } | Power::Waking { .. })
    }

    pub(crate) fn last_boot(&self, host: &str) -> Option<Duration> {
        self.last_boot.get(host).copied()
    }

    /// A list found the host on with `workers` of ours. Answers whether it
    /// has now been idle for `off_after` and should be switched off.
    pub(crate) fn observe_on(
        &mut self,
        host: &str,
        workers: usize,
        now: Instant,
        off_after: Duration,
    ) -> bool {
        let idle_since = match (self.state(host), workers) {
            (_, 1..) => None,
            (
                Power::On {
                    idle_since: Some(t),
                },
                0,
            ) => Some(*t),
            _ => Some(now),
        };
        self.hosts
            .insert(host.to_string(), Power::On { idle_since });
        idle_since.is_some_and(|t| now.saturating_duration_since(t) >= off_after)
    }

    /// A launch is placing workers on the host: it is not idle.
    pub(crate) fn busy(&mut self, host: &str) {
        if let Some(Power::On { idle_since }) = self.hosts.get_mut(host) {
            *idle_since = None;
        }
    }

    pub(crate) fn switched_off(&mut self, host: &str, why: String) {
        self.hosts.insert(host.to_string(), Power::Off { why });
    }

    /// A launch needs the sleeping host. Answers whether this caller is
    /// the one to switch it on (it was off), not one joining a boot
    /// already under way.
    pub(crate) fn wake(&mut self, host: &str, now: Instant) -> bool {
        match self.state(host) {
            Power::Waking { .. } | Power::On { .. } => false,
            Power::Off { .. } | Power::Unknown => {
                self.hosts
                    .insert(host.to_string(), Power::Waking { since: now });
                true
            }
        }
    }

    /// The host answered: its boot is measured from the power on.
    pub(crate) fn woke(&mut self, host: &str, now: Instant) -> Option<Duration> {
        let boot = match self.state(host) {
            Power::Waking { since } => Some(now.saturating_duration_since(*since)),
            _ => None,
        };
        if let Some(b) = boot {
            self.last_boot.insert(host.to_string(), b);
        }
        self.hosts
            .insert(host.to_string(), Power::On { idle_since: None });
        boot
    }

    /// Switching it on failed or it never answered: ask again next time.
    pub(crate) fn wake_failed(&mut self, host: &str) {
        self.hosts.insert(host.to_string(), Power::Unknown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_switched_off_only_after_a_whole_idle_period_without_workers() {
        let mut book = PowerBook::default();
        let t0 = Instant::now();
        let off_after = Duration::from_secs(600);
        assert!(!book.observe_on("a", 0, t0, off_after), "idle starts now");
        assert!(!book.observe_on("a", 0, t0 + Duration::from_secs(599), off_after));
        assert!(
            !book.observe_on("a", 1, t0 + Duration::from_secs(610), off_after),
            "a worker came"
        );
        assert!(
            !book.observe_on("a", 0, t0 + Duration::from_secs(620), off_after),
            "idle again from here"
        );
        book.busy("a");
        assert!(
            !book.observe_on("a", 0, t0 + Duration::from_secs(1_219), off_after),
            "a launch reset it"
        );
        assert!(book.observe_on("a", 0, t0 + Duration::from_secs(1_819), off_after));
    }

    #[test]
    fn one_caller_switches_a_host_on_and_its_boot_is_measured() {
        let mut book = PowerBook::default();
        let t0 = Instant::now();
        book.switched_off("a", "idle".into());
        assert!(book.asleep("a"));
        assert!(book.wake("a", t0), "the first launch switches it on");
        assert!(
            !book.wake("a", t0 + Duration::from_secs(1)),
            "the second joins the boot"
        );
        assert!(book.asleep("a"));
        assert_eq!(
            book.woke("a", t0 + Duration::from_secs(42)),
            Some(Duration::from_secs(42))
        );
        assert_eq!(book.last_boot("a"), Some(Duration::from_secs(42)));
        assert!(!book.asleep("a"));
        assert_eq!(
            book.woke("a", t0 + Duration::from_secs(50)),
            None,
            "already up"
        );
        book.wake_failed("a");
        assert_eq!(book.state("a"), &Power::Unknown);
    }
}
