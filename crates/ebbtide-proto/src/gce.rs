//! How a Compute Engine worker and the scheduler name each other.
//!
//! One definition for both sides: the provider names each instance after
//! its worker, and the agent, booting, finds its worker id (and so its
//! token in the batch) by parsing its own name; both derive the audience
//! of the worker's identity token, which the agent asks the metadata
//! server for and the scheduler expects.

/// The instance name of `worker` in `cluster`: the cluster id, `-w`, the
/// worker id. Unique because worker ids never repeat within a cluster.
pub fn instance_name(cluster: &str, worker: u64) -> String {
    format!("{cluster}-w{worker}")
}

/// The cluster and worker of an instance name made by [`instance_name`].
pub fn parse_instance_name(name: &str) -> Option<(&str, u64)> {
    let (cluster, worker) = name.rsplit_once("-w")?;
    Some((cluster, worker.parse().ok()?))
}

/// The audience a worker's identity token is minted for. It binds the
/// token to this cluster and worker, so a token minted for anything else
/// is not taken at registration.
pub fn identity_audience(cluster: &str, worker: u64) -> String {
    format!("ebbtide://{cluster}/workers/{worker}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_name_round_trips_to_its_cluster_and_worker() {
        assert_eq!(instance_name("ci-east", 42), "ci-east-w42");
        assert_eq!(parse_instance_name("ci-east-w42"), Some(("ci-east", 42)));
        assert_eq!(
            parse_instance_name("with-w-inside-w7"),
            Some(("with-w-inside", 7))
        );
        assert_eq!(parse_instance_name("no-worker"), None);
        assert_eq!(parse_instance_name("c-wx"), None);
        assert_eq!(identity_audience("c", 7), "ebbtide://c/workers/7");
    }
}
