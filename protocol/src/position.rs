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
