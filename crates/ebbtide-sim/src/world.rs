//! The simulator's stand-in for every provider: a configuration written
//! for real infrastructure replays unchanged, its pools' providers taken
//! as names only, since the simulated world launches and prices the
//! instances itself.

use ebbtide_config::{Issue, ProviderSchema, ProviderSection, ProviderSettings};

/// A provider of the simulated world called `.0`: it accepts any pool and
/// any `[providers.NAME]` table, and reads none.
pub struct Simulated(pub &'static str);

impl ProviderSchema for Simulated {
    fn name(&self) -> &'static str {
        self.0
    }

    fn check(&self, _: &ProviderSection<'_>, _: &mut Vec<Issue>) -> Option<ProviderSettings> {
        Some(ProviderSettings::new(()))
    }
}

/// Parses `text` for the simulator, with `providers` (a build's provider
/// names) all simulated.
pub fn parse(
    text: &str,
    providers: &[&'static str],
) -> Result<ebbtide_config::ClusterConfig, ebbtide_config::ConfigErrors> {
    let simulated: Vec<Simulated> = providers.iter().map(|n| Simulated(n)).collect();
    let schemas: Vec<&dyn ProviderSchema> =
        simulated.iter().map(|s| s as &dyn ProviderSchema).collect();
    ebbtide_config::parse(text, &schemas)
}
