//! One SSH connection to one owned host.
//!
//! Why these rules:
//! - **Pinned host keys.** A worker host receives bootstrap tokens; a
//!   man in the middle that answered as the host would receive them too.
//!   Every host has its key pinned in the inventory (a `known_hosts` line)
//!   and a connection to a host presenting any other key is refused with
//!   an error naming the host and both fingerprints. There is no
//!   trust-on-first-use.
//! - **Secrets on stdin.** A command's input travels on the channel, never
//!   in its arguments, which every user of the host can read in `ps`.
//! - **Read until Close.** The server's `Eof`, `ExitStatus` and `Close`
//!   arrive in any order (OpenSSH often sends the exit status after EOF);
//!   only `Close` ends a command, so no output or status is lost.
//! - **Bounded.** A command's output is kept up to [`MAX_OUTPUT`] bytes per
//!   stream; beyond that it is counted, not stored.
//! - **Alive.** TCP keepalive and SSH keepalives detect a host that went
//!   away (a cut link) instead of waiting on it forever.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};

/// Output kept per stream of one command.
pub const MAX_OUTPUT: usize = 1 << 20;
/// SSH keepalive period on a session.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Unanswered keepalives before the session counts as dead.
const KEEPALIVE_MAX: usize = 3;

/// Why an SSH operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The TCP connection or the SSH handshake failed.
    #[error("host {host} ({address}): cannot connect: {reason}")]
    Connect {
        /// The host's inventory name.
        host: String,
        /// Where it was dialled.
        address: String,
        /// Why.
        reason: String,
    },
    /// The host presented a key other than the pinned one.
    #[error(
        "host {host}: its SSH host key {presented} is not the pinned {expected}; refusing to connect (a changed key is a reinstalled host or someone in between: re-pin it only after checking)"
    )]
    HostKeyMismatch {
        /// The host's inventory name.
        host: String,
        /// Fingerprint of the pinned key.
        expected: String,
        /// Fingerprint of the key it presented.
        presented: String,
    },
    /// The host refused our key.
    #[error("host {host}: user {user} was refused with the configured key")]
    Auth {
        /// The host's inventory name.
        host: String,
        /// The user.
        user: String,
    },
    /// Something did not finish in time.
    #[error("host {host}: {what} did not finish within {after:?}")]
    Timeout {
        /// The host's inventory name.
        host: String,
        /// What was waited for.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// The session or channel failed.
    #[error("host {host}: {reason}")]
    Session {
        /// The host's inventory name.
        host: String,
        /// Why.
        reason: String,
    },
    /// A pinned host key or a private key could not be read.
    #[error("{what}: {reason}")]
    BadKey {
        /// Which setting or file.
        what: String,
        /// Why.
        reason: String,
    },
}

/// A host key as pinned: one `known_hosts` line (`[host]:port ssh-ed25519
/// AAAA… comment`, the host patterns optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedKey(PublicKey);

impl PinnedKey {
    /// Parses a `known_hosts` line or a bare `ALGORITHM BASE64` key; `what`
    /// names the setting in the error.
    pub fn parse(line: &str, what: &str) -> Result<PinnedKey, SshError> {
        let bad = |reason: String| SshError::BadKey {
            what: what.to_string(),
            reason,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = fields
            .iter()
            .position(|f| f.starts_with("ssh-") || f.starts_with("ecdsa-") || f.starts_with("sk-"))
            .ok_or_else(|| {
                bad("expected a known_hosts line: [HOSTS] ALGORITHM BASE64-KEY [COMMENT]".into())
            })?;
        let base64 = fields
            .get(at + 1)
            .ok_or_else(|| bad(format!("no key after the algorithm {}", fields[at])))?;
        let key = russh::keys::parse_public_key_base64(base64).map_err(|e| bad(e.to_string()))?;
        if key.algorithm().as_str() != fields[at] {
            return Err(bad(format!(
                "the line says {} but the key is {}",
                fields[at],
                key.algorithm().as_str()
            )));
        }
        Ok(PinnedKey(key))
    }

    /// Its SHA-256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint(HashAlg::Sha256).to_string()
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct SshTarget {
    /// The host's inventory name (for messages).
    pub name: String,
    /// Address or DNS name.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// The private key.
    pub key: Arc<PrivateKey>,
    /// The host's pinned key.
    pub host_key: PinnedKey,
}

impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTarget")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("host_key", &self.host_key.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Reads an OpenSSH private key file (unencrypted: the scheduler runs
/// unattended); `what` names the setting in the error.
pub fn load_private_key(path: &std::path::Path, what: &str) -> Result<Arc<PrivateKey>, SshError> {
    russh::keys::load_secret_key(path, None)
        .map(Arc::new)
        .map_err(|e| SshError::BadKey {
            what: format!("{what} ({})", path.display()),
            reason: e.to_string(),
        })
}

/// What one command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its exit status (`None` when it died of a signal or the server sent
    /// none).
    pub exit_status: Option<u32>,
    /// Its standard output, up to [`MAX_OUTPUT`] bytes.
    pub stdout: Vec<u8>,
    /// Its standard error, up to [`MAX_OUTPUT`] bytes.
    pub stderr: Vec<u8>,
    /// Bytes it wrote beyond what was kept.
    pub dropped: u64,
}

impl ExecOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }
}

/// Accepts exactly the pinned key and remembers what was presented, so a
/// refusal can name it.
struct Pinned {
    expected: PublicKey,
    presented: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    /// A host certificate is judged by the key it certifies: the pin is
    /// the trust, not a CA.
    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let presented = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data().clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone(),
        };
        let matches = &presented == self.expected.key_data();
        if !matches && let Ok(mut seen) = self.presented.lock() {
            *seen = Some(
                PublicKey::from(presented)
                    .fingerprint(HashAlg::Sha256)
                    .to_string(),
            );
        }
        Ok(matches)
    }
}

/// An authenticated session with one host.
pub struct SshSession {
    host: String,
    handle: client::Handle<Pinned>,
}

impl SshSession {
    /// Connects to `target`, checks its host key, and authenticates, all
    /// within `timeout`.
    pub async fn connect(target: &SshTarget, timeout: Duration) -> Result<SshSession, SshError> {
        let address = format!("{}:{}", target.address, target.port);
        let connect_error = |reason: String| SshError::Connect {
            host: target.name.clone(),
            address: address.clone(),
            reason,
        };
        let presented = Arc::new(Mutex::new(None));
        let handler = Pinned {
            expected: target.host_key.0.clone(),
            presented: presented.clone(),
        };
        let config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: KEEPALIVE_MAX,
            nodelay: true,
            ..client::Config::default()
        });
        let handshake = async {
            let stream = tokio::net::TcpStream::connect(&address)
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE)
                .with_interval(KEEPALIVE);
            socket2::SockRef::from(&stream)
                .set_tcp_keepalive(&keepalive)
                .map_err(|e| connect_error(format!("TCP keepalive: {e}")))?;
            let outcome = client::connect_stream(config, stream, handler).await;
            let mut handle = match outcome {
                Ok(h) => h,
                Err(e) => {
                    let seen = presented.lock().ok().and_then(|s| s.clone());
                    return Err(match seen {
                        Some(presented) => SshError::HostKeyMismatch {
                            host: target.name.clone(),
                            expected: target.host_key.fingerprint(),
                            presented,
                        },
                        None => connect_error(e.to_string()),
                    });
                }
            };
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten();
            let auth = handle
                .authenticate_publickey(
                    &target.user,
                    PrivateKeyWithHashAlg::new(target.key.clone(), hash),
                )
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            if !auth.success() {
                return Err(SshError::Auth {
                    host: target.name.clone(),
                    user: target.user.clone(),
                });
            }
            Ok(SshSession {
                host: target.name.clone(),
                handle,
            })
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| SshError::Timeout {
                host: target.name.clone(),
                what: format!("connecting to {address}"),
                after: timeout,
            })?
    }

    /// Runs `command` through the login shell, writes `stdin` to it and
    /// closes its input, and collects its output and exit status until the
    /// channel closes, within `timeout`.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecOutput, SshError> {
        let session_error = |reason: String| SshError::Session {
            host: self.host.clone(),
            reason,
        };
        let run = async {
            let mut channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| session_error(format!("cannot open a channel: {e}")))?;
            channel
                .exec(true, command)
                .await
                .map_err(|e| session_error(format!("cannot start the command: {e}")))?;
            if let Some(input) = stdin {
                channel
                    .data(input)
                    .await
                    .map_err(|e| session_error(format!("cannot send the command's input: {e}")))?;
            }
            channel
                .eof()
                .await
                .map_err(|e| session_error(format!("cannot close the command's input: {e}")))?;
            let mut out = ExecOutput::default();
            let keep = |buf: &mut Vec<u8>, data: &[u8], dropped: &mut u64| {
                let room = MAX_OUTPUT.saturating_sub(buf.len());
                let take = room.min(data.len());
                buf.extend_from_slice(&data[..take]);
                *dropped += (data.len() - take) as u64;
            };
            // Only Close ends it: Eof and ExitStatus come in any order.
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => keep(&mut out.stdout, &data, &mut out.dropped),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        keep(&mut out.stderr, &data, &mut out.dropped)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            Ok(out)
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| SshError::Timeout {
                host: self.host.clone(),
                what: format!("command {:?}", command.chars().take(60).collect::<String>()),
                after: timeout,
            })?
    }

    /// Ends the session politely.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHF5hzEGmYWnYKl4EZ8kGu3BvG1fSTlWyXgWMRoMMPRs";

    #[test]
    fn a_known_hosts_line_or_a_bare_key_is_pinned_and_anything_else_named() {
        let line = format!("[10.0.0.5]:2222 ssh-ed25519 {ED25519} root@rack1");
        let key = PinnedKey::parse(&line, "providers.baremetal.hosts[0].host_key").expect("line");
        assert_eq!(
            key,
            PinnedKey::parse(&format!("ssh-ed25519 {ED25519}"), "x").expect("bare")
        );
        assert!(
            key.fingerprint().starts_with("SHA256:"),
            "{}",
            key.fingerprint()
        );
        let e = PinnedKey::parse(
            "10.0.0.5 not-a-key",
            "providers.baremetal.hosts[0].host_key",
        )
        .expect_err("junk");
        assert!(
            e.to_string()
                .starts_with("providers.baremetal.hosts[0].host_key: expected a known_hosts line"),
            "{e}"
        );
        let e = PinnedKey::parse(&format!("ssh-rsa {ED25519}"), "k").expect_err("mislabelled");
        assert!(
            e.to_string()
                .contains("the line says ssh-rsa but the key is ssh-ed25519"),
            "{e}"
        );
    }
}
