//! Test hosts: real OpenSSH servers, each in a network namespace the test
//! creates, reached from the test over a veth pair of addresses its own.
//! Every namespace routes to the test's side, so a scheduler listening on
//! [`TestHosts::scheduler_address`] is reachable from all of them.
//! Logins get the host's directory as home (`SetEnv HOME`), so the shell
//! sshd starts reads no profile of the machine's root (one that blocks —
//! a stale lock of a version manager's rehash, say — would stall every
//! command). Everything is removed when the hosts are dropped (a failed
//! test included). Needs root, `ip` (iproute2) and `sshd` (openssh-server),
//! which the test command installs. Only under the `testkit` feature.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command and fails the test if it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One host: an sshd in its own namespace.
pub struct TestHost {
    /// Inventory name.
    pub name: String,
    /// The namespace.
    pub netns: String,
    /// Its address, as the scheduler dials it.
    pub address: String,
    /// The address of the test's side of its link.
    pub gateway: String,
    /// Its host key as a known_hosts line.
    pub host_key: String,
    veth: String,
    sshd: Option<Child>,
    dir: PathBuf,
}

impl TestHost {
    /// Takes its link down: it stops answering, as a cut cable would.
    pub fn cut(&self) {
        run(&["ip", "link", "set", &self.veth, "down"]);
    }

    /// Brings its link back.
    pub fn restore(&self) {
        run(&["ip", "link", "set", &self.veth, "up"]);
    }

    /// A shell command taking its link up or down (what a power
    /// controller's chassis does to it in the power tests).
    pub fn link_command(&self, up: bool) -> String {
        format!(
            "ip link set {} {}",
            self.veth,
            if up { "up" } else { "down" }
        )
    }

    /// Its directory (the sshd config, keys, and whatever tests put there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes a test started in the namespace go with it.
        quiet(&["ip", "netns", "pids", &self.netns]);
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                quiet(&["kill", "-9", pid]);
            }
        }
        quiet(&["ip", "link", "del", &self.veth]);
        quiet(&["ip", "netns", "del", &self.netns]);
    }
}

/// Several hosts and the client key they all accept.
pub struct TestHosts {
    /// The hosts.
    pub hosts: Vec<TestHost>,
    /// The private key they authorize (root's login).
    pub client_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestHosts {
    /// Starts `n` hosts.
    pub fn start(n: usize) -> TestHosts {
        std::fs::create_dir_all("/run/sshd")
            .expect("/run/sshd (sshd's privilege separation directory)");
        let dir = tempfile::tempdir().expect("tempdir");
        let client_key = dir.path().join("client_key");
        keygen(&client_key);
        let authorized =
            std::fs::read_to_string(client_key.with_extension("pub")).expect("client public key");
        let pid = std::process::id();
        let hosts = (0..n)
            .map(|i| {
                let k = NEXT.fetch_add(1, Ordering::SeqCst);
                let (a, b) = (100 + pid % 100, k % 250 + 1);
                let netns = format!("ebbtide-{pid}-{k}");
                let veth = format!("eb{}h{k}", pid % 100_000);
                let peer = format!("eb{}n{k}", pid % 100_000);
                let gateway = format!("10.{a}.{b}.1");
                let address = format!("10.{a}.{b}.2");
                let host_dir = dir.path().join(format!("host{i}"));
                std::fs::create_dir_all(&host_dir).expect("host dir");
                run(&["ip", "netns", "add", &netns]);
                run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer]);
                run(&["ip", "link", "set", &peer, "netns", &netns]);
                run(&["ip", "addr", "add", &format!("{gateway}/24"), "dev", &veth]);
                run(&["ip", "link", "set", &veth, "up"]);
                run(&["ip", "netns", "exec", &netns, "ip", "addr", "add", &format!("{address}/24"), "dev", &peer]);
                run(&["ip", "netns", "exec", &netns, "ip", "link", "set", &peer, "up"]);
                run(&["ip", "netns", "exec", &netns, "ip", "link", "set", "lo", "up"]);
                run(&["ip", "netns", "exec", &netns, "ip", "route", "add", "default", "via", &gateway]);
                let host_key_file = host_dir.join("host_ed25519");
                keygen(&host_key_file);
                std::fs::write(host_dir.join("authorized_keys"), &authorized).expect("authorized_keys");
                let config = format!(
                    "Port 22\nListenAddress {address}\nHostKey {hk}\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel ERROR\nSetEnv HOME={d}\n",
                    hk = host_key_file.display(),
                    d = host_dir.display(),
                );
                std::fs::write(host_dir.join("sshd_config"), config).expect("sshd_config");
                let sshd = Command::new("ip")
                    .args(["netns", "exec", &netns, "/usr/sbin/sshd", "-D", "-e", "-f"])
                    .arg(host_dir.join("sshd_config"))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(host_dir.join("sshd.log")).expect("log"))
                    .spawn()
                    .expect("sshd");
                let public = std::fs::read_to_string(host_key_file.with_extension("pub")).expect("host public key");
                let host = TestHost {
                    name: format!("host{i}"),
                    netns,
                    address: address.clone(),
                    gateway,
                    host_key: format!("{address} {}", public.trim()),
                    veth,
                    sshd: Some(sshd),
                    dir: host_dir,
                };
                wait_listening(&address, &host);
                host
            })
            .collect();
        TestHosts {
            hosts,
            client_key,
            _dir: dir,
        }
    }
}

impl TestHosts {
    /// An address of the test's own side that every host reaches (the
    /// first host's gateway: each namespace's default route leads to the
    /// test's side, where it is local), for a scheduler the hosts dial.
    /// Cutting the first host does not take it away.
    pub fn scheduler_address(&self) -> &str {
        &self.hosts[0].gateway
    }

    /// The hosts as `[[providers.baremetal.hosts]]` tables (label `linux`,
    /// two slots of 2 CPUs and 4 GiB each, $0.10/h), each with its work
    /// root `HOSTNAME-work` under `dir`: the inventory a scheduler's
    /// configuration for them needs besides the login.
    pub fn inventory_toml(&self, dir: &Path) -> String {
        self.hosts
            .iter()
            .map(|h| {
                format!(
                    "\n[[providers.baremetal.hosts]]\nname = \"{name}\"\naddress = \"{address}\"\nhost_key = \"{key}\"\nlabels = [\"linux\"]\ncpu_millis = 4000\nmemory_mib = 8192\nslots = 2\nprice_per_hour = 0.10\nwork_root = \"{work}\"\n",
                    name = h.name,
                    address = h.address,
                    key = h.host_key,
                    work = dir.join(format!("{}-work", h.name)).display(),
                )
            })
            .collect()
    }

    /// Host `i` as the provider's inventory has it: root's login, the
    /// test's key, its pinned host key, a work root in its directory.
    pub fn inventory(&self, i: usize, slots: u32) -> crate::Host {
        use crate::ssh::{PinnedKey, SshTarget, load_private_key};
        let h = &self.hosts[i];
        crate::Host {
            target: SshTarget {
                name: h.name.clone(),
                address: h.address.clone(),
                port: 22,
                user: "root".into(),
                key: load_private_key(&self.client_key, "key").expect("key"),
                host_key: PinnedKey::parse(&h.host_key, "pin").expect("pin"),
            },
            work_root: h.dir().join("work").display().to_string(),
            slots,
            cpu_millis: 8000,
            memory_mib: 16384,
            labels: vec!["linux".into()],
            price: ebbtide_core::PricePerHour(ebbtide_core::Micros(120_000)),
            power: None,
        }
    }
}

/// An agent that only stays up (what the provider's tests need of one:
/// they check processes and directories, not registration).
pub fn stand_in_agent(hosts: &TestHosts) -> String {
    let agent = hosts.hosts[0].dir().join("stand-in-agent");
    std::fs::write(&agent, "#!/bin/sh\nexec sleep 600\n").expect("agent");
    run(&["chmod", "755", &agent.display().to_string()]);
    agent.display().to_string()
}

/// A provider configuration over `hosts` with `pools` (pool, host names)
/// and short timeouts.
pub fn provider_config(
    cluster: &str,
    hosts: Vec<crate::Host>,
    pools: &[(&str, &[&str])],
    agent: &str,
) -> crate::BaremetalConfig {
    crate::BaremetalConfig {
        cluster: cluster.into(),
        hosts,
        pools: pools
            .iter()
            .map(|(p, hs)| (p.to_string(), hs.iter().map(|h| h.to_string()).collect()))
            .collect(),
        agent_path: agent.to_string(),
        job_user: None,
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(20),
        min_free_disk_mib: 1,
        power_off_after: Duration::from_secs(30 * 60),
        boot_wait: Duration::from_secs(60),
    }
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ebbtide-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success(), "ssh-keygen");
}

fn wait_listening(address: &str, host: &TestHost) {
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(
        &format!("{address}:22").parse().expect("addr"),
        Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd on {address} did not listen: {}",
            std::fs::read_to_string(host.dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
