//! Topic authorization: which topics a token may subscribe to, and publish to.
//!
//! A [`TopicPolicy`] decides each subscribe from the connection's token claims and the topic;
//! a denied subscribe is answered `{"error":"Forbidden","topic":T}` and creates no
//! subscription (the connection stays open). It decides each `POST /publish` too: a denied
//! publish is answered 403 with the same body, and nothing is published. The default,
//! [`ClaimTopics`], reads the optional `topics` claim (for both); a token without the claim
//! may subscribe and publish to any topic, as in the seed. An app with its own rules (a
//! database lookup cached per user, say) installs its policy with
//! [`Config::with_topic_policy`](crate::Config::with_topic_policy).
//!
//! # Patterns
//! Each entry of the `topics` claim is one of:
//! - an exact topic name: `"gifts:all"` matches `gifts:all` only;
//! - a name ending in `:*`, a **segment wildcard**: `"list:1:*"` matches every topic that
//!   starts with `list:1:` and has at least one more character (`list:1:items`,
//!   `list:1:a:b`), and never `list:1` itself nor `list:10`. `"list:*"` matches `list:1` and
//!   `list:10`, not `list:`;
//! - `"*"`: every topic;
//! - any other text ending in `*`: a **plain string prefix**. Beware: `"list:1*"` matches
//!   `list:1` but also `list:10`, `list:123` and `list:1:x`. To grant one list and what hangs
//!   below it, list both `"list:1"` and `"list:1:*"`.
//!
//! Topics cannot contain `*` (see [`Topic`]), so a pattern is never ambiguous.

use tidings_protocol::Topic;

use crate::Claims;

/// The error text of a denied subscribe.
pub const FORBIDDEN: &str = tidings_protocol::WSError::FORBIDDEN;

/// Decides whether a token may subscribe to a topic, or publish to it. Called on the
/// connection's reader for every subscribe (and on every `POST /publish`), so it must be quick
/// and must not block.
pub trait TopicPolicy: Send + Sync + 'static {
    /// Whether the holder of `claims` may subscribe to `topic`.
    fn allow_subscribe(&self, claims: &Claims, topic: &Topic) -> bool;

    /// Whether the holder of `claims` (a token with the `publish` scope) may publish to
    /// `topic` over `POST /publish`. Defaults to the subscribe rule, so that a policy written
    /// for subscribes never lets a restricted token publish everywhere.
    fn allow_publish(&self, claims: &Claims, topic: &Topic) -> bool {
        self.allow_subscribe(claims, topic)
    }
}

/// The default policy: the token's optional `topics` claim lists the allowed patterns (for
/// subscribing and for publishing); without the claim every topic is allowed (see the module
/// docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaimTopics;

impl TopicPolicy for ClaimTopics {
    fn allow_subscribe(&self, claims: &Claims, topic: &Topic) -> bool {
        claims.topics.as_ref().is_none_or(|patterns| {
            patterns
                .iter()
                .any(|pattern| pattern_matches(pattern, topic.as_str()))
        })
    }
}

/// Whether `topic` matches `pattern` (see [Patterns](self#patterns)): equal to it; for a
/// pattern ending in `:*`, starting with the text before the `*` and having at least one more
/// character; for any other pattern ending in `*`, starting with the text before the `*`.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        // A segment wildcard: whole segments after the colon, at least one character.
        Some(prefix) if prefix.ends_with(':') => {
            topic.len() > prefix.len() && topic.starts_with(prefix)
        }
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(topics: Option<Vec<&str>>) -> Claims {
        Claims {
            sub: "1".into(),
            exp: 1,
            scope: None,
            topics: topics.map(|t| t.into_iter().map(String::from).collect()),
            jti: None,
            presence_info: None,
        }
    }

    #[test]
    fn claim_patterns() {
        let topic = |t: &str| Topic::new(t).unwrap();
        let p = ClaimTopics;
        assert!(p.allow_subscribe(&claims(None), &topic("list:1")));
        let c = claims(Some(vec!["list:*", "gifts:all"]));
        assert!(p.allow_subscribe(&c, &topic("list:1")));
        assert!(p.allow_subscribe(&c, &topic("gifts:all")));
        assert!(!p.allow_subscribe(&c, &topic("gifts:all2")));
        assert!(!p.allow_subscribe(&c, &topic("occasion:1")));
        assert!(!p.allow_subscribe(&claims(Some(vec![])), &topic("list:1")));
        assert!(p.allow_subscribe(&claims(Some(vec!["*"])), &topic("x")));
    }

    #[test]
    fn segment_wildcards_and_plain_prefixes() {
        // A plain prefix crosses segment boundaries: the trap the docs warn about.
        assert!(pattern_matches("list:1*", "list:1"));
        assert!(pattern_matches("list:1*", "list:10"));
        assert!(pattern_matches("list:1*", "list:1:x"));
        // A segment wildcard does not.
        assert!(pattern_matches("list:1:*", "list:1:x"));
        assert!(pattern_matches("list:1:*", "list:1:x:y"));
        assert!(!pattern_matches("list:1:*", "list:1"));
        assert!(!pattern_matches("list:1:*", "list:10"));
        assert!(!pattern_matches("list:1:*", "list:10:x"));
        assert!(!pattern_matches("list:1:*", "list:1:"));
        assert!(pattern_matches("list:*", "list:10"));
        assert!(!pattern_matches("list:*", "list:"));
        assert!(!pattern_matches("list:*", "lists:1"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("list:1", "list:1"));
        assert!(!pattern_matches("list:1", "list:10"));
    }

    #[test]
    fn publish_follows_the_claim_by_default() {
        let topic = |t: &str| Topic::new(t).unwrap();
        let p = ClaimTopics;
        let c = claims(Some(vec!["list:1", "list:1:*"]));
        assert!(p.allow_publish(&c, &topic("list:1")));
        assert!(p.allow_publish(&c, &topic("list:1:items")));
        assert!(!p.allow_publish(&c, &topic("list:2")));
        assert!(p.allow_publish(&claims(None), &topic("list:2")));
    }
}
