//! Configuration files as operators write them, and the errors they get.

use std::time::Duration;

use ebbtide_core::{Micros, PoolKind, PricePerHour};

mod support;

const EXAMPLE: &str = include_str!("../../../examples/travis-sim.toml");

#[test]
fn the_travis_example_parses() {
    let c = support::parse(EXAMPLE).expect("example is valid");
    assert_eq!(c.engine.classes.len(), 2);
    assert_eq!(c.engine.classes[0].sla_target, Duration::from_secs(60));
    let pool = &c.engine.pools[0];
    assert_eq!(pool.on_demand_price, PricePerHour(Micros(96_000)));
    assert_eq!(
        pool.kind,
        PoolKind::Dynamic {
            min: 0,
            idle_count: 0
        }
    );
    assert_eq!(pool.market.spot_percent, 100);
    assert_eq!(c.tenant_from_defaults("ortuman@jackal").weight, 1);
}

#[test]
fn an_unknown_key_is_an_error_with_its_line() {
    let text = EXAMPLE.replace(
        "boot_timeout = \"5m\"",
        "boot_timeout = \"5m\"\nidle_timout = \"90s\"",
    );
    let err = support::parse(&text).expect_err("typo must be refused");
    let issue = &err.issues[0];
    assert!(
        issue.message.contains("unknown field `idle_timout`"),
        "{issue}"
    );
    let expected = text
        .lines()
        .position(|l| l.starts_with("idle_timout"))
        .expect("present")
        + 1;
    assert_eq!(issue.line, Some(expected));
    assert!(
        issue.path.starts_with("pools[") && issue.path.ends_with("].idle_timout"),
        "the key path is named too: {issue}"
    );
}

#[test]
fn an_unknown_engine_key_names_its_table() {
    let err = support::parse("[engine]\nboot_timeout = \"5s\"\n").expect_err("refused");
    assert_eq!(err.issues[0].path, "engine.boot_timeout");
    assert_eq!(err.issues[0].line, Some(2));
}

#[test]
fn a_bad_duration_names_its_line() {
    let text = EXAMPLE.replace("boot_estimate = \"30s\"", "boot_estimate = \"thirty\"");
    let err = support::parse(&text).expect_err("bad duration");
    let expected = text
        .lines()
        .position(|l| l.contains("thirty"))
        .expect("present")
        + 1;
    assert_eq!(err.issues[0].line, Some(expected), "{err}");
}

#[test]
fn semantic_errors_carry_key_path_and_line_all_at_once() {
    let text = EXAMPLE
        .replace("min = 0\nmax = 1000", "min = 5\nmax = 2")
        .replace("spot_percent = 100", "spot_percent = 150");
    let err = support::parse(&text).expect_err("two violations");
    let msgs: Vec<String> = err.issues.iter().map(ToString::to_string).collect();
    assert_eq!(err.issues.len(), 2, "{msgs:?}");
    let min = err
        .issues
        .iter()
        .find(|i| i.path == "pools[0].min")
        .expect("min issue");
    assert_eq!(
        min.line,
        Some(text.lines().position(|l| l == "min = 5").expect("present") + 1)
    );
    assert!(
        err.issues
            .iter()
            .any(|i| i.path == "pools[0].market.spot_percent" && i.line.is_some()),
        "{msgs:?}"
    );
}

#[test]
fn a_static_pool_without_warm_is_refused() {
    let text = EXAMPLE.replace("kind = \"dynamic\"\nmin = 0\n", "kind = \"static\"\n");
    let err = support::parse(&text).expect_err("no warm");
    assert!(
        err.issues
            .iter()
            .any(|i| i.path == "pools[0].warm" && i.message.contains("needs `warm`")),
        "{err}"
    );
    let warm = err
        .issues
        .iter()
        .find(|i| i.path == "pools[0].warm")
        .expect("warm issue");
    let header = text
        .lines()
        .position(|l| l == "[[pools]]")
        .expect("pool table")
        + 1;
    assert_eq!(
        warm.line,
        Some(header),
        "a missing key points at its table: {err}"
    );
}

#[test]
fn a_negative_price_is_refused() {
    let text = EXAMPLE.replace("on_demand_price = 0.096", "on_demand_price = -1.0");
    let err = support::parse(&text).expect_err("negative price");
    assert_eq!(err.issues[0].path, "pools[0].on_demand_price");
}

#[test]
fn an_empty_file_gets_default_classes_and_no_pools() {
    let c = support::parse("").expect("empty is valid");
    assert_eq!(c.engine.classes.len(), 5);
    assert!(c.engine.pools.is_empty());
}

const LOCAL: &str = include_str!("../../../examples/local.toml");

#[test]
fn the_local_example_parses_with_server_settings_and_api_keys() {
    let c = support::parse(LOCAL).expect("local example is valid");
    assert_eq!(c.server.grpc_listen, "127.0.0.1:8081");
    assert_eq!(c.server.public_grpc_url, "http://127.0.0.1:8081");
    assert_eq!(c.api_keys.len(), 2);
    assert_eq!(c.api_keys[1].tenant, "team-b");
    assert!(
        !format!("{:?}", c.api_keys).contains("0123456789"),
        "keys never print"
    );
}

#[test]
fn a_short_api_key_is_refused() {
    let text = LOCAL.replace("demo-key-0123456789abcdef", "short");
    let err = support::parse(&text).expect_err("short key");
    assert!(
        err.issues
            .iter()
            .any(|i| i.path == "tenants[0].api_key" && i.line.is_some()),
        "{err}"
    );
}

#[test]
fn an_api_key_from_an_unset_variable_is_refused() {
    let text = LOCAL.replace(
        "api_key = \"demo-key-0123456789abcdef\"",
        "api_key_env = \"EBBTIDE_TEST_SURELY_UNSET\"",
    );
    let err = support::parse(&text).expect_err("unset variable");
    assert!(
        err.issues
            .iter()
            .any(|i| i.message.contains("EBBTIDE_TEST_SURELY_UNSET")),
        "{err}"
    );
}

#[test]
fn cost_reports_default_to_a_local_spool_in_the_data_dir() {
    let c = support::parse("[server]\ndata_dir = \"/var/lib/ebbtide\"\n").expect("valid");
    assert_eq!(
        c.cost_reports.spool_dir,
        std::path::PathBuf::from("/var/lib/ebbtide/cost-reports")
    );
    assert_eq!(c.cost_reports.ledger_flush, Duration::from_secs(10));
    assert_eq!(c.cost_reports.publish_interval, Duration::from_secs(300));
    assert_eq!(c.cost_reports.s3, None);
}

#[test]
fn an_s3_bucket_takes_the_aws_region_and_a_trimmed_prefix() {
    let text = "[providers.aws]\nregion = \"eu-west-1\"\n\n[cost_reports.s3]\nbucket = \"acme-finops\"\nprefix = \"/ci/ebbtide/\"\n";
    let c = support::parse(text).expect("valid");
    let s3 = c.cost_reports.s3.expect("s3");
    assert_eq!(s3.region, "eu-west-1");
    assert_eq!(s3.prefix, "ci/ebbtide");
    assert!(!s3.path_style);
}

#[test]
fn a_bad_bucket_name_and_a_missing_region_are_refused_with_their_lines() {
    let text = "[cost_reports]\npublish_interval = \"1s\"\n\n[cost_reports.s3]\nbucket = \"Acme_FinOps\"\n";
    let err = support::parse(text).expect_err("refused");
    let msgs: Vec<String> = err.issues.iter().map(ToString::to_string).collect();
    assert_eq!(err.issues.len(), 3, "{msgs:?}");
    let bucket = err
        .issues
        .iter()
        .find(|i| i.path == "cost_reports.s3.bucket")
        .expect("bucket issue");
    assert_eq!(bucket.line, Some(5));
    assert!(bucket.message.contains("lowercase"), "{}", bucket.message);
    assert!(
        msgs.iter().any(|m| m.contains("cost_reports.s3.region")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("cost_reports.publish_interval") && m.contains("at least 10s")),
        "{msgs:?}"
    );
}

#[test]
fn a_misspelt_log_level_is_refused_with_its_line() {
    let err = support::parse("[server]\nlog_level = \"verbose\"\n").expect_err("refused");
    assert_eq!(err.issues.len(), 1);
    assert_eq!(err.issues[0].path, "server.log_level");
    assert_eq!(err.issues[0].line, Some(2));
    assert!(
        err.issues[0]
            .message
            .contains("trace, debug, info, warn, error, off")
    );
    let ok = support::parse("[server]\nlog_level = \"info,ebbtide_server=debug, h2=WARN\"\n");
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn warm_headroom_is_automatic_unless_turned_off_and_its_coverage_is_checked() {
    let c = support::parse(EXAMPLE).expect("example is valid");
    assert_eq!(
        c.engine.pools[0].headroom,
        ebbtide_core::HeadroomPolicy::Auto {
            coverage_milli: 990
        }
    );
    let off = format!("{EXAMPLE}\n[pools.headroom]\nmode = \"off\"\n");
    let c = support::parse(&off).expect("mode = off is valid");
    assert_eq!(
        c.engine.pools[0].headroom,
        ebbtide_core::HeadroomPolicy::Off
    );
    let bad = format!("{EXAMPLE}\n[pools.headroom]\ncoverage = 1.5\n");
    let err = support::parse(&bad).expect_err("coverage above 1");
    let issue = err
        .issues
        .iter()
        .find(|i| i.path == "pools[0].headroom.coverage")
        .unwrap_or_else(|| panic!("names the key: {err}"));
    assert!(issue.message.contains("at most 1"), "{issue}");
    let typo = format!("{EXAMPLE}\n[pools.headroom]\nmode = \"always\"\n");
    assert!(support::parse(&typo).is_err(), "an unknown mode is refused");
}

#[test]
fn a_minimum_charge_is_read_and_refused_beside_a_billed_period() {
    let c = support::parse(EXAMPLE).expect("example is valid");
    assert_eq!(
        c.engine.pools[0].billing,
        ebbtide_core::Billing::PerSecond {
            minimum: Duration::from_secs(60)
        }
    );
    let text = EXAMPLE.replace("minimum = \"60s\"", "minimum = \"60s\"\nperiod = \"1h\"");
    let err = support::parse(&text).expect_err("a period has its own minimum");
    let issue = &err.issues[0];
    assert!(
        issue.path.ends_with("].billing.minimum") && issue.message.contains("per-second"),
        "{issue}"
    );
    assert!(issue.line.is_some(), "{issue}");
}

#[test]
fn the_tight_travis_scenarios_differ_from_the_example_only_in_the_high_target() {
    let base = support::parse(EXAMPLE).expect("example is valid");
    for (text, secs) in [
        (include_str!("../../../examples/travis-sim-10s.toml"), 10),
        (include_str!("../../../examples/travis-sim-30s.toml"), 30),
    ] {
        let c = support::parse(text).expect("scenario is valid");
        assert_eq!(c.engine.classes[0].sla_target, Duration::from_secs(secs));
        assert_eq!(c.engine.classes[1], base.engine.classes[1]);
        assert_eq!(
            c.engine.pools, base.engine.pools,
            "the same pool, headroom stated"
        );
    }
}
