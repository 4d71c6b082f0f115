//! A stand-in for the Compute Engine metadata server, for tests: the
//! instance name, an identity token for one audience, and
//! `instance/preempted` with `wait_for_change` (a long poll that answers
//! when the test preempts the instance). Requests without
//! `Metadata-Flavor: Google` are refused, as by the real server.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What the stand-in serves.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    /// `instance/name`.
    pub name: String,
    /// The token served for one audience: `(audience, token)`; other
    /// audiences get a 400.
    pub identity_token: Option<(String, String)>,
}

/// A running stand-in.
pub struct StandIn {
    url: String,
    preempted: Arc<watch::Sender<bool>>,
}

impl StandIn {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Marks the instance preempted: a waiting long poll answers `TRUE`.
    pub fn preempt(&self) {
        self.preempted.send_replace(true);
    }
}

fn query_value(target: &str, key: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves `instance` on a loopback port.
pub async fn start(instance: Instance) -> std::io::Result<StandIn> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let instance = instance.clone();
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let path = target.split('?').next().unwrap_or("").to_string();
                let flavored = req.to_lowercase().contains("metadata-flavor: google");
                let (status, body) = if !flavored {
                    ("403 Forbidden", String::new())
                } else if path == "/computeMetadata/v1/instance/name" {
                    ("200 OK", instance.name.clone())
                } else if path == "/computeMetadata/v1/instance/service-accounts/default/identity" {
                    let asked = query_value(&target, "audience");
                    match &instance.identity_token {
                        Some((aud, token)) if asked.as_deref() == Some(aud.as_str()) => {
                            ("200 OK", token.clone())
                        }
                        _ => (
                            "400 Bad Request",
                            "non-empty audience parameter required".into(),
                        ),
                    }
                } else if path == "/computeMetadata/v1/instance/preempted" {
                    if query_value(&target, "wait_for_change").as_deref() == Some("true")
                        && !*rx.borrow()
                    {
                        let _ = rx.changed().await;
                    }
                    let v = if *rx.borrow() { "TRUE" } else { "FALSE" };
                    ("200 OK", v.to_string())
                } else {
                    ("404 Not Found", String::new())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nmetadata-flavor: Google\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(StandIn {
        url: format!("http://{addr}"),
        preempted: Arc::new(tx),
    })
}
