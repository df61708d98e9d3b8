//! Text cleaning before tokenisation: Unicode NFC, line endings, control characters.
//!
//! OpenWebText kept newspaper's extracted text as is; datatrove and dolma normalise Unicode and
//! strip control characters. We do the safe, reversible-in-meaning subset: NFC (so "é" is one
//! code point however the page spelled it), `\r\n`/`\r` → `\n`, and removal of C0/C1 control
//! characters other than `\n` and `\t` (NUL bytes included). Nothing else is rewritten.

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// What cleaning changed, for the manifest's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanReport {
    pub nfc_changed: bool,
    pub controls_removed: bool,
}

/// Most documents are ASCII without `\r` or control characters: already NFC and nothing to
/// remove, which a byte scan tells without the per-character pass of [`clean`].
fn is_clean_ascii(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t')
}

/// [`clean`] of an owned text: a text with nothing to change is returned as it is, not copied.
pub fn clean_owned(text: String) -> (String, CleanReport) {
    if is_clean_ascii(&text) {
        return (text, CleanReport::default());
    }
    clean(&text)
}

/// Clean `text`; returns the cleaned text and what changed.
pub fn clean(text: &str) -> (String, CleanReport) {
    if is_clean_ascii(text) {
        return (text.to_owned(), CleanReport::default());
    }
    let mut report = CleanReport::default();
    let needs_nfc = is_nfc_quick(text.chars()) != IsNormalized::Yes;
    let nfc: std::borrow::Cow<str> = if needs_nfc {
        let s: String = text.nfc().collect();
        report.nfc_changed = s != text;
        s.into()
    } else {
        text.into()
    };
    let mut out = String::with_capacity(nfc.len());
    let mut chars = nfc.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => report.controls_removed = true,
            c => out.push(c),
        }
    }
    (out, report)
}

/// Text normalised for exact-duplicate detection: whitespace runs collapsed to one space, trimmed.
/// Two pages that differ only in layout whitespace are the same document.
pub fn dedup_key(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for w in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfc_and_controls() {
        let (s, r) = clean("cafe\u{301}\r\nx\u{0}y\u{7}\tz\r");
        assert_eq!(s, "caf\u{e9}\nxy\tz\n");
        assert!(r.nfc_changed && r.controls_removed);
        let (s, r) = clean("plain text\n");
        assert_eq!(s, "plain text\n");
        assert_eq!(r, CleanReport::default());
    }

    /// ASCII text with `\r`, DEL or C0 controls must take the general path; everything else
    /// in ASCII comes back unchanged, as the general path would return it.
    #[test]
    fn ascii_fast_path_changes_nothing_it_should_not() {
        let (s, r) = clean("a\rb\x7fc\x1bd\te ~\n");
        assert_eq!(s, "a\nbcd\te ~\n");
        assert!(r.controls_removed && !r.nfc_changed);
        let all_printable: String = (0x20u8..0x7f).map(char::from).collect::<String>() + "\n\t";
        assert_eq!(
            clean(&all_printable),
            (all_printable.clone(), CleanReport::default())
        );
        for t in ["a\rb\x7fc", "cafe\u{301}", &all_printable] {
            assert_eq!(clean_owned(t.to_string()), clean(t), "{t:?}");
        }
    }

    #[test]
    fn dedup_key_ignores_layout() {
        assert_eq!(dedup_key("  a\n\nb \t c "), dedup_key("a b c"));
    }
}
