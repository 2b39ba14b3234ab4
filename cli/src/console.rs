//! `kmirror mirror`'s stderr, shared by its log lines and its progress.
//!
//! On a terminal the progress is one bar redrawn in place; a log line written
//! while the bar shows clears it, takes the line, and the bar is drawn again
//! below, so logs scroll above the bar instead of breaking into it. Elsewhere
//! progress is whole lines like the logs.
//!
//! Every write ignores errors: a reader that went away (`kmirror mirror 2>&1 |
//! head -1`) must not stop, let alone panic, a mirror that is copying data.

use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Clears the terminal line the cursor is on and returns to its start.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// The process's stderr, with the progress bar it shows.
pub struct Console {
    terminal: bool,
    /// The bar on screen, empty when none is.
    bar: Mutex<String>,
}

static CONSOLE: OnceLock<Console> = OnceLock::new();

/// The process's console (stderr).
pub fn console() -> &'static Console {
    CONSOLE.get_or_init(|| Console {
        terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        bar: Mutex::new(String::new()),
    })
}

impl Console {
    /// Whether stderr is a terminal (progress is then a bar).
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Writes a whole line (above the bar on a terminal).
    pub fn line(&self, text: &str) {
        self.write_above_bar(format!("{text}\n").as_bytes());
    }

    /// Shows `bar` in place of the previous one (terminal only; elsewhere it is a
    /// line).
    pub fn show_bar(&self, bar: &str) {
        if !self.terminal {
            self.line(bar);
            return;
        }
        let mut shown = self
            .bar
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *shown = bar.to_string();
        let _ = write!(std::io::stderr().lock(), "{CLEAR_LINE}{bar}");
    }

    /// Leaves the bar where it is, as a finished line; the next bar starts below.
    pub fn finish_bar(&self) {
        let mut shown = self
            .bar
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !shown.is_empty() {
            shown.clear();
            let _ = writeln!(std::io::stderr().lock());
        }
    }

    fn write_above_bar(&self, bytes: &[u8]) {
        let shown = self
            .bar
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut stderr = std::io::stderr().lock();
        if shown.is_empty() {
            let _ = stderr.write_all(bytes);
        } else {
            let _ = write!(stderr, "{CLEAR_LINE}");
            let _ = stderr.write_all(bytes);
            let _ = write!(stderr, "{shown}");
        }
        let _ = stderr.flush();
    }

    /// The log writer for [`kmirror_common::telemetry::init_with_log_writer`]:
    /// each log line goes above the bar.
    pub fn log_writer(&'static self) -> BoxMakeWriter {
        BoxMakeWriter::new(move || LogLine {
            console: self,
            buffer: Vec::new(),
        })
    }
}

/// One log event: collected, then written as a whole when the logger drops it.
struct LogLine {
    console: &'static Console,
    buffer: Vec<u8>,
}

impl std::io::Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.console.write_above_bar(&self.buffer);
        }
    }
}
