//! The EC2 instance metadata service, version 2 (session tokens): the
//! agent's launch index (which token of its batch is its own) and the spot
//! interruption notice (`spot/instance-action`), which it reports so the
//! scheduler drains it and launches a replacement before the instance goes.

use std::time::Duration;

/// Where IMDS answers on every EC2 instance.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

/// IMDS could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// The request failed.
    #[error("instance metadata {path}: {reason}")]
    Request {
        /// What was asked.
        path: String,
        /// Why it failed.
        reason: String,
    },
}

/// An IMDSv2 client.
#[derive(Debug, Clone)]
pub struct Imds {
    base: String,
    http: reqwest::Client,
}

impl Imds {
    /// A client for `base` (normally [`DEFAULT_ENDPOINT`]).
    pub fn new(base: impl Into<String>) -> Imds {
        Imds {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
        }
    }

    fn fail(path: &str, reason: impl std::fmt::Display) -> ImdsError {
        ImdsError::Request {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }

    async fn session(&self) -> Result<String, ImdsError> {
        let path = "/latest/api/token";
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
            .send()
            .await
            .map_err(|e| Self::fail(path, e))?;
        if !r.status().is_success() {
            return Err(Self::fail(path, r.status()));
        }
        r.text().await.map_err(|e| Self::fail(path, e))
    }

    /// A metadata value; `None` when IMDS says it does not exist (404).
    pub async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let token = self.session().await?;
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-aws-ec2-metadata-token", token)
            .send()
            .await
            .map_err(|e| Self::fail(path, e))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(Self::fail(path, r.status()));
        }
        r.text().await.map(Some).map_err(|e| Self::fail(path, e))
    }

    /// The instance identity document and its base64 signature, which the
    /// scheduler checks to know which instance is registering.
    pub async fn identity(&self) -> Result<(Vec<u8>, String), ImdsError> {
        let doc_path = "/latest/dynamic/instance-identity/document";
        let sig_path = "/latest/dynamic/instance-identity/signature";
        let document = self
            .get(doc_path)
            .await?
            .ok_or_else(|| Self::fail(doc_path, "missing"))?;
        let signature = self
            .get(sig_path)
            .await?
            .ok_or_else(|| Self::fail(sig_path, "missing"))?;
        Ok((document.into_bytes(), signature))
    }

    /// This instance's index in its launch batch.
    pub async fn launch_index(&self) -> Result<u64, ImdsError> {
        let path = "/latest/meta-data/ami-launch-index";
        self.get(path)
            .await?
            .ok_or_else(|| Self::fail(path, "missing"))?
            .trim()
            .parse()
            .map_err(|e| Self::fail(path, e))
    }

    /// The spot interruption deadline (ms since the epoch), if EC2 has
    /// announced one.
    pub async fn interruption(&self) -> Result<Option<u64>, ImdsError> {
        let path = "/latest/meta-data/spot/instance-action";
        let Some(body) = self.get(path).await? else {
            return Ok(None);
        };
        let notice: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| Self::fail(path, e))?;
        let time = notice["time"]
            .as_str()
            .ok_or_else(|| Self::fail(path, "no time in the notice"))?;
        let at = humantime::parse_rfc3339_weak(time).map_err(|e| Self::fail(path, e))?;
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| Self::fail(path, e))?
            .as_millis();
        Ok(Some(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imds_stand_in::{Metadata, start};

    async fn stand_in(interruption: Option<&str>) -> String {
        start(Metadata {
            launch_index: 3,
            interruption: interruption.map(str::to_string),
            identity: Some(("{\"instanceId\":\"i-1\"}".into(), "c2ln".into())),
        })
        .await
        .expect("stand-in IMDS")
    }

    #[tokio::test]
    async fn the_launch_index_and_identity_are_read_with_a_session_token() {
        let imds = Imds::new(stand_in(None).await);
        assert_eq!(imds.launch_index().await.expect("index"), 3);
        assert_eq!(imds.interruption().await.expect("no notice"), None);
        let (document, signature) = imds.identity().await.expect("identity");
        assert_eq!(document, b"{\"instanceId\":\"i-1\"}".to_vec());
        assert_eq!(signature, "c2ln");
    }

    #[tokio::test]
    async fn a_request_without_a_session_token_is_refused_as_on_ec2() {
        let base = stand_in(None).await;
        let r = reqwest::get(format!("{base}/latest/meta-data/ami-launch-index"))
            .await
            .expect("answer");
        assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_spot_interruption_notice_gives_its_deadline() {
        let imds = Imds::new(
            stand_in(Some(
                r#"{"action": "terminate", "time": "2026-11-28T13:40:00Z"}"#,
            ))
            .await,
        );
        let deadline = imds.interruption().await.expect("notice").expect("some");
        assert_eq!(deadline, 1_795_873_200_000);
    }
}
