//! Log safety: what the server writes into log lines, and what an app's log filter must keep
//! out.
//!
//! Client-controlled text: a token's `sub` and the reasons of refused tokens (which may quote
//! parts of the token) are chosen by whoever holds or forges the token. Written raw into a
//! text-format log line, a newline in them starts a forged line, and ANSI escape codes rewrite
//! what a terminal shows. [`Escaped`] writes such text with every control character escaped as
//! Rust's `Debug` escapes it (`\n`, `\u{1b}`), and everything else unchanged.
//!
//! Frame dumps: tungstenite (under axum's WebSocket) logs every frame and message a client
//! sends at debug and trace level, in full and as hex, so a `refresh` message's token would
//! reach the logs of anyone running with `RUST_LOG=trace`. [`is_frame_dump`] recognizes those
//! events; the `tidings` binary drops them whatever its filter says, and an app installing its
//! own subscriber should do the same:
//!
//! ```
//! use tracing_subscriber::filter::filter_fn;
//! use tracing_subscriber::prelude::*;
//! let subscriber = tracing_subscriber::fmt()
//!     .finish()
//!     .with(filter_fn(|meta| !tidings_server::logging::is_frame_dump(meta)));
//! # drop(subscriber);
//! ```

use std::fmt;

/// Whether `meta` is a debug or trace event of tungstenite or tokio-tungstenite: the ones that
/// dump client frames and messages (see the module docs). Their warnings and errors are not.
pub fn is_frame_dump(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let websocket_crate = ["tungstenite", "tokio_tungstenite"].iter().any(|name| {
        target
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    websocket_crate && matches!(*meta.level(), tracing::Level::DEBUG | tracing::Level::TRACE)
}

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
