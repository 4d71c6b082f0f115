//! Spot capacity shortages that last, by zone and across a region.
//!
//! A spot pool runs out in one zone for a while (minutes to hours), and a
//! regional shortage empties every zone at once. Calls made during a
//! shortage fail for capacity however often they are retried, and a walk
//! over the zones finds room only in zones not short at that moment. Drawing
//! each call's failure independently instead would let a retry or the next
//! zone succeed almost always, which flatters any policy that walks zones.

use std::time::Duration;

use rand::Rng;

/// How often and how long spot capacity runs short.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShortageModel {
    /// Share of the time each zone is short on its own.
    pub zone_share: f64,
    /// Mean length of a zone's shortage.
    pub zone_mean: Duration,
    /// Share of the time every zone of the region is short at once.
    pub region_share: f64,
    /// Mean length of a regional shortage.
    pub region_mean: Duration,
}

impl ShortageModel {
    /// Spot never runs short.
    pub const NONE: ShortageModel = ShortageModel {
        zone_share: 0.0,
        zone_mean: Duration::from_secs(600),
        region_share: 0.0,
        region_mean: Duration::from_secs(600),
    };
}

/// Drawn shortage episodes over one run, queried by virtual time.
#[derive(Debug, Clone, Default)]
pub struct Shortages {
    /// Per zone (in the order of the world's zones), sorted, disjoint
    /// `[start, end)` in milliseconds.
    zones: Vec<Vec<(u64, u64)>>,
    /// Regional episodes, the same way.
    region: Vec<(u64, u64)>,
}

impl Shortages {
    /// Draws episodes for `zones` zones over `[from_ms, to_ms)`.
    pub fn draw(
        model: &ShortageModel,
        zones: usize,
        from_ms: u64,
        to_ms: u64,
        rng: &mut impl Rng,
    ) -> Self {
        Shortages {
            zones: (0..zones)
                .map(|_| episodes(model.zone_share, model.zone_mean, from_ms, to_ms, rng))
                .collect(),
            region: episodes(model.region_share, model.region_mean, from_ms, to_ms, rng),
        }
    }

    /// Whether zone number `zone` has no spot capacity at `at_ms`.
    pub fn short(&self, zone: usize, at_ms: u64) -> bool {
        within(&self.region, at_ms) || self.zones.get(zone).is_some_and(|z| within(z, at_ms))
    }

    /// Share of `[from_ms, to_ms)` during which zone `zone` is short (for
    /// tests and reports).
    pub fn short_share(&self, zone: usize, from_ms: u64, to_ms: u64, step_ms: u64) -> f64 {
        let step = step_ms.max(1);
        let samples = (to_ms.saturating_sub(from_ms) / step).max(1);
        let short = (0..samples)
            .filter(|i| self.short(zone, from_ms + i * step))
            .count();
        short as f64 / samples as f64
    }
}

/// An alternating renewal process: available periods and shortages of
/// exponential lengths, whose means make `share` of the time short. It
/// starts in its stationary state (short with probability `share`), so a
/// run does not begin with every zone open.
fn episodes(
    share: f64,
    mean: Duration,
    from_ms: u64,
    to_ms: u64,
    rng: &mut impl Rng,
) -> Vec<(u64, u64)> {
    if share <= 0.0 || mean.is_zero() {
        return Vec::new();
    }
    let share = share.min(0.99);
    let short_mean = mean.as_millis() as f64;
    let open_mean = short_mean * (1.0 - share) / share;
    let starts_short = rng.random_bool(share);
    let mut exp = |m: f64| -> u64 {
        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        (-u.ln() * m) as u64
    };
    let mut out = Vec::new();
    let mut t = if starts_short {
        from_ms
    } else {
        from_ms + exp(open_mean)
    };
    while t < to_ms {
        let end = t + exp(short_mean).max(1);
        out.push((t, end));
        t = end + exp(open_mean).max(1);
    }
    out
}

fn within(episodes: &[(u64, u64)], at: u64) -> bool {
    let i = episodes.partition_point(|(start, _)| *start <= at);
    i > 0 && at < episodes[i - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const DAY: u64 = 86_400_000;

    #[test]
    fn zones_are_short_for_their_share_of_the_time_in_long_episodes() {
        let model = ShortageModel {
            zone_share: 0.05,
            zone_mean: Duration::from_secs(1200),
            region_share: 0.0,
            region_mean: Duration::from_secs(600),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let s = Shortages::draw(&model, 2, 0, 60 * DAY, &mut rng);
        for zone in 0..2 {
            let share = s.short_share(zone, 0, 60 * DAY, 10_000);
            assert!((0.035..0.065).contains(&share), "zone {zone}: {share}");
            let lengths: Vec<u64> = s.zones[zone].iter().map(|(a, b)| b - a).collect();
            let mean = lengths.iter().sum::<u64>() as f64 / lengths.len() as f64;
            assert!(
                (900_000.0..1_500_000.0).contains(&mean),
                "episodes last about 20 min: {mean} ms"
            );
        }
        assert_ne!(s.zones[0], s.zones[1], "zones run short independently");
    }

    #[test]
    fn a_regional_shortage_empties_every_zone_at_once() {
        let model = ShortageModel {
            zone_share: 0.0,
            zone_mean: Duration::from_secs(600),
            region_share: 0.02,
            region_mean: Duration::from_secs(900),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let s = Shortages::draw(&model, 3, 0, 30 * DAY, &mut rng);
        let (start, end) = s.region[0];
        for t in [start, (start + end) / 2, end - 1] {
            assert!((0..3).all(|z| s.short(z, t)), "every zone short at {t}");
        }
        assert!(!(0..3).any(|z| s.short(z, end)), "open again at its end");
    }

    #[test]
    fn no_share_means_no_shortage() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let s = Shortages::draw(&ShortageModel::NONE, 4, 0, DAY, &mut rng);
        assert!((0..4).all(|z| !s.short(z, DAY / 2)));
    }
}
