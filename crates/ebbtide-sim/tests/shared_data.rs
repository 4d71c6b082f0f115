//! The real data the simulator's defaults come from (`../shared/data`,
//! beside the repository), read as the data README describes.

use std::path::PathBuf;
use std::time::Duration;

use ebbtide_core::{Micros, PricePerHour};
use ebbtide_sim::{SimParams, TravisClasses, read_travis};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

#[test]
fn m5_large_in_us_east_1_has_five_spot_zones_and_the_10_to_15_percent_bucket() {
    let p = SimParams::from_shared_data(&data(), "us-east-1", "m5.large", 7)
        .expect("shared data present");
    assert_eq!(p.spot_zones.len(), 5);
    assert_eq!(p.min_spot_price(), Some(PricePerHour(Micros(29_100))));
    assert!(
        (p.reclaim_fraction_per_month - 0.135).abs() < 1e-9,
        "bucket upper 16 % → midpoint {}",
        p.reclaim_fraction_per_month
    );
    assert!(
        p.boot_samples
            .iter()
            .all(|b| *b > Duration::from_secs(15) && *b < Duration::from_secs(40))
    );
    assert!(
        !p.burst_fractions.is_empty() && p.burst_fractions.iter().all(|f| (0.0..=1.0).contains(f))
    );
}

#[test]
fn an_unknown_shape_is_an_error_naming_it() {
    let err =
        SimParams::from_shared_data(&data(), "us-east-1", "z9.huge", 7).expect_err("no such shape");
    assert!(err.to_string().contains("z9.huge"), "{err}");
}

#[test]
fn the_travis_month_expands_to_one_job_per_matrix_entry() {
    let classes = TravisClasses {
        interactive: "high".into(),
        scheduled: "low".into(),
    };
    let t =
        read_travis(&data().join("traces/travis_2020-09.csv"), &classes).expect("trace present");
    assert_eq!(t.jobs.len(), 183_438);
    assert_eq!(
        t.skipped.len(),
        17,
        "rows without or with a negative duration: {:?}",
        &t.skipped[..3]
    );
    assert!(t.jobs.windows(2).all(|w| w[0].submit_ms <= w[1].submit_ms));
    assert_eq!(t.tenants().len(), 1_648, "one tenant per project");
    assert!(t.jobs.iter().any(|j| j.class == "low"));
}
