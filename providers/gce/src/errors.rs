//! Compute Engine's failures in the provider's terms.
//!
//! Two places report them. A call itself fails with an HTTP status and a
//! JSON body (`{"error": {"code", "message", "errors": [{"reason"}]}}`):
//! 429 and 403 `rateLimitExceeded` mean the per-project budget (refilled
//! each minute) is spent, 5xx is transient, 400 is a request Compute Engine
//! will never take — its message names the field. An operation that
//! finished (`DONE`) with `error.errors[]` failed after it was accepted:
//! stockouts and quotas are reported there, by code.

use ebbtide_provider::ProviderError;

/// Codes of an operation error that mean the zone has no capacity of that
/// kind now (another zone or later may have).
const STOCKOUT_CODES: &[&str] = &[
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "RESOURCE_POOL_EXHAUSTED",
    "REGION_RESOURCE_POOL_EXHAUSTED",
];

/// Codes of an operation error that mean a project or region quota is
/// used up: no other zone helps, only an operator raising it.
const QUOTA_CODES: &[&str] = &["QUOTA_EXCEEDED", "QUOTA_LIMIT_EXCEEDED"];

/// Reasons in a call's error body that mean we are calling too fast.
const THROTTLE_REASONS: &[&str] = &[
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "RATE_LIMIT_EXCEEDED",
];

/// One entry of an operation's `error.errors[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationError {
    /// The code (`ZONE_RESOURCE_POOL_EXHAUSTED`, `QUOTA_EXCEEDED`, …).
    pub code: String,
    /// The zone or region it concerns, where Compute Engine says.
    pub location: Option<String>,
    /// What Compute Engine said.
    pub message: String,
}

impl OperationError {
    /// Whether this is a stockout (try another zone, later this one).
    pub fn is_stockout(&self) -> bool {
        STOCKOUT_CODES.contains(&self.code.as_str())
    }
}

/// What a failed operation means for the engine: a stockout anywhere in
/// it is a capacity error (the caller closes the zones and tries others),
/// a quota is a quota, a rate limit is throttling, an internal error is
/// transient, anything else permanent.
pub fn classify_operation(errors: &[OperationError]) -> ProviderError {
    let text = errors
        .iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    let has = |codes: &[&str]| errors.iter().any(|e| codes.contains(&e.code.as_str()));
    if has(QUOTA_CODES) {
        ProviderError::Quota(text)
    } else if has(STOCKOUT_CODES) {
        ProviderError::Capacity(text)
    } else if has(&["RATE_LIMIT_EXCEEDED"]) {
        ProviderError::Throttled(text)
    } else if has(&["INTERNAL_ERROR", "SERVICE_UNAVAILABLE", "BACKEND_ERROR"]) {
        ProviderError::Transient(text)
    } else {
        ProviderError::Permanent(text)
    }
}

/// What a failed call's HTTP status, message and error reasons (the
/// body's `errors[].reason`, which the client turns into `ErrorInfo`
/// details) mean.
pub fn classify_http(status: u16, message: &str, reasons: &[&str]) -> ProviderError {
    let text = format!("HTTP {status}: {message}");
    let reason_is = |set: &[&str]| reasons.iter().any(|r| set.contains(r));
    match status {
        429 => ProviderError::Throttled(text),
        403 if reason_is(THROTTLE_REASONS) => ProviderError::Throttled(text),
        403 if reason_is(&["quotaExceeded"]) => ProviderError::Quota(text),
        500..=599 => ProviderError::Transient(text),
        _ => ProviderError::Permanent(text),
    }
}

/// What a failed client call means: an HTTP answer by its status and
/// error reasons, a call that never got one (connection, timeout, I/O) as
/// transient, credentials that cannot be had as permanent.
pub fn classify(e: &google_cloud_gax::error::Error) -> ProviderError {
    use google_cloud_gax::error::rpc::StatusDetails;
    if let Some(status) = e.http_status_code() {
        if let Some(s) = e.status() {
            let reasons: Vec<&str> = s
                .details
                .iter()
                .filter_map(|d| match d {
                    StatusDetails::ErrorInfo(info) => Some(info.reason.as_str()),
                    _ => None,
                })
                .collect();
            return classify_http(status, &s.message, &reasons);
        }
        // A body that is not Compute Engine's error shape (a proxy's page).
        let body = e
            .http_payload()
            .map(|b| {
                String::from_utf8_lossy(b)
                    .chars()
                    .take(300)
                    .collect::<String>()
            })
            .unwrap_or_default();
        return classify_http(status, &body, &[]);
    }
    if e.is_timeout() || e.is_io() || e.is_connect() || e.is_transport() {
        return ProviderError::Transient(e.to_string());
    }
    ProviderError::Permanent(e.to_string())
}

/// Whether a failed call is a 404 (what a delete of an instance already
/// gone answers).
pub fn is_not_found(e: &google_cloud_gax::error::Error) -> bool {
    e.http_status_code() == Some(404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(code: &str) -> OperationError {
        OperationError {
            code: code.into(),
            location: Some("zones/us-east1-b".into()),
            message: "m".into(),
        }
    }

    #[test]
    fn operation_codes_map_to_the_decision_they_call_for() {
        let kind = |c: &str| classify_operation(&[op(c)]).kind();
        assert_eq!(kind("ZONE_RESOURCE_POOL_EXHAUSTED"), "capacity");
        assert_eq!(
            kind("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"),
            "capacity"
        );
        assert_eq!(kind("QUOTA_EXCEEDED"), "quota");
        assert_eq!(kind("INTERNAL_ERROR"), "transient");
        assert_eq!(kind("INVALID_FIELD_VALUE"), "permanent");
        assert_eq!(
            classify_operation(&[op("ZONE_RESOURCE_POOL_EXHAUSTED"), op("QUOTA_EXCEEDED")]).kind(),
            "quota",
            "a quota is not solved by another zone"
        );
        assert!(op("ZONE_RESOURCE_POOL_EXHAUSTED").is_stockout());
        assert!(!op("QUOTA_EXCEEDED").is_stockout());
    }

    #[test]
    fn http_answers_map_by_status_and_reason() {
        let kind = |status: u16, reason: &str| classify_http(status, "m", &[reason]).kind();
        assert_eq!(classify_http(429, "", &[]).kind(), "throttled");
        assert_eq!(kind(403, "rateLimitExceeded"), "throttled");
        assert_eq!(kind(403, "userRateLimitExceeded"), "throttled");
        assert_eq!(kind(403, "quotaExceeded"), "quota");
        assert_eq!(kind(403, "forbidden"), "permanent");
        assert_eq!(kind(503, "backendError"), "transient");
        let e = classify_http(
            400,
            "Invalid value for field 'resource.machineType': 'n9'.",
            &["invalid"],
        );
        assert_eq!(e.kind(), "permanent");
        assert!(e.to_string().contains("resource.machineType"), "{e}");
    }
}
