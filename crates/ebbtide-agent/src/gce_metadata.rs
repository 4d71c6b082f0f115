//! The Compute Engine metadata server, as an agent on a GCE instance sees
//! it: its instance name (which worker of its batch it is), the identity
//! token that proves which instance it is, and the preemption flag.
//!
//! Spot VMs get about 30 s of notice. `instance/preempted` with
//! `wait_for_change=true` is a long poll that answers as soon as the value
//! changes, so the notice reaches the scheduler within a round trip rather
//! than a polling interval; the scheduler then requeues the job and
//! launches a replacement while the VM is still shutting down.

use std::time::Duration;

/// Where the metadata server answers on every GCE instance.
pub const DEFAULT_ENDPOINT: &str = "http://metadata.google.internal";

/// How long one long poll may wait before the server answers with the
/// value unchanged (the agent then asks again).
const LONG_POLL: Duration = Duration::from_secs(60);

/// The metadata server could not be read.
#[derive(Debug, thiserror::Error)]
#[error("GCE metadata {path}: {reason}")]
pub struct MetadataError {
    path: String,
    reason: String,
}

/// A client of the metadata server.
#[derive(Debug, Clone)]
pub struct GceMetadata {
    base: String,
    http: reqwest::Client,
}

impl GceMetadata {
    /// A client for `base` (normally [`DEFAULT_ENDPOINT`]).
    pub fn new(base: impl Into<String>) -> GceMetadata {
        GceMetadata {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(LONG_POLL + Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    fn fail(path: &str, reason: impl std::fmt::Display) -> MetadataError {
        MetadataError {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A value under `computeMetadata/v1/`, with the header the server
    /// requires (it refuses requests without it, against SSRF).
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<String, MetadataError> {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let mut url = format!("{}/computeMetadata/v1/{path}", self.base);
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let r = self
            .http
            .get(url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| Self::fail(path, e))?;
        if !r.status().is_success() {
            return Err(Self::fail(path, r.status()));
        }
        r.text().await.map_err(|e| Self::fail(path, e))
    }

    /// This instance's name.
    pub async fn instance_name(&self) -> Result<String, MetadataError> {
        Ok(self.get("instance/name", &[]).await?.trim().to_string())
    }

    /// An identity token for `audience`, with the Compute Engine claims
    /// (`format=full`).
    pub async fn identity_token(&self, audience: &str) -> Result<String, MetadataError> {
        Ok(self
            .get(
                "instance/service-accounts/default/identity",
                &[("audience", audience), ("format", "full")],
            )
            .await?
            .trim()
            .to_string())
    }

    /// Waits until the instance is marked preempted (or the long poll ends
    /// with it not preempted: `false`).
    pub async fn preempted(&self) -> Result<bool, MetadataError> {
        let timeout = LONG_POLL.as_secs().to_string();
        let v = self
            .get(
                "instance/preempted",
                &[("wait_for_change", "true"), ("timeout_sec", &timeout)],
            )
            .await?;
        Ok(v.trim().eq_ignore_ascii_case("TRUE"))
    }
}

/// `value` percent-encoded for a query string (everything but unreserved
/// characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_stand_in_answers_name_token_and_a_preemption_the_long_poll_sees_at_once() {
        let stand_in =
            crate::gce_metadata_stand_in::start(crate::gce_metadata_stand_in::Instance {
                name: "c-w7".into(),
                identity_token: Some(("ebbtide://c/workers/7".into(), "header.claims.sig".into())),
            })
            .await
            .expect("stand-in");
        let md = GceMetadata::new(stand_in.url());
        assert_eq!(md.instance_name().await.expect("name"), "c-w7");
        assert_eq!(
            md.identity_token("ebbtide://c/workers/7")
                .await
                .expect("token"),
            "header.claims.sig"
        );
        assert!(
            md.identity_token("https://other").await.is_err(),
            "another audience gets no token"
        );
        let waiting = tokio::spawn({
            let md = md.clone();
            async move { md.preempted().await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the long poll waits for a change");
        let at = tokio::time::Instant::now();
        stand_in.preempt();
        assert!(waiting.await.expect("join").expect("preempted"));
        assert!(at.elapsed() < Duration::from_secs(2), "{:?}", at.elapsed());
    }
}
