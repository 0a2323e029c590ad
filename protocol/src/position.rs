//! A position in a topic's stream, as events carry it (`seq`, `epoch`) and as a client sends it
//! back with `subscribe` … `since` to recover what it missed.

use serde::{Deserialize, Serialize};

/// A position in a topic's stream: the `seq` of the last event seen, and its `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct StreamPosition {
    /// The sequence number of the last event received.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub seq: u64,
    /// The epoch that sequence number belongs to.
    pub epoch: String,
}

/// The HTTP response header that stamps a read (a REST response) with the positions of the
/// topics its data reflects, taken before the data was read. Its value is a [`ReadStamp`] as
/// JSON: `[{"topic":"list:1","seq":5,"epoch":"9f…"}]`. A client that subscribes to those
/// topics resumes from these positions (`since`), so an event committed after the read is
/// replayed to it even if it came before the subscription's ack. Topic names and epochs are
/// ASCII without control characters, so the JSON is a valid header value.
pub const POSITIONS_HEADER: &str = "tidings-positions";

/// One topic's position in a [`ReadStamp`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct TopicPosition {
    /// The topic.
    pub topic: crate::Topic,
    /// The `seq` of its last event before the read (0: none yet in this epoch).
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub seq: u64,
    /// The epoch of `seq`.
    pub epoch: String,
}

/// The value of the [`POSITIONS_HEADER`]: the positions of the topics a read reflects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct ReadStamp(pub Vec<TopicPosition>);

impl ReadStamp {
    /// The header value (compact JSON).
    pub fn to_header_value(&self) -> String {
        // Cannot fail: strings and integers only.
        serde_json::to_string(self).unwrap_or_else(|_| "[]".to_owned())
    }

    /// Parses a header value.
    ///
    /// # Errors
    /// A serde_json error for anything but a JSON array of valid topic positions.
    pub fn parse(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_as_a_header_value() {
        let stamp = ReadStamp(vec![TopicPosition {
            topic: crate::Topic::list(1),
            seq: 5,
            epoch: "e1".into(),
        }]);
        let value = stamp.to_header_value();
        assert_eq!(value, r#"[{"topic":"list:1","seq":5,"epoch":"e1"}]"#);
        assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_eq!(ReadStamp::parse(&value).unwrap(), stamp);
        assert!(ReadStamp::parse(r#"[{"topic":"bad topic","seq":1,"epoch":"e"}]"#).is_err());
    }
}
