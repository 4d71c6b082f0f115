//! How `[providers.NAME]` tables reach the provider that claims them.

use ebbtide_config::{Issue, ProviderSchema, ProviderSection, ProviderSettings};
use serde::Deserialize;

mod support;

/// A provider with typed settings, as a provider crate writes one.
struct Typed;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedSection {
    endpoint: String,
    #[serde(default)]
    slots: u32,
}

impl ProviderSchema for Typed {
    fn name(&self) -> &'static str {
        "typed"
    }

    fn check(
        &self,
        section: &ProviderSection<'_>,
        issues: &mut Vec<Issue>,
    ) -> Option<ProviderSettings> {
        if !section.is_present() {
            issues.push(Issue::at("providers.typed", "the table is required"));
            return None;
        }
        let typed: TypedSection = section.deserialize(issues)?;
        for (index, pool) in section.pools() {
            if typed.slots < pool.max {
                issues.push(Issue::at(
                    format!("pools[{index}].max"),
                    format!("more than the {} slots", typed.slots),
                ));
            }
        }
        Some(ProviderSettings::new(typed))
    }
}

const PROVIDERS: &[&dyn ProviderSchema] = &[&Typed, &support::Lenient("local")];

const POOL: &str = "[[pools]]\nname = \"p\"\nprovider = \"typed\"\nkind = \"dynamic\"\nmax = 4\n[pools.shape]\nname = \"s\"\ncpu_millis = 1000\nmemory_mib = 256\n\n";

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in the text"))
        + 1
}

#[test]
fn the_provider_gets_its_table_typed_with_the_api_budget_read_apart() {
    let text = format!(
        "{POOL}[providers.typed]\nendpoint = \"http://127.0.0.1:9\"\nslots = 8\n[providers.typed.api]\ncalls_per_second = 7\n"
    );
    let c = ebbtide_config::parse(&text, PROVIDERS).expect("valid");
    let typed = c.providers.get("typed").expect("configured");
    assert_eq!(typed.api.calls_per_second, 7);
    assert_eq!(typed.api.burst, 10, "the default burst");
    let settings = typed.settings.get::<TypedSection>().expect("its own type");
    assert_eq!(settings.endpoint, "http://127.0.0.1:9");
    assert_eq!(settings.slots, 8);
    assert!(
        typed.settings.get::<String>().is_none(),
        "no other type reads them"
    );
}

#[test]
fn a_providers_serde_error_names_its_line_and_key() {
    let text = format!("{POOL}[providers.typed]\nendpoint = \"x\"\nslost = 8\n");
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("typo");
    let issue = &err.issues[0];
    assert!(issue.message.contains("unknown field `slost`"), "{issue}");
    assert_eq!(issue.line, Some(line_of(&text, "slost")), "{issue}");

    let text = format!("{POOL}[providers.typed]\nendpoint = 3\n");
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("wrong type");
    let issue = &err.issues[0];
    assert_eq!(issue.line, Some(line_of(&text, "endpoint = 3")), "{issue}");
    assert_eq!(issue.path, "providers.typed.endpoint", "{issue}");
}

#[test]
fn the_providers_own_rules_see_the_pools_that_use_it() {
    let text = format!("{POOL}[providers.typed]\nendpoint = \"x\"\nslots = 2\n");
    let err = ebbtide_config::parse(&text, PROVIDERS).expect_err("too few slots");
    let issue = &err.issues[0];
    assert_eq!(issue.path, "pools[0].max");
    assert_eq!(issue.line, Some(line_of(&text, "max = 4")), "{issue}");
}

#[test]
fn a_used_provider_is_asked_even_without_a_table() {
    let err = ebbtide_config::parse(POOL, PROVIDERS).expect_err("table required");
    assert_eq!(err.issues[0].path, "providers.typed");
}

#[test]
fn a_table_no_provider_claims_is_refused() {
    let text = "[providers.openstack]\nregion = \"x\"\n";
    let err = ebbtide_config::parse(text, PROVIDERS).expect_err("unknown");
    let issue = &err.issues[0];
    assert_eq!(issue.path, "providers.openstack");
    assert!(issue.message.contains("typed, local"), "{issue}");
    assert_eq!(issue.line, Some(1));
}

#[test]
fn a_zero_api_budget_is_refused_with_its_line() {
    let text = "[providers.local.api]\nburst = 0\n";
    let err = ebbtide_config::parse(text, PROVIDERS).expect_err("zero burst");
    let issue = &err.issues[0];
    assert_eq!(issue.path, "providers.local.api.burst");
    assert_eq!(issue.line, Some(2), "{issue}");
    let text = "[providers.local.api]\nbrust = 3\n";
    let err = ebbtide_config::parse(text, PROVIDERS).expect_err("typo");
    assert!(err.issues[0].message.contains("brust"), "{}", err.issues[0]);
    assert_eq!(err.issues[0].line, Some(2));
}
