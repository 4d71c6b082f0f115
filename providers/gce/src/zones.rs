//! Zones a stockout closed, and until when.
//!
//! Why: a zone that answered `ZONE_RESOURCE_POOL_EXHAUSTED` usually stays
//! out of that capacity for minutes to hours (GitLab.com lost a third of a
//! shard for three hours to one). Asking it again on every launch wastes a
//! call and the launch's time, so a stockout closes the zone for that
//! market for a while and launches go to the others; when the time is up
//! the zone is tried again. Time is passed in, so the rule is tested
//! without a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ebbtide_core::Market;

/// Zones closed per market, each until an instant.
#[derive(Debug, Default)]
pub struct ZoneBlocklist {
    closed: HashMap<(String, Market), Instant>,
}

impl ZoneBlocklist {
    /// Closes `zone` for `market` until `now + for_how_long` (an earlier
    /// closing that lasts longer stands).
    pub fn close(&mut self, zone: &str, market: Market, now: Instant, for_how_long: Duration) {
        let until = now + for_how_long;
        let entry = self
            .closed
            .entry((zone.to_string(), market))
            .or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }

    /// Whether `zone` is closed for `market` at `now`.
    pub fn is_closed(&self, zone: &str, market: Market, now: Instant) -> bool {
        self.closed
            .get(&(zone.to_string(), market))
            .is_some_and(|until| now < *until)
    }

    /// `zones` without those closed for `market` at `now`, order kept.
    pub fn open<'a>(&self, zones: &[&'a str], market: Market, now: Instant) -> Vec<&'a str> {
        zones
            .iter()
            .copied()
            .filter(|z| !self.is_closed(z, market, now))
            .collect()
    }

    /// When the first of `zones` reopens for `market`, for the message of a
    /// launch that found them all closed.
    pub fn reopens_in(&self, zones: &[&str], market: Market, now: Instant) -> Option<Duration> {
        zones
            .iter()
            .filter_map(|z| self.closed.get(&(z.to_string(), market)))
            .map(|until| until.saturating_duration_since(now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_zone_is_skipped_until_its_time_is_up_for_that_market_only() {
        let t0 = Instant::now();
        let mut b = ZoneBlocklist::default();
        b.close("a", Market::Spot, t0, Duration::from_secs(600));
        let zones = ["a", "b", "c"];
        assert_eq!(b.open(&zones, Market::Spot, t0), ["b", "c"]);
        assert_eq!(b.open(&zones, Market::OnDemand, t0), ["a", "b", "c"]);
        assert_eq!(
            b.reopens_in(&zones, Market::Spot, t0 + Duration::from_secs(100)),
            Some(Duration::from_secs(500))
        );
        assert_eq!(
            b.open(&zones, Market::Spot, t0 + Duration::from_secs(600)),
            zones
        );
    }

    #[test]
    fn a_shorter_second_closing_does_not_reopen_a_zone_early() {
        let t0 = Instant::now();
        let mut b = ZoneBlocklist::default();
        b.close("a", Market::Spot, t0, Duration::from_secs(600));
        b.close("a", Market::Spot, t0, Duration::from_secs(10));
        assert!(b.is_closed("a", Market::Spot, t0 + Duration::from_secs(300)));
    }
}
