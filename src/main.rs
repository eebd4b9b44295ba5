//! The `meshctl` binary: parse, run, map errors to exit codes. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use meshctl::cli::Cli;
use meshctl::commands::{self, Exit, UsageError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(exit) => exit.into(),
        Err(err) => {
            print_error(&err);
            exit_code_for(&err).into()
        }
    }
}

/// `error: …`, then every cause indented, as uv and cargo print them.
fn print_error(err: &anyhow::Error) {
    eprint!("{}", error_text(err));
}

fn error_text(err: &anyhow::Error) -> String {
    let mut text = format!("error: {err}\n");
    for cause in err.chain().skip(1) {
        // A cause the message already quotes (`…: {e}`) is not said twice.
        let said = cause.to_string();
        if text.contains(said.trim()) {
            continue;
        }
        text.push_str(&format!("  Caused by: {}\n", said.replace('\n', "\n  ")));
    }
    text
}

fn exit_code_for(err: &anyhow::Error) -> Exit {
    if err.chain().any(|c| c.downcast_ref::<UsageError>().is_some()) {
        Exit::Usage
    } else {
        Exit::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_cause_the_message_already_quotes_is_said_once() {
        let cause = anyhow::anyhow!("no such file");
        let quoted = Err::<(), _>(cause)
            .context("cannot read `x`: no such file")
            .unwrap_err();
        assert_eq!(error_text(&quoted), "error: cannot read `x`: no such file\n");
        let other = Err::<(), _>(anyhow::anyhow!("connection refused"))
            .context("cannot reach the API server")
            .unwrap_err();
        assert_eq!(
            error_text(&other),
            "error: cannot reach the API server\n  Caused by: connection refused\n"
        );
    }
}
