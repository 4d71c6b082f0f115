//! EC2 error codes in the provider's terms.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use ebbtide_provider::ProviderError;

/// The EC2 error code of a failed call, if EC2 answered with one.
pub(crate) fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<String> {
    e.code().map(str::to_string)
}

/// What an EC2 error code means for the scheduler.
pub fn classify_code(code: &str, message: &str) -> ProviderError {
    let text = format!("{code}: {message}");
    match code {
        "InsufficientInstanceCapacity"
        | "SpotMaxPriceTooLow"
        | "MaxSpotInstanceCountExceeded"
        | "InsufficientCapacity"
        | "Unsupported"
        | "InsufficientHostCapacity" => ProviderError::Capacity(text),
        "InstanceLimitExceeded" | "VcpuLimitExceeded" | "ResourceLimitExceeded" => {
            ProviderError::Quota(text)
        }
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => {
            ProviderError::Throttled(text)
        }
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => {
            ProviderError::Transient(text)
        }
        _ => ProviderError::Permanent(text),
    }
}

/// Maps a failed SDK call: an EC2 error by its code, a 5xx without one as
/// transient, and anything that never reached EC2 (network, timeout) as
/// transient too.
pub(crate) fn classify<E, R>(e: &SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(s) => match s.err().code() {
            Some(c) => classify_code(c, s.err().message().unwrap_or("")),
            None => ProviderError::Transient(format!("{e}")),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ProviderError::Transient(format!("{e}"))
        }
        _ => ProviderError::Permanent(format!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_codes_map_to_the_decision_they_call_for() {
        let kind = |c: &str| classify_code(c, "m").kind();
        assert_eq!(kind("InsufficientInstanceCapacity"), "capacity");
        assert_eq!(kind("SpotMaxPriceTooLow"), "capacity");
        assert_eq!(kind("MaxSpotInstanceCountExceeded"), "capacity");
        assert_eq!(kind("VcpuLimitExceeded"), "quota");
        assert_eq!(kind("RequestLimitExceeded"), "throttled");
        assert_eq!(kind("InternalError"), "transient");
        assert_eq!(kind("InvalidAMIID.Malformed"), "permanent");
        assert_eq!(kind("UnauthorizedOperation"), "permanent");
    }
}
