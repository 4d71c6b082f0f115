//! `ebbtide`: the operator's command.
//!
//! Library crates return typed errors; this binary is the edge where they
//! become `anyhow` messages and exit codes.

mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ebbtide: an autoscaler for CI/CD worker fleets.
#[derive(Parser)]
#[command(name = "ebbtide", version, about)]
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
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and report every problem with its line.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Simulate(args) => simulate::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_check(file: &std::path::Path) -> anyhow::Result<()> {
    let config = ebbtide_config::load(file)?;
    let e = &config.engine;
    println!(
        "{}: ok ({} classes, {} tenants, {} pools)",
        file.display(),
        e.classes.len(),
        e.tenants.len(),
        e.pools.len()
    );
    Ok(())
}
