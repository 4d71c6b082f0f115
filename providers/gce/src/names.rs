//! How Ebbtide names and labels what it creates on Compute Engine.
//!
//! Why a module of its own: `list` and `terminate` find our instances by
//! these labels alone (also after a scheduler restart), the agent finds its
//! own token by parsing its instance name, and Compute Engine is strict
//! about both — names match `[a-z]([-a-z0-9]*[a-z0-9])?` up to 63
//! characters, label keys and values are lowercase letters, digits, `-` and
//! `_` up to 63 characters — so the config check, the provider and the
//! agent must agree on one spelling. The shared ownership tags
//! (`ebbtide.cluster`, …) contain dots, which GCE refuses in label keys, so
//! here they are spelled with dashes.

use ebbtide_core::WorkerId;
use sha2::{Digest, Sha256};

/// Cluster id: an instance without this label set to our cluster is never
/// listed or deleted.
pub const CLUSTER_LABEL: &str = "ebbtide-cluster";
/// The pool it was launched for.
pub const POOL_LABEL: &str = "ebbtide-pool";
/// The engine's worker id.
pub const WORKER_LABEL: &str = "ebbtide-worker";
/// `spot` or `on-demand`.
pub const MARKET_LABEL: &str = "ebbtide-market";
/// The launch batch (cluster and first worker id), shared by the batch's
/// retries in other zones.
pub const LAUNCH_LABEL: &str = "ebbtide-launch";

/// Longest instance name Compute Engine takes.
const MAX_NAME: usize = 63;
/// Room kept in an instance name for `-w` and a worker id (u64).
const WORKER_SUFFIX: usize = 2 + 20;

/// The instance name of `worker` in `cluster`
/// ([`ebbtide_proto::gce::instance_name`], which the agent parses). A
/// retried launch can never create a second instance for one worker.
pub fn instance_name(cluster: &str, worker: WorkerId) -> String {
    ebbtide_proto::gce::instance_name(cluster, worker.0)
}

/// The worker an instance name of `cluster` belongs to.
pub fn worker_of_name(cluster: &str, name: &str) -> Option<WorkerId> {
    match ebbtide_proto::gce::parse_instance_name(name)? {
        (c, worker) if c == cluster => Some(WorkerId(worker)),
        _ => None,
    }
}

/// Why `cluster` cannot prefix instance names, if it cannot.
pub fn check_cluster(cluster: &str) -> Result<(), String> {
    let valid_chars = cluster
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let starts_with_letter = cluster
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase());
    if !valid_chars || !starts_with_letter || cluster.len() + WORKER_SUFFIX > MAX_NAME {
        return Err(format!(
            "{cluster:?} cannot name Compute Engine instances: a GCE cluster id starts with a lowercase letter, has only lowercase letters, digits and '-', and is at most {} characters",
            MAX_NAME - WORKER_SUFFIX
        ));
    }
    Ok(())
}

/// Why `value` cannot be a label value, if it cannot.
pub fn check_label_value(value: &str) -> Result<(), String> {
    let valid = value.len() <= MAX_NAME
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a Compute Engine label value: lowercase letters, digits, '-' and '_', at most {MAX_NAME} characters"
        ))
    }
}

/// Why `key` cannot be a label key, if it cannot.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let starts_with_letter = key.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if starts_with_letter && check_label_value(key).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a Compute Engine label key: a lowercase letter, then lowercase letters, digits, '-' and '_', at most {MAX_NAME} characters"
        ))
    }
}

/// The launch label value of a batch.
pub fn launch_label(cluster: &str, first: WorkerId) -> String {
    format!("{cluster}-w{}", first.0)
}

/// The `requestId` of one bulk insert: a UUID derived from the batch and
/// the attempt, so a call the client retries (a lost answer, a timeout)
/// is recognised by Compute Engine and launches nothing twice, while the
/// next attempt in other zones is a new request.
pub fn request_id(cluster: &str, first: WorkerId, attempt: u32) -> String {
    let digest = Sha256::digest(format!(
        "ebbtide-bulk-insert/{cluster}/{}/{attempt}",
        first.0
    ));
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    // RFC 9562 version 8 (custom) and the RFC variant bits.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The last segment of a resource URL (`…/zones/us-central1-a` →
/// `us-central1-a`); Compute Engine answers zones and machine types as
/// URLs.
pub fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_name_round_trips_to_its_worker_and_is_valid() {
        let name = instance_name("ci-east", WorkerId(4711));
        assert_eq!(name, "ci-east-w4711");
        assert_eq!(worker_of_name("ci-east", &name), Some(WorkerId(4711)));
        assert_eq!(
            worker_of_name("ci", &name),
            None,
            "another cluster's prefix"
        );
        assert_eq!(worker_of_name("ci-east", "ci-east-wx"), None);
        let longest = instance_name(&"a".repeat(41), WorkerId(u64::MAX));
        assert!(longest.len() <= 63, "{}", longest.len());
    }

    #[test]
    fn cluster_ids_gce_refuses_are_named() {
        assert!(check_cluster("ebbtide").is_ok());
        for bad in ["Ebbtide", "1ci", "ci.east", "", &"a".repeat(42)] {
            let e = check_cluster(bad).expect_err(bad);
            assert!(e.contains("lowercase letter"), "{e}");
        }
    }

    #[test]
    fn label_keys_and_values_follow_gce_rules() {
        assert!(check_label_value("on-demand").is_ok());
        assert!(check_label_value("build_x86").is_ok());
        assert!(check_label_value("Build").is_err());
        assert!(check_label_value(&"a".repeat(64)).is_err());
        assert!(check_label_key(CLUSTER_LABEL).is_ok());
        assert!(check_label_key("9team").is_err());
        assert!(check_label_key("team.a").is_err());
    }

    #[test]
    fn request_ids_are_uuids_stable_per_attempt() {
        let a = request_id("c", WorkerId(7), 1);
        assert_eq!(a, request_id("c", WorkerId(7), 1));
        assert_ne!(a, request_id("c", WorkerId(7), 2));
        assert_ne!(a, request_id("c", WorkerId(8), 1));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "8", "version 8");
    }

    #[test]
    fn urls_reduce_to_their_name() {
        assert_eq!(
            last_segment("https://x/compute/v1/projects/p/zones/us-east1-b"),
            "us-east1-b"
        );
        assert_eq!(last_segment("us-east1-b"), "us-east1-b");
    }
}
