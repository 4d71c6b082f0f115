//! Who is calling the job API: a tenant or an operator.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ebbtide_config::{ApiKey, OperatorKey};

/// The holder of a known API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Sees and touches only its own jobs and its own queue.
    Tenant(String),
    /// Runs the fleet: every tenant's jobs and the fleet-wide views; submits
    /// nothing, since a job belongs to a tenant.
    Operator(String),
}

/// API key → caller, replaceable on a configuration reload. A request
/// without a known key is refused before any lookup.
#[derive(Clone, Default)]
pub(crate) struct ApiKeys {
    by_key: Arc<RwLock<HashMap<String, Caller>>>,
}

impl ApiKeys {
    pub(crate) fn new(tenants: &[ApiKey], operators: &[OperatorKey]) -> Self {
        let api = ApiKeys::default();
        api.replace(tenants, operators);
        api
    }

    /// Replaces every key (configuration reload).
    pub(crate) fn replace(&self, tenants: &[ApiKey], operators: &[OperatorKey]) {
        if let Ok(mut map) = self.by_key.write() {
            *map = tenants
                .iter()
                .map(|k| (k.key.clone(), Caller::Tenant(k.tenant.clone())))
                .chain(
                    operators
                        .iter()
                        .map(|k| (k.key.clone(), Caller::Operator(k.operator.clone()))),
                )
                .collect();
        }
    }

    /// The caller of an `Authorization: Bearer KEY` header value.
    pub(crate) fn caller(&self, header: Option<&str>) -> Option<Caller> {
        let key = header?.strip_prefix("Bearer ")?.trim();
        self.by_key.read().ok()?.get(key).cloned()
    }
}
