//! The SSH transport against real OpenSSH servers in network namespaces:
//! commands with their input on stdin, exit status and both streams back,
//! output bounded, a wrong host key or user key refused with the host
//! named, and a host whose link is cut timing out and answering again when
//! it is back.

use std::time::Duration;

use ebbtide_provider_baremetal::ssh::{
    MAX_OUTPUT, PinnedKey, SshError, SshSession, SshTarget, load_private_key,
};

mod support;

const T: Duration = Duration::from_secs(10);

fn target(hosts: &support::TestHosts, i: usize) -> SshTarget {
    hosts.inventory(i, 1).target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_gets_its_input_on_stdin_and_returns_status_and_both_streams() {
    let hosts = support::TestHosts::start(1);
    let s = SshSession::connect(&target(&hosts, 0), T)
        .await
        .expect("connect");
    let secret_file = hosts.hosts[0].dir().join("secret");
    let command = format!(
        "read -r secret; printf '%s' \"$secret\" > {f}; echo \"got ${{#secret}}\"; ps -eo args; echo oops >&2; exit 3",
        f = secret_file.display()
    );
    let out = s
        .exec(&command, Some(b"s3cret-token-value\n"), T)
        .await
        .expect("exec");
    assert_eq!(out.exit_status, Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("got 18\n"), "{stdout}");
    assert!(
        !stdout.contains("s3cret-token-value"),
        "the secret is on no command line: {stdout}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(
        std::fs::read_to_string(&secret_file).expect("written"),
        "s3cret-token-value"
    );
    // The session carries more than one command; the test host's login
    // has its own home, so nothing of the machine's root profile runs.
    let again = s
        .exec("echo \"$HOME\"", None, T)
        .await
        .expect("second command");
    assert!(again.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        hosts.hosts[0].dir().display().to_string()
    );
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_bound_is_counted_not_kept() {
    let hosts = support::TestHosts::start(1);
    let s = SshSession::connect(&target(&hosts, 0), T)
        .await
        .expect("connect");
    let out = s
        .exec("head -c 3000000 /dev/zero", None, T)
        .await
        .expect("exec");
    assert!(out.success());
    assert_eq!(out.stdout.len(), MAX_OUTPUT);
    assert_eq!(out.dropped, 3_000_000 - MAX_OUTPUT as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_other_than_the_pinned_one_or_a_refused_user_key_is_named() {
    let hosts = support::TestHosts::start(2);
    // Host 1 answers where host 0's key is pinned: someone in between.
    let mut wrong = target(&hosts, 1);
    wrong.host_key = PinnedKey::parse(&hosts.hosts[0].host_key, "pin").expect("pin");
    match SshSession::connect(&wrong, T).await {
        Err(SshError::HostKeyMismatch {
            host,
            expected,
            presented,
        }) => {
            assert_eq!(host, "host1");
            assert_ne!(expected, presented);
            assert!(presented.starts_with("SHA256:"), "{presented}");
        }
        Err(e) => panic!("expected a host key mismatch, got {e}"),
        Ok(_) => panic!("connected to a host with the wrong key"),
    }
    // A key the host does not authorize.
    let stranger = hosts.hosts[1].dir().join("stranger");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    let mut refused = target(&hosts, 1);
    refused.key = load_private_key(&stranger, "stranger").expect("key");
    match SshSession::connect(&refused, T).await {
        Err(e @ SshError::Auth { .. }) => assert!(
            e.to_string().contains("host1: user root was refused"),
            "{e}"
        ),
        Err(e) => panic!("expected an auth refusal, got {e}"),
        Ok(_) => panic!("a stranger's key was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_link_is_cut_times_out_and_answers_again_once_it_is_back() {
    let hosts = support::TestHosts::start(1);
    let t = target(&hosts, 0);
    hosts.hosts[0].cut();
    let started = std::time::Instant::now();
    match SshSession::connect(&t, Duration::from_secs(2)).await {
        Err(e @ (SshError::Timeout { .. } | SshError::Connect { .. })) => {
            assert!(e.to_string().contains("host0"), "{e}")
        }
        Err(e) => panic!("expected a timeout, got {e}"),
        Ok(_) => panic!("connected over a cut link"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    hosts.hosts[0].restore();
    let s = SshSession::connect(&t, T).await.expect("back");
    assert!(s.exec("true", None, T).await.expect("exec").success());
}
