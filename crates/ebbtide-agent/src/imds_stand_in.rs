//! A stand-in for the EC2 instance metadata service, for tests: IMDSv2
//! session tokens (requests without one are refused, as on EC2), the launch
//! index, an optional spot interruption notice and an optional signed
//! identity document. The agent's own tests and the scheduler's AWS end to
//! end "boot" instances with it.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the stand-in serves.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// `/latest/meta-data/ami-launch-index`.
    pub launch_index: u64,
    /// `/latest/meta-data/spot/instance-action` (404 when `None`).
    pub interruption: Option<String>,
    /// The identity document and its base64 signature (404 when `None`).
    pub identity: Option<(String, String)>,
}

const SESSION: &str = "stand-in-session";

/// Serves `meta` on a loopback port; returns its base URL.
pub async fn start(meta: Metadata) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
            let found = |body: Option<String>| {
                body.map_or(("404 Not Found", String::new()), |b| ("200 OK", b))
            };
            let (status, body) = if req.starts_with("put /latest/api/token") {
                ("200 OK", SESSION.to_string())
            } else if !req.contains(&format!("x-aws-ec2-metadata-token: {SESSION}")) {
                ("401 Unauthorized", String::new())
            } else if req.starts_with("get /latest/meta-data/ami-launch-index") {
                ("200 OK", meta.launch_index.to_string())
            } else if req.starts_with("get /latest/meta-data/spot/instance-action") {
                found(meta.interruption.clone())
            } else if req.starts_with("get /latest/dynamic/instance-identity/document") {
                found(meta.identity.as_ref().map(|i| i.0.clone()))
            } else if req.starts_with("get /latest/dynamic/instance-identity/signature") {
                found(meta.identity.as_ref().map(|i| i.1.clone()))
            } else {
                ("404 Not Found", String::new())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    Ok(format!("http://{addr}"))
}
