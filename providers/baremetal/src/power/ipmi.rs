//! IPMI through Debian's `ipmitool` over LAN (`lanplus`, IPMI 2.0). The
//! password goes to `ipmitool` in its environment (`-E`), never on a
//! command line `ps` shows.

use std::path::PathBuf;
use std::time::Duration;

use ebbtide_provider::Secret;

use super::{PowerControl, PowerError, PowerState};

/// A BMC spoken to with `ipmitool`.
pub struct Ipmi {
    /// The `ipmitool` binary.
    pub tool: PathBuf,
    /// The BMC's address.
    pub address: String,
    /// Its RMCP+ port (623 on real boards).
    pub port: u16,
    /// The BMC user.
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// The RMCP+ cipher suite (`-C`); `None` lets `ipmitool` ask the BMC,
    /// which costs seconds on a BMC that does not answer that question.
    pub cipher_suite: Option<u8>,
    /// One `ipmitool` call.
    pub timeout: Duration,
}

impl Ipmi {
    async fn chassis_power(&self, verb: &str) -> Result<String, PowerError> {
        let mut command = tokio::process::Command::new(&self.tool);
        command
            .args(["-I", "lanplus", "-H", &self.address, "-p"])
            .arg(self.port.to_string())
            .args(["-U", &self.user, "-E"]);
        if let Some(suite) = self.cipher_suite {
            command.arg("-C").arg(suite.to_string());
        }
        command
            .args(["chassis", "power", verb])
            .env("IPMI_PASSWORD", self.password.expose())
            .env("IPMITOOL_PASSWORD", self.password.expose())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(self.timeout, command.output())
            .await
            .map_err(|_| {
                PowerError::Unreachable(format!(
                    "ipmitool chassis power {verb} on {}:{} took over {:?}",
                    self.address, self.port, self.timeout
                ))
            })?
            .map_err(|e| {
                PowerError::Unsupported(format!("cannot run {}: {e}", self.tool.display()))
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let why = stderr
                .lines()
                .filter(|l| !l.contains("Unable to Get Channel Cipher Suites"))
                .collect::<Vec<_>>()
                .join("; ");
            let message = format!(
                "ipmitool chassis power {verb} on {}:{}: {}",
                self.address,
                self.port,
                why.trim()
            );
            return Err(if why.contains("Unable to establish") {
                PowerError::Unreachable(format!(
                    "{message} (no BMC there, or a wrong user, password or cipher suite)"
                ))
            } else {
                PowerError::Refused(message)
            });
        }
        Ok(stdout)
    }
}

/// The state in `ipmitool chassis power status`'s answer.
pub(super) fn parse_status(answer: &str) -> Option<PowerState> {
    let answer = answer.trim().to_ascii_lowercase();
    if answer.ends_with(" on") {
        Some(PowerState::On)
    } else if answer.ends_with(" off") {
        Some(PowerState::Off)
    } else {
        None
    }
}

#[async_trait::async_trait]
impl PowerControl for Ipmi {
    fn driver(&self) -> &'static str {
        "ipmi"
    }

    async fn state(&self) -> Result<Option<PowerState>, PowerError> {
        let answer = self.chassis_power("status").await?;
        parse_status(&answer).map(Some).ok_or_else(|| {
            PowerError::Refused(format!(
                "ipmitool chassis power status on {}: unexpected answer {:?}",
                self.address,
                answer.trim()
            ))
        })
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.chassis_power("on").await.map(|_| ())
    }

    async fn power_off(&self) -> Result<(), PowerError> {
        self.chassis_power("off").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipmitools_status_lines_are_read() {
        assert_eq!(parse_status("Chassis Power is on\n"), Some(PowerState::On));
        assert_eq!(parse_status("Chassis Power is off"), Some(PowerState::Off));
        assert_eq!(parse_status("Chassis Power Control: Up/On"), None);
    }
}
