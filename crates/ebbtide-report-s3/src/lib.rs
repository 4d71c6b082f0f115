//! # ebbtide-report-s3
//!
//! Cost reports to S3: the sink the report publisher uploads through. A
//! crate of its own so that neither the EC2 provider compiles the report
//! writer (SQLite, Parquet) nor the report writer an EC2 client.
//!
//! One `PutObject` per report file, to a key the publisher derives from the
//! day, so re-sending a day overwrites it. The SDK's retries are off: the
//! publisher retries what this sink marks retryable — throttling, server
//! errors and network failures — and leaves a day due (kept in the local
//! spool) when S3 stays unreachable. Credentials come from the standard
//! chain (environment, profile, instance role).

#[cfg(feature = "testkit")]
pub mod testkit;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use ebbtide_cost_report::{ReportSink, SinkError};

/// Where reports go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3SinkConfig {
    /// The bucket.
    pub bucket: String,
    /// The bucket's region.
    pub region: String,
    /// Endpoint override, for an emulator in tests only.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which S3-compatible
    /// stores and emulators need.
    pub path_style: bool,
    /// Static credentials, for an emulator in tests only.
    #[cfg(feature = "testkit")]
    pub test_credentials: Option<(String, String)>,
}

impl S3SinkConfig {
    /// The sink `[cost_reports.s3]` describes.
    pub fn from_settings(s3: &ebbtide_config::S3ReportSettings) -> S3SinkConfig {
        S3SinkConfig {
            bucket: s3.bucket.clone(),
            region: s3.region.clone(),
            endpoint: s3.endpoint.clone(),
            path_style: s3.path_style,
            #[cfg(feature = "testkit")]
            test_credentials: None,
        }
    }
}

/// Uploads reports to one bucket.
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Sink {
    /// A sink using the standard credential chain.
    pub async fn new(config: &S3SinkConfig) -> S3Sink {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()))
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        #[cfg(feature = "testkit")]
        if let Some((key, secret)) = &config.test_credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                key,
                secret,
                None,
                None,
                "ebbtide-test",
            ));
        }
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .build();
        S3Sink {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: config.bucket.clone(),
        }
    }
}

/// Whether an S3 failure may pass: throttling (429, 503 Slow Down), server
/// errors and failures to reach S3 at all. Access and missing-bucket
/// errors need an operator.
fn retryable<E>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            status == 429 || status >= 500
        }
        _ => false,
    }
}

#[async_trait::async_trait]
impl ReportSink for S3Sink {
    fn location(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), SinkError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| SinkError {
                retryable: retryable(&e),
                message: format!(
                    "PutObject s3://{}/{key}: {}",
                    self.bucket,
                    DisplayErrorContext(&e)
                ),
            })
    }
}
