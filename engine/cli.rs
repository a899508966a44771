//! The command line: `flow [-C DIR] COMMAND ...`, parsed with clap. Each command lives in its own
//! module under `commands/`; this file only declares the arguments and dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::diagnostics::ColorMode;
use crate::error::Error;
use crate::query::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "flow",
    version,
    about = "A declarative, content-hashed build graph for monorepo CI/CD pipelines",
    after_help = "Exit codes: 0 success, 1 a target failed, 2 bad input or usage, 130 interrupted."
)]
pub struct Cli {
    /// Run as if flow was started in DIR (the workspace is found by walking up from there)
    #[arg(short = 'C', value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,

    /// When to use colors in messages
    #[arg(long, value_enum, default_value_t = ColorMode::Auto, global = true)]
    pub color: ColorMode,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a `flow.toml` in DIR (default: the current directory or `-C DIR`)
    Init {
        /// Where to create the workspace
        dir: Option<PathBuf>,
    },
    /// Ask about the target graph: `flow query 'deps(//app:test)'`
    Query {
        /// A query expression: target patterns, deps(), rdeps(), somepath(), allpaths(), kind(),
        /// attr(), filter(), and the set operators + - ^ (see docs/query.md)
        expr: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Label)]
        output: OutputFormat,
    },
}

impl Cli {
    /// The directory commands start from.
    pub fn start_dir(&self) -> Result<PathBuf, Error> {
        match &self.dir {
            Some(d) => Ok(d.clone()),
            None => std::env::current_dir().map_err(|e| Error::Io {
                path: PathBuf::from("."),
                action: "read the current directory",
                error: e.to_string(),
            }),
        }
    }

    /// Runs the command; `Ok` carries the exit code.
    pub fn run(&self) -> Result<i32, Error> {
        match &self.command {
            Command::Init { dir } => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => self.start_dir()?,
                };
                crate::commands::init::run(&dir)
            }
            Command::Query { expr, output } => {
                crate::commands::query::run(&self.start_dir()?, expr, *output)
            }
        }
    }
}
