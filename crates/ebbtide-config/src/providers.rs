//! `[providers.NAME]`: each table belongs to the provider that claims it.
//!
//! This crate knows no provider's fields. It reads the part every provider
//! has (`api`, the call budget) and hands the rest of the table to the
//! provider's [`ProviderSchema`], which deserializes its own types and
//! checks them against the pools that use it. The table keeps the file's
//! byte spans on the way, so a provider's error still names its line and
//! key, as the errors of every other section do.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ebbtide_core::{PoolConfig, PricePerHour};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::Issue;

/// The configuration side of a provider plugin: which `[providers.NAME]`
/// table it owns and how to read it. The binary lists the providers it
/// has; `parse` hands each table to the one whose [`name`](Self::name)
/// matches, and refuses a table or a pool that names none.
pub trait ProviderSchema: Send + Sync {
    /// The name pools give as `provider` and the key of its table.
    fn name(&self) -> &'static str;

    /// Reads the provider's table (absent tables included: a provider may
    /// need none), pushes every problem to `issues` and, when there are
    /// none, returns the settings its constructor will take.
    fn check(
        &self,
        section: &ProviderSection<'_>,
        issues: &mut Vec<Issue>,
    ) -> Option<ProviderSettings>;
}

/// One `[providers.NAME]` table, handed to the provider that claims it.
pub struct ProviderSection<'a> {
    name: &'a str,
    /// The table without its `api` key, spans into the file intact.
    table: Option<Spanned<DeValue<'a>>>,
    text: &'a str,
    pools: Vec<(usize, &'a PoolConfig)>,
    cluster: &'a str,
}

impl<'a> ProviderSection<'a> {
    /// A section of `text` for provider `name`, as `parse` builds it.
    pub(crate) fn new(
        name: &'a str,
        table: Option<Spanned<DeValue<'a>>>,
        text: &'a str,
        pools: Vec<(usize, &'a PoolConfig)>,
        cluster: &'a str,
    ) -> Self {
        ProviderSection {
            name,
            table,
            text,
            pools,
            cluster,
        }
    }

    /// The cluster id (`server.cluster`), for providers that build names
    /// or labels from it and must refuse one their infrastructure cannot
    /// spell.
    pub fn cluster(&self) -> &str {
        self.cluster
    }

    /// Whether the file has the table at all.
    pub fn is_present(&self) -> bool {
        self.table.is_some()
    }

    /// The pools that name this provider, with their index in `[[pools]]`
    /// (for an issue's path, `pools[INDEX].…`).
    pub fn pools(&self) -> &[(usize, &'a PoolConfig)] {
        &self.pools
    }

    /// The key path of `key` inside this table, for an issue:
    /// `providers.NAME.key`.
    pub fn key(&self, key: &str) -> String {
        format!("providers.{}.{key}", self.name)
    }

    /// The table as the provider's own type (an absent table reads as an
    /// empty one, so defaults apply). A serde error becomes an issue with
    /// the line and key path of the value it is about.
    pub fn deserialize<T: DeserializeOwned>(&self, issues: &mut Vec<Issue>) -> Option<T> {
        deserialize_spanned(
            self.table.clone(),
            self.text,
            &format!("providers.{}", self.name),
            issues,
        )
    }

    /// [`deserialize`](Self::deserialize) for a provider that cannot run
    /// without its table: an absent one is an issue saying what to give.
    pub fn deserialize_required<T: DeserializeOwned>(
        &self,
        what_to_give: &str,
        issues: &mut Vec<Issue>,
    ) -> Option<T> {
        if !self.is_present() {
            issues.push(Issue::at(
                format!("providers.{}", self.name),
                format!(
                    "a pool uses {}: give [providers.{}] with {what_to_give}",
                    self.name, self.name
                ),
            ));
            return None;
        }
        self.deserialize(issues)
    }

    /// A table of dollars per hour under `key` (name → $/h) as exact
    /// prices; each amount out of range is an issue at its own key.
    pub fn prices(
        &self,
        key: &str,
        dollars: &BTreeMap<String, f64>,
        issues: &mut Vec<Issue>,
    ) -> BTreeMap<String, PricePerHour> {
        dollars
            .iter()
            .map(|(name, d)| {
                let path = self.key(&format!("{key}.{name}"));
                (name.clone(), price_per_hour(*d, &path, issues))
            })
            .collect()
    }
}

/// `value` (absent: an empty table) as a `T`, the error an issue at the
/// line and key it is about, or at `path` when it has no span.
pub(crate) fn deserialize_spanned<T: DeserializeOwned>(
    value: Option<Spanned<DeValue<'_>>>,
    text: &str,
    path: &str,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    let present = value.is_some();
    let value = value.unwrap_or_else(|| Spanned::new(0..0, DeValue::Table(DeTable::new())));
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(value) => Some(value),
        Err(e) => {
            let span = e.span().filter(|_| present);
            issues.push(Issue {
                line: span.as_ref().map(|s| crate::locate::line_at(text, s.start)),
                path: span
                    .and_then(|s| crate::locate::path_at(text, s.start))
                    .unwrap_or_else(|| path.to_string()),
                message: e.message().trim().to_string(),
            });
            None
        }
    }
}

/// A provider's validated settings, of the provider's own type. Only the
/// provider reads them (by [`get`](Self::get)); the rest of Ebbtide sees
/// what every provider has: its region, for the cost reports.
#[derive(Clone)]
pub struct ProviderSettings {
    value: Arc<dyn Any + Send + Sync>,
    region: Option<String>,
}

impl ProviderSettings {
    /// Wraps a provider's settings.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        ProviderSettings {
            value: Arc::new(value),
            region: None,
        }
    }

    /// The region the provider launches in, where it has one: the cost
    /// reports' `RegionId`, and the default region of the S3 bucket when
    /// the provider is the one S3 belongs to.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The settings as the type the provider stored; `None` for any other.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.value.downcast_ref()
    }

    /// See [`with_region`](Self::with_region).
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A provider's API call budget (`[providers.NAME.api]`), the same for
/// every provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Sustained calls per second (at least 1).
    pub calls_per_second: u32,
    /// Calls allowed at once above it (at least 1).
    pub burst: u32,
    /// Retries of throttled or transient failures.
    pub max_retries: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            calls_per_second: 5,
            burst: 10,
            max_retries: 5,
        }
    }
}

/// What the file says about one provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Its call budget.
    pub api: ApiLimits,
    /// Its own settings, as its schema returned them.
    pub settings: ProviderSettings,
}

/// Every provider the file configures or a pool uses, by name.
#[derive(Debug, Clone, Default)]
pub struct ProvidersConfig {
    by_name: BTreeMap<String, ProviderConfig>,
}

impl ProvidersConfig {
    /// The provider named `name`, if the file configures it or a pool uses it.
    pub fn get(&self, name: &str) -> Option<&ProviderConfig> {
        self.by_name.get(name)
    }

    /// Every configured provider, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ProviderConfig)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn insert(&mut self, name: String, config: ProviderConfig) {
        self.by_name.insert(name, config);
    }
}

/// Dollars as written in a file to an exact price per hour; `path` names
/// the key in the issue a value out of range gives.
pub fn price_per_hour(dollars: f64, path: &str, issues: &mut Vec<Issue>) -> PricePerHour {
    PricePerHour(crate::convert::dollars(
        dollars,
        path,
        &mut |path, message| issues.push(Issue::at(path, message)),
    ))
}

/// Hands each `[providers.NAME]` table, and each provider a pool names, to
/// its schema. A table no schema claims is an issue; a pool naming a
/// provider this build lacks is reported by the service rules.
pub(crate) fn read(
    text: &str,
    cluster: &str,
    engine: &ebbtide_core::EngineConfig,
    schemas: &[&dyn ProviderSchema],
    issues: &mut Vec<Issue>,
) -> ProvidersConfig {
    let mut out = ProvidersConfig::default();
    // The file parsed once already (serde's pass): this cannot fail, and
    // if it did there would be nothing more to say than serde said.
    let Ok(doc) = DeTable::parse(text) else {
        return out;
    };
    let tables: BTreeMap<&str, Spanned<DeValue<'_>>> = doc
        .get_ref()
        .get("providers")
        .and_then(|p| p.get_ref().as_table())
        .map(|t| {
            t.iter()
                .map(|(k, v)| (k.get_ref().as_ref(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let known: Vec<&str> = schemas.iter().map(|s| s.name()).collect();
    for name in tables.keys() {
        if !known.contains(name) {
            issues.push(Issue::at(
                format!("providers.{name}"),
                format!(
                    "no provider named {name:?} in this build; it has {}",
                    known.join(", ")
                ),
            ));
        }
    }
    for schema in schemas {
        let name = schema.name();
        let pools: Vec<(usize, &PoolConfig)> = engine
            .pools
            .iter()
            .enumerate()
            .filter(|(_, p)| p.provider == name)
            .collect();
        let mut table = tables.get(name).cloned();
        if table.is_none() && pools.is_empty() {
            continue;
        }
        let api_value = match table.as_mut().map(|t| t.get_mut()) {
            Some(DeValue::Table(t)) => t.remove("api"),
            _ => None,
        };
        let api_path = format!("providers.{name}.api");
        let api =
            deserialize_spanned::<crate::schema::ApiSection>(api_value, text, &api_path, issues)
                .map(|a| a.limits(&api_path, issues))
                .unwrap_or_default();
        let section = ProviderSection::new(name, table, text, pools, cluster);
        if let Some(settings) = schema.check(&section, issues) {
            out.insert(name.to_string(), ProviderConfig { api, settings });
        }
    }
    out
}
