//! The `flow` binary: parses the command line, runs the command, renders any error once.

use clap::Parser;

fn main() {
    let cli = flow::cli::Cli::parse();
    // Before anything is printed, a BUILD file's `print()` included.
    let stopped = cli
        .stops_workflow_commands()
        .then(flow::reports::github::CommandsStopped::start);
    let code = match cli.run() {
        Ok(code) => code,
        Err(e) => {
            eprint!(
                "{}",
                flow::diagnostics::render(&e, cli.color.stderr_colors())
            );
            e.exit_code()
        }
    };
    // (`exit` runs no destructor.)
    drop(stopped);
    std::process::exit(code);
}
