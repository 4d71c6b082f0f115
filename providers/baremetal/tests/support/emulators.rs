//! Power controllers for the tests: OpenIPMI's `ipmi_sim` (a BMC speaking
//! IPMI over LAN, whose chassis is a script of the test's) and
//! sushy-tools' Redfish emulator with its fake system driver. Each runs on
//! a loopback port of its own and is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::run;

/// A port nobody listens on now (UDP or TCP, as asked).
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("udp port")
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("tcp port")
            .port()
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ipmi_sim` with one BMC user and a chassis the test controls: power on
/// and off run the given shell commands and are recorded in `power`.
pub struct IpmiSim {
    /// Its RMCP+ port on 127.0.0.1.
    pub port: u16,
    /// The admin user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The chassis power state the script keeps (`1` or `0`).
    pub power: PathBuf,
    _child: Killed,
    _dir: tempfile::TempDir,
}

impl IpmiSim {
    /// Starts one, powered `on` or off, running `on_command` and
    /// `off_command` when its chassis is switched.
    pub fn start(on: bool, on_command: &str, off_command: &str) -> IpmiSim {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port(true);
        let power = d.join("power");
        std::fs::write(&power, if on { "1\n" } else { "0\n" }).expect("power");
        let script = d.join("chassis");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 # ipmi_sim's chassis_control: `get power`, `set power 0|1`, `check ...`.\n\
                 op=$1; shift\n\
                 case $op in\n\
                 get) for p in \"$@\"; do [ \"$p\" = power ] && echo \"power:$(cat {power})\"; done;;\n\
                 set) while [ $# -ge 2 ]; do\n\
                 \x20     if [ \"$1\" = power ]; then\n\
                 \x20       if [ \"$2\" = 1 ]; then\n{on_command}\n\
                 \x20       else\n{off_command}\n\
                 \x20       fi\n\
                 \x20       echo \"$2\" > {power}\n\
                 \x20     fi\n\
                 \x20     shift 2; done;;\n\
                 esac\n\
                 exit 0\n",
                power = power.display(),
            ),
        )
        .expect("chassis script");
        run(&["chmod", "+x", &script.display().to_string()]);
        // Its own password, so a test watching `ps` for it sees only its own.
        let (user, password) = ("ebbtide".to_string(), format!("bmc-secret-{port}"));
        std::fs::write(
            d.join("lan.conf"),
            format!(
                "name \"ebbtide-test\"\n\
                 set_working_mc 0x20\n\
                 \x20 startlan 1\n\
                 \x20   addr 127.0.0.1 {port}\n\
                 \x20   priv_limit admin\n\
                 \x20   allowed_auths_callback none md2 md5 straight\n\
                 \x20   allowed_auths_user none md2 md5 straight\n\
                 \x20   allowed_auths_operator none md2 md5 straight\n\
                 \x20   allowed_auths_admin none md2 md5 straight\n\
                 \x20   guid a123456789abcdefa123456789abcdef\n\
                 \x20 endlan\n\
                 \x20 chassis_control \"{script}\"\n\
                 \x20 user 2 true \"{user}\" \"{password}\" admin 10 none md2 md5 straight\n",
                script = script.display()
            ),
        )
        .expect("lan.conf");
        std::fs::write(
            d.join("sim.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
        )
        .expect("sim.emu");
        std::fs::create_dir_all(d.join("state")).expect("state dir");
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("sim.emu"))
            .arg("-s")
            .arg(d.join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("ipmi_sim.log")).expect("log"))
            .spawn()
            .expect("ipmi_sim (Debian's openipmi; scripts/test installs it)");
        let sim = IpmiSim {
            port,
            user,
            password,
            power,
            _child: Killed(child),
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            let ok = Command::new("ipmitool")
                .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string()])
                .args([
                    "-U", &sim.user, "-E", "-C", "3", "chassis", "power", "status",
                ])
                .env("IPMI_PASSWORD", &sim.password)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("ipmitool (Debian's ipmitool; scripts/test installs it)");
            if ok.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "ipmi_sim did not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sim
    }

    /// What the chassis script last recorded.
    pub fn is_on(&self) -> bool {
        std::fs::read_to_string(&self.power).expect("power").trim() == "1"
    }
}

/// sushy-tools' Redfish emulator with the fake driver (one system,
/// powered off), behind HTTP basic authentication.
pub struct Sushy {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
    _child: Killed,
    _dir: tempfile::TempDir,
}

fn sushy_bin(name: &str) -> PathBuf {
    let venv = std::env::var("EBBTIDE_SUSHY_VENV").map_or_else(
        |_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/ebbtide/sushy-venv")
        },
        PathBuf::from,
    );
    let bin = venv.join("bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: the test command (scripts/test) installs sushy-tools there",
        bin.display()
    );
    bin
}

impl Sushy {
    /// Starts one on a free loopback port.
    pub fn start() -> Sushy {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (user, password) = ("admin".to_string(), "redfish-secret-1".to_string());
        let hashed = Command::new(sushy_bin("python3"))
            .args([
                "-c",
                "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
                &password,
            ])
            .output()
            .expect("bcrypt");
        assert!(
            hashed.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&hashed.stderr)
        );
        let htpasswd = d.join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!(
                "{user}:{}\n",
                String::from_utf8_lossy(&hashed.stdout).trim()
            ),
        )
        .expect("htpasswd");
        let config = d.join("emulator.conf");
        std::fs::write(
            &config,
            format!(
                "SUSHY_EMULATOR_AUTH_FILE = {:?}\nSUSHY_EMULATOR_STATE_DIR = {:?}\n",
                htpasswd.display().to_string(),
                d.join("state").display().to_string()
            ),
        )
        .expect("config");
        let port = free_port(false);
        let child = Command::new(sushy_bin("sushy-emulator"))
            .arg("--config")
            .arg(&config)
            .args(["--fake", "-i", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sushy.log")).expect("log"))
            .spawn()
            .expect("sushy-emulator");
        let sushy = Sushy {
            base: format!("http://127.0.0.1:{port}"),
            user,
            password,
            _child: Killed(child),
            _dir: dir,
        };
        wait_tcp(port, &sushy._dir.path().join("sushy.log"));
        sushy
    }
}

fn wait_tcp(port: u16, log: &Path) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "emulator on port {port} did not listen: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
