//! `[providers.baremetal.hosts.power]`: which driver controls a host's
//! power and how to reach it, checked the way `serve` would use it
//! (passwords read from the environment, a CA file read and parsed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ebbtide_config::Issue;
use ebbtide_provider::Secret;
use serde::Deserialize;

use super::{Ipmi, PowerControl, Redfish, WakeOnLan, parse_mac};
use crate::HostPower;

/// One power call: an unreachable BMC must not hold a launch for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// `power = { driver = "...", ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub(crate) enum PowerSection {
    /// A Redfish BMC.
    Redfish(RedfishSection),
    /// An IPMI BMC, through `ipmitool`.
    Ipmi(IpmiSection),
    /// Wake-on-LAN; off goes over SSH.
    Wol(WolSection),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedfishSection {
    /// `https://bmc.example`.
    endpoint: String,
    /// The system's path; absent: the BMC's first system.
    system: Option<String>,
    user: String,
    /// The variable holding the password.
    password_env: String,
    /// The BMC's CA certificate (PEM), when it is not publicly trusted.
    ca_file: Option<PathBuf>,
    #[serde(default = "default_off_command")]
    off_command: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpmiSection {
    address: String,
    #[serde(default = "default_ipmi_port")]
    port: u16,
    user: String,
    password_env: String,
    cipher_suite: Option<u8>,
    #[serde(default = "default_ipmitool")]
    ipmitool: PathBuf,
    #[serde(default = "default_off_command")]
    off_command: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WolSection {
    /// The network card's MAC.
    mac: String,
    /// The subnet's broadcast address and port (`10.0.0.255:9`).
    broadcast: String,
    #[serde(default = "default_off_command")]
    off_command: String,
}

fn default_off_command() -> String {
    "sudo -n systemctl poweroff".into()
}
fn default_ipmi_port() -> u16 {
    623
}
fn default_ipmitool() -> PathBuf {
    "ipmitool".into()
}

fn password(var: &str, key: &str, issues: &mut Vec<Issue>) -> Option<Secret> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(Secret::new(v)),
        _ => {
            issues.push(Issue::at(
                format!("{key}.password_env"),
                format!("environment variable {var} is not set (it holds the BMC password)"),
            ));
            None
        }
    }
}

impl PowerSection {
    /// The driver, or `None` with the reasons in `issues` (`key` is the
    /// section's path, e.g. `providers.baremetal.hosts[2].power`).
    pub(crate) fn check(&self, key: &str, issues: &mut Vec<Issue>) -> Option<HostPower> {
        let (control, off_command): (Arc<dyn PowerControl>, &str) = match self {
            PowerSection::Redfish(r) => {
                if !(r.endpoint.starts_with("https://") || r.endpoint.starts_with("http://")) {
                    issues.push(Issue::at(
                        format!("{key}.endpoint"),
                        format!("{:?}: the BMC's URL, https://HOST[:PORT]", r.endpoint),
                    ));
                    return None;
                }
                let ca = match &r.ca_file {
                    None => None,
                    Some(path) => match std::fs::read(path) {
                        Ok(pem) => Some(pem),
                        Err(e) => {
                            issues.push(Issue::at(
                                format!("{key}.ca_file"),
                                format!("cannot read {}: {e}", path.display()),
                            ));
                            return None;
                        }
                    },
                };
                let password = password(&r.password_env, key, issues)?;
                match Redfish::new(
                    &r.endpoint,
                    r.system.clone(),
                    r.user.clone(),
                    password,
                    ca.as_deref(),
                    CALL_TIMEOUT,
                ) {
                    Ok(d) => (Arc::new(d), &r.off_command),
                    Err(e) => {
                        issues.push(Issue::at(format!("{key}.ca_file"), e.to_string()));
                        return None;
                    }
                }
            }
            PowerSection::Ipmi(i) => {
                let password = password(&i.password_env, key, issues)?;
                (
                    Arc::new(Ipmi {
                        tool: i.ipmitool.clone(),
                        address: i.address.clone(),
                        port: i.port,
                        user: i.user.clone(),
                        password,
                        cipher_suite: i.cipher_suite,
                        timeout: CALL_TIMEOUT,
                    }),
                    &i.off_command,
                )
            }
            PowerSection::Wol(w) => {
                let Some(mac) = parse_mac(&w.mac) else {
                    issues.push(Issue::at(
                        format!("{key}.mac"),
                        format!(
                            "{:?}: a MAC address, six hex pairs like 52:54:00:12:34:56",
                            w.mac
                        ),
                    ));
                    return None;
                };
                let Ok(target) = w.broadcast.parse() else {
                    issues.push(Issue::at(
                        format!("{key}.broadcast"),
                        format!(
                            "{:?}: the subnet's broadcast ADDRESS:PORT, like 10.0.0.255:9",
                            w.broadcast
                        ),
                    ));
                    return None;
                };
                (Arc::new(WakeOnLan { mac, target }), &w.off_command)
            }
        };
        Some(HostPower {
            control,
            off_command: off_command.to_string(),
        })
    }
}
