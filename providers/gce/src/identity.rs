//! Compute Engine instance identity: which instance is registering.
//!
//! Every instance of a bulk insert has the whole batch's tokens in its
//! metadata (decision 0020), so a token alone proves "an instance of this
//! batch". With Google's signing keys configured
//! (`providers.gce.identity_keys`, the JSON Web Key Set Google publishes
//! for its OAuth2 tokens, saved to a file so verification needs no network),
//! a GCE worker must also present the identity token its metadata server
//! mints (`instance/service-accounts/default/identity?format=full`) for the
//! audience the scheduler expects of that worker. The scheduler checks the
//! RS256 signature, the issuer, the expiry, the audience, the project, and
//! that the token's instance is the one launched for the worker — before
//! the token is redeemed, so a neighbour can neither register as another
//! worker nor burn its token.

use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use rsa::{BoxedUint, PublicKey};

/// Issuers Google writes into identity tokens.
const ISSUERS: &[&str] = &["https://accounts.google.com", "accounts.google.com"];
/// How far the scheduler's clock may be behind Google's.
const CLOCK_SKEW_S: u64 = 60;

/// Why a token was refused or the keys could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The key file is not a JSON Web Key Set of RSA keys.
    #[error(
        "{path}: expected Google's JSON Web Key Set ({{\"keys\": [{{\"kid\", \"n\", \"e\", \"kty\": \"RSA\"}}]}}): {why}"
    )]
    BadKeys {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Not a JWT, or not one Google would mint.
    #[error("instance identity token is malformed: {0}")]
    Malformed(String),
    /// Signed with a key not in the set (or an algorithm other than RS256).
    #[error(
        "instance identity token is signed with key {0:?}, which is not one of Google's configured keys"
    )]
    UnknownKey(String),
    /// The signature does not verify: not Google's, or altered.
    #[error("instance identity token signature does not verify")]
    BadSignature,
    /// Expired, or from another issuer.
    #[error("instance identity token is not valid now: {0}")]
    NotValid(String),
}

/// What a verified identity token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// `aud`: what the token was minted for.
    pub audience: String,
    /// `google.compute_engine.instance_id`.
    pub instance_id: u64,
    /// `google.compute_engine.instance_name`.
    pub instance_name: String,
    /// `google.compute_engine.zone`.
    pub zone: String,
    /// `google.compute_engine.project_id`.
    pub project_id: String,
}

/// Google's token signing keys, by key id.
#[derive(Clone)]
pub struct GoogleKeys {
    keys: Vec<(String, VerifyingKey<Sha256>)>,
}

impl std::fmt::Debug for GoogleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("GoogleKeys").field("kids", &ids).finish()
    }
}

fn b64url(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| e.to_string())
}

impl GoogleKeys {
    /// Reads a JSON Web Key Set (what
    /// `https://www.googleapis.com/oauth2/v3/certs` serves); `path` names
    /// the source in errors.
    pub fn from_jwks(json: &str, path: &str) -> Result<GoogleKeys, IdentityError> {
        let bad = |why: String| IdentityError::BadKeys {
            path: path.to_string(),
            why,
        };
        let set: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let list = set
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| bad("no \"keys\" array".into()))?;
        let mut keys = Vec::new();
        for (i, k) in list.iter().enumerate() {
            let field = |name: &str| {
                k.get(name)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| bad(format!("keys[{i}] has no {name:?}")))
            };
            if field("kty")? != "RSA" {
                return Err(bad(format!("keys[{i}] is not an RSA key")));
            }
            let n = b64url(field("n")?).map_err(|e| bad(format!("keys[{i}].n: {e}")))?;
            let e = b64url(field("e")?).map_err(|e| bad(format!("keys[{i}].e: {e}")))?;
            let key = PublicKey::new(
                BoxedUint::from_be_slice_vartime(&n),
                BoxedUint::from_be_slice_vartime(&e),
            )
            .map_err(|e| bad(format!("keys[{i}]: {e}")))?;
            keys.push((field("kid")?.to_string(), VerifyingKey::new(key)));
        }
        if keys.is_empty() {
            return Err(bad("the set has no keys".into()));
        }
        Ok(GoogleKeys { keys })
    }

    /// Verifies `token` at `now_unix` (seconds) and returns what it says.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<VerifiedIdentity, IdentityError> {
        let malformed = |why: &str| IdentityError::Malformed(why.to_string());
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated parts"));
        };
        let header: serde_json::Value =
            serde_json::from_slice(&b64url(h).map_err(|e| malformed(&e))?)
                .map_err(|e| malformed(&e.to_string()))?;
        let kid = header
            .get("kid")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if header.get("alg").and_then(|v| v.as_str()) != Some("RS256") {
            return Err(IdentityError::UnknownKey(format!(
                "{kid} (alg is not RS256)"
            )));
        }
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, key)| key)
            .ok_or_else(|| IdentityError::UnknownKey(kid.to_string()))?;
        let raw = b64url(s).map_err(|e| malformed(&e))?;
        let signature = Signature::try_from(raw.as_slice()).map_err(|_| malformed("signature"))?;
        key.verify(format!("{h}.{p}").as_bytes(), &signature)
            .map_err(|_| IdentityError::BadSignature)?;
        let claims: serde_json::Value =
            serde_json::from_slice(&b64url(p).map_err(|e| malformed(&e))?)
                .map_err(|e| malformed(&e.to_string()))?;
        let iss = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if !ISSUERS.contains(&iss) {
            return Err(IdentityError::NotValid(format!(
                "issued by {iss:?}, not Google"
            )));
        }
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| malformed("no exp"))?;
        if exp + CLOCK_SKEW_S < now_unix {
            return Err(IdentityError::NotValid(format!(
                "expired {} s ago",
                now_unix - exp
            )));
        }
        let gce = claims.pointer("/google/compute_engine").ok_or_else(|| {
            malformed("no google.compute_engine claims (request it with format=full)")
        })?;
        let text = |name: &str| {
            gce.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| IdentityError::Malformed(format!("no google.compute_engine.{name}")))
        };
        Ok(VerifiedIdentity {
            audience: claims
                .get("aud")
                .and_then(|v| v.as_str())
                .ok_or_else(|| malformed("no aud"))?
                .to_string(),
            instance_id: text("instance_id")?
                .parse()
                .map_err(|_| malformed("google.compute_engine.instance_id is not a number"))?,
            instance_name: text("instance_name")?,
            zone: text("zone")?,
            project_id: text("project_id")?,
        })
    }
}

/// The audience the scheduler expects a worker's identity token to be
/// minted for ([`ebbtide_proto::gce::identity_audience`], which the agent
/// computes from its instance name too).
pub fn audience(cluster: &str, worker: ebbtide_core::WorkerId) -> String {
    ebbtide_proto::gce::identity_audience(cluster, worker.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys::{TestSigner, claims};

    #[test]
    fn a_token_google_signed_verifies_and_names_its_instance() {
        let signer = TestSigner::new("k1");
        let keys = GoogleKeys::from_jwks(&signer.jwks(), "keys.json").expect("keys");
        let token = signer.sign(&claims(
            "ebbtide://c/workers/7",
            4242,
            "c-w7",
            "us-central1-a",
            "p",
            2_000_000_000,
        ));
        let got = keys.verify(&token, 1_999_999_000).expect("valid");
        assert_eq!(got.instance_id, 4242);
        assert_eq!(got.instance_name, "c-w7");
        assert_eq!(got.zone, "us-central1-a");
        assert_eq!(got.audience, audience("c", ebbtide_core::WorkerId(7)));
    }

    #[test]
    fn forged_altered_expired_and_foreign_tokens_are_refused() {
        let signer = TestSigner::new("k1");
        let stranger = TestSigner::new("k1");
        let keys = GoogleKeys::from_jwks(&signer.jwks(), "keys.json").expect("keys");
        let c = claims("a", 1, "n", "z", "p", 2_000_000_000);
        assert_eq!(
            keys.verify(&stranger.sign(&c), 0),
            Err(IdentityError::BadSignature)
        );
        let token = signer.sign(&c);
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let forged = claims("a", 2, "n", "z", "p", 2_000_000_000);
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
        assert_eq!(
            keys.verify(&parts.join("."), 0),
            Err(IdentityError::BadSignature)
        );
        assert!(matches!(
            keys.verify(&token, 2_000_000_100),
            Err(IdentityError::NotValid(_))
        ));
        let other_key = TestSigner::new("k2");
        assert_eq!(
            keys.verify(&other_key.sign(&c), 0),
            Err(IdentityError::UnknownKey("k2".into()))
        );
        assert!(matches!(
            keys.verify("a.b", 0),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn a_key_file_that_is_not_a_key_set_names_the_file_and_what_is_expected() {
        let e = GoogleKeys::from_jwks("{}", "/etc/ebbtide/google.json").expect_err("no keys");
        let text = e.to_string();
        assert!(
            text.contains("/etc/ebbtide/google.json") && text.contains("JSON Web Key Set"),
            "{text}"
        );
    }
}
