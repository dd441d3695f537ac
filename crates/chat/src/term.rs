//! The two faces of the terminal: [`Input`], where lines come from, and [`Printer`],
//! where lines go.
//!
//! On a terminal, a rustyline editor runs on its own thread and reads one line whenever
//! the session asks ([`Input::prompt`]). Messages that arrive meanwhile go through
//! rustyline's `ExternalPrinter`, which clears the prompt and the half-typed line, prints
//! the message and draws them again, so typing is never garbled. rustyline was chosen
//! because it is a well-kept, pure-Rust readline that supports exactly this (external
//! printing while `readline` blocks), plus history, completion and a masked password
//! prompt through its highlighter, with no C library to link.
//!
//! With input piped (or `--plain`), a thread reads stdin line by line and output is
//! plain lines on stdout: no prompts, no escape sequences, easy to script and to grep.

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use rustyline::completion::Completer;
use rustyline::config::{ColorMode, Configurer};
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc;

use crate::command::USAGE;

/// Where output lines go. Cheap to clone; usable from any task.
#[derive(Clone)]
pub(crate) struct Printer {
    sink: Arc<Sink>,
}

enum Sink {
    Stdout,
    Readline(Mutex<Box<dyn ExternalPrinter + Send>>),
}

impl Printer {
    fn stdout() -> Printer {
        Printer {
            sink: Arc::new(Sink::Stdout),
        }
    }

    /// Prints one line (or several, joined by `\n`, kept together).
    pub(crate) fn line(&self, text: impl Into<String>) {
        let mut text = text.into();
        text.push('\n');
        match &*self.sink {
            Sink::Stdout => {
                // A closed stdout is no reason to stop chatting or to panic.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Sink::Readline(printer) => {
                let mut printer = printer.lock().unwrap_or_else(|e| e.into_inner());
                if printer.print(text.clone()).is_err() {
                    let _ = std::io::stdout().write_all(text.as_bytes());
                }
            }
        }
    }

    /// Prints lines as one block, not interleaved with other output.
    pub(crate) fn lines(&self, lines: Vec<String>) {
        if !lines.is_empty() {
            self.line(lines.join("\n"));
        }
    }
}

/// A request to the editor thread: show `text` and read a line.
struct Prompt {
    text: String,
    /// Mask what is typed (a password) and keep it out of history.
    secret: bool,
}

/// Where input lines come from.
pub(crate) struct Input {
    lines: mpsc::Receiver<Option<String>>,
    /// To the editor thread on a terminal; `None` when reading piped input.
    prompts: Option<std_mpsc::Sender<Prompt>>,
    /// A line has been asked for and not yet received.
    asked: bool,
}

impl Input {
    /// Opens the terminal (when stdin and stdout are one and `plain` is false) or stdin.
    pub(crate) fn open(plain: bool) -> (Input, Printer) {
        use std::io::IsTerminal;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        if tty && !plain {
            if let Some(opened) = Input::editor() {
                return opened;
            }
        }
        (Input::piped(), Printer::stdout())
    }

    fn piped() -> Input {
        let (tx, rx) = mpsc::channel(64);
        // A plain thread, not tokio's stdin: a read blocked on stdin must not hold up
        // the runtime's shutdown.
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        if tx.blocking_send(Some(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.blocking_send(None);
        });
        Input {
            lines: rx,
            prompts: None,
            asked: false,
        }
    }

    /// Starts the editor thread; `None` if the terminal cannot be driven.
    fn editor() -> Option<(Input, Printer)> {
        let (printer_tx, printer_rx) = std_mpsc::channel();
        let (prompt_tx, prompt_rx) = std_mpsc::channel::<Prompt>();
        let (line_tx, line_rx) = mpsc::channel(1);
        std::thread::spawn(move || {
            let mut rl = match Editor::<ChatHelper, DefaultHistory>::new() {
                Ok(rl) => rl,
                Err(_) => return,
            };
            rl.set_helper(Some(ChatHelper::default()));
            rl.set_auto_add_history(false);
            // The highlighter only masks passwords; it must run even on dumb terminals.
            rl.set_color_mode(ColorMode::Forced);
            let printer: Box<dyn ExternalPrinter + Send> = match rl.create_external_printer() {
                Ok(printer) => Box::new(printer),
                Err(_) => return,
            };
            if printer_tx.send(printer).is_err() {
                return;
            }
            while let Ok(prompt) = prompt_rx.recv() {
                if let Some(helper) = rl.helper_mut() {
                    helper.masking = prompt.secret;
                }
                let line = match rl.readline(&prompt.text) {
                    Ok(line) => {
                        if !prompt.secret && !line.trim().is_empty() {
                            let _ = rl.add_history_entry(line.as_str());
                        }
                        Some(line)
                    }
                    // Ctrl-C and Ctrl-D both leave the client.
                    Err(ReadlineError::Interrupted | ReadlineError::Eof) => None,
                    Err(_) => None,
                };
                if line_tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
        // The thread answers at once: with the printer, or by ending (dropping the sender).
        let printer = printer_rx.recv().ok()?;
        let input = Input {
            lines: line_rx,
            prompts: Some(prompt_tx),
            asked: false,
        };
        let printer = Printer {
            sink: Arc::new(Sink::Readline(Mutex::new(printer))),
        };
        Some((input, printer))
    }

    /// Whether lines come from an interactive editor (prompts are shown).
    pub(crate) fn interactive(&self) -> bool {
        self.prompts.is_some()
    }

    /// Asks for a line with this prompt (shown on a terminal only). Does nothing if a
    /// line has been asked for already.
    pub(crate) fn prompt(&mut self, text: &str, secret: bool) {
        if self.asked {
            return;
        }
        self.asked = true;
        if let Some(prompts) = &self.prompts {
            let _ = prompts.send(Prompt {
                text: text.to_string(),
                secret,
            });
        }
    }

    /// The next line; `None` at end of input. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<String> {
        let line = self.lines.recv().await.flatten();
        self.asked = false;
        line
    }

    /// Before exiting: an editor blocked in `readline` holds the terminal in raw mode,
    /// so let the user end it with Enter rather than leave the terminal broken.
    pub(crate) async fn finish(&mut self, printer: &Printer) {
        if self.asked && self.interactive() {
            printer.line("(press Enter to exit)");
            let _ = self.recv().await;
        }
    }
}

/// Masks passwords and completes command names.
#[derive(Default)]
struct ChatHelper {
    masking: bool,
}

impl Highlighter for ChatHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.masking {
            Cow::Owned("*".repeat(line.chars().count()))
        } else {
            Cow::Borrowed(line)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, kind: CmdKind) -> bool {
        self.masking && kind != CmdKind::MoveCursor
    }
}

impl Completer for ChatHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let head = line.get(..pos).unwrap_or(line);
        if self.masking || head.contains(':') || head.contains(' ') {
            return Ok((0, Vec::new()));
        }
        let names = USAGE
            .iter()
            .map(|(usage, _)| match usage.split_once(':') {
                Some((name, _)) => format!("{name}:"),
                None => usage.to_string(),
            })
            .filter(|name| name.starts_with(head));
        let mut names: Vec<String> = names.collect();
        names.dedup();
        Ok((0, names))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Validator for ChatHelper {}

impl Helper for ChatHelper {}
