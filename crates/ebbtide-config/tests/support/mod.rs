#![allow(dead_code, reason = "each test file uses its part of the support")]

//! Stand-ins for the binary's provider list: the config crate knows no
//! provider, so its tests bring schemas of their own.

use ebbtide_config::{Issue, ProviderSchema, ProviderSection, ProviderSettings};

/// A provider that takes any table and keeps it, with the `region` key as
/// its region when there is one.
pub struct Lenient(pub &'static str);

impl ProviderSchema for Lenient {
    fn name(&self) -> &'static str {
        self.0
    }

    fn check(
        &self,
        section: &ProviderSection<'_>,
        issues: &mut Vec<Issue>,
    ) -> Option<ProviderSettings> {
        let table: toml::Table = section.deserialize(issues)?;
        let region = table
            .get("region")
            .and_then(|r| r.as_str())
            .map(str::to_string);
        let settings = ProviderSettings::new(table);
        Some(match region {
            Some(r) => settings.with_region(r),
            None => settings,
        })
    }
}

/// The names this repository's binary has, each lenient.
pub const PROVIDERS: &[&dyn ProviderSchema] =
    &[&Lenient("local"), &Lenient("docker"), &Lenient("aws")];

/// `ebbtide_config::parse` with [`PROVIDERS`].
pub fn parse(text: &str) -> Result<ebbtide_config::ClusterConfig, ebbtide_config::ConfigErrors> {
    ebbtide_config::parse(text, PROVIDERS)
}
