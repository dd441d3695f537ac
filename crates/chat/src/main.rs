//! `chat`: the terminal client of chatd.
//!
//! - [`app`]: one run of the client: connect, the login menu, commands, events.
//! - [`command`]: the classic `name:arg:arg` commands, parsed.
//! - [`format`]: how messages, lists and the overview look on screen.
//! - [`term`]: input (rustyline on a terminal, plain lines when piped) and output.

mod app;
mod command;
mod format;
mod term;

use std::process::ExitCode;

use clap::Parser;

/// The terminal client of chatd.
///
/// Connects, offers login and register, then takes commands such as `chat:ID:TEXT`
/// (type `help` once logged in). With input piped it reads one command per line, runs
/// each after the previous one's reply, and quits at the end of input; the menu's
/// answers may come from input too, or use --login / --register.
#[derive(Debug, Parser)]
#[command(name = "chat", version)]
struct Args {
    /// The server's address.
    #[arg(default_value = "127.0.0.1:6000")]
    addr: String,

    /// Log in as this user (a numeric id or a name) instead of showing the menu.
    #[arg(long, value_name = "NAME|ID", conflicts_with = "register")]
    login: Option<String>,

    /// Register this user name, then log in as it, instead of showing the menu.
    #[arg(long, value_name = "NAME")]
    register: Option<String>,

    /// The password for --login or --register; read from input when absent. Prefer the
    /// environment variable: a flag is visible to other users of the machine.
    #[arg(long, env = "CHAT_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// Plain lines in and out even on a terminal (no line editor).
    #[arg(long)]
    plain: bool,

    /// Connect with TLS; the certificate must name the address's host.
    #[arg(long)]
    tls: bool,

    /// With --tls: trust this CA certificate (PEM), e.g. a self-signed server's, instead
    /// of the system's CAs.
    #[arg(long, value_name = "PEM", requires = "tls")]
    ca: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let auto = match (args.login, args.register) {
        (Some(who), _) => Some(app::AutoLogin::Login {
            who,
            password: args.password,
        }),
        (None, Some(name)) => Some(app::AutoLogin::Register {
            name,
            password: args.password,
        }),
        (None, None) => None,
    };
    let target = app::Server {
        addr: args.addr,
        tls: args.tls.then_some(args.ca),
    };
    match app::run(target, auto, args.plain).await {
        app::Exit::Quit => ExitCode::SUCCESS,
        app::Exit::Lost | app::Exit::LoginFailed => ExitCode::FAILURE,
    }
}
