//! Text: clipped for messages, and bytes kept losslessly as text.

/// How many characters of a user-supplied value an error message shows.
pub const CLIP_CHARS: usize = 128;

/// `s` for an error message: whole when short, else its first
/// [`CLIP_CHARS`] characters, an ellipsis and its length, so that a huge
/// argument is never echoed back (nor logged) whole.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    clip_to(s, CLIP_CHARS)
}

/// [`clip`] to `chars` characters.
pub fn clip_to(s: &str, chars: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(chars) {
        None => std::borrow::Cow::Borrowed(s),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len())),
    }
}

/// A name's bytes as text, losslessly, and whether they were not UTF-8.
///
/// Valid UTF-8 is kept as is (no copy: the common case costs nothing).
/// Otherwise every byte that is not part of a valid character becomes
/// `\xNN` and every backslash `\\`, so that the text is injective among
/// non-UTF-8 names; the flag (kept with the event) tells a name written
/// `\xff` from the byte 0xff, and [`lossless_bytes`] gives the bytes back.
pub fn lossless(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (escape_not_utf8(e.as_bytes()), true),
    }
}

pub(crate) fn escape_not_utf8(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The bytes of a name [`lossless`] found not UTF-8, from its text.
pub fn lossless_bytes(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x') {
                let hex = b
                    .get(i + 2..i + 4)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_values_and_cuts_long_ones() {
        assert_eq!(clip("scope"), "scope");
        let long = "é".repeat(1 << 20);
        let c = clip(&long);
        assert!(c.starts_with(&"é".repeat(CLIP_CHARS)));
        assert!(c.ends_with(&format!("… ({} bytes)", long.len())), "{c}");
        assert!(c.len() < 400);
    }
}
