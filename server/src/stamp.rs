//! Read stamps: the positions of the topics a REST read reflects, sent with the response in
//! the [`POSITIONS_HEADER`] so that the client resumes those topics from there.
//!
//! The gap it closes: a page reads its data over HTTP and subscribes over the WebSocket at
//! the same time; an event committed after the read but before the subscription's ack would
//! reach neither. With a stamp taken *before* the read, the client knows where the data
//! stands and subscribes (or resubscribes) with `since` that position: whatever came after is
//! replayed. A stamp taken after the read could miss an event committed in between, so take
//! it first ([`Tidings::read_stamp`](crate::Tidings::read_stamp)), read, then respond with
//! both: `(stamp, Json(data))` in an axum handler ([`Stamp`] is response parts).
//!
//! A backend that does not embed tidings sets the header itself: `tidings-positions:
//! [{"topic":"list:1","seq":5,"epoch":"…"}]` (the JSON of
//! [`ReadStamp`](tidings_protocol::ReadStamp)), with positions it got from the server, e.g.
//! the `seq`/`epoch` of the last event it published on each topic.

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponseParts, ResponseParts};
use tidings_protocol::{POSITIONS_HEADER, ReadStamp};

/// A [`ReadStamp`] as axum response parts: adds the [`POSITIONS_HEADER`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp(pub ReadStamp);

impl Stamp {
    /// The header's name and value.
    pub fn header(&self) -> (HeaderName, HeaderValue) {
        let value = HeaderValue::from_str(&self.0.to_header_value())
            // Cannot fail: topics and epochs are visible ASCII.
            .unwrap_or_else(|_| HeaderValue::from_static("[]"));
        (HeaderName::from_static(POSITIONS_HEADER), value)
    }
}

impl IntoResponseParts for Stamp {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        let (name, value) = self.header();
        res.headers_mut().insert(name, value);
        Ok(res)
    }
}
