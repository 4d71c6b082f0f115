//! What a job needs from a worker, and which pools can provide it.
//!
//! Thousands of queued jobs usually share a handful of distinct requirement
//! sets. Interning each distinct set as a [`SignatureId`] lets the queue and
//! the planner reason per signature instead of per job, and the pool chain
//! of a signature is computed once, not on every match.

use crate::config::PoolConfig;
use crate::ids::PoolId;

/// Deterministic, fast hashing (FxHash): the engine must behave
/// identically on every run, and its keys are small integers and short
/// strings that never come from an adversary unchecked (job ids are the
/// store's, labels are validated by the API).
pub(crate) type DetHashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// A job's needs. Labels are kept sorted and de-duplicated so equal needs
/// intern to the same signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Requirements {
    /// Labels the worker must offer (`docker`, `gpu`, `region-eu`).
    pub labels: Vec<String>,
    /// CPU the job uses, in millicores.
    pub cpu_millis: u32,
    /// Memory the job uses, in MiB.
    pub memory_mib: u32,
    /// Required operating system, if any.
    pub os: Option<String>,
    /// Required CPU architecture, if any.
    pub arch: Option<String>,
}

impl Requirements {
    /// Puts labels in canonical order.
    pub fn normalized(mut self) -> Self {
        self.labels.sort();
        self.labels.dedup();
        self
    }

    /// Whether one instance of `pool` can run this job at all.
    pub fn fits_pool(&self, pool: &PoolConfig) -> bool {
        let s = &pool.shape;
        self.cpu_millis <= s.cpu_millis
            && self.memory_mib <= s.memory_mib
            && self.os.as_ref().is_none_or(|os| *os == s.os)
            && self.arch.as_ref().is_none_or(|a| *a == s.arch)
            && self.labels.iter().all(|l| pool.labels.contains(l))
    }
}

/// An interned [`Requirements`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignatureId(pub u32);

/// One interned requirement set and the pools that can serve it.
#[derive(Debug, Clone)]
pub struct Signature {
    /// The needs themselves.
    pub requirements: Requirements,
    /// Compatible pools, most preferred first (static before dynamic, then
    /// by `preference`, then cheapest on-demand price, then config order).
    pub chain: Vec<PoolId>,
}

/// The intern table.
#[derive(Debug, Default, Clone)]
pub struct SignatureTable {
    by_requirements: DetHashMap<Requirements, SignatureId>,
    signatures: Vec<Signature>,
}

impl SignatureTable {
    /// Returns the signature of `req`, interning it with its pool chain on
    /// first sight. Requirements must already be normalized.
    pub fn intern(&mut self, req: &Requirements, pools: &[PoolConfig]) -> SignatureId {
        if let Some(id) = self.by_requirements.get(req) {
            return *id;
        }
        let id = SignatureId(u32::try_from(self.signatures.len()).unwrap_or(u32::MAX));
        self.signatures.push(Signature {
            requirements: req.clone(),
            chain: chain_for(req, pools),
        });
        self.by_requirements.insert(req.clone(), id);
        id
    }

    /// The signature behind an id.
    pub fn get(&self, id: SignatureId) -> &Signature {
        &self.signatures[id.0 as usize]
    }

    /// Number of distinct signatures seen.
    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    /// Whether no signature has been interned yet.
    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// Recomputes every chain after the pool set changed (config reload).
    pub fn rebuild_chains(&mut self, pools: &[PoolConfig]) {
        for s in &mut self.signatures {
            s.chain = chain_for(&s.requirements, pools);
        }
    }
}

fn chain_for(req: &Requirements, pools: &[PoolConfig]) -> Vec<PoolId> {
    let mut chain: Vec<(usize, &PoolConfig)> = pools
        .iter()
        .enumerate()
        .filter(|(_, p)| req.fits_pool(p))
        .collect();
    chain.sort_by_key(|(i, p)| {
        let dynamic = matches!(p.kind, crate::config::PoolKind::Dynamic { .. });
        (dynamic, p.preference, p.on_demand_price, *i)
    });
    chain
        .into_iter()
        .map(|(i, _)| PoolId(u32::try_from(i).unwrap_or(u32::MAX)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn equal_requirements_intern_once() {
        let cfg = testkit::config();
        let mut t = SignatureTable::default();
        let a = Requirements {
            labels: vec!["b".into(), "a".into()],
            ..Default::default()
        }
        .normalized();
        let b = Requirements {
            labels: vec!["a".into(), "b".into(), "a".into()],
            ..Default::default()
        }
        .normalized();
        assert_eq!(t.intern(&a, &cfg.pools), t.intern(&b, &cfg.pools));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn static_pools_come_before_dynamic_ones_in_a_chain() {
        let cfg = testkit::config_with_static_pool();
        let mut t = SignatureTable::default();
        let id = t.intern(&Requirements::default(), &cfg.pools);
        let chain = &t.get(id).chain;
        assert!(matches!(
            cfg.pools[chain[0].0 as usize].kind,
            crate::config::PoolKind::Static { .. }
        ));
    }

    #[test]
    fn a_job_needing_a_missing_label_fits_no_pool() {
        let cfg = testkit::config();
        let mut t = SignatureTable::default();
        let req = Requirements {
            labels: vec!["gpu".into()],
            ..Default::default()
        };
        let id = t.intern(&req, &cfg.pools);
        assert!(t.get(id).chain.is_empty());
    }
}
