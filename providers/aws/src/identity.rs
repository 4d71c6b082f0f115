//! EC2 instance identity: which instance is registering.
//!
//! All instances of one `RunInstances` call share their user-data, so each
//! can read the whole batch's bootstrap tokens (decision 0010). A token
//! alone therefore proves "an instance of this batch", not "the instance
//! launched for this worker". When the operator gives the scheduler AWS's
//! public certificate for the region (`providers.aws.identity_certificate`),
//! a worker of an AWS pool must also present its instance identity
//! document with the RSA-SHA256 signature IMDS serves beside it; the
//! scheduler verifies the signature and that the document's `instanceId` is
//! the instance it launched for that worker, before the token is redeemed —
//! so a neighbour can neither register as another worker nor burn its
//! token.

use base64::Engine as _;
use rsa::PublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use x509_cert::der::{DecodePem, Encode};

/// Why an identity was refused or a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The key file holds neither a PEM certificate nor a PEM public key.
    #[error("{path}: expected a PEM CERTIFICATE or PUBLIC KEY holding an RSA key ({why})")]
    BadKey {
        /// The file.
        path: String,
        /// The parser's complaint.
        why: String,
    },
    /// The signature is not base64 or not an RSA signature.
    #[error("instance identity signature is malformed")]
    MalformedSignature,
    /// The signature does not verify: not signed by AWS, or altered.
    #[error("instance identity signature does not verify")]
    BadSignature,
    /// The document is not the JSON IMDS serves.
    #[error("instance identity document is not valid: {0}")]
    BadDocument(String),
}

/// The facts of a verified identity document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedInstance {
    /// `i-…`.
    pub instance_id: String,
    /// The instance's region.
    pub region: String,
}

/// Verifies identity documents with one region's AWS public key.
#[derive(Clone)]
pub struct IdentityVerifier {
    key: VerifyingKey<Sha256>,
}

impl IdentityVerifier {
    /// Loads the key from PEM text (`CERTIFICATE` as AWS publishes it, or
    /// `PUBLIC KEY`); `path` names the source in errors.
    pub fn from_pem(pem: &str, path: &str) -> Result<IdentityVerifier, IdentityError> {
        let bad = |why: String| IdentityError::BadKey {
            path: path.to_string(),
            why,
        };
        let key = if pem.contains("BEGIN CERTIFICATE") {
            let cert = x509_cert::Certificate::from_pem(pem).map_err(|e| bad(e.to_string()))?;
            let der = cert
                .tbs_certificate()
                .subject_public_key_info()
                .to_der()
                .map_err(|e| bad(e.to_string()))?;
            PublicKey::from_public_key_der(&der).map_err(|e| bad(e.to_string()))?
        } else {
            PublicKey::from_public_key_pem(pem).map_err(|e| bad(e.to_string()))?
        };
        Ok(IdentityVerifier {
            key: VerifyingKey::new(key),
        })
    }

    /// Checks `signature` (base64, as IMDS serves it) over `document` and
    /// returns what the document says.
    pub fn verify(
        &self,
        document: &[u8],
        signature: &str,
    ) -> Result<VerifiedInstance, IdentityError> {
        let compact: String = signature.split_whitespace().collect();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| IdentityError::MalformedSignature)?;
        let signature =
            Signature::try_from(raw.as_slice()).map_err(|_| IdentityError::MalformedSignature)?;
        self.key
            .verify(document, &signature)
            .map_err(|_| IdentityError::BadSignature)?;
        let doc: serde_json::Value = serde_json::from_slice(document)
            .map_err(|e| IdentityError::BadDocument(e.to_string()))?;
        let field = |name: &str| {
            doc.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| IdentityError::BadDocument(format!("no {name}")))
        };
        Ok(VerifiedInstance {
            instance_id: field("instanceId")?,
            region: field("region")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::signature::{SignatureEncoding, Signer};

    fn keys() -> (SigningKey<Sha256>, String) {
        use rsa::Generate;
        let private = rsa::PrivateKey::generate();
        let pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        (SigningKey::new(private), pem)
    }

    const DOC: &str = r#"{"accountId":"123456789012","instanceId":"i-0abc","region":"us-east-1","imageId":"ami-1"}"#;

    fn sign(key: &SigningKey<Sha256>, doc: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(key.sign(doc.as_bytes()).to_bytes())
    }

    #[test]
    fn a_signed_document_verifies_and_names_its_instance() {
        let (signer, pem) = keys();
        let verifier = IdentityVerifier::from_pem(&pem, "test.pem").expect("key");
        let got = verifier
            .verify(DOC.as_bytes(), &sign(&signer, DOC))
            .expect("valid");
        assert_eq!(got.instance_id, "i-0abc");
        assert_eq!(got.region, "us-east-1");
    }

    #[test]
    fn an_altered_document_or_a_foreign_signature_is_refused() {
        let (signer, pem) = keys();
        let (stranger, _) = keys();
        let verifier = IdentityVerifier::from_pem(&pem, "test.pem").expect("key");
        let forged = DOC.replace("i-0abc", "i-0def");
        assert_eq!(
            verifier.verify(forged.as_bytes(), &sign(&signer, DOC)),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            verifier.verify(DOC.as_bytes(), &sign(&stranger, DOC)),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            verifier.verify(DOC.as_bytes(), "not base64!"),
            Err(IdentityError::MalformedSignature)
        );
    }

    #[test]
    fn a_key_file_that_is_not_pem_names_the_file_and_what_is_expected() {
        let err = IdentityVerifier::from_pem("hello", "/etc/ebbtide/aws.pem")
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("/etc/ebbtide/aws.pem") && text.contains("PEM CERTIFICATE"),
            "{text}"
        );
    }
}
