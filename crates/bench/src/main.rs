//! `chat-bench`: flags, a multi-threaded runtime, the scenario, and its report: a human
//! summary, then one line of JSON as the last line of stdout. Exits 0 when the run was
//! clean, 2 when it ran but found a problem (loss, duplicates, drops, errors), 1 when it
//! could not run.

use clap::Parser;

use chat_bench::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let child = matches!(cli.command, Command::Child { .. });
    match runtime.block_on(chat_bench::run(&cli.command)) {
        Ok(record) => {
            if !child {
                print!("{}", record.human());
                println!("{}", record.to_json_line());
            }
            std::process::ExitCode::from(if record.ok { 0 } else { 2 })
        }
        Err(e) => {
            eprintln!("chat-bench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
