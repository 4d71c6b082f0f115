//! Shared by the integration tests: start `ebbtide serve` and find its
//! address.

#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `ebbtide serve --config PATH`, its log appended to `log`, and
/// returns the child and its job API base URL.
pub fn serve(config: &Path, log: &Path) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebbtide"));
    cmd.args(["serve", "--config"]).arg(config);
    serve_command(cmd, log)
}

/// Starts an `ebbtide serve` command the caller prepared (extra
/// environment, say), its log appended to `log`; returns the child and its
/// job API base URL.
pub fn serve_command(mut cmd: Command, log: &Path) -> (Child, String) {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = cmd
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("start ebbtide serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| {
            panic!(
                "no address in {line:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    (child, format!("http://{http}"))
}

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
