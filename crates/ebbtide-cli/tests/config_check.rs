//! `ebbtide config check` refuses what `serve` could not run, with the key.

mod support;

use std::process::Command;

#[test]
fn a_data_dir_that_cannot_be_created_is_refused_by_config_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where the data directory's parent should be: no user,
    // root included, can create the directory.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").expect("file");
    let text = std::fs::read_to_string(support::root().join("examples/local.toml"))
        .expect("example")
        .replace(
            "data_dir = \".ebbtide\"",
            &format!("data_dir = \"{}\"", blocker.join("data").display()),
        );
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .expect("config check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("server.data_dir") && stderr.contains("not a directory"),
        "names the key and why: {stderr}"
    );
}

#[test]
fn a_missing_file_is_named_with_its_cause_said_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["config", "check", "/nonexistent/cluster.toml"])
        .output()
        .expect("config check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim(),
        "error: cannot read /nonexistent/cluster.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn the_local_example_passes_config_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["config", "check"])
        .arg(support::root().join("examples/local.toml"))
        .output()
        .expect("config check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
}
