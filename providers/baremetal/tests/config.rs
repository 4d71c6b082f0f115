//! `[providers.baremetal]` as operators write it, and the errors they get.

use ebbtide_config::ProviderSchema;
use ebbtide_provider_baremetal::{BaremetalPlugin, BaremetalSettings};

const PROVIDERS: &[&dyn ProviderSchema] = &[&BaremetalPlugin];

const KEY_LINE: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHF5hzEGmYWnYKl4EZ8kGu3BvG1fSTlWyXgWMRoMMPRs";

fn text(key: &std::path::Path) -> String {
    format!(
        r#"[server]
cluster = "ci"

[[pools]]
name = "metal"
provider = "baremetal"
kind = "dynamic"
max = 8
on_demand_price = 0.1
labels = ["linux"]
[pools.shape]
name = "slot"
cpu_millis = 4000
memory_mib = 8192

[providers.baremetal]
user = "ebbtide"
private_key = "{key}"

[[providers.baremetal.hosts]]
name = "rack1-01"
address = "10.0.0.11"
host_key = "10.0.0.11 {KEY_LINE}"
labels = ["linux", "x86_64"]
cpu_millis = 32000
memory_mib = 65536
slots = 4
price_per_hour = 0.45

[[providers.baremetal.hosts]]
name = "rack1-02"
address = "10.0.0.12"
port = 2222
host_key = "{KEY_LINE}"
labels = ["windows"]
cpu_millis = 32000
memory_mib = 65536
slots = 4
price_per_hour = 0.45

[providers.baremetal.pools.metal]
"#,
        key = key.display()
    )
}

fn key_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("id_ed25519");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    path
}

fn settings(c: &ebbtide_config::ClusterConfig) -> &BaremetalSettings {
    c.providers
        .get("baremetal")
        .expect("configured")
        .settings
        .get()
        .expect("settings")
}

fn issue_at(text: &str, path: &str) -> (Option<usize>, String) {
    let err = ebbtide_config::parse(text, PROVIDERS).expect_err("invalid");
    let i = err
        .issues
        .iter()
        .find(|i| i.path == path)
        .unwrap_or_else(|| panic!("no issue at {path}: {err}"));
    (i.line, i.message.clone())
}

#[test]
fn a_pool_without_a_host_list_takes_the_hosts_carrying_its_labels() {
    let dir = tempfile::tempdir().expect("dir");
    let c = ebbtide_config::parse(&text(&key_file(dir.path())), PROVIDERS)
        .unwrap_or_else(|e| panic!("{e}"));
    let s = settings(&c);
    assert_eq!(
        s.pools["metal"],
        ["rack1-01"],
        "rack1-02 is not labelled linux"
    );
    assert_eq!(s.hosts.len(), 2);
    assert_eq!(s.hosts[1].target.port, 2222);
    assert_eq!(s.hosts[0].target.user, "ebbtide");
    assert_eq!(s.hosts[0].price.0.0, 450_000);
}

#[test]
fn a_host_key_that_is_not_a_known_hosts_line_is_refused_at_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    let t = text(&key_file(dir.path())).replacen(
        &format!("host_key = \"10.0.0.11 {KEY_LINE}\""),
        "host_key = \"trust me\"",
        1,
    );
    let (line, message) = issue_at(&t, "providers.baremetal.hosts[0].host_key");
    assert_eq!(
        line,
        t.lines()
            .position(|l| l.contains("trust me"))
            .map(|n| n + 1)
    );
    assert!(message.contains("expected a known_hosts line"), "{message}");
}

#[test]
fn a_missing_key_file_an_unknown_host_and_oversubscribed_slots_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let t = text(&dir.path().join("no-such-key"));
    let (_, message) = issue_at(&t, "providers.baremetal.hosts[0].private_key");
    assert!(message.contains("no-such-key"), "{message}");
    let key = key_file(dir.path());
    let unknown = format!("{}hosts = [\"rack9-99\"]\n", text(&key));
    let (_, message) = issue_at(&unknown, "providers.baremetal.pools.metal.hosts");
    assert!(message.contains("no host named \"rack9-99\""), "{message}");
    let crowded = text(&key).replacen("slots = 4", "slots = 16", 1);
    let (_, message) = issue_at(&crowded, "providers.baremetal.pools.metal.hosts");
    assert!(
        message.contains("has 16 slots of pool \"metal\"'s shape"),
        "{message}"
    );
}

/// The config with `power` (a TOML inline table) on the first host.
fn with_power(text: &str, power: &str) -> String {
    text.replacen(
        "price_per_hour = 0.45\n",
        &format!("price_per_hour = 0.45\npower = {power}\n"),
        1,
    )
}

#[test]
fn power_control_is_checked_as_serve_would_use_it() {
    let dir = tempfile::tempdir().expect("dir");
    let t = text(&key_file(dir.path()));
    // A variable every test process has stands for the password (tests
    // cannot set one: the workspace forbids unsafe code).
    let secret = std::env::var("PATH").expect("PATH");
    let ok = with_power(
        &t,
        r#"{ driver = "ipmi", address = "10.0.1.11", user = "admin", password_env = "PATH", cipher_suite = 17 }"#,
    );
    let c = ebbtide_config::parse(&ok, PROVIDERS).unwrap_or_else(|e| panic!("{e}"));
    let s = settings(&c);
    let power = s.hosts[0].power.as_ref().expect("power");
    assert_eq!(power.control.driver(), "ipmi");
    assert!(s.hosts[1].power.is_none());
    assert!(
        !format!("{power:?}").contains(&secret),
        "no password in debug output"
    );

    let unset = with_power(
        &t,
        r#"{ driver = "redfish", endpoint = "https://10.0.1.11", user = "admin", password_env = "EBBTIDE_TEST_NO_SUCH_VAR" }"#,
    );
    let (line, message) = issue_at(&unset, "providers.baremetal.hosts[0].power.password_env");
    assert!(
        message.contains("EBBTIDE_TEST_NO_SUCH_VAR is not set"),
        "{message}"
    );
    assert!(line.is_some(), "the line is named");

    let not_a_url = with_power(
        &t,
        r#"{ driver = "redfish", endpoint = "10.0.1.11", user = "admin", password_env = "PATH" }"#,
    );
    let (_, message) = issue_at(&not_a_url, "providers.baremetal.hosts[0].power.endpoint");
    assert!(message.contains("https://"), "{message}");

    let bad_mac = with_power(
        &t,
        r#"{ driver = "wol", mac = "52:54:00", broadcast = "10.0.0.255:9" }"#,
    );
    let (_, message) = issue_at(&bad_mac, "providers.baremetal.hosts[0].power.mac");
    assert!(message.contains("six hex pairs"), "{message}");

    let no_ca = with_power(
        &t,
        r#"{ driver = "redfish", endpoint = "https://10.0.1.11", user = "admin", password_env = "PATH", ca_file = "/nonexistent/ca.pem" }"#,
    );
    let (_, message) = issue_at(&no_ca, "providers.baremetal.hosts[0].power.ca_file");
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");

    let unknown = with_power(&t, r#"{ driver = "smoke-signals" }"#);
    let err = ebbtide_config::parse(&unknown, PROVIDERS).expect_err("refused");
    assert!(err.to_string().contains("smoke-signals"), "{err}");
}

#[test]
fn a_job_user_needs_a_root_login_and_may_not_be_root() {
    let dir = tempfile::tempdir().expect("dir");
    let t = text(&key_file(dir.path()));
    let with = |user: &str, job_user: &str| {
        t.replacen(
            "user = \"ebbtide\"\n",
            &format!("user = \"{user}\"\njob_user = \"{job_user}\"\n"),
            1,
        )
    };
    let c =
        ebbtide_config::parse(&with("root", "ci-job"), PROVIDERS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings(&c).job_user.as_deref(), Some("ci-job"));
    let (_, message) = issue_at(
        &with("ebbtide", "ci-job"),
        "providers.baremetal.hosts[0].user",
    );
    assert!(message.contains("the login must be root"), "{message}");
    let (_, message) = issue_at(&with("root", "root"), "providers.baremetal.job_user");
    assert!(message.contains("not root"), "{message}");
}
