//! Typed identifiers, so a job id can never be passed where a worker id is
//! expected.

use std::fmt;

/// A job, numbered by whoever accepts submissions (the store assigns it).
/// The store, the server and the engine all use this one type, so an id read
/// from the database is the id the engine decides about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct JobId(pub u64);

/// A worker the engine asked for; numbered by the engine when it decides to
/// launch, before the provider has named the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct WorkerId(pub u64);

/// A tenant, by its index in the engine configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(pub u32);

/// A pool, by its index in the engine configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolId(pub u32);

/// A priority class, by rank: 0 is the most urgent class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId(pub u8);

/// The provider's own name for an instance (EC2 `i-…`, a container id, …).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub String);

macro_rules! display_with_prefix {
    ($t:ty, $p:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($p, "{}"), self.0)
            }
        }
    };
}

display_with_prefix!(JobId, "job-");
display_with_prefix!(WorkerId, "worker-");
display_with_prefix!(TenantId, "tenant#");
display_with_prefix!(PoolId, "pool#");
display_with_prefix!(ClassId, "class#");
display_with_prefix!(InstanceId, "");
