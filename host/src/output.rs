//! Every line devbox-auth prints goes through here, whatever its origin: secrets are masked
//! (known values, vault references, token shapes), control characters are escaped so no
//! string can move the cursor, recolour the terminal or forge a second line, and each line is
//! bounded. Text a policy supplied is quoted and attributed, so it cannot pass for the host.
//!
//! A closed stdout (`devbox-auth ... | head`) ends the process quietly instead of panicking.

use std::io::Write;

use crate::secrets::redactor;

/// Longest line printed, in characters.
pub const MAX_LINE_CHARS: usize = 2000;
/// Longest policy-supplied text quoted in a line.
pub const MAX_POLICY_TEXT_CHARS: usize = 500;

/// `text` with control characters (C0, DEL, C1) and bidirectional overrides escaped as
/// `\u{..}`, cut to `max_chars` with a note of what was left out.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (shown, (at, c)) in text.char_indices().enumerate() {
        if shown >= max_chars {
            out.push_str(&format!("… ({} more bytes)", text.len() - at));
            break;
        }
        let invisible = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || invisible {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Redacted and sanitized: what may reach a terminal or a log.
pub fn clean(text: &str) -> String {
    sanitize(&redactor().redact(text), MAX_LINE_CHARS)
}

/// Text that came from a policy, marked as such: `«...»`, redacted, escaped, bounded.
pub fn policy_text(text: &str) -> String {
    format!("«{}»", sanitize(&redactor().redact(text), MAX_POLICY_TEXT_CHARS))
}

/// One line on stdout. A reader that went away (a closed pipe) ends the process with the
/// conventional status for SIGPIPE, without a panic.
pub fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", clean(line)).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        // `| head`: the reader has what it wanted; exit as a shell's pipeline member would.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        // A full disk behind `>file`: what was asked for did not arrive.
        Err(e) => {
            err(&format!("devbox-auth: error: cannot write to stdout ({e})"));
            std::process::exit(1);
        }
    }
}

/// Raw bytes on stdout, unaltered: only for what the user asked for verbatim (`token`).
pub fn out_raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// One line on stderr.
pub fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", clean(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bounds() {
        assert_eq!(sanitize("a\x1b[31mred\x07\nnext", 100), "a\\u{1b}[31mred\\u{7}\\u{a}next");
        assert_eq!(sanitize("\u{202e}evil", 100), "\\u{202e}evil");
        let long = "x".repeat(10);
        assert_eq!(sanitize(&long, 4), "xxxx… (6 more bytes)");
        assert_eq!(policy_text("hi\r\n"), "«hi\\u{d}\\u{a}»");
    }
}
