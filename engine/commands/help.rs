//! `flow help [COMMAND...]`: clap's help of flow or of a command, as `flow COMMAND --help`
//! prints it (clap's own `help` subcommand refuses `flow help --help`).

use crate::error::Error;

/// `flow help [COMMAND...]`: the help of flow, or of the command named; an unknown command is
/// a usage error naming the commands there are.
pub fn run(path: &[String]) -> Result<i32, Error> {
    use clap::CommandFactory;
    let mut command = crate::cli::Cli::command();
    // Built, subcommands know their full name (`Usage: flow build ...`).
    command.build();
    for name in path {
        let known: Vec<String> = command
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        command = match command.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None if known.is_empty() => {
                return Err(Error::Usage {
                    message: format!(
                        "`flow help {}`: `{}` has no subcommand",
                        path.join(" "),
                        command.get_name()
                    ),
                    help: None,
                })
            }
            None => {
                return Err(Error::Usage {
                    message: format!("`flow help {}`: no such command", path.join(" ")),
                    help: Some(format!("the commands: {}", known.join(", "))),
                })
            }
        };
    }
    let _ = command.print_long_help();
    Ok(0)
}
