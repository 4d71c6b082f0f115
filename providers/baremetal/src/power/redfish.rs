//! Redfish: `ComputerSystem.Reset` on the host's BMC. The reset types a
//! system takes differ between vendors (one offers `On` and `ForceOff`,
//! another only `ForceOn` and `GracefulShutdown`), so every action first
//! reads the system's `ResetType@Redfish.AllowableValues` and picks the
//! most graceful one it allows.

use std::time::Duration;

use ebbtide_provider::Secret;
use serde_json::Value;

use super::{PowerControl, PowerError, PowerState};

/// Reset types that switch a host on, preferred first.
const ON: &[&str] = &["On", "ForceOn"];
/// Reset types that switch a host off, most graceful first.
const OFF: &[&str] = &["GracefulShutdown", "ForceOff", "PushPowerButton"];

/// A Redfish BMC.
pub struct Redfish {
    client: reqwest::Client,
    /// `https://bmc.example` (no trailing slash).
    base: String,
    /// The system's path (`/redfish/v1/Systems/1`), or the first member of
    /// `/redfish/v1/Systems` when not given.
    system: Option<String>,
    user: String,
    password: Secret,
}

/// The reset type to send: the first of `preference` the system allows.
/// A system that publishes no list allows every standard type.
pub fn choose_reset<'a>(
    allowed: Option<&[String]>,
    preference: &[&'a str],
) -> Result<&'a str, PowerError> {
    match allowed {
        None => preference
            .first()
            .copied()
            .ok_or_else(|| PowerError::Unsupported("no reset type to send".into())),
        Some(allowed) => preference
            .iter()
            .copied()
            .find(|p| allowed.iter().any(|a| a == p))
            .ok_or_else(|| {
                PowerError::Unsupported(format!(
                    "the system allows reset types {allowed:?}, none of {preference:?}"
                ))
            }),
    }
}

impl Redfish {
    /// A driver for the BMC at `base`; `ca_pem` trusts a BMC's own
    /// certificate authority (BMCs rarely carry publicly trusted ones).
    pub fn new(
        base: &str,
        system: Option<String>,
        user: String,
        password: Secret,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Redfish, PowerError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| PowerError::Unsupported(format!("the CA file: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| PowerError::Unsupported(format!("cannot build the HTTP client: {e}")))?;
        Ok(Redfish {
            client,
            base: base.trim_end_matches('/').to_string(),
            system,
            user,
            password,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, PowerError> {
        let response = request
            .basic_auth(&self.user, Some(self.password.expose()))
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| PowerError::Unreachable(format!("{}: {e}", self.base)))?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Err(PowerError::Refused(format!(
                "{} answered {status}: {}",
                self.base,
                redfish_message(&body)
            )));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|e| PowerError::Refused(format!("{} sent no JSON: {e}", self.base)))
    }

    async fn get(&self, path: &str) -> Result<Value, PowerError> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    async fn system(&self) -> Result<(String, Value), PowerError> {
        let path = match &self.system {
            Some(p) => p.clone(),
            None => self
                .get("/redfish/v1/Systems")
                .await?
                .pointer("/Members/0/@odata.id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| PowerError::Refused(format!("{} lists no system", self.base)))?,
        };
        let system = self.get(&path).await?;
        Ok((path, system))
    }

    async fn reset(&self, preference: &[&str]) -> Result<(), PowerError> {
        let (path, system) = self.system().await?;
        let action = system.pointer("/Actions/#ComputerSystem.Reset");
        let target = action
            .and_then(|a| a.get("target"))
            .and_then(Value::as_str)
            .map_or_else(
                || format!("{path}/Actions/ComputerSystem.Reset"),
                str::to_string,
            );
        let allowed: Option<Vec<String>> = action
            .and_then(|a| a.get("ResetType@Redfish.AllowableValues"))
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            });
        let kind = choose_reset(allowed.as_deref(), preference)?;
        tracing::info!(bmc = %self.base, system = %path, reset = kind, "Redfish reset");
        self.send(
            self.client
                .post(format!("{}{target}", self.base))
                .json(&serde_json::json!({ "ResetType": kind })),
        )
        .await
        .map(|_| ())
    }
}

/// The message of a Redfish error body, else the body itself (cut short).
fn redfish_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/@Message.ExtendedInfo/0/Message")
                .or_else(|| v.pointer("/error/message"))
        })
        .and_then(Value::as_str)
        .map_or_else(
            || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            str::to_string,
        )
}

#[async_trait::async_trait]
impl PowerControl for Redfish {
    fn driver(&self) -> &'static str {
        "redfish"
    }

    async fn state(&self) -> Result<Option<PowerState>, PowerError> {
        let (path, system) = self.system().await?;
        match system.get("PowerState").and_then(Value::as_str) {
            Some("On" | "PoweringOn") => Ok(Some(PowerState::On)),
            Some("Off" | "PoweringOff") => Ok(Some(PowerState::Off)),
            other => Err(PowerError::Refused(format!(
                "{}{path}: PowerState {other:?} is none of On, Off, PoweringOn, PoweringOff",
                self.base
            ))),
        }
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.reset(ON).await
    }

    async fn power_off(&self) -> Result<(), PowerError> {
        self.reset(OFF).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_graceful_allowed_reset_is_chosen() {
        let allowed = vec!["ForceOn".to_string(), "ForceOff".to_string()];
        assert_eq!(choose_reset(Some(&allowed), ON), Ok("ForceOn"));
        assert_eq!(choose_reset(Some(&allowed), OFF), Ok("ForceOff"));
        let graceful = vec![
            "On".to_string(),
            "GracefulShutdown".to_string(),
            "ForceOff".to_string(),
        ];
        assert_eq!(choose_reset(Some(&graceful), OFF), Ok("GracefulShutdown"));
        assert_eq!(choose_reset(None, ON), Ok("On"));
    }

    #[test]
    fn a_system_allowing_nothing_usable_is_named_with_what_it_allows() {
        let allowed = vec!["Nmi".to_string()];
        let e = choose_reset(Some(&allowed), ON).expect_err("refused");
        assert!(e.to_string().contains("Nmi"), "{e}");
    }

    #[test]
    fn an_error_body_gives_its_redfish_message() {
        let body = br#"{"error":{"code":"Base.1.0.GeneralError","message":"general","@Message.ExtendedInfo":[{"Message":"The action is not supported"}]}}"#;
        assert_eq!(redfish_message(body), "The action is not supported");
        assert_eq!(redfish_message(b"plain"), "plain");
    }
}
