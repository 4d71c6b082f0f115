//! `ebbtide`: the operator's command.
//!
//! Library crates return typed errors; this binary is the edge where they
//! become `anyhow` messages and exit codes.

mod client;
mod cost;
mod demo;
mod explain;
mod logs;
mod plugins;
mod service;
mod simulate;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ebbtide: an autoscaler for CI/CD worker fleets.
#[derive(Parser)]
#[command(
    name = "ebbtide",
    version,
    about = "Ebbtide: keeps a fleet of CI workers sized to the work. Run the scheduler (serve), \
             talk to it (submit, status, explain, jobs, logs, cancel), check and reload its \
             configuration, replay traces (simulate), publish cost reports."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Replay a job trace through the real engine and compare policies.
    Simulate(Box<simulate::Args>),
    /// Ebbtide on its embedded defaults: a burst of jobs on local workers.
    Demo(demo::DemoArgs),
    /// Run the scheduler (job API, worker API, control loop).
    Serve(service::ServeArgs),
    /// Run a worker agent (started by a provider with its bootstrap token).
    Agent(service::AgentArgs),
    /// Submit a job; prints its id.
    Submit(client::SubmitArgs),
    /// The fleet (operator key): pools, workers, running jobs, the queue
    /// against its targets, recent decisions, cost. With a tenant key: your
    /// own queue and jobs.
    Status(status::StatusArgs),
    /// Why a job is still waiting: its place in its class's queue, what it
    /// needs, the pools that can run it and what the planner decided for
    /// them, quota or budget limits in the way.
    Explain(explain::ExplainArgs),
    /// Cancel a job (queued: removed; running: stopped on its worker).
    Cancel(client::CancelArgs),
    /// Retire a worker (an operator key): no new job, its jobs finish, then
    /// it is terminated; the planner replaces it if the queue needs it.
    Drain(client::DrainArgs),
    /// Your jobs (an operator key: every tenant's).
    Jobs(client::JobsArgs),
    /// A job's output, each attempt labelled once it ran more than once;
    /// `--follow` keeps printing until it is finished.
    Logs(logs::LogsArgs),
    /// Cost reports.
    Cost {
        #[command(subcommand)]
        command: cost::CostCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and report every problem with its line.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Validate a file and make the running server reload it (SIGHUP).
    Reload {
        /// The TOML file the server was started with.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Config {
            command: ConfigCommand::Reload { file },
        } => service::reload(&file),
        Command::Simulate(args) => simulate::run(*args),
        Command::Demo(args) => {
            service::init_logging_quiet();
            demo::run(args)
        }
        Command::Serve(args) => service::serve(args),
        Command::Agent(args) => {
            service::init_logging(None, None);
            service::agent(args)
        }
        Command::Submit(args) => client::submit(args),
        Command::Status(args) => status::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Cancel(args) => client::cancel(args),
        Command::Drain(args) => client::drain(args),
        Command::Jobs(args) => client::jobs(args),
        Command::Logs(args) => logs::run(args),
        Command::Cost { command } => cost::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many errors already quote
/// their cause in their own message, and printing the chain as well would
/// say it twice ("No such file…: No such file…").
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn config_check(file: &std::path::Path) -> anyhow::Result<()> {
    let config = plugins::load(file)?;
    let e = &config.engine;
    println!(
        "{}: ok ({} classes, {} tenants, {} pools)",
        file.display(),
        e.classes.len(),
        e.tenants.len(),
        e.pools.len()
    );
    for w in ebbtide_config::warnings(&config) {
        println!("warning: {w}");
    }
    if let Err(problem) = data_dir_writable(&config.server.data_dir) {
        anyhow::bail!("server.data_dir: {problem}");
    }
    Ok(())
}

/// Whether `serve` could keep its state in `dir`: it exists and takes a
/// file, or it can be created.
fn data_dir_writable(dir: &std::path::Path) -> Result<(), String> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p.to_path_buf(),
            _ => {
                probe = std::path::PathBuf::from(".");
                break;
            }
        }
    }
    if !probe.is_dir() {
        return Err(format!("{} is not a directory", probe.display()));
    }
    let test = probe.join(format!(".ebbtide-write-test-{}", std::process::id()));
    match std::fs::write(&test, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&test);
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot write in {} ({e}); serve keeps its store and keys there",
            probe.display()
        )),
    }
}
