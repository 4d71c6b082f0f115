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

/// The market as the tag value.
pub fn market_value(market: ebbtide_core::Market) -> &'static str {
    market.name()
}

/// The market a tag value names (anything but `spot` is on-demand).
pub fn parse_market(value: Option<&str>) -> ebbtide_core::Market {
    match value {
        Some(v) if v == ebbtide_core::Market::Spot.name() => ebbtide_core::Market::Spot,
        _ => ebbtide_core::Market::OnDemand,
    }
}
