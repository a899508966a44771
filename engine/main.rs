//! The `flow` binary: parses the command line, runs the command, renders any error once.

use clap::Parser;

fn main() {
    let cli = flow::cli::Cli::parse();
    if cli.only_prints() {
        // A reader gone (`| head`) ends a command that only prints quietly, with the status a
        // shell gives a process killed by SIGPIPE (128 + 13), as `ls` or `git log` end.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
                std::process::exit(141);
            }
            default(info);
        }));
    }
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
