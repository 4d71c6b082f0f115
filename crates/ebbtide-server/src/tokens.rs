//! Unguessable credentials.

use rand::RngCore;

/// 256 random bits from the thread's CSPRNG (ChaCha, seeded from the OS),
/// hex-encoded.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
