//! Docker state a test must find or remove: the containers of one cluster.

use std::process::Command;

/// Our cluster's containers, running or not (`docker ps -a --filter`).
pub fn containers(cluster: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=ebbtide.cluster={cluster}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Removes, when dropped, every container of the cluster a run left, so
/// one failure does not leak into the next run or the machine.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = containers(&self.0);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}
