//! The in-memory broker: the default, for one node without any external service.
//!
//! The hub numbers events and keeps their history itself (see [`crate::hub`]), so this broker
//! only forwards to it. History is lost with the process; a restarted node hands out new
//! epochs, so a client's old position is answered `recovered: false`.

use tidings_protocol::{StreamPosition, Topic};

use crate::audience::Audience;

use super::{BoxFuture, Broker, BrokerError, Deliver, Recovery, ReplayBound};

/// The default broker (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct MemoryBroker;

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        hub: &'a dyn Deliver,
        topic: &'a Topic,
        base: String,
        audience: Audience,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move { Ok(hub.publish_local(topic, &base, &audience)) })
    }

    fn history<'a>(
        &'a self,
        hub: &'a dyn Deliver,
        topic: &'a Topic,
        since: &'a StreamPosition,
        _bound: ReplayBound,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        // In memory, recovery replays under the topic's lock (`Hub::subscribe_since`); this
        // read is not on that path, so `bound` is not applied here.
        Box::pin(async move { Ok(hub.recover(topic.as_str(), since)) })
    }

    fn position<'a>(
        &'a self,
        hub: &'a dyn Deliver,
        topic: &'a Topic,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        Box::pin(async move { Ok(hub.read_position(topic.as_str())) })
    }

    fn degraded(&self) -> Option<String> {
        None
    }
}
