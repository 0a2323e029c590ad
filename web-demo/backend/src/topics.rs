//! Which topics a demo member may subscribe to: the demo's own families, nothing else.
//!
//! `list:{id}`, `occasion:{id}` (numeric ids), `list-items:all`, `gifts:all` (the seed's) and
//! the indexes `lists:all`, `occasions:all`. Anything else is answered `Forbidden` without a
//! subscription, so that a tab cannot make the server hold history for made-up topics. Who
//! receives which event on these topics is decided per event by its audience (see
//! [`crate::surprise`]); a topic-level ban would not do, because the recipient of a list must
//! follow it (a wish added) while never hearing of a purchase on it.

use tidings_server::{Claims, TopicPolicy, protocol::Topic};

use crate::events::{LISTS_TOPIC, OCCASIONS_TOPIC};

/// The demo's topic policy (installed by [`crate::run`]). `POST /publish` is closed to demo
/// tokens anyway (they have no `publish` scope).
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoTopics;

impl TopicPolicy for DemoTopics {
    fn allow_subscribe(&self, _claims: &Claims, topic: &Topic) -> bool {
        let name = topic.as_str();
        let numbered = |prefix: &str| {
            name.strip_prefix(prefix).is_some_and(|id| {
                !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_digit())
            })
        };
        matches!(name, "list-items:all" | "gifts:all")
            || name == LISTS_TOPIC
            || name == OCCASIONS_TOPIC
            || numbered("list:")
            || numbered("occasion:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_demo_families() {
        let claims = Claims {
            sub: "1".into(),
            exp: 1,
            scope: None,
            topics: None,
            jti: None,
            presence_info: None,
        };
        let ok = |t: &str| DemoTopics.allow_subscribe(&claims, &Topic::new(t).unwrap());
        for t in [
            "list:1",
            "occasion:22",
            "list-items:all",
            "gifts:all",
            "lists:all",
            "occasions:all",
        ] {
            assert!(ok(t), "{t}");
        }
        for t in [
            "list:",
            "list:x",
            "list:1:2",
            "gifts:mine",
            "other",
            "occasion:-1",
        ] {
            assert!(!ok(t), "{t}");
        }
    }
}
