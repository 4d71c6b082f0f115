//! Power control of owned hosts, behind one small interface: an idle host
//! is switched off after a while and switched on when demand needs its
//! slots again. Three drivers, because hosts differ in what their boards
//! offer: Redfish (modern BMCs), IPMI (older BMCs, through `ipmitool`)
//! and Wake-on-LAN (power on only; off goes over SSH).

pub(crate) mod config;
mod ipmi;
mod redfish;
mod wol;

pub use ipmi::Ipmi;
pub use redfish::{Redfish, choose_reset};
pub use wol::{WakeOnLan, magic_packet, parse_mac};

/// Whether a host has power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    /// On, or on its way there.
    On,
    /// Off, or on its way there.
    Off,
}

/// Why a power action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    /// The driver (or this host's controller) cannot do it.
    #[error("{0}")]
    Unsupported(String),
    /// The controller did not answer.
    #[error("power controller unreachable: {0}")]
    Unreachable(String),
    /// The controller answered with a refusal.
    #[error("power controller refused: {0}")]
    Refused(String),
}

/// One host's power controller.
#[async_trait::async_trait]
pub trait PowerControl: Send + Sync {
    /// The driver's name, for logs and status.
    fn driver(&self) -> &'static str;

    /// The host's power now, or `None` where the driver cannot tell
    /// (Wake-on-LAN): then only an SSH answer says it is up.
    async fn state(&self) -> Result<Option<PowerState>, PowerError>;

    /// Switches the host on. Returns once the controller accepted it; the
    /// host answering over SSH is what says it booted.
    async fn power_on(&self) -> Result<(), PowerError>;

    /// Switches the host off, gracefully where the controller can.
    /// [`PowerError::Unsupported`] from a driver that cannot (the provider
    /// then shuts the host down over SSH).
    async fn power_off(&self) -> Result<(), PowerError>;
}
