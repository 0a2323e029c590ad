//! Topic names: what a client subscribes to and what an event is published on.
//!
//! # Validation rules
//! A topic is 1 to [`MAX_TOPIC_LEN`] (256) bytes of ASCII letters, digits and the punctuation
//! `: - _ . @ / + = ~`. Everything else (spaces, quotes, `*`, `?`, `#`, control characters,
//! non-ASCII) is refused, so that a topic is always safe to log, to use as a Redis channel name
//! and to match against authorization patterns such as `list:*` without ambiguity.
//!
//! Matching is exact and case-sensitive: `list:1` and `List:1` are different topics, and
//! `gifts:all` is a plain name, not a wildcard.
//!
//! The seed's topic families have constructors: [`Topic::list`], [`Topic::occasion`],
//! [`Topic::list_items_all`], [`Topic::gifts_all`]. Any other well-formed name is accepted too.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest topic accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// A validated topic name (see the [module docs](self) for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export, type = "string"))]
pub struct Topic(String);

/// Why a string is not a valid [`Topic`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is the empty string.
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// The topic contains a character outside the allowed set.
    #[error(
        "topic contains the character '{0}'; allowed are ASCII letters, digits and : - _ . @ / + = ~"
    )]
    InvalidChar(char),
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '@' | '/' | '+' | '=' | '~')
}

impl Topic {
    /// Validates `name` as a topic.
    ///
    /// # Errors
    /// [`TopicError`] when `name` breaks one of the [validation rules](self).
    pub fn new(name: impl Into<String>) -> Result<Self, TopicError> {
        let name = name.into();
        Self::check(&name)?;
        Ok(Self(name))
    }

    /// Checks `name` against the validation rules without allocating.
    ///
    /// # Errors
    /// [`TopicError`] when `name` breaks one of the [validation rules](self).
    pub fn check(name: &str) -> Result<(), TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        match name.chars().find(|c| !allowed(*c)) {
            Some(c) => Err(TopicError::InvalidChar(c)),
            None => Ok(()),
        }
    }

    /// `list:{id}`: updates of one shopping list.
    ///
    /// # Panics
    /// Never for ids made of allowed characters (numbers, UUIDs); panics if `id`'s text has a
    /// character outside the allowed set.
    pub fn list(id: impl fmt::Display) -> Self {
        Self::family("list", id)
    }

    /// `occasion:{id}`: updates of one occasion.
    ///
    /// # Panics
    /// As [`Topic::list`].
    pub fn occasion(id: impl fmt::Display) -> Self {
        Self::family("occasion", id)
    }

    /// `list-items:all`: every list item change.
    pub fn list_items_all() -> Self {
        Self("list-items:all".to_owned())
    }

    /// `gifts:all`: every gift change.
    pub fn gifts_all() -> Self {
        Self("gifts:all".to_owned())
    }

    fn family(prefix: &str, id: impl fmt::Display) -> Self {
        match Self::new(format!("{prefix}:{id}")) {
            Ok(topic) => topic,
            Err(e) => panic!("invalid {prefix} id: {e}"),
        }
    }

    /// The topic's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic's name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Topic {
    type Error = TopicError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl From<Topic> for String {
    fn from(value: Topic) -> Self {
        value.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_families() {
        assert_eq!(Topic::list(123).as_str(), "list:123");
        assert_eq!(Topic::occasion("456").as_str(), "occasion:456");
        assert_eq!(Topic::list_items_all().as_str(), "list-items:all");
        assert_eq!(Topic::gifts_all().as_str(), "gifts:all");
        assert_eq!(
            Topic::new("list-items:all").unwrap(),
            Topic::list_items_all()
        );
    }

    #[test]
    fn other_well_formed_topics() {
        for ok in [
            "chat",
            "user:42/inbox",
            "a.b-c_d@e+f=g~h",
            "x".repeat(MAX_TOPIC_LEN).as_str(),
        ] {
            Topic::new(ok).unwrap();
        }
    }

    #[test]
    fn rejects() {
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert_eq!(
            Topic::new("x".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong)
        );
        assert_eq!(Topic::new("list:*"), Err(TopicError::InvalidChar('*')));
        assert_eq!(Topic::new("my list"), Err(TopicError::InvalidChar(' ')));
        assert_eq!(Topic::new("liste:é"), Err(TopicError::InvalidChar('é')));
    }

    #[test]
    fn case_sensitive() {
        assert_ne!(Topic::new("list:1").unwrap(), Topic::new("List:1").unwrap());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<Topic>("\"list:1\"").is_ok());
        assert!(serde_json::from_str::<Topic>("\"\"").is_err());
        assert_eq!(
            serde_json::to_string(&Topic::list(1)).unwrap(),
            "\"list:1\""
        );
    }
}
