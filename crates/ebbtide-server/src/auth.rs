//! Tenant authentication for the job API.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ebbtide_config::ApiKey;

/// API key → tenant, replaceable on a configuration reload. A request
/// without a known key is refused before any lookup, and a tenant only ever
/// sees its own jobs.
#[derive(Clone, Default)]
pub(crate) struct ApiKeys {
    by_key: Arc<RwLock<HashMap<String, String>>>,
}

impl ApiKeys {
    pub(crate) fn new(keys: &[ApiKey]) -> Self {
        let api = ApiKeys::default();
        api.replace(keys);
        api
    }

    /// Replaces every key (configuration reload).
    pub(crate) fn replace(&self, keys: &[ApiKey]) {
        if let Ok(mut map) = self.by_key.write() {
            *map = keys
                .iter()
                .map(|k| (k.key.clone(), k.tenant.clone()))
                .collect();
        }
    }

    /// The tenant of an `Authorization: Bearer KEY` header value.
    pub(crate) fn tenant(&self, header: Option<&str>) -> Option<String> {
        let key = header?.strip_prefix("Bearer ")?.trim();
        self.by_key.read().ok()?.get(key).cloned()
    }
}
