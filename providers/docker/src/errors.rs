//! Docker engine errors in the provider's terms.

use ebbtide_provider::ProviderError;

/// The HTTP status of an error the engine answered, if it answered.
pub(crate) fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Maps an engine error to what the scheduler should do about it: 429 is
/// throttling, 5xx and transport failures are transient, the engine
/// refusing the request (bad image, limits it cannot honour) is permanent.
pub fn classify(e: &bollard::errors::Error) -> ProviderError {
    match status(e) {
        Some(429) => ProviderError::Throttled(e.to_string()),
        Some(s) if s >= 500 => ProviderError::Transient(e.to_string()),
        Some(_) => ProviderError::Permanent(e.to_string()),
        None => ProviderError::Transient(e.to_string()),
    }
}
