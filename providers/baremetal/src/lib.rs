//! # ebbtide-provider-baremetal
//!
//! Workers on hosts the team owns, reached over SSH. Owned machines are the
//! cheapest capacity a CI team has; this crate will make them the first
//! rung of a spill-over chain (bare metal, then on-demand cloud, then spot).
//!
//! What is here so far is the transport ([`ssh`]): a pure-Rust SSH client
//! (russh) that refuses any host whose key is not the one pinned for it,
//! authenticates with a key, runs one command per channel with its input
//! on the channel's stdin (so a secret never appears on a command line
//! `ps` shows), reads the channel until it closes, bounds what it keeps,
//! and keeps long sessions alive. The provider (inventory, slots, launch,
//! list, terminate, health gates, power control) is built on it next.

mod plugin;
mod provider;
pub mod remote;
pub mod ssh;

pub use plugin::{BaremetalPlugin, BaremetalSettings};
pub use provider::{BaremetalConfig, BaremetalProvider, Host, instance_id, split_instance_id};
