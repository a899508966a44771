//! The `flow` binary: parses the command line, runs the command, renders any error once.

use clap::Parser;

fn main() {
    let cli = flow::cli::Cli::parse();
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
    std::process::exit(code);
}
