//! Text a game server supplies (Server List Ping answers, RCON answers,
//! messages built from them) made safe to store in a status and to print:
//! bounded in size, without terminal escape sequences or control
//! characters. Every status field holding such text has a `maxLength` in
//! the CRD schema no smaller than the bound used here.

/// Longest `status.version` kept (bytes; the schema's maxLength).
pub const MAX_VERSION: usize = 128;
/// Longest player name kept (Minecraft names are 3–16 of `[A-Za-z0-9_]`).
pub const MAX_PLAYER_NAME: usize = 16;
/// Longest MOTD kept from a ping (in memory only).
pub const MAX_MOTD: usize = 256;
/// Longest `message` of a ConsoleCommand or task status (bytes; the
/// schema's maxLength).
pub const MAX_MESSAGE: usize = 2048;

/// The marker that ends a cut text.
pub const CUT: &str = "…";

/// Bounds and cleans server-supplied text: removes ANSI/VT escape
/// sequences (CSI, OSC, DCS and two-byte ones), C0 and C1 control
/// characters, DEL and the Unicode bidirectional overrides (text that reads
/// differently than it prints); keeps line breaks and tabs when `multiline`
/// (a console answer), else turns them into spaces. The result has at most
/// `max` bytes (hence at most `max` characters): a longer text is cut on a
/// character boundary and ends with [`CUT`].
pub fn clean(s: &str, max: usize, multiline: bool) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut chars = s.chars().peekable();
    let mut cut = false;
    while let Some(c) = chars.next() {
        let keep = match c {
            '\u{1b}' => {
                skip_escape(&mut chars);
                None
            }
            // A C1 CSI (U+009B) starts a sequence like ESC [.
            '\u{9b}' => {
                skip_csi(&mut chars);
                None
            }
            '\n' | '\t' if multiline => Some(c),
            '\r' if multiline => None,
            '\n' | '\t' | '\r' => Some(' '),
            c if c.is_control() => None,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}' => None,
            c => Some(c),
        };
        if let Some(c) = keep {
            if out.len() + c.len_utf8() > max {
                cut = true;
                break;
            }
            out.push(c);
        }
    }
    if cut {
        // Room for the marker, on a character boundary.
        let mut end = max.saturating_sub(CUT.len()).min(out.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        if CUT.len() <= max {
            out.push_str(CUT);
        }
    }
    out
}

/// One line of server text for a message: the first line, cleaned, at most
/// `max` bytes.
pub fn first_line(s: &str, max: usize) -> String {
    clean(s.trim().lines().next().unwrap_or_default(), max, false)
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Skips what follows an ESC: `[` a CSI sequence, `]` `P` `X` `^` `_` a
/// string up to BEL or ESC \, else one character (ESC c, ESC ( B …).
fn skip_escape(chars: &mut Chars<'_>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        Some(']' | 'P' | 'X' | '^' | '_') => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' || c == '\u{9c}' {
                    break;
                }
                if c == '\u{1b}' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        // ESC ( B and the like: an intermediate byte, then the final one.
        Some(' '..='/') => {
            chars.next();
        }
        _ => {}
    }
}

/// Skips a CSI sequence's parameters up to its final byte (`@`..`~`).
fn skip_csi(chars: &mut Chars<'_>) {
    for c in chars.by_ref() {
        if ('@'..='~').contains(&c) || !(' '..='~').contains(&c) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed() {
        let s = "\u{1b}[31mred\u{1b}[0m \u{1b}]0;title\u{7}ok\u{1b}]8;;http://x\u{1b}\\link\u{1b}(B\u{9b}2Jz\u{0}\u{7f}\u{85}\u{202e}rtl";
        assert_eq!(clean(s, 100, false), "red oklinkzrtl");
        assert_eq!(clean("a\r\nb\tc", 100, true), "a\nb\tc");
        assert_eq!(clean("a\r\nb\tc", 100, false), "a  b c");
        // A lone ESC at the end, an unterminated CSI: no panic, nothing kept.
        assert_eq!(clean("x\u{1b}", 10, false), "x");
        assert_eq!(clean("x\u{1b}[12;", 10, false), "x");
        assert_eq!(clean("Paper 1.21.4 §aé", 100, false), "Paper 1.21.4 §aé");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_with_a_marker() {
        let huge = "é".repeat(1 << 20);
        let c = clean(&huge, MAX_VERSION, false);
        assert!(c.len() <= MAX_VERSION, "{}", c.len());
        assert!(c.ends_with(CUT), "{c}");
        assert!(c.starts_with("éé"));
        assert_eq!(clean("short", 5, false), "short");
        assert_eq!(clean("longer", 5, false), "lo…");
        assert_eq!(clean("longer", 2, false), "");
        // Escapes do not count: what is kept fits.
        let noisy = "\u{1b}[1m".repeat(10_000) + "1.21";
        assert_eq!(clean(&noisy, MAX_VERSION, false), "1.21");
    }

    #[test]
    fn first_line_is_one_clean_line() {
        assert_eq!(first_line("\n  Unknown \u{1b}[31mcommand\u{1b}[0m\nmore", 200), "Unknown command");
        assert_eq!(first_line(&"x".repeat(500), 200).len(), 200);
    }
}
