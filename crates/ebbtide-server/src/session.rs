//! Session tokens that survive a scheduler restart.
//!
//! A session token is `WORKER.EXPIRES_MS.MAC`, the MAC an HMAC-SHA-256 of
//! the first two fields under a key kept in the data directory (created on
//! first start, readable by the scheduler's user only). Why signed rather
//! than a table: a restarted scheduler must recognise the sessions of the
//! agents that outlived it, so their running jobs continue, and checking a
//! signature needs no store round trip on every reconnect. Whether the
//! worker is still wanted is the control loop's call, not the token's.

use std::io::Write;
use std::path::Path;

use ebbtide_core::{Timestamp, WorkerId};
use hmac::{KeyInit, Mac};
use rand::RngCore;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The key that signs and checks session tokens.
#[derive(Clone)]
pub(crate) struct SessionKey([u8; 64]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// Reads the key from `path`, or creates it (mode 0600) if absent.
    pub(crate) fn load_or_create(path: &Path) -> std::io::Result<SessionKey> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 64] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} must hold exactly 64 bytes (delete it to make a new one; agents then re-register)",
                            path.display()
                        ),
                    )
                })?;
                Ok(SessionKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 64];
                rand::rng().fill_bytes(&mut key);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_owner_only()
                    .open(path)?;
                file.write_all(&key)?;
                file.sync_all()?;
                Ok(SessionKey(key))
            }
            Err(e) => Err(e),
        }
    }

    fn mac(&self, body: &str) -> HmacSha256 {
        // 64 bytes: the hash's block size, HMAC's natural key length.
        let mut mac = HmacSha256::new(&self.0.into());
        mac.update(body.as_bytes());
        mac
    }

    /// A token for `worker`, valid until `expires`.
    pub(crate) fn issue(&self, worker: WorkerId, expires: Timestamp) -> String {
        let body = format!("{}.{}", worker.0, expires.as_millis());
        let tag = self.mac(&body).finalize().into_bytes();
        format!("{body}.{}", hex::encode(tag))
    }

    /// Checks a token presented by `worker` at `now`; the error is the
    /// reason given back to the agent.
    pub(crate) fn verify(
        &self,
        token: &str,
        worker: WorkerId,
        now: Timestamp,
    ) -> Result<(), &'static str> {
        let mut parts = token.splitn(3, '.');
        let (Some(w), Some(exp), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("malformed session token");
        };
        let tag = hex::decode(tag).map_err(|_| "malformed session token")?;
        self.mac(&format!("{w}.{exp}"))
            .verify_slice(&tag)
            .map_err(|_| "session token signature is invalid")?;
        if w.parse::<u64>().ok() != Some(worker.0) {
            return Err("session token belongs to another worker");
        }
        let expires = exp.parse::<u64>().map_err(|_| "malformed session token")?;
        if expires <= now.as_millis() {
            return Err("session token expired");
        }
        Ok(())
    }
}

/// `create_new` with owner-only permissions, so the key is never readable
/// by other local users.
trait OwnerOnly {
    fn mode_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    fn mode_owner_only(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path) -> SessionKey {
        SessionKey::load_or_create(&dir.join("session.key")).expect("key")
    }

    #[test]
    fn a_token_survives_a_restart_that_reloads_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = key(dir.path()).issue(WorkerId(7), Timestamp::from_millis(10_000));
        let again = key(dir.path());
        assert_eq!(
            again.verify(&token, WorkerId(7), Timestamp::from_millis(9_999)),
            Ok(())
        );
    }

    #[test]
    fn forged_expired_and_borrowed_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = key(dir.path());
        let now = Timestamp::from_millis(5_000);
        let token = k.issue(WorkerId(7), Timestamp::from_millis(10_000));
        assert_eq!(
            k.verify(&token, WorkerId(8), now),
            Err("session token belongs to another worker")
        );
        assert_eq!(
            k.verify(&token, WorkerId(7), Timestamp::from_millis(10_000)),
            Err("session token expired")
        );
        let stretched = token.replacen("10000", "99999", 1);
        assert_eq!(
            k.verify(&stretched, WorkerId(7), now),
            Err("session token signature is invalid")
        );
        let other = SessionKey::load_or_create(&dir.path().join("other.key")).expect("key");
        assert_eq!(
            other.verify(&token, WorkerId(7), now),
            Err("session token signature is invalid")
        );
        assert_eq!(
            k.verify("garbage", WorkerId(7), now),
            Err("malformed session token")
        );
    }

    #[test]
    fn the_key_file_is_private_and_a_damaged_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("session.key");
        SessionKey::load_or_create(&path).expect("key");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").expect("write");
        let err = SessionKey::load_or_create(&path).expect_err("damaged key");
        assert!(err.to_string().contains("exactly 64 bytes"), "{err}");
    }
}
