//! `ebbtide serve` and `ebbtide agent`.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `ebbtide serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Cluster configuration (TOML).
    #[arg(long, default_value = "examples/local.toml")]
    config: PathBuf,
}

/// Arguments of `ebbtide agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// Worker API address of the scheduler.
    #[arg(long, env = "EBBTIDE_SCHEDULER", required_unless_present_any = ["ec2_batch", "gce_batch"])]
    scheduler: Option<String>,
    /// The worker id this instance was launched for.
    #[arg(long, env = "EBBTIDE_WORKER_ID", required_unless_present_any = ["ec2_batch", "gce_batch"])]
    worker_id: Option<u64>,
    /// On EC2: the batch file the user-data wrote; the worker id and token
    /// are picked by this instance's launch index from IMDSv2, and spot
    /// interruption notices are watched.
    #[arg(long, conflicts_with_all = ["worker_id", "token_file"])]
    ec2_batch: Option<PathBuf>,
    /// On Compute Engine: the batch file the startup script wrote; the
    /// worker id and token are picked by this instance's name from the
    /// metadata server, its identity token is sent at registration, and
    /// spot preemption is watched.
    #[arg(long, conflicts_with_all = ["worker_id", "token_file", "ec2_batch"])]
    gce_batch: Option<PathBuf>,
    /// Compute Engine metadata server (tests point it at a stand-in).
    #[arg(long, env = "EBBTIDE_GCE_METADATA_ENDPOINT", default_value = ebbtide_agent::gce_metadata::DEFAULT_ENDPOINT)]
    gce_metadata_endpoint: String,
    /// Instance metadata endpoint (tests point it at a stand-in).
    #[arg(long, env = "EBBTIDE_IMDS_ENDPOINT", default_value = ebbtide_agent::imds::DEFAULT_ENDPOINT)]
    imds_endpoint: String,
    /// File holding the bootstrap token (else EBBTIDE_BOOTSTRAP_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where each job gets its own fresh directory (default: a directory
    /// for this worker under the system's temporary directory).
    #[arg(long, env = "EBBTIDE_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Run jobs as this unprivileged user (the agent must run as root).
    #[arg(long, env = "EBBTIDE_JOB_USER")]
    job_user: Option<String>,
    /// Stop the jobs and exit when no scheduler answered for this long.
    #[arg(long, env = "EBBTIDE_ORPHAN_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    orphan_timeout: std::time::Duration,
}

impl AgentArgs {
    /// How this agent runs jobs.
    fn sandbox(&self, worker: u64) -> anyhow::Result<ebbtide_agent::Sandbox> {
        let user = match &self.job_user {
            Some(name) => {
                if !nix::unistd::geteuid().is_root() {
                    anyhow::bail!(
                        "--job-user {name}: the agent must run as root to run jobs as another user"
                    );
                }
                Some(ebbtide_agent::JobUser::lookup(name).map_err(anyhow::Error::msg)?)
            }
            None => None,
        };
        let work_root = self
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("ebbtide-worker-{worker}")));
        std::fs::create_dir_all(&work_root)
            .with_context(|| format!("creating the work directory {}", work_root.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Traversable by the job user, not listable.
            std::fs::set_permissions(&work_root, std::fs::Permissions::from_mode(0o711))
                .with_context(|| format!("opening {} to the job user", work_root.display()))?;
        }
        Ok(ebbtide_agent::Sandbox { work_root, user })
    }
}

/// Structured logs on stderr. The level is `RUST_LOG` if set, else the
/// configuration's `server.log_level`, else `info`; the format is JSON when
/// `server.log_format = "json"` or `EBBTIDE_LOG_FORMAT=json`.
pub fn init_logging(level: Option<&str>, format: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.unwrap_or("info")));
    let json = std::env::var("EBBTIDE_LOG_FORMAT").map_or(format == Some("json"), |f| f == "json");
    // Colour only for a person at a terminal: a log file or a journal
    // gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Warnings only, so the demo's progress display stays readable.
pub fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Where `serve` records its pid, so `ebbtide config reload` can find it.
pub fn pid_file(config: &ebbtide_config::ClusterConfig) -> PathBuf {
    config.server.data_dir.join("ebbtide.pid")
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = crate::plugins::load(&args.config)?;
    init_logging(
        Some(&config.server.log_level),
        Some(config.server.log_format.as_str()),
    );
    for w in ebbtide_config::warnings(&config) {
        tracing::warn!(file = %args.config.display(), "{w}");
    }
    let pid_path = pid_file(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let infrastructure = crate::plugins::infrastructure(&config).await?;
        let handle = ebbtide_server::start(config, infrastructure).await?;
        std::fs::write(&pid_path, std::process::id().to_string()).with_context(|| format!("writing {}", pid_path.display()))?;
        // Machine-readable line for scripts and tests.
        println!("ebbtide listening http={} grpc={}", handle.http_addr, handle.grpc_addr);
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = handle.loop_stopped() => {
                    tracing::error!("the control loop stopped; exiting so a supervisor restarts the scheduler");
                    let _ = std::fs::remove_file(&pid_path);
                    anyhow::bail!("the scheduler's control loop stopped unexpectedly");
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    // An invalid file or an incompatible change is refused;
                    // the running configuration stays.
                    match crate::plugins::load(&args.config) {
                        Ok(new) => match handle.reload(new).await {
                            Ok(()) => tracing::info!(file = %args.config.display(), "reloaded"),
                            Err(e) => tracing::error!(file = %args.config.display(), error = %e, "reload refused"),
                        },
                        Err(e) => tracing::error!(error = %e, "reload refused"),
                    }
                }
            }
        }
        tracing::info!("shutting down");
        handle.stop().await;
        let _ = std::fs::remove_file(&pid_path);
        Ok(())
    })
}

/// `ebbtide config reload FILE`: validates the file, then asks the running
/// server (found by its pid file) to reload it.
pub fn reload(file: &std::path::Path) -> anyhow::Result<()> {
    let config = crate::plugins::load(file)?;
    let path = pid_file(&config);
    let pid: i32 = std::fs::read_to_string(&path)
        .with_context(|| format!("no running server: cannot read {}", path.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", path.display()))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("signalling server process {pid}"))?;
    println!(
        "{}: valid; reload requested from server process {pid} (see its log for the outcome)",
        file.display()
    );
    Ok(())
}

pub fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = match (&args.ec2_batch, &args.gce_batch) {
        (Some(path), _) => runtime.block_on(ec2_agent_config(path, &args))?,
        (None, Some(path)) => runtime.block_on(gce_agent_config(path, &args))?,
        (None, None) => local_agent_config(&args)?,
    };
    // On a cloud instance the agent is the instance's reason to exist:
    // orphaned, it powers the instance off (EC2: the launch made that a
    // termination; GCE: a stopped VM, which the reconciler deletes).
    let power_off_when_orphaned = args.ec2_batch.is_some() || args.gce_batch.is_some();
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // SIGTERM: the instance is being terminated; the agent stops its
        // jobs (whole process groups) before it exits.
        let stop = async move {
            term.recv().await;
        };
        let own_work_dir = args
            .work_dir
            .is_none()
            .then(|| config.sandbox.work_root.clone());
        let outcome = ebbtide_agent::run_until(config, stop).await;
        // A work directory the agent chose itself goes with it.
        if let Some(dir) = own_work_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if power_off_when_orphaned
            && matches!(outcome, Err(ebbtide_agent::AgentError::Unreachable(_)))
        {
            power_off();
        }
        outcome.map_err(Into::into)
    })
}

/// Powers the instance off (an orphaned EC2 worker: its launch made
/// shutdown a termination, so it stops billing).
fn power_off() {
    tracing::error!("no scheduler: powering this instance off so it stops billing");
    let status = std::process::Command::new("/sbin/shutdown")
        .args(["-h", "now"])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        tracing::error!("shutdown -h now failed; the instance keeps running without an agent");
    }
}

/// The batch file a cloud instance's boot script wrote.
fn read_batch(path: &std::path::Path) -> anyhow::Result<ebbtide_proto::bootstrap::BatchFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ebbtide_proto::bootstrap::BatchFile::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// An EC2 instance: its entry of the batch file, by launch index.
async fn ec2_agent_config(
    path: &std::path::Path,
    args: &AgentArgs,
) -> anyhow::Result<ebbtide_agent::AgentConfig> {
    let batch = read_batch(path)?;
    let imds = ebbtide_agent::imds::Imds::new(args.imds_endpoint.clone());
    let index = imds.launch_index().await?;
    let (worker_id, token) = batch.for_index(index).with_context(|| {
        format!(
            "launch index {index} has no token in {} ({} tokens)",
            path.display(),
            batch.tokens.len()
        )
    })?;
    let identity = imds.identity().await?;
    Ok(ebbtide_agent::AgentConfig {
        scheduler: args.scheduler.clone().unwrap_or(batch.scheduler.clone()),
        worker_id,
        bootstrap_token: token.to_string(),
        interruptions: Some(ebbtide_agent::ReclaimWatch::Ec2(imds)),
        identity: Some(identity),
        sandbox: args.sandbox(worker_id)?,
        orphan_timeout: args.orphan_timeout,
    })
}

/// A Compute Engine instance: its entry of the batch file, by the worker id
/// in its instance name (`{cluster}-w{worker}`).
async fn gce_agent_config(
    path: &std::path::Path,
    args: &AgentArgs,
) -> anyhow::Result<ebbtide_agent::AgentConfig> {
    use ebbtide_agent::gce_metadata;
    let batch = read_batch(path)?;
    let metadata = gce_metadata::GceMetadata::new(args.gce_metadata_endpoint.clone());
    let name = metadata.instance_name().await?;
    let (cluster, worker) = ebbtide_proto::gce::parse_instance_name(&name).with_context(|| {
        format!("instance name {name:?} is not an Ebbtide worker's ({{cluster}}-w{{worker}})")
    })?;
    let index = worker.checked_sub(batch.first_worker).with_context(|| {
        format!(
            "worker {worker} is before the batch's first worker {} in {}",
            batch.first_worker,
            path.display()
        )
    })?;
    let (worker_id, token) = batch.for_index(index).with_context(|| {
        format!(
            "worker {worker} has no token in {} ({} tokens from worker {})",
            path.display(),
            batch.tokens.len(),
            batch.first_worker
        )
    })?;
    // Without a service account the instance can mint no identity token;
    // a scheduler that checks identity then refuses it, saying so, and one
    // that does not takes the batch token alone.
    let identity = match metadata
        .identity_token(&ebbtide_proto::gce::identity_audience(cluster, worker_id))
        .await
    {
        Ok(token) => Some((token.into_bytes(), String::new())),
        Err(e) => {
            tracing::warn!(error = %e, "no identity token; registering with the batch token alone");
            None
        }
    };
    Ok(ebbtide_agent::AgentConfig {
        scheduler: args.scheduler.clone().unwrap_or(batch.scheduler.clone()),
        worker_id,
        bootstrap_token: token.to_string(),
        interruptions: Some(ebbtide_agent::ReclaimWatch::Gce(metadata)),
        identity,
        sandbox: args.sandbox(worker_id)?,
        orphan_timeout: args.orphan_timeout,
    })
}

fn local_agent_config(args: &AgentArgs) -> anyhow::Result<ebbtide_agent::AgentConfig> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string(),
        None => std::env::var("EBBTIDE_BOOTSTRAP_TOKEN")
            .context("no bootstrap token: set EBBTIDE_BOOTSTRAP_TOKEN or --token-file")?,
    };
    let worker_id = args.worker_id.context("--worker-id is required")?;
    Ok(ebbtide_agent::AgentConfig {
        scheduler: args.scheduler.clone().context("--scheduler is required")?,
        worker_id,
        bootstrap_token: token,
        interruptions: None,
        identity: None,
        sandbox: args.sandbox(worker_id)?,
        orphan_timeout: args.orphan_timeout,
    })
}
