//! The power drivers against real emulators: Redfish against sushy-tools'
//! emulator, IPMI against OpenIPMI's `ipmi_sim` through `ipmitool`, and
//! Wake-on-LAN against a UDP socket that receives its packet.

mod support;

use std::time::{Duration, Instant};

use ebbtide_provider::Secret;
use ebbtide_provider_baremetal::power::{
    Ipmi, PowerControl, PowerError, PowerState, Redfish, WakeOnLan, magic_packet,
};
use support::emulators::{IpmiSim, Sushy};

/// Polls `driver` until it reports `want` (BMCs apply actions late: the
/// fake Redfish system takes 1 to 11 seconds).
async fn wait_for(driver: &dyn PowerControl, want: PowerState) {
    let start = Instant::now();
    loop {
        let now = driver.state().await.expect("state");
        if now == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still {now:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn redfish_switches_the_emulated_system_on_and_off_and_a_wrong_password_is_refused() {
    let sushy = Sushy::start();
    let redfish = |password: &str| {
        Redfish::new(
            &sushy.base,
            None,
            sushy.user.clone(),
            Secret::new(password),
            None,
            Duration::from_secs(10),
        )
        .expect("driver")
    };
    let refused = redfish("not-the-password")
        .state()
        .await
        .expect_err("refused");
    assert!(
        matches!(&refused, PowerError::Refused(m) if m.contains("401")),
        "{refused}"
    );
    assert!(
        !refused.to_string().contains("not-the-password"),
        "{refused}"
    );

    let bmc = redfish(&sushy.password);
    assert_eq!(bmc.state().await.expect("state"), Some(PowerState::Off));
    bmc.power_on().await.expect("on");
    wait_for(&bmc, PowerState::On).await;
    bmc.power_off().await.expect("off");
    wait_for(&bmc, PowerState::Off).await;
}

#[tokio::test]
async fn ipmi_switches_the_simulated_chassis_and_keeps_the_password_off_the_command_line() {
    let sim = IpmiSim::start(false, "true", "true");
    let ipmi = |password: &str| Ipmi {
        tool: "ipmitool".into(),
        address: "127.0.0.1".into(),
        port: sim.port,
        user: sim.user.clone(),
        password: Secret::new(password),
        // ipmi_sim does not answer "Get Channel Cipher Suites".
        cipher_suite: Some(3),
        timeout: Duration::from_secs(20),
    };
    let bmc = ipmi(&sim.password);
    assert_eq!(bmc.state().await.expect("state"), Some(PowerState::Off));
    assert!(!sim.is_on());

    // While a call runs, `ps` shows its command line: the password is not on it.
    let on = bmc.power_on();
    let watch = async {
        let mut seen = Vec::new();
        for _ in 0..40 {
            let ps = std::process::Command::new("ps")
                .args(["-eo", "args"])
                .output()
                .expect("ps");
            seen.extend(
                String::from_utf8_lossy(&ps.stdout)
                    .lines()
                    .filter(|l| l.contains("ipmitool"))
                    .map(str::to_string),
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    };
    let (on, seen) = tokio::join!(on, watch);
    on.expect("on");
    assert!(
        seen.iter().all(|l| !l.contains(&sim.password)),
        "password on a command line: {seen:?}"
    );
    assert!(sim.is_on(), "the chassis was switched on");
    assert_eq!(bmc.state().await.expect("state"), Some(PowerState::On));
    bmc.power_off().await.expect("off");
    assert!(!sim.is_on());
    assert_eq!(bmc.state().await.expect("state"), Some(PowerState::Off));

    let refused = ipmi("wrong-password").state().await.expect_err("refused");
    assert!(matches!(refused, PowerError::Unreachable(_)), "{refused}");
}

#[tokio::test]
async fn wake_on_lan_sends_the_magic_packet_and_cannot_switch_off() {
    let listener = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let wol = WakeOnLan {
        mac,
        target: listener.local_addr().expect("addr"),
    };
    wol.power_on().await.expect("sent");
    let mut buf = [0u8; 256];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), listener.recv_from(&mut buf))
        .await
        .expect("a packet arrived")
        .expect("recv");
    assert_eq!(&buf[..n], magic_packet(mac).as_slice());
    assert_eq!(wol.state().await, Ok(None));
    assert!(matches!(
        wol.power_off().await,
        Err(PowerError::Unsupported(_))
    ));
}

/// A launch request for pool `metal`.
fn request(workers: &[u64]) -> ebbtide_provider::LaunchRequest {
    ebbtide_provider::LaunchRequest {
        cluster: "power".into(),
        pool: "metal".into(),
        shape: "metal".into(),
        cpu_millis: 1000,
        memory_mib: 1024,
        market: ebbtide_core::Market::OnDemand,
        zones: Vec::new(),
        scheduler_url: "http://10.0.0.1:8081".into(),
        workers: ebbtide_provider::conformance::launches(workers),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_host_is_switched_off_through_its_bmc_and_woken_by_the_next_launch() {
    use ebbtide_provider::{HostState, Provider};
    use ebbtide_provider_baremetal::{BaremetalConfig, BaremetalProvider, HostPower};

    let hosts = support::TestHosts::start(1);
    let h = &hosts.hosts[0];
    // Powered off: its link is down. Switching it on brings the link up
    // two seconds later, as a machine answers only once it has booted.
    h.cut();
    let sim = IpmiSim::start(
        false,
        &format!("(sleep 2; {}) >/dev/null 2>&1 &", h.link_command(true)),
        &h.link_command(false),
    );
    let mut host = hosts.inventory(0, 2);
    host.power = Some(HostPower {
        control: std::sync::Arc::new(Ipmi {
            tool: "ipmitool".into(),
            address: "127.0.0.1".into(),
            port: sim.port,
            user: sim.user.clone(),
            password: Secret::new(sim.password.clone()),
            cipher_suite: Some(3),
            timeout: Duration::from_secs(20),
        }),
        off_command: "false".into(),
    });
    let p = BaremetalProvider::new(BaremetalConfig {
        power_off_after: Duration::from_secs(2),
        boot_wait: Duration::from_secs(30),
        ..support::provider_config(
            "power",
            vec![host],
            &[("metal", &["host0"])],
            &support::stand_in_agent(&hosts),
        )
    });

    // The BMC says off: the host is neither asked nor quarantined.
    assert!(p.list().await.expect("list").is_empty());
    let report = p.hosts().await;
    assert_eq!(report[0].state, HostState::PoweredOff, "{report:?}");

    // A launch switches it on, waits for it to answer, starts the workers.
    let launched = p.launch(request(&[1, 2])).await.expect("launch");
    assert_eq!(launched.len(), 2, "{launched:?}");
    assert!(sim.is_on());
    let report = p.hosts().await;
    assert_eq!(report[0].state, HostState::Ready, "{report:?}");
    let boot = report[0].last_boot.expect("its boot was measured");
    assert!(
        boot >= Duration::from_secs(2) && boot < Duration::from_secs(30),
        "{boot:?}"
    );
    let listed = p.list().await.expect("list");
    assert_eq!(listed.iter().filter(|i| i.running).count(), 2, "{listed:?}");

    // Workers gone, it idles for `power_off_after` and is switched off.
    let ids: Vec<_> = listed.into_iter().map(|i| i.instance).collect();
    p.terminate(&ids).await.expect("terminate");
    assert!(p.list().await.expect("list").is_empty());
    assert!(sim.is_on(), "not idle long enough yet");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert!(p.list().await.expect("list").is_empty());
    assert!(!sim.is_on(), "switched off through the BMC");
    let report = p.hosts().await;
    assert_eq!(report[0].state, HostState::PoweredOff, "{report:?}");
    assert_eq!(report[0].reason.as_deref(), Some("idle for 2s"));
    // Off, it is not asked (so not quarantined for not answering).
    assert!(p.list().await.expect("list").is_empty());
    assert_eq!(p.hosts().await[0].state, HostState::PoweredOff);
}
