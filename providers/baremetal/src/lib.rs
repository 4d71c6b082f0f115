//! # ebbtide-provider-baremetal
//!
//! Workers on hosts the team owns, reached over SSH. Owned machines are the
//! cheapest capacity a CI team has: a pool of them placed first in a chain
//! takes a burst before a cloud pool does, and its workers are the last
//! to retire.
//!
//! - [`ssh`]: a pure-Rust SSH client (russh) that refuses any host whose
//!   key is not the one pinned for it, runs one command per channel with
//!   its input on stdin (a secret never appears on a command line `ps`
//!   shows), reads the channel until it closes and keeps sessions alive.
//! - [`remote`]: the scripts run on a host to start, list and stop agents.
//! - [`BaremetalProvider`]: slots, placement, health gates (quarantine)
//!   and the power of idle hosts.
//! - [`power`]: Redfish, IPMI and Wake-on-LAN drivers.

mod plugin;
pub mod power;
mod power_book;
mod provider;
pub mod remote;
mod slots;
pub mod ssh;
#[cfg(feature = "testkit")]
pub mod testhosts;

pub use plugin::{BaremetalPlugin, BaremetalSettings};
pub use provider::{
    BaremetalConfig, BaremetalProvider, Host, HostPower, instance_id, split_instance_id,
};
