//! Text that comes from a provider (STATUS errors, names, rejection reasons) is shown to users in
//! browsers and terminals and stored: it is made harmless and bounded first.

/// How many characters of provider text are kept (a reason, a name).
pub const MAX_PROVIDER_TEXT: usize = 500;

/// `text` with terminal escape sequences (CSI/OSC/…) removed, every other control character
/// (except spaces) shown as `�`, whitespace runs folded, and at most `max` characters (an ellipsis
/// marks a cut).
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    let mut chars = text.chars().peekable();
    let mut count = 0;
    let mut last_space = false;
    while let Some(c) = chars.next() {
        if count >= max {
            out.push('…');
            break;
        }
        let shown = match c {
            // ESC starts a sequence: CSI `ESC [ … final`, OSC `ESC ] … BEL|ST`, or one char.
            '\u{1b}' => {
                match chars.next() {
                    Some('[') => {
                        for c in chars.by_ref() {
                            if ('\u{40}'..='\u{7e}').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']') | Some('P') | Some('_') | Some('^') => {
                        while let Some(c) = chars.next() {
                            if c == '\u{07}' {
                                break;
                            }
                            if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                                chars.next();
                                break;
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            // C1 CSI / OSC introducers (8-bit forms).
            '\u{9b}' | '\u{9d}' => continue,
            c if c.is_whitespace() => ' ',
            c if c.is_control() => '\u{fffd}',
            // Bidirectional overrides can reorder what a reader sees.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
            c => c,
        };
        if shown == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        out.push(shown);
        count += 1;
    }
    out.trim().to_owned()
}

/// [`sanitize`] with [`MAX_PROVIDER_TEXT`].
pub fn provider_text(text: &str) -> String {
    sanitize(text, MAX_PROVIDER_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_go_controls_show_and_length_is_capped() {
        let hostile =
            "\u{1b}[2J\u{1b}[31mnode died\u{1b}[0m\u{1b}]0;pwned\u{07} at\r\n\tblock 5\u{0}\u{8}";
        assert_eq!(
            sanitize(hostile, 100),
            "node died at block 5\u{fffd}\u{fffd}"
        );
        let osc_st = "a\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\b";
        assert_eq!(sanitize(osc_st, 100), "alinkb");
        assert_eq!(sanitize("abc\u{202e}def", 100), "abc\u{fffd}def");
        let huge = "A".repeat(1_000_000);
        let cut = provider_text(&huge);
        assert_eq!(cut.chars().count(), MAX_PROVIDER_TEXT + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(sanitize("héllo wörld", 5), "héllo…");
        assert_eq!(sanitize("  plain  ", 100), "plain");
    }
}
