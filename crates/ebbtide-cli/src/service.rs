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
    #[arg(long, env = "EBBTIDE_SCHEDULER")]
    scheduler: String,
    /// The worker id this instance was launched for.
    #[arg(long, env = "EBBTIDE_WORKER_ID")]
    worker_id: u64,
    /// File holding the bootstrap token (else EBBTIDE_BOOTSTRAP_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("EBBTIDE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
        .init();
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ebbtide_config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handle = ebbtide_server::start(config).await?;
        // Machine-readable line for scripts and tests.
        println!(
            "ebbtide listening http={} grpc={}",
            handle.http_addr, handle.grpc_addr
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        handle.shutdown().await;
        Ok(())
    })
}

pub fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string(),
        None => std::env::var("EBBTIDE_BOOTSTRAP_TOKEN")
            .context("no bootstrap token: set EBBTIDE_BOOTSTRAP_TOKEN or --token-file")?,
    };
    let config = ebbtide_agent::AgentConfig {
        scheduler: args.scheduler,
        worker_id: args.worker_id,
        bootstrap_token: token,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = ebbtide_agent::run(config) => r.map_err(Into::into),
            _ = term.recv() => Ok(()),
        }
    })
}
