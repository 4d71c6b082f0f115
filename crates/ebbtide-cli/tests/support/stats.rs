//! Figures the benchmarks and load tests print.

use std::time::{SystemTime, UNIX_EPOCH};

/// The `p` quantile (0..=1) of already sorted samples, by nearest rank.
/// Panics on no samples: a benchmark that measured nothing must not print
/// a figure.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "no samples");
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Prints `what`'s millisecond samples: count, median, p99 and max.
pub fn print_ms(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what} ({} runs): median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(0.0)
    );
}

/// Nanoseconds since the epoch: what a job prints with `date +%s%N` as its
/// first act, so submit-to-start can be measured on one machine's clock.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let samples = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(super::percentile(&samples, 0.0), 1.0);
        assert_eq!(super::percentile(&samples, 0.5), 3.0);
        assert_eq!(super::percentile(&samples, 1.0), 5.0);
    }
}
