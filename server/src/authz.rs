//! Topic authorization: which topics a connection may subscribe to.
//!
//! A [`TopicPolicy`] decides each subscribe from the connection's token claims and the topic;
//! a denied subscribe is answered `{"error":"Forbidden","topic":T}` and creates no
//! subscription (the connection stays open). The default, [`ClaimTopics`], reads the optional
//! `topics` claim: a list of allowed patterns, each an exact topic name or a prefix ending in
//! `*` (`"list:*"`, or `"*"` for everything). A token without the claim may subscribe to any
//! topic, as in the seed. An app with its own rules (a database lookup cached per user, say)
//! installs its policy with [`Config::with_topic_policy`](crate::Config::with_topic_policy).

use tidings_protocol::Topic;

use crate::Claims;

/// The error text of a denied subscribe.
pub const FORBIDDEN: &str = tidings_protocol::WSError::FORBIDDEN;

/// Decides whether a connection may subscribe to a topic. Called on the connection's reader
/// for every subscribe, so it must be quick and must not block.
pub trait TopicPolicy: Send + Sync + 'static {
    /// Whether the holder of `claims` may subscribe to `topic`.
    fn allow_subscribe(&self, claims: &Claims, topic: &Topic) -> bool;
}

/// The default policy: the token's optional `topics` claim lists the allowed patterns; without
/// the claim every topic is allowed (see the module docs).
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

/// Whether `topic` matches `pattern`: equal to it, or starting with its text before a
/// trailing `*`.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
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
}
