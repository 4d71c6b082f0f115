//! The ownership tags every provider puts on what it launches.
//!
//! Why one definition: `list` must find exactly this cluster's instances by
//! these tags (and the reconciler relies on it to never touch anything
//! else), so every provider spells them the same way, whether as EC2 tags
//! or Docker labels.

/// Cluster id: an instance without this tag set to our cluster is never
/// listed or terminated.
pub const CLUSTER: &str = "ebbtide.cluster";
/// The pool it was launched for.
pub const POOL: &str = "ebbtide.pool";
/// The engine's worker id.
pub const WORKER: &str = "ebbtide.worker";
/// `spot` or `on-demand`.
pub const MARKET: &str = "ebbtide.market";

/// The market a tag value names. A missing or unknown tag reads as
/// on-demand: an instance Ebbtide cannot place on the cheaper market is
/// costed at full price rather than under-reported.
pub fn parse_market(value: Option<&str>) -> ebbtide_core::Market {
    value
        .and_then(ebbtide_core::Market::from_name)
        .unwrap_or(ebbtide_core::Market::OnDemand)
}
