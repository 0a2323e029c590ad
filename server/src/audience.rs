//! Who an event is for (issue 12): a publish may leave out the connection that caused it, and
//! may be limited to, or withheld from, some users.
//!
//! An [`Audience`] travels with the event through the broker (in memory: next to the history
//! entry; Redis: inside the pub/sub message and the history list entry, see
//! [`Audience::encode`]) and is applied per subscriber where the hub queues the event, live or
//! replayed ([`Audience::frame_for`]). An event without audience (the common case) costs
//! nothing more: the check is one `Option` test and every subscriber gets the same
//! serialized bytes.
//!
//! A subscriber left out never receives the event's text. If its connection tracks positions
//! (it subscribed with `position` or `since`), it gets a `skipped` reply instead (topic, `seq`,
//! `epoch`, nothing else) so that it does not take the missing `seq` for a lost event; a seed
//! client gets nothing.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tidings_protocol::{PublishAudience, Topic, WSReply, is_valid_connection_id};

use crate::outbox::Outbox;

/// Who receives an event: every subscriber of its topic ([`Audience::everyone`], the default)
/// or fewer. Build it with the `exclude_*` / `only_*` methods and publish with
/// [`Tidings::publish_to`](crate::Tidings::publish_to). A cheap `Clone` (shared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience(Option<Arc<Rules>>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rules {
    exclude_connection: Option<Box<str>>,
    only_users: Option<HashSet<Box<str>>>,
    exclude_users: HashSet<Box<str>>,
}

/// Why an audience was refused (`POST /publish` answers 422 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudienceError {
    /// `exclude_connection` is not a valid connection id.
    #[error(
        "exclude_connection is not a valid connection id (1 to {} of A-Z a-z 0-9 - _)",
        tidings_protocol::MAX_CONNECTION_ID_LEN
    )]
    ConnectionId,
    /// More user ids than [`Config::with_max_audience_users`](crate::Config::with_max_audience_users).
    #[error("{field} lists {count} user ids; at most {max} are accepted")]
    TooManyUsers {
        /// `only_users` or `exclude_users`.
        field: &'static str,
        /// How many were given.
        count: usize,
        /// The configured bound.
        max: usize,
    },
}

/// What one connection is, for an audience check: its user (the token's `sub`) and the
/// connection id its client chose (if it sent one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer {
    pub(crate) user: Box<str>,
    pub(crate) connection_id: Option<Box<str>>,
}

impl Audience {
    /// Every subscriber of the topic.
    pub fn everyone() -> Self {
        Self(None)
    }

    /// Whether this is every subscriber.
    pub fn is_everyone(&self) -> bool {
        self.0.is_none()
    }

    fn rules(&mut self) -> &mut Rules {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }

    /// Leaves out the connection whose client sent `connection_id` (the
    /// [`CONNECTION_ID_HEADER`](tidings_protocol::CONNECTION_ID_HEADER) of the request that
    /// caused the event).
    #[must_use]
    pub fn exclude_connection(mut self, connection_id: impl Into<String>) -> Self {
        self.rules().exclude_connection = Some(connection_id.into().into_boxed_str());
        self
    }

    /// Only connections of these users (token `sub`) receive the event. Called again, adds to
    /// the list.
    #[must_use]
    pub fn only_users<S: Into<String>>(mut self, users: impl IntoIterator<Item = S>) -> Self {
        let only = self.rules().only_users.get_or_insert_with(HashSet::new);
        only.extend(users.into_iter().map(|u| u.into().into_boxed_str()));
        self
    }

    /// Connections of these users do not receive the event. Called again, adds to the list.
    #[must_use]
    pub fn exclude_users<S: Into<String>>(mut self, users: impl IntoIterator<Item = S>) -> Self {
        let rules = self.rules();
        rules
            .exclude_users
            .extend(users.into_iter().map(|u| u.into().into_boxed_str()));
        self
    }

    /// Checks the audience against the bounds: a valid connection id, at most `max_users` ids
    /// in each user list.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn check(&self, max_users: usize) -> Result<(), AudienceError> {
        let Some(rules) = &self.0 else {
            return Ok(());
        };
        if rules
            .exclude_connection
            .as_deref()
            .is_some_and(|c| !is_valid_connection_id(c))
        {
            return Err(AudienceError::ConnectionId);
        }
        for (field, count) in [
            (
                "only_users",
                rules.only_users.as_ref().map_or(0, HashSet::len),
            ),
            ("exclude_users", rules.exclude_users.len()),
        ] {
            if count > max_users {
                return Err(AudienceError::TooManyUsers {
                    field,
                    count,
                    max: max_users,
                });
            }
        }
        Ok(())
    }

    /// The audience of a publish request, checked (see [`Audience::check`]). The lists are
    /// counted before anything is built from them.
    pub(crate) fn from_request(
        request: PublishAudience,
        max_users: usize,
    ) -> Result<Self, AudienceError> {
        for (field, list) in [
            ("only_users", &request.only_users),
            ("exclude_users", &request.exclude_users),
        ] {
            let count = list.as_ref().map_or(0, Vec::len);
            if count > max_users {
                return Err(AudienceError::TooManyUsers {
                    field,
                    count,
                    max: max_users,
                });
            }
        }
        let audience = Self::from(request);
        audience.check(max_users)?;
        Ok(audience)
    }

    /// Whether `peer` is in the audience.
    pub(crate) fn admits(&self, peer: &Peer) -> bool {
        let Some(rules) = &self.0 else {
            return true;
        };
        if rules.exclude_connection.is_some()
            && rules.exclude_connection.as_deref() == peer.connection_id.as_deref()
        {
            return false;
        }
        if rules.exclude_users.contains(&peer.user) {
            return false;
        }
        rules
            .only_users
            .as_ref()
            .is_none_or(|only| only.contains(&peer.user))
    }

    /// What a subscriber gets of event `text`: the event when it is in the audience, else a
    /// `skipped` frame (made once per event by `skipped`) when it tracks positions, else
    /// nothing; with whether it is the event itself.
    pub(crate) fn frame_for(
        &self,
        outbox: &Outbox,
        text: &Utf8Bytes,
        skipped: &mut Skipped<'_>,
    ) -> Option<(Utf8Bytes, bool)> {
        if self.0.is_none() || self.admits(outbox.peer()) {
            Some((text.clone(), true))
        } else if outbox.tracks_positions() {
            Some((skipped.frame(), false))
        } else {
            None
        }
    }

    /// Bytes of memory the audience holds (charged to the history with its event).
    pub(crate) fn cost(&self) -> usize {
        self.0.as_ref().map_or(0, |rules| {
            let ids = rules
                .only_users
                .iter()
                .flatten()
                .chain(&rules.exclude_users)
                .map(|u| u.len() + 24)
                .sum::<usize>();
            64 + ids + rules.exclude_connection.as_ref().map_or(0, |c| c.len())
        })
    }

    /// The audience as one line of JSON (no newline inside), empty for everyone: how the
    /// Redis broker stores it in pub/sub messages and history entries.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn encode(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some(_) => serde_json::to_string(&PublishAudience::from(self)).unwrap_or_default(),
        }
    }

    /// Reads [`Audience::encode`]'s line. `None` for text that is not one (the entry is then
    /// treated as corrupt, not as for everyone: an audience is never widened by accident).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn decode(line: &str) -> Option<Self> {
        if line.is_empty() {
            return Some(Self::everyone());
        }
        serde_json::from_str::<PublishAudience>(line)
            .ok()
            .map(Self::from)
    }
}

impl From<PublishAudience> for Audience {
    fn from(request: PublishAudience) -> Self {
        if request.is_everyone() {
            return Self::everyone();
        }
        let mut audience = Self::everyone();
        let rules = audience.rules();
        rules.exclude_connection = request.exclude_connection.map(String::into_boxed_str);
        rules.only_users = request
            .only_users
            .map(|users| users.into_iter().map(String::into_boxed_str).collect());
        rules.exclude_users = request
            .exclude_users
            .into_iter()
            .flatten()
            .map(String::into_boxed_str)
            .collect();
        audience
    }
}

impl From<&Audience> for PublishAudience {
    fn from(audience: &Audience) -> Self {
        let Some(rules) = &audience.0 else {
            return Self::default();
        };
        let list = |set: &HashSet<Box<str>>| {
            let mut users: Vec<String> = set.iter().map(|u| u.to_string()).collect();
            users.sort();
            users
        };
        Self {
            exclude_connection: rules.exclude_connection.as_deref().map(str::to_owned),
            only_users: rules.only_users.as_ref().map(list),
            exclude_users: (!rules.exclude_users.is_empty()).then(|| list(&rules.exclude_users)),
        }
    }
}

/// The `skipped` frame of one event, serialized at most once however many subscribers are
/// left out of it.
pub(crate) struct Skipped<'a> {
    topic: &'a str,
    seq: u64,
    epoch: &'a str,
    frame: Option<Utf8Bytes>,
}

impl<'a> Skipped<'a> {
    pub(crate) fn new(topic: &'a str, seq: u64, epoch: &'a str) -> Self {
        Self {
            topic,
            seq,
            epoch,
            frame: None,
        }
    }

    fn frame(&mut self) -> Utf8Bytes {
        self.frame
            .get_or_insert_with(|| skipped_text(self.topic, self.seq, self.epoch))
            .clone()
    }
}

/// `{"action":"skipped","topic":T,"seq":N,"epoch":E}`.
fn skipped_text(topic: &str, seq: u64, epoch: &str) -> Utf8Bytes {
    let reply = Topic::new(topic).map(|topic| WSReply::Skipped {
        topic,
        seq,
        epoch: epoch.to_owned(),
    });
    // Cannot fail: the topic was valid when the event was published.
    let text = reply
        .ok()
        .and_then(|r| serde_json::to_string(&r).ok())
        .unwrap_or_default();
    Utf8Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(user: &str, cid: Option<&str>) -> Peer {
        Peer {
            user: user.into(),
            connection_id: cid.map(Into::into),
        }
    }

    #[test]
    fn who_is_admitted() {
        let a = peer("7", Some("c1"));
        let b = peer("8", Some("c2"));
        let anon = peer("9", None);
        assert!(Audience::everyone().admits(&a));
        let not_c1 = Audience::everyone().exclude_connection("c1");
        assert!(!not_c1.admits(&a) && not_c1.admits(&b) && not_c1.admits(&anon));
        let only7 = Audience::everyone().only_users(["7"]);
        assert!(only7.admits(&a) && !only7.admits(&b) && !only7.admits(&anon));
        let not7 = Audience::everyone().exclude_users(["7"]);
        assert!(!not7.admits(&a) && not7.admits(&b));
        let nobody = Audience::everyone().only_users(Vec::<String>::new());
        assert!(!nobody.admits(&a));
    }

    #[test]
    fn bounds_and_encoding() {
        let many = Audience::everyone().exclude_users((0..11).map(|i| i.to_string()));
        assert!(matches!(
            many.check(10),
            Err(AudienceError::TooManyUsers { count: 11, .. })
        ));
        assert_eq!(
            Audience::everyone().exclude_connection("a b").check(10),
            Err(AudienceError::ConnectionId)
        );
        let audience = Audience::everyone()
            .exclude_connection("c1")
            .only_users(["b", "a"]);
        let line = audience.encode();
        assert!(!line.contains('\n'));
        assert_eq!(
            line,
            r#"{"exclude_connection":"c1","only_users":["a","b"]}"#
        );
        assert_eq!(Audience::decode(&line), Some(audience));
        assert_eq!(Audience::everyone().encode(), "");
        assert_eq!(Audience::decode(""), Some(Audience::everyone()));
        assert_eq!(Audience::decode("{oops"), None);
    }

    #[test]
    fn the_skipped_frame() {
        let mut s = Skipped::new("list:1", 7, "e1");
        assert_eq!(
            s.frame().as_str(),
            r#"{"action":"skipped","topic":"list:1","seq":7,"epoch":"e1"}"#
        );
    }
}
