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
    let mut text = format!("error: {err}\n");
    for cause in err.chain().skip(1) {
        text.push_str(&format!(
            "  Caused by: {}\n",
            cause.to_string().replace('\n', "\n  ")
        ));
    }
    eprint!("{text}");
}

fn exit_code_for(err: &anyhow::Error) -> Exit {
    if err.chain().any(|c| c.downcast_ref::<UsageError>().is_some()) {
        Exit::Usage
    } else {
        Exit::Failure
    }
}
