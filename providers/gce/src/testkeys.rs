//! A stand-in for Google's token signer, for tests: an RSA key, its JSON
//! Web Key Set, and RS256 identity tokens with Compute Engine claims. Only
//! under the `testkit` feature or in this crate's unit tests.

use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;

/// Signs identity tokens with a key of its own.
pub struct TestSigner {
    kid: String,
    key: SigningKey<Sha256>,
    public: rsa::PublicKey,
}

fn enc(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TestSigner {
    /// A new 2048-bit key with key id `kid`.
    pub fn new(kid: &str) -> TestSigner {
        use rsa::Generate;
        let private = rsa::PrivateKey::generate();
        let public = private.to_public_key();
        TestSigner {
            kid: kid.to_string(),
            key: SigningKey::new(private),
            public,
        }
    }

    /// The key set Google would publish with this key in it.
    pub fn jwks(&self) -> String {
        serde_json::json!({"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
            "n": enc(&self.public.n_bytes()), "e": enc(&self.public.e_bytes()),
        }]})
        .to_string()
    }

    /// An RS256 JWT of `claims`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            enc(header.to_string().as_bytes()),
            enc(claims.to_string().as_bytes())
        );
        let signature = self.key.sign(signing_input.as_bytes()).to_bytes();
        format!("{signing_input}.{}", enc(&signature))
    }
}

/// The claims of a Compute Engine identity token (`format=full`).
pub fn claims(
    audience: &str,
    instance_id: u64,
    name: &str,
    zone: &str,
    project: &str,
    exp: u64,
) -> serde_json::Value {
    serde_json::json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": "112233445566778899",
        "sub": "112233445566778899",
        "iat": exp.saturating_sub(3600),
        "exp": exp,
        "google": {"compute_engine": {
            "instance_id": instance_id.to_string(),
            "instance_name": name,
            "zone": zone,
            "project_id": project,
            "project_number": 123456789012_u64,
            "instance_creation_timestamp": 1_700_000_000_u64,
        }},
    })
}
