//! Asking a person to approve a gate, when there is a person at a terminal.

use std::io::{BufRead, IsTerminal, Write};

/// Whether a question can be asked: stdin and stderr are terminals.
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks on the terminal; true only for an explicit yes.
pub async fn ask(step: &str, question: &str) -> bool {
    let prompt = format!("approve step `{step}`? {question} [y/N] ");
    tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{prompt}");
        let _ = stderr.flush();
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    })
    .await
    .unwrap_or(false)
}
