//! A policy's log lines: kept for reports and echoed to stderr at or above a level, within a
//! budget of lines and bytes. Lines past the budget are counted, not kept, and the count is
//! reported once at the end ("N log lines dropped") — a chatty policy is not killed for it.

use crate::output;
use crate::secrets::redactor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LogBudget {
    pub max_lines: usize,
    pub max_bytes: usize,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self { max_lines: 200, max_bytes: 64 << 10 }
    }
}

#[derive(Debug)]
pub struct PolicyLog {
    pub policy: String,
    pub echo_level: Option<LogLevel>,
    pub budget: LogBudget,
    /// Kept lines, redacted and bounded.
    pub lines: Vec<(LogLevel, String)>,
    bytes: usize,
    pub dropped: usize,
    /// Lines the host wrote about the policy, and those past [`MAX_HOST_LINES`] it dropped.
    host_lines: usize,
    host_dropped: usize,
}

/// The host's own lines about what a policy did (denied calls, ignored revocations) are bounded
/// too: a policy looping over refused calls gets this many, then a count.
pub const MAX_HOST_LINES: usize = 50;

impl PolicyLog {
    pub fn new(policy: &str, echo_level: Option<LogLevel>, budget: LogBudget) -> Self {
        Self {
            policy: policy.to_string(),
            echo_level,
            budget,
            lines: Vec::new(),
            bytes: 0,
            dropped: 0,
            host_lines: 0,
            host_dropped: 0,
        }
    }

    /// A line from the policy: counted against its budget, quoted as its words.
    pub fn push(&mut self, level: LogLevel, message: &str) {
        if self.lines.len() >= self.budget.max_lines || self.bytes + message.len() > self.budget.max_bytes {
            self.dropped += 1;
            return;
        }
        self.bytes += message.len();
        let message = output::sanitize(&redactor().redact(message), output::MAX_POLICY_TEXT_CHARS);
        if self.echo_level.is_some_and(|min| level >= min) {
            output::err(&format!("devbox-auth: policy {}: {}: «{message}»", self.policy, level.as_str()));
        }
        self.lines.push((level, message));
    }

    /// A line the host writes about the policy (a denied call): not quoted, not counted
    /// against the policy's budget but bounded by [`MAX_HOST_LINES`].
    pub fn host(&mut self, level: LogLevel, message: &str) {
        if self.host_lines >= MAX_HOST_LINES {
            self.host_dropped += 1;
            return;
        }
        self.host_lines += 1;
        self.write_host(level, message);
    }

    fn write_host(&mut self, level: LogLevel, message: &str) {
        if self.echo_level.is_some_and(|min| level >= min) {
            output::err(&format!("devbox-auth: policy {}: {}", self.policy, message));
        }
        self.lines.push((level, output::clean(message)));
    }

    /// Say once how many lines were dropped, if any.
    pub fn finish(&mut self) {
        if self.dropped > 0 {
            let note = format!(
                "{} log lines dropped (over the budget of {} lines or {} bytes)",
                self.dropped, self.budget.max_lines, self.budget.max_bytes
            );
            self.write_host(LogLevel::Warn, &note);
            self.dropped = 0;
        }
        if self.host_dropped > 0 {
            let note = format!("{} more lines about what the policy did were dropped", self.host_dropped);
            self.write_host(LogLevel::Warn, &note);
            self.host_dropped = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_budget_are_counted_not_kept() {
        let mut log = PolicyLog::new("p", None, LogBudget { max_lines: 3, max_bytes: 1000 });
        for i in 0..10 {
            log.push(LogLevel::Info, &format!("line {i}"));
        }
        assert_eq!(log.lines.len(), 3);
        assert_eq!(log.dropped, 7);
        log.finish();
        assert!(log.lines.last().unwrap().1.contains("7 log lines dropped"));
        let mut log = PolicyLog::new("p", None, LogBudget { max_lines: 100, max_bytes: 10 });
        log.push(LogLevel::Info, "0123456789");
        log.push(LogLevel::Info, "x");
        assert_eq!((log.lines.len(), log.dropped), (1, 1));
    }
}
