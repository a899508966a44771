//! The `flow` binary: parses the command line, runs the command, renders any error once.

use clap::Parser;

/// mimalloc instead of glibc's malloc: a watch cycle cloned its 12,000-entry file-state table in
/// 55–95 ms under glibc (`_int_malloc` and fresh-page faults after the cycle before freed
/// its allocations), see the commit that added it for the figures.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
