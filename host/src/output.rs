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

/// Whether `c` must never reach a terminal or a log raw: control characters (C0, DEL, C1 —
/// U+0085 among them), the line and paragraph separators U+2028 and U+2029 (which Python,
/// JavaScript and many log viewers take for line breaks, so a policy could forge a line), and
/// the bidirectional controls (which can make a terminal show text in another order).
pub fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// `text` with every [`must_escape`] character escaped as `\u{..}`, cut to `max_chars` with a
/// note of what was left out.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    // Counted as printed, escapes included: 2,000 control characters do not make 20,000.
    let mut shown = 0;
    for (at, c) in text.char_indices() {
        let escaped = must_escape(c).then(|| c.escape_unicode().to_string());
        let width = escaped.as_ref().map_or(1, |e| e.len());
        if shown + width > max_chars {
            out.push_str(&format!("… ({} more bytes)", text.len() - at));
            break;
        }
        shown += width;
        match escaped {
            Some(escaped) => out.push_str(&escaped),
            None => out.push(c),
        }
    }
    out
}

/// A value for a JSON report: redacted and cut to `max_chars`, but not escaped — the JSON
/// encoding does that ([`out_json`]), so the report stays valid JSON however long the value.
pub fn json_text(text: &str, max_chars: usize) -> String {
    let text = redactor().redact(text);
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}… ({} more bytes)", &text[..at], text.len() - at),
        None => text,
    }
}

/// A JSON report on stdout, pretty-printed. Every string in it was bounded before (see
/// [`json_text`]), so the lines are not cut; what JSON leaves raw but a reader could take for a
/// line break or reordering (DEL, C1, U+2028/U+2029, bidirectional controls) is written as a
/// `\uXXXX` escape, which every JSON parser reads back as the same character.
pub fn out_json(value: &serde_json::Value) {
    if let Err(e) = out_raw(json_report(value).as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        err(&format!("devbox-auth: error: cannot write to stdout ({e})"));
        std::process::exit(1);
    }
}

/// What [`out_json`] prints.
fn json_report(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).expect("a JSON value serializes");
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        // serde_json already escapes C0 controls; anything else left here is inside a string.
        if must_escape(c) && !matches!(c, '\n') {
            escaped.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    escaped.push('\n');
    escaped
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
    let line = clean(line);
    match BACKGROUND_LOG.get() {
        Some(log) => log.push(line),
        None => {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

/// Write stderr lines from a thread of their own, through a bounded queue, from now on: for a
/// process that must never stall on its log (`watch`: when whatever reads its stderr stops
/// reading, a blocking write would freeze rotations, signals and the app's supervision). Lines
/// that do not fit are dropped, and how many is said once there is room again.
pub fn log_in_background() {
    BACKGROUND_LOG.get_or_init(BackgroundLog::start);
}

static BACKGROUND_LOG: std::sync::OnceLock<BackgroundLog> = std::sync::OnceLock::new();

struct BackgroundLog {
    queue: std::sync::mpsc::SyncSender<String>,
    dropped: std::sync::atomic::AtomicUsize,
    /// Lines queued and not yet written.
    unwritten: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Wait (at most `limit`) until the background log has written what it was given: before the
/// process exits, so its last lines are not lost.
pub fn flush_log(limit: std::time::Duration) {
    let Some(log) = BACKGROUND_LOG.get() else { return };
    let deadline = std::time::Instant::now() + limit;
    while log.unwritten.load(std::sync::atomic::Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

impl BackgroundLog {
    /// Lines waiting for the writer at most.
    const QUEUE: usize = 1024;

    fn start() -> Self {
        let (queue, lines) = std::sync::mpsc::sync_channel::<String>(Self::QUEUE);
        let unwritten = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = unwritten.clone();
        std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || {
                for line in lines {
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                    written.fetch_sub(1, std::sync::atomic::Ordering::Release);
                }
            })
            .expect("a thread for the log");
        Self { queue, dropped: std::sync::atomic::AtomicUsize::new(0), unwritten }
    }

    fn send(&self, line: String) -> bool {
        self.unwritten.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let sent = self.queue.try_send(line).is_ok();
        if !sent {
            self.unwritten.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        sent
    }

    fn push(&self, line: String) {
        use std::sync::atomic::Ordering::Relaxed;
        let dropped = self.dropped.swap(0, Relaxed);
        if dropped > 0 {
            let note = format!("devbox-auth: {dropped} log lines dropped (nothing was reading stderr)");
            if !self.send(note) {
                self.dropped.fetch_add(dropped, Relaxed);
            }
        }
        if !self.send(line) {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
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
        for c in ['\u{2028}', '\u{2029}', '\u{85}', '\u{2066}', '\u{202a}'] {
            assert_eq!(sanitize(&format!("a{c}b"), 100), format!("a{}b", c.escape_unicode()), "{c:?}");
        }
    }

    #[test]
    fn json_values_are_bounded_before_encoding_and_stay_valid() {
        let why = format!("\"\\\u{2028}\u{202e}\u{85}{}", "é\n".repeat(3000));
        let bounded = json_text(&why, 1000);
        assert!(bounded.chars().count() < 1100 && bounded.ends_with("more bytes)"), "{bounded}");
        let report = json_report(&serde_json::json!({ "why": bounded }));
        assert!(report.contains("\\u2028") && report.contains("\\u202e") && report.contains("\\u0085"), "{report}");
        assert!(!report.chars().any(|c| must_escape(c) && c != '\n'), "{report}");
        let back: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(back["why"], bounded.as_str());
    }
}
