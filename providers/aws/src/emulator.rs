//! Starting moto, the local AWS emulator, for this crate's tests and
//! benchmarks and for the scheduler's end-to-end tests: one definition of
//! how it is found (`MOTO_SERVER` or `moto_server` on the PATH), started
//! on a free loopback port and reached with static test credentials.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server; stopped when dropped.
pub struct Moto {
    child: Child,
    /// Its endpoint, e.g. `http://127.0.0.1:40123`.
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto on a free loopback port and waits until it accepts.
pub async fn start() -> Result<Moto, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start {program} (PyPI moto[server,ec2,s3]; put it on PATH or name it in MOTO_SERVER): {e}")
        })?;
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("moto did not start within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(moto)
}

/// Static credentials moto accepts.
pub fn test_credentials() -> (String, String) {
    ("test".into(), "test".into())
}

/// An EC2 client for `endpoint` with static test credentials.
pub async fn ec2_client(endpoint: &str) -> aws_sdk_ec2::Client {
    let shared = crate::sdk_config("us-east-1", Some(endpoint), Some(&test_credentials())).await;
    aws_sdk_ec2::Client::new(&shared)
}

/// The decoded user-data script of `instance`, as an instance would read
/// it from IMDS (tests check what the scheduler put there).
pub async fn user_data(ec2: &aws_sdk_ec2::Client, instance: &str) -> Result<String, String> {
    use base64::Engine as _;
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(instance)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .map_err(|e| format!("DescribeInstanceAttribute {instance}: {e}"))?;
    let data = attr
        .user_data()
        .and_then(|u| u.value())
        .ok_or_else(|| format!("{instance} has no user-data"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("user-data of {instance} is not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("user-data of {instance} is not UTF-8: {e}"))
}
