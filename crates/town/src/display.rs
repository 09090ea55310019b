//! Showing text an agent can influence (argv, paths, key comments, chat
//! status) to a human without letting it steer the terminal: control
//! characters, terminal escapes and bidirectional overrides are written as
//! visible escapes, so what is shown is what is there, on one line.

/// Whether `c` must never reach a terminal or dialog raw: C0/C1 controls,
/// DEL, bidirectional embeddings/overrides/isolates, line and paragraph
/// separators, zero-width characters and the BOM.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}')
}

/// Free text for a terminal: printable characters as they are, anything
/// [`is_unsafe_char`] as `\n`, `\t`, `\r` or `\u{…}`. One line, always.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Quote for a POSIX shell: one word, whatever it holds.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An argv shown unambiguously on one line: each element in double quotes,
/// with `"` and `\` escaped and everything outside printable ASCII (newlines,
/// terminal escapes, bidi controls, look-alike letters) written as `\n`,
/// `\t`, `\r` or `\u{…}`. Two different argvs never show the same, and no
/// argv shows as two lines.
pub fn show_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| show_str(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One string quoted and escaped for display (see [`show_argv`]).
pub fn show_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Undo [`show_str`] for one quoted element (for tests and tools that read the display back).
pub fn unshow_str(shown: &str) -> Option<String> {
    let inner = shown.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_what_steers_a_terminal() {
        assert_eq!(clean("ada@host"), "ada@host");
        assert_eq!(clean("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(clean("x\ny"), "x\\ny");
        assert_eq!(clean("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(clean("caf\u{e9}"), "caf\u{e9}");
        assert!(!clean("\u{9b}31m").contains('\u{9b}'));
    }

    #[test]
    fn show_round_trips() {
        for s in [
            "plain",
            "with space",
            "q\"uote",
            "back\\slash",
            "nl\nx",
            "\u{202e}",
        ] {
            assert_eq!(unshow_str(&show_str(s)).as_deref(), Some(s));
        }
    }
}
