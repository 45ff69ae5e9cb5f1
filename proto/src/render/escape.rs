//! Text from the agent made safe for a terminal and for a table: every
//! table and text line `fdrctl` prints goes through [`escape`] (or
//! [`escape_bytes`] / [`name`] for names kept as bytes), so that a file
//! name can neither forge a row (newline, carriage return) nor talk to the
//! terminal (ESC, BEL, C1 controls, bidirectional overrides).
//!
//! The escapes are visible and unambiguous: `\n`, `\r`, `\t`, `\\` for a
//! backslash, and `\xNN` for any other control byte and for every byte
//! that is not part of a valid UTF-8 character (a C1 or bidi control shows
//! as the bytes of its UTF-8 encoding, e.g. `\xc2\x9b`). Each `\` printed
//! starts an escape, so two different byte strings never print the same,
//! and an argument escaped this way inside `$'…'` reads back in bash.

use std::{borrow::Cow, fmt::Write};

/// Whether `c` must not reach a terminal as is (besides `\`).
fn is_control(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}'
        // Bidirectional and line controls: they reorder or break what
        // follows on the line.
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn needs_escape(c: char) -> bool {
    c == '\\' || is_control(c)
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if is_control(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
}

/// `s` printable on one line of a terminal (see the module's text). No
/// copy when nothing needs escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s);
    Cow::Owned(out)
}

/// Bytes printable on one line of a terminal: [`escape`] for their UTF-8
/// parts, `\xNN` for every other byte.
pub fn escape_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return escape(s);
    }
    let mut out = String::with_capacity(b.len() + 16);
    for chunk in b.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// JSON text made safe for a terminal too: the characters JSON leaves
/// as they are but [`escape`] would not (DEL, C1 and bidirectional
/// controls, line separators) written `\uXXXX` — the same JSON value.
pub fn json_safe(text: String) -> String {
    let unsafe_char = |c: char| c == '\x7f' || (is_control(c) && !c.is_ascii_control());
    if !text.chars().any(unsafe_char) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value as one line of [`json_safe`] text.
pub fn json(v: &serde_json::Value) -> String {
    json_safe(v.to_string())
}

/// A name as the API sends it: its text, and its exact bytes (`*_raw`)
/// when they are not UTF-8 (then the bytes are what is shown).
pub fn name<'a>(text: &'a str, raw: &'a [u8]) -> Cow<'a, str> {
    if raw.is_empty() {
        escape(text)
    } else {
        escape_bytes(raw)
    }
}

/// One argument as a shell reads it back: bare when it is plain, in single
/// quotes when it has spaces or quotes, in `$'…'` with [`escape`]'s escapes
/// when it has control characters or bytes that are not UTF-8.
pub fn shell_word(arg: &[u8]) -> Cow<'_, str> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(b);
    if !arg.is_empty() && arg.iter().all(plain) {
        return String::from_utf8_lossy(arg);
    }
    match std::str::from_utf8(arg) {
        Ok(s) if !s.chars().any(is_control) => {
            Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
        }
        _ => Cow::Owned(format!("$'{}'", escape_bytes(arg).replace('\'', r"\'"))),
    }
}

/// Arguments quoted where a shell would need it ([`shell_word`]), so the
/// line reads back; `raw`: their exact bytes when the API sent them
/// (`argv_raw`, when one is not UTF-8).
pub fn shell_words_raw(argv: &[String], raw: &[Vec<u8>]) -> String {
    let mut out = String::new();
    let words: Box<dyn Iterator<Item = &[u8]>> = if raw.len() == argv.len() && !raw.is_empty() {
        Box::new(raw.iter().map(Vec::as_slice))
    } else {
        Box::new(argv.iter().map(String::as_bytes))
    };
    for (i, w) in words.enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&shell_word(w));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_not_copied() {
        assert!(matches!(escape("/usr/bin/ls -l ü"), Cow::Borrowed(_)));
        assert!(matches!(escape_bytes(b"/tmp/x"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_and_backslash_are_visible_escapes() {
        assert_eq!(escape("a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(escape("\x1b[31mred\x07"), r"\x1b[31mred\x07");
        assert_eq!(escape("del\x7f nul\0"), r"del\x7f nul\x00");
        assert_eq!(escape(r"C:\dir"), r"C:\\dir");
        // C1 (CSI) and a right-to-left override: the bytes of their UTF-8.
        assert_eq!(escape("\u{9b}2J"), r"\xc2\x9b2J");
        assert_eq!(escape("evil\u{202e}txt.exe"), r"evil\xe2\x80\xaetxt.exe");
        for s in ["x\ny", "\x1b]0;t\x07", "a\u{85}b", "\u{2028}"] {
            let e = escape(s);
            assert!(!e.chars().any(is_control), "{e:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_hex_and_never_merge() {
        let a = escape_bytes(b"/tmp/b-\xff\xfe");
        let b = escape_bytes(b"/tmp/b-\xfe\xff");
        assert_eq!(a, r"/tmp/b-\xff\xfe");
        assert_eq!(b, r"/tmp/b-\xfe\xff");
        // A name spelled with a backslash is told apart from the bytes.
        assert_eq!(escape_bytes(br"/tmp/b-\xff\xfe"), r"/tmp/b-\\xff\\xfe");
        assert_eq!(escape_bytes(b"\\\xff\n"), r"\\\xff\n");
        assert_eq!(name("/tmp/b-\\xff", b"/tmp/b-\xff"), r"/tmp/b-\xff");
        assert_eq!(name("/tmp/b-\\xff", b""), r"/tmp/b-\\xff");
    }

    #[test]
    fn json_stays_the_same_value_without_raw_controls() {
        let v = serde_json::json!({ "p": "a\u{9b}2J\u{202e}\x7f\n\x1b" });
        let text = json(&v);
        assert_eq!(text, r#"{"p":"a\u009b2J\u202e\u007f\n\u001b"}"#);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
        assert!(!text.chars().any(is_control));
    }

    #[test]
    fn shell_words_read_back() {
        let argv = ["sh", "-c", "echo it's", ""].map(String::from);
        assert_eq!(shell_words_raw(&argv, &[]), r"sh -c 'echo it'\''s' ''");
        let argv = ["printf", "a\nb", "it's\x1b", r"back\slash"].map(String::from);
        assert_eq!(
            shell_words_raw(&argv, &[]),
            r"printf $'a\nb' $'it\'s\x1b' 'back\slash'"
        );
        let argv = ["cat".to_string(), "b-\\xff".to_string()];
        let raw = [b"cat".to_vec(), b"b-\xff".to_vec()];
        assert_eq!(shell_words_raw(&argv, &raw), r"cat $'b-\xff'");
    }
}
