//! Options: reads the JavaScript objects the app hands over — `new TidingsClient(options)`'s
//! `TidingsClientOptions` into a [`Config`], and `bindQueryClient`'s `InvalidationRules` into
//! [`Rules`] plus an optional `onEvent` — and turns a malformed one into the `JsError` the
//! constructor or `bindQueryClient` throws. Nothing here touches the connection.

use js_sys::{Array, Function, Object};
use tidings_protocol::handshake;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::backoff::{DEFAULT_INITIAL_DELAY_MS, DEFAULT_MAX_DELAY_MS};
use crate::browser;
use crate::keepalive::{DEFAULT_PING_INTERVAL_MS, DEFAULT_PONG_TIMEOUT_MS};
use crate::rules::{Rule, Rules};

/// Default time allowed for a WebSocket handshake, in milliseconds (`connectTimeoutMs`).
pub const DEFAULT_CONNECT_TIMEOUT_MS: f64 = 10_000.0;

/// Settings read from the options object.
pub(super) struct Config {
    pub(super) url: String,
    pub(super) token: Option<String>,
    pub(super) get_token: Option<Function>,
    /// `tokenTransport: "query"`: the token goes in `?token=` instead of a subprotocol.
    pub(super) token_in_query: bool,
    /// `onSubscriptionEnded({topic, reason})`: the server ended a subscription by itself.
    pub(super) on_subscription_ended: Option<Function>,
    pub(super) initial_delay_ms: f64,
    pub(super) max_delay_ms: f64,
    pub(super) ping_interval_ms: f64,
    pub(super) pong_timeout_ms: f64,
    pub(super) connect_timeout_ms: f64,
    /// `autoConnect` (default true): connect in the constructor.
    pub(super) auto_connect: bool,
    /// This client's connection id, sent at every handshake (see [`crate::wire::connection_id`]).
    pub(super) connection_id: String,
}

fn number(options: &JsValue, key: &str, default: f64) -> Result<f64, JsError> {
    let v = browser::get(options, key);
    if v.is_undefined() || v.is_null() {
        return Ok(default);
    }
    match v.as_f64() {
        Some(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(JsError::new(&format!(
            "options.{key} must be a positive number of milliseconds"
        ))),
    }
}

impl Config {
    pub(super) fn parse(options: &JsValue) -> Result<Self, JsError> {
        let url = browser::get(options, "url")
            .as_string()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| JsError::new("options.url must be a non-empty string"))?;
        let get_token = browser::get(options, "getToken");
        let get_token = if get_token.is_undefined() || get_token.is_null() {
            None
        } else if get_token.is_function() {
            Some(get_token.unchecked_into())
        } else {
            return Err(JsError::new("options.getToken must be a function"));
        };
        let token = browser::get(options, "token");
        let token = if token.is_undefined() || token.is_null() {
            None
        } else {
            Some(
                token
                    .as_string()
                    .ok_or_else(|| JsError::new("options.token must be a string"))?,
            )
        };
        let auto_connect = browser::get(options, "autoConnect");
        let auto_connect = if auto_connect.is_undefined() || auto_connect.is_null() {
            true
        } else {
            auto_connect
                .as_bool()
                .ok_or_else(|| JsError::new("options.autoConnect must be a boolean"))?
        };
        let token_in_query = match browser::get(options, "tokenTransport").as_string() {
            None => false,
            Some(t) if t == "protocol" => false,
            Some(t) if t == "query" => true,
            Some(_) => {
                return Err(JsError::new(
                    "options.tokenTransport must be \"protocol\" or \"query\"",
                ));
            }
        };
        let on_subscription_ended = match browser::get(options, "onSubscriptionEnded") {
            f if f.is_undefined() || f.is_null() => None,
            f => Some(
                f.dyn_into::<Function>()
                    .map_err(|_| JsError::new("options.onSubscriptionEnded must be a function"))?,
            ),
        };
        Ok(Self {
            url,
            auto_connect,
            connection_id: crate::wire::connection_id(browser::random),
            token,
            get_token,
            token_in_query,
            on_subscription_ended,
            initial_delay_ms: number(options, "initialDelayMs", DEFAULT_INITIAL_DELAY_MS)?,
            max_delay_ms: number(options, "maxDelayMs", DEFAULT_MAX_DELAY_MS)?,
            ping_interval_ms: number(options, "pingIntervalMs", DEFAULT_PING_INTERVAL_MS)?,
            pong_timeout_ms: number(options, "pongTimeoutMs", DEFAULT_PONG_TIMEOUT_MS)?,
            connect_timeout_ms: number(options, "connectTimeoutMs", DEFAULT_CONNECT_TIMEOUT_MS)?,
        })
    }

    /// The URL and the subprotocols of a connection with `token`: the URL carries the
    /// connection id (`cid`, URL-safe characters only); by default the token goes in the
    /// `tidings.token.` subprotocol beside the `tidings` marker (see
    /// [`tidings_protocol::handshake`]), with `tokenTransport: "query"` in `?token=`.
    ///
    /// # Errors
    /// A token a subprotocol cannot carry (not a JWT); the message never repeats it.
    pub(super) fn socket_target(
        &self,
        token: Option<&str>,
    ) -> Result<(String, Vec<String>), &'static str> {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{sep}{}={}",
            self.url,
            tidings_protocol::CONNECTION_ID_PARAM,
            self.connection_id
        );
        match token {
            None => Ok((url, Vec::new())),
            Some(t) if self.token_in_query => {
                let t = String::from(js_sys::encode_uri_component(t));
                let param = handshake::TOKEN_QUERY_PARAM;
                Ok((format!("{url}&{param}={t}"), Vec::new()))
            }
            Some(t) => {
                let carrier = handshake::token_subprotocol(t).ok_or(
                    "the token has characters a WebSocket subprotocol cannot carry \
                     (not a JWT); use tokenTransport: \"query\"",
                )?;
                Ok((url, vec![handshake::SUBPROTOCOL.to_owned(), carrier]))
            }
        }
    }
}

/// `bindQueryClient`'s rules: the topic rules (custom ones before the defaults unless
/// `defaults: false`) and the `onEvent` function, if any.
pub(super) fn parse_rules(rules: Option<&JsValue>) -> Result<(Rules, Option<Function>), JsError> {
    let Some(rules) = rules.filter(|r| !r.is_undefined() && !r.is_null()) else {
        return Ok((Rules::defaults(), None));
    };
    let mut custom = Rules::empty();
    let topics = browser::get(rules, "topics");
    if topics.is_object() {
        for entry in Object::entries(topics.unchecked_ref()).iter() {
            let entry = Array::from(&entry);
            let pattern = entry.get(0).as_string().unwrap_or_default();
            let keys = entry.get(1);
            if !Array::is_array(&keys) {
                return Err(JsError::new(&format!(
                    "rules.topics[\"{pattern}\"] must be an array of query keys"
                )));
            }
            let mut parsed = Vec::new();
            for key in Array::from(&keys).iter() {
                let segments: Option<Vec<String>> = Array::is_array(&key)
                    .then(|| Array::from(&key).iter().map(|s| s.as_string()).collect())
                    .flatten();
                parsed.push(segments.ok_or_else(|| {
                    JsError::new(&format!(
                        "rules.topics[\"{pattern}\"]: a query key must be an array of strings"
                    ))
                })?);
            }
            custom.push(Rule::new(&pattern, parsed).map_err(|e| JsError::new(&e.to_string()))?);
        }
    }
    let on_event = browser::get(rules, "onEvent");
    let on_event = match on_event.dyn_into::<Function>() {
        Ok(f) => Some(f),
        Err(v) if v.is_undefined() || v.is_null() => None,
        Err(_) => return Err(JsError::new("rules.onEvent must be a function")),
    };
    let defaults = browser::get(rules, "defaults").as_bool().unwrap_or(true);
    let rules = if defaults {
        custom.then(Rules::defaults())
    } else {
        custom
    };
    Ok((rules, on_event))
}
