//! Publishing benchmark events through `POST /publish`, over keep-alive HTTP/1.1.
//!
//! Each [`Publisher`] owns one HTTP client, hence its own keep-alive connection(s), so N
//! publisher tasks put N concurrent requests on the server. The event is a protocol
//! [`WSEvent`] whose payload carries the send time as `{"t_ns": N}` (see [`crate::recorder`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tidings_protocol::{EventData, EventType, Payload, Topic, WSEvent};

/// How long one publish request may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The body of a `202` answer to `POST /publish`. (The server crate owns this shape; the
/// bench reads only the one field it needs instead of depending on the server.)
#[derive(Deserialize)]
struct Accepted {
    delivered: u64,
}

/// The body of a `200` answer to `POST /publish/batch`: one result per event.
#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    delivered: Option<u64>,
}

/// One HTTP publisher with a keep-alive connection.
pub struct Publisher {
    client: reqwest::Client,
    url: String,
    batch_url: String,
    auth: String,
}

impl Publisher {
    /// A publisher to `server` using the publish-scope `token`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(server: SocketAddr, token: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(PUBLISH_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            url: format!("http://{server}/publish"),
            batch_url: format!("http://{server}/publish/batch"),
            auth: format!("Bearer {token}"),
        })
    }

    /// Publishes one event on `topic` stamped with `t_ns`; returns the server's `delivered`.
    ///
    /// # Errors
    /// Transport errors and any status other than 202.
    pub async fn publish(&self, topic: &Topic, t_ns: u64) -> Result<u64> {
        let body = event_body(topic, t_ns)?;
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .context("POST /publish")?;
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let text = response.text().await.unwrap_or_default();
            bail!("POST /publish answered {status}: {text}");
        }
        let accepted: Accepted = response.json().await.context("reading the 202 body")?;
        Ok(accepted.delivered)
    }
}

impl Publisher {
    /// Publishes `events` events on `topic`, all stamped with `t_ns`, in one
    /// `POST /publish/batch`; returns the sum of their `delivered`.
    ///
    /// # Errors
    /// Transport errors, any status other than 200, and any event that was not delivered.
    pub async fn publish_batch(&self, topic: &Topic, t_ns: u64, events: usize) -> Result<u64> {
        let one = event_body(topic, t_ns)?;
        let mut body = Vec::with_capacity(events * (one.len() + 1) + 2);
        body.push(b'[');
        for i in 0..events {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&one);
        }
        body.push(b']');
        let response = self
            .client
            .post(&self.batch_url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .context("POST /publish/batch")?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            bail!("POST /publish/batch answered {status}: {text}");
        }
        let answer: BatchAnswer = response.json().await.context("reading the 200 body")?;
        if answer.results.len() != events {
            bail!("{} results for {events} events", answer.results.len());
        }
        answer
            .results
            .iter()
            .try_fold(0, |sum, r| match r.delivered {
                Some(d) => Ok(sum + d),
                None => bail!("an event of the batch was refused"),
            })
    }
}

/// The JSON body of one benchmark event.
///
/// # Errors
/// Never in practice (the payload is a fixed-shape object).
pub fn event_body(topic: &Topic, t_ns: u64) -> Result<Vec<u8>> {
    let event = WSEvent::new(
        topic.clone(),
        EventType::Updated,
        EventData {
            entity_id: "42".to_owned(),
            payload: Payload::from_json(format!(
                r#"{{"t_ns":{t_ns},"name":"bench item","status":"IDEA"}}"#
            ))?,
            user_id: "bench-publisher".to_owned(),
            timestamp: "2026-01-01T00:00:00Z".to_owned(),
        },
    );
    Ok(serde_json::to_vec(&event)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::find_t_ns;

    #[test]
    fn body_is_a_protocol_event_with_the_timestamp() {
        let topic = Topic::new("bench:3").unwrap();
        let body = String::from_utf8(event_body(&topic, 987_654).unwrap()).unwrap();
        let event: WSEvent = serde_json::from_str(&body).unwrap();
        assert_eq!(event.topic, topic);
        assert_eq!(find_t_ns(&body), Some(987_654));
    }
}
