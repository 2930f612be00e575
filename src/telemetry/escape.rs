//! Values from input as they may appear in a log line (GATEWAY.md 12): control characters
//! escaped, so a `\n` in a till's text cannot start a forged line (text logs print values
//! as they are), and cut to a length, so no caller decides how much a log line holds.

use std::fmt::Write;

/// The most characters of any value from an unsigned request in a log line.
pub const UNSIGNED_MAX_CHARS: usize = 128;
/// The most characters of an error request's `error.code` or `error.message`.
pub const ERROR_FIELD_MAX_CHARS: usize = 256;

/// `text` with control characters (and Unicode line separators) written as escapes like
/// `\n` or `\u{1b}`, at most `max_chars` characters long, ending in `…` when cut (an
/// escape is never cut in half).
pub fn loggable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    let mut used = 0;
    // Where `out` ended the last time it held at most `max_chars - 1` characters: the cut
    // point, leaving room for the `…`.
    let mut cut_at = 0;
    for c in text.chars() {
        match escape(c) {
            Some(e) => {
                out.push_str(&e);
                used += e.len();
            }
            None => {
                out.push(c);
                used += 1;
            }
        }
        if used < max_chars {
            cut_at = out.len();
        } else if used > max_chars {
            out.truncate(cut_at);
            out.push('…');
            return out;
        }
    }
    out
}

/// The escape for a character a log line must not carry as it is; `None` for the rest.
fn escape(c: char) -> Option<String> {
    match c {
        '\n' => Some("\\n".into()),
        '\r' => Some("\\r".into()),
        '\t' => Some("\\t".into()),
        c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
            let mut e = String::new();
            let _ = write!(e, "\\u{{{:x}}}", c as u32);
            Some(e)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert_eq!(
            loggable("a\nb\r\tc\u{1b}[31m", 100),
            "a\\nb\\r\\tc\\u{1b}[31m"
        );
        assert_eq!(loggable("Kassa 3: één fout", 100), "Kassa 3: één fout");
        assert_eq!(loggable("x\u{2028}y", 100), "x\\u{2028}y");
    }

    #[test]
    fn long_values_are_cut_to_the_limit_with_an_ellipsis() {
        assert_eq!(loggable(&"x".repeat(10), 10), "x".repeat(10));
        let cut = loggable(&"é".repeat(300), 256);
        assert_eq!(cut.chars().count(), 256);
        assert!(cut.ends_with("é…"));
    }

    #[test]
    fn an_escape_is_never_cut_in_half() {
        assert_eq!(loggable("abcd\nefgh", 6), "abcd…");
        assert_eq!(loggable("abc\ndefgh", 6), "abc\\n…");
    }
}
