//! A line-preserving reader and editor for `~/.databrickscfg`.
//!
//! The file is the INI dialect of Python's `configparser`, which the Databricks SDKs and CLI use:
//! `[profile]` headers, `key = value` or `key: value` entries, `#`/`;` full-line comments, and
//! indented continuation lines. Keys are case-insensitive.
//!
//! Editing keeps every line it does not touch byte for byte, so a user's comments, other
//! profiles and ordering survive when devbox-auth updates its own profile. Parsing an untouched
//! document and printing it gives back the exact input.

use std::fmt;

/// Where and why a file is not valid `.databrickscfg` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A value or key that cannot be written without corrupting the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError(pub String);

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EditError {}

#[derive(Debug, Clone)]
enum Line {
    /// Blank line or comment.
    Other(String),
    Section {
        name: String,
        raw: String,
    },
    Entry {
        key: String,
        value: String,
        raw: String,
    },
    /// Indented line continuing the previous entry's value.
    Continuation(String),
}

impl Line {
    fn raw(&self) -> &str {
        match self {
            Line::Other(raw) | Line::Continuation(raw) => raw,
            Line::Section { raw, .. } | Line::Entry { raw, .. } => raw,
        }
    }
}

/// A parsed `.databrickscfg`.
#[derive(Debug, Clone, Default)]
pub struct Document {
    lines: Vec<Line>,
    trailing_newline: bool,
}

fn is_comment_or_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || t.starts_with(';')
}

/// Parse the text of a `.databrickscfg`.
pub fn parse(text: &str) -> Result<Document, ParseError> {
    let mut lines = Vec::new();
    let mut sections: Vec<String> = Vec::new();
    let mut keys_in_section: Vec<String> = Vec::new();
    let mut last_was_entry = false;
    let body = text.strip_suffix('\n').unwrap_or(text);
    let trailing_newline = text.ends_with('\n');
    if text.is_empty() {
        return Ok(Document::default());
    }
    for (index, raw) in body.split('\n').enumerate() {
        let number = index + 1;
        let err = |message: String| ParseError { line: number, message };
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        if is_comment_or_blank(content) {
            // configparser ends a multi-line value at a blank line; comments are skipped.
            if content.trim().is_empty() {
                last_was_entry = false;
            }
            lines.push(Line::Other(raw.to_string()));
            continue;
        }
        if content.starts_with([' ', '\t']) {
            if !last_was_entry {
                return Err(err("indented line does not continue a `key = value` entry".into()));
            }
            if let Some(Line::Entry { value, .. }) = lines.iter_mut().rev().find(|l| matches!(l, Line::Entry { .. })) {
                value.push('\n');
                value.push_str(content.trim());
            }
            lines.push(Line::Continuation(raw.to_string()));
            continue;
        }
        let trimmed = content.trim();
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(err("a section header has no closing `]`".into()));
            };
            let name = name.trim().to_string();
            if name.is_empty() {
                return Err(err("empty section name `[]`".into()));
            }
            if sections.contains(&name) {
                return Err(err(format!("profile {} appears twice", describe(&name, "a profile"))));
            }
            sections.push(name.clone());
            keys_in_section.clear();
            last_was_entry = false;
            lines.push(Line::Section { name, raw: raw.to_string() });
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            return Err(err("expected `[profile]` or `key = value`".into()));
        };
        let key = trimmed[..split].trim().to_lowercase();
        let value = trimmed[split + 1..].trim().to_string();
        if key.is_empty() {
            return Err(err("entry has an empty key".into()));
        }
        if sections.is_empty() {
            return Err(err(format!("{} appears before any [profile] header", describe(&key, "an entry"))));
        }
        if keys_in_section.contains(&key) {
            let section = sections.last().map(String::as_str).unwrap_or_default();
            return Err(err(format!(
                "{} appears twice in profile {}",
                describe(&key, "an entry"),
                describe(section, "[...]")
            )));
        }
        keys_in_section.push(key.clone());
        last_was_entry = true;
        lines.push(Line::Entry { key, value, raw: raw.to_string() });
    }
    Ok(Document { lines, trailing_newline })
}

/// How an error names a key or profile: quoted when it looks like a name, otherwise only by
/// what it is — a malformed line may be a pasted secret, and errors never show content.
fn describe(name: &str, what: &str) -> String {
    let looks_like_a_name = name.len() <= 40
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.chars().filter(char::is_ascii_digit).count() < 6;
    if looks_like_a_name { format!("`{name}`") } else { what.to_string() }
}

impl Document {
    /// Profile names in file order.
    pub fn sections(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Section { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections().contains(&section)
    }

    /// Index range of the lines belonging to `section` (header included), if present.
    fn section_range(&self, section: &str) -> Option<(usize, usize)> {
        let start = self.lines.iter().position(|l| matches!(l, Line::Section { name, .. } if name == section))?;
        let end = self.lines[start + 1..]
            .iter()
            .position(|l| matches!(l, Line::Section { .. }))
            .map(|p| start + 1 + p)
            .unwrap_or(self.lines.len());
        Some((start, end))
    }

    /// The entries of `section` in file order (keys lower-cased).
    pub fn entries(&self, section: &str) -> Vec<(&str, &str)> {
        let Some((start, end)) = self.section_range(section) else {
            return Vec::new();
        };
        self.lines[start..end]
            .iter()
            .filter_map(|l| match l {
                Line::Entry { key, value, .. } => Some((key.as_str(), value.as_str())),
                _ => None,
            })
            .collect()
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        let key = key.to_lowercase();
        self.entries(section).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Set `key = value` in `section`, replacing an existing entry in place or appending it to
    /// the end of the section (creating the section at the end of the file if needed).
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), EditError> {
        validate_name("profile name", section, &['[', ']'])?;
        validate_name("key", key, &['=', ':', '[', '#', ';'])?;
        if value.contains(['\n', '\r']) {
            return Err(EditError(format!("the value for `{key}` contains a line break")));
        }
        let key = key.to_lowercase();
        let raw = format!("{key} = {value}");
        let entry = Line::Entry { key: key.clone(), value: value.to_string(), raw };
        let (start, end) = match self.section_range(section) {
            Some(range) => range,
            None => {
                if !self.lines.is_empty() && !is_comment_or_blank(self.lines.last().map(Line::raw).unwrap_or("")) {
                    self.lines.push(Line::Other(String::new()));
                }
                self.lines.push(Line::Section { name: section.to_string(), raw: format!("[{section}]") });
                let start = self.lines.len() - 1;
                (start, self.lines.len())
            }
        };
        if let Some(at) = (start..end).find(|&i| matches!(&self.lines[i], Line::Entry { key: k, .. } if *k == key)) {
            self.lines[at] = entry;
            self.drop_continuations(at + 1);
        } else {
            // Insert after the section's last entry (or header), before trailing blanks/comments.
            let at =
                (start..end).rev().find(|&i| !matches!(self.lines[i], Line::Other(_))).map(|i| i + 1).unwrap_or(end);
            self.lines.insert(at, entry);
        }
        self.trailing_newline = true;
        Ok(())
    }

    /// Remove `key` from `section`. Returns whether it was there.
    pub fn remove(&mut self, section: &str, key: &str) -> bool {
        let key = key.to_lowercase();
        let Some((start, end)) = self.section_range(section) else {
            return false;
        };
        match (start..end).find(|&i| matches!(&self.lines[i], Line::Entry { key: k, .. } if *k == key)) {
            Some(at) => {
                self.lines.remove(at);
                self.drop_continuations(at);
                true
            }
            None => false,
        }
    }

    /// Remove the continuation lines of the entry that stood just before `from`. As in
    /// parsing, comment lines may sit between them; a blank line or anything else ends them.
    fn drop_continuations(&mut self, from: usize) {
        let mut at = from;
        loop {
            match self.lines.get(at) {
                Some(Line::Continuation(_)) => {
                    self.lines.remove(at);
                }
                Some(Line::Other(raw)) if !raw.trim().is_empty() => at += 1,
                _ => break,
            }
        }
    }
}

fn validate_name(what: &str, name: &str, forbidden: &[char]) -> Result<(), EditError> {
    if name.trim().is_empty() || name.trim() != name || name.contains(['\n', '\r']) || name.contains(forbidden) {
        return Err(EditError(format!("`{name}` is not a valid {what}")));
    }
    Ok(())
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(line.raw())?;
        }
        if self.trailing_newline && !self.lines.is_empty() {
            f.write_str("\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "; my settings\n[DEFAULT]\nhost = https://a.cloud.databricks.com\ntoken = dapi123\n\n# staging workspace\n[staging]\nHost: https://b.cloud.databricks.com\nscopes = one\n  two\n";

    #[test]
    fn untouched_document_round_trips_byte_for_byte() {
        for text in [SAMPLE, "", "[a]\nk=v", "[a]\r\nk = v\r\n", "\n\n[a]\n\n"] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn reads_profiles_case_insensitive_keys_and_continuations() {
        let doc = parse(SAMPLE).unwrap();
        assert_eq!(doc.sections(), ["DEFAULT", "staging"]);
        assert_eq!(doc.get("DEFAULT", "token"), Some("dapi123"));
        assert_eq!(doc.get("staging", "HOST"), Some("https://b.cloud.databricks.com"));
        assert_eq!(doc.get("staging", "scopes"), Some("one\ntwo"));
        assert_eq!(doc.get("missing", "host"), None);
    }

    #[test]
    fn set_replaces_in_place_and_keeps_everything_else() {
        let mut doc = parse(SAMPLE).unwrap();
        doc.set("DEFAULT", "host", "https://c.cloud.databricks.com").unwrap();
        doc.set("DEFAULT", "client_id", "abc").unwrap();
        assert!(doc.remove("DEFAULT", "token"));
        let text = doc.to_string();
        assert_eq!(
            text,
            "; my settings\n[DEFAULT]\nhost = https://c.cloud.databricks.com\nclient_id = abc\n\n# staging workspace\n[staging]\nHost: https://b.cloud.databricks.com\nscopes = one\n  two\n"
        );
        doc.set("staging", "scopes", "three").unwrap();
        assert!(doc.to_string().ends_with("[staging]\nHost: https://b.cloud.databricks.com\nscopes = three\n"));
    }

    #[test]
    fn replacing_a_value_drops_its_continuations_even_past_comments() {
        // Found by the fuzzer: a continuation after a comment survived and re-attached.
        let mut doc = parse("[DEFAULT]\nhost = a\n# note\n  more\n\nother = b\n").unwrap();
        doc.set("DEFAULT", "host", "new").unwrap();
        let again = parse(&doc.to_string()).unwrap();
        assert_eq!(again.get("DEFAULT", "host"), Some("new"));
        assert_eq!(again.get("DEFAULT", "other"), Some("b"));
        assert!(doc.remove("DEFAULT", "other"));
        let mut doc = parse("[DEFAULT]\nhost = a\n# note\n  more\n").unwrap();
        assert!(doc.remove("DEFAULT", "host"));
        assert_eq!(doc.to_string(), "[DEFAULT]\n# note\n");
    }

    #[test]
    fn set_creates_missing_section_at_the_end() {
        let mut doc = parse("[other]\nk = v").unwrap();
        doc.set("DEFAULT", "host", "h").unwrap();
        assert_eq!(doc.to_string(), "[other]\nk = v\n\n[DEFAULT]\nhost = h\n");
        let mut empty = parse("").unwrap();
        empty.set("DEFAULT", "host", "h").unwrap();
        assert_eq!(empty.to_string(), "[DEFAULT]\nhost = h\n");
    }

    #[test]
    fn malformed_files_name_the_line_and_key_never_the_content() {
        // The secret stands where a careless paste puts it: first on its line.
        let secret = "dapi0123456789abcdef0123456789abcdef";
        let cases = [
            ("host = x\n".to_string(), 1, "`host` appears before any [profile]"),
            (format!("{secret} = x\n"), 1, "an entry appears before any [profile]"),
            ("[a\n".to_string(), 1, "no closing"),
            (format!("[{secret}\n"), 1, "no closing"),
            (format!("[a]\n{secret}\n"), 2, "expected `[profile]`"),
            (format!("[a]\n{secret} and more\n"), 2, "expected `[profile]`"),
            ("[a]\n[a]\n".to_string(), 2, "`a` appears twice"),
            (format!("[{secret}]\n[{secret}]\n"), 2, "a profile appears twice"),
            ("[a]\nk=1\nK=2\n".to_string(), 3, "`k` appears twice in profile `a`"),
            (format!("  {secret}\n"), 1, "indented line"),
        ];
        for (text, line, needle) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
            assert!(!err.to_string().contains("0123456"), "{err}");
        }
    }

    #[test]
    fn set_refuses_values_that_would_corrupt_the_file() {
        let mut doc = Document::default();
        assert!(doc.set("DEFAULT", "host", "a\nb").is_err());
        assert!(doc.set("DEF]AULT", "host", "a").is_err());
        assert!(doc.set("DEFAULT", "ho=st", "a").is_err());
        assert!(doc.set("DEFAULT", "", "a").is_err());
    }
}
