//! Client-controlled text in log lines.
//!
//! A token's `sub` and the reasons of refused tokens (which may quote parts of the token) are
//! chosen by whoever holds or forges the token. Written raw into a text-format log line, a
//! newline in them starts a forged line, and ANSI escape codes rewrite what a terminal shows.
//! [`Escaped`] writes such text with every control character escaped as Rust's `Debug`
//! escapes it (`\n`, `\u{1b}`), and everything else unchanged.

use std::fmt;

/// Displays `T` with its control characters escaped (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaped<T>(pub(crate) T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    if c.is_control() {
                        write!(self.0, "{}", c.escape_debug())?;
                    } else {
                        self.0.write_char(c)?;
                    }
                }
                Ok(())
            }
        }
        write!(Escaping(f), "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let sub = "alice\n2025-01-01T00:00:00Z  INFO forged\x1b[31mred\r\t\u{85}é\"";
        let text = Escaped(sub).to_string();
        assert_eq!(
            text,
            r#"alice\n2025-01-01T00:00:00Z  INFO forged\u{1b}[31mred\r\t\u{85}é""#
        );
        assert!(!text.chars().any(char::is_control));
    }
}
