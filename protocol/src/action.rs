//! The names of the client actions that take a topic, shared by the client messages (which
//! parse them) and the error replies (which name them). A module of its own so that neither
//! [`client`](crate::client) nor [`server`](crate::server) depends on the other.

/// The actions that take a topic (used in [`ParseError::TopicRequired`](crate::ParseError)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `subscribe`
    Subscribe,
    /// `unsubscribe`
    Unsubscribe,
}

impl Action {
    /// The action's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Unsubscribe => "unsubscribe",
        }
    }
}
