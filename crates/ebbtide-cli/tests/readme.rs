//! The README's "Running it yourself" block, run line by line as a user
//! would paste it into a shell, so the README cannot drift from the code.

mod support;

use std::process::Command;
use std::time::Duration;

/// The README's block after "Running it yourself", without the fences.
fn readme_block() -> Vec<String> {
    let readme = std::fs::read_to_string(support::root().join("README.md")).expect("README");
    let after = readme
        .split_once("Running it yourself")
        .expect("the README has its running-it-yourself section")
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a sh block")
        .0;
    block.lines().map(str::to_string).collect()
}

#[test]
fn every_command_of_the_readme_runs_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _reaper = support::Reaper::new(&dir.path().join(".ebbtide"));
    let (http, grpc) = (support::free_port(), support::free_port());
    let config = std::fs::read_to_string(support::root().join("examples/local.toml"))
        .expect("example")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{http}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{grpc}"));
    std::fs::create_dir_all(dir.path().join("examples")).expect("dir");
    std::fs::write(dir.path().join("examples/local.toml"), config).expect("config");
    let bin = env!("CARGO_BIN_EXE_ebbtide");
    // The block as a script, each command's output kept apart. Only what a
    // test cannot do as written is adapted: the binary is the one built,
    // the scheduler listens on free ports, the live view gets its Ctrl-C
    // after three seconds, and serve's readiness and its applying the
    // reload are awaited.
    // Whatever line fails, the background serve goes with the script
    // (SIGKILL: a failed run must not wait out serve's drain).
    let mut script = String::from("set -eu\ntrap 'kill -9 $(jobs -p) 2>/dev/null || true' EXIT\n");
    let lines = readme_block();
    assert!(lines.len() >= 10, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let mut command = line
            .replace("cargo run -p ebbtide-cli --", bin)
            .replace("http://127.0.0.1:8080", &format!("http://127.0.0.1:{http}"));
        let command_only = command.split(" #").next().unwrap_or("").trim().to_string();
        if command_only.contains("--watch") {
            // Ctrl-C after three seconds, as the README says it ends.
            command = format!("{command_only} > out.{i} &\nsleep 3; kill -INT $!; wait $!");
        } else if command_only.ends_with('&') {
            command = format!(
                "{} > out.{i} 2> serve.log &\nuntil grep -q 'ebbtide listening' out.{i}; do sleep 0.1; done",
                command_only.trim_end_matches('&')
            );
        } else if command_only.starts_with("export ") {
            command = command_only;
        } else if command_only.contains("config reload") {
            // The reload is applied by serve after the command returns.
            command = format!(
                "{command_only} > out.{i}\nfor _ in $(seq 50); do grep -q ' reloaded' serve.log && break; sleep 0.1; done"
            );
        } else if command_only.starts_with("kill ") {
            command = format!("{command_only}\nwait");
        } else {
            command = format!("{command_only} > out.{i}");
        }
        script.push_str(&command);
        script.push('\n');
    }
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_remove("EBBTIDE_URL")
        .env_remove("EBBTIDE_API_KEY")
        .output()
        .expect("bash");
    let read =
        |i: usize| std::fs::read_to_string(dir.path().join(format!("out.{i}"))).unwrap_or_default();
    let index = |what: &str| {
        lines
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no README line with {what:?}"))
    };
    let serve_log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        run.status.success(),
        "a README command failed: {}\nscript:\n{script}\nserve:\n{serve_log}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(read(index("submit 'uname")).trim(), "1");
    assert!(read(index("logs --follow 1")).contains("hello from job 1"));
    assert_eq!(read(index("submit 'sleep 300'")).trim(), "2");
    assert!(
        read(index("status   ")).starts_with("tenant demo at "),
        "{}",
        read(index("status   "))
    );
    assert!(read(index("status --watch")).contains("ebbtide fleet at "));
    assert!(read(index("-- jobs")).contains("sleep 300"));
    assert!(read(index("explain 2")).starts_with("job 2 (demo, class high)"));
    assert_eq!(read(index("cancel 2")).trim(), "cancel of job 2 requested");
    assert!(read(index("-- drain 1")).starts_with("drain of worker 1 requested"));
    assert!(read(index("config check")).contains(": ok ("));
    assert!(read(index("config reload")).contains("valid; reload requested"));
    assert!(serve_log.contains(" reloaded"), "{serve_log}");
    // `kill %1` stopped serve, and with it every local agent.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        support::agent_pids(&dir.path().join(".ebbtide")).is_empty(),
        "agents left running after serve stopped:\n{serve_log}"
    );
}

/// The README's first command: the demo on the embedded defaults.
#[test]
fn the_readme_demo_runs_to_its_end() {
    let readme = std::fs::read_to_string(support::root().join("README.md")).expect("README");
    assert!(
        readme.contains("cargo run -p ebbtide-cli -- demo "),
        "the README starts with the demo"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .arg("demo")
        .output()
        .expect("demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("40/40 done"), "{stdout}");
    assert!(stdout.contains("burst pool back to 0"), "{stdout}");
}
