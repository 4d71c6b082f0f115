//! Tenant authentication for the job API.

use std::collections::HashMap;

use ebbtide_config::ApiKey;

/// API key → tenant. A request without a known key is refused before any
/// lookup, and a tenant only ever sees its own jobs.
#[derive(Clone, Default)]
pub(crate) struct ApiKeys {
    by_key: HashMap<String, String>,
}

impl ApiKeys {
    pub(crate) fn new(keys: &[ApiKey]) -> Self {
        ApiKeys {
            by_key: keys
                .iter()
                .map(|k| (k.key.clone(), k.tenant.clone()))
                .collect(),
        }
    }

    /// The tenant of an `Authorization: Bearer KEY` header value.
    pub(crate) fn tenant(&self, header: Option<&str>) -> Option<&str> {
        let key = header?.strip_prefix("Bearer ")?.trim();
        self.by_key.get(key).map(String::as_str)
    }
}
